"""Small pieces shared by the built-in img2img/txt2img scripts in `scripts/`.

Argument checks that answer with a 4xx naming the script, the outpainting scripts' side names and
A1111's growth arithmetic, the job's fixed seed, the "stop now" test and the stamping/saving of a
script's stitched result. Each function is what two or more scripts did word for word; a script
keeps its own code wherever its behaviour differs.
"""
from __future__ import annotations

import math
from typing import Any

from modules import errors, images, processing, shared
from modules.processing_validation import MAX_SIZE

DIRECTIONS = ("left", "right", "up", "down")
"""The outpainting sides, in the order A1111's scripts list and process them."""


def checked_number(title: str, value: Any, name: str, low: float, high: float | None = None,
                   integer: bool = False) -> float:
    """`value` as a finite number in [low, high] (no upper bound when `high` is None), an `int`
    when `integer` is asked, else a `float`; `InvalidParameter` naming `title` and `name` otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and value >= low and (high is None or value <= high) and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise errors.InvalidParameter(f"{title}: {name} must be {kind} {bounds}, got {value!r}", field="script_args")
    return int(value) if integer else float(value)


def check_batch_size(title: str, p: Any) -> None:
    """Refuse a job whose `batch_size` is not a whole number of at least 1 (the scripts batch tiles by it)."""
    if not isinstance(p.batch_size, int) or p.batch_size < 1:
        raise errors.InvalidParameter(f"{title}: batch_size must be at least 1, got {p.batch_size!r}",
                                      field="batch_size")


def parse_directions(title: str, value: Any) -> list[str]:
    """The chosen sides, in `DIRECTIONS` order, from a list of names (or one comma-separated
    string), case and blanks ignored; at least one, all known, else `InvalidParameter`."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise errors.InvalidParameter(f"{title}: direction must be a list of {list(DIRECTIONS)}, got {value!r}",
                                      field="script_args")
    chosen = {n.strip().lower() for n in names if n.strip()}
    if not chosen or not chosen <= set(DIRECTIONS):
        raise errors.InvalidParameter(
            f"{title}: direction must name one or more of {list(DIRECTIONS)}, got {value!r}", field="script_args")
    return [d for d in DIRECTIONS if d in chosen]


def split_growth(size: int, first: int, second: int) -> tuple[int, int]:
    """Growth of one axis of `size` pixels asked as `first` + `second` on its two sides (A1111's
    arithmetic): the axis is grown to the next multiple of 64 and the growth split in proportion
    to what each side asked for; (0, 0) when neither side asked."""
    if not first and not second:
        return 0, 0
    extra = math.ceil((size + first + second) / 64) * 64 - size
    first = first * extra // (first + second)
    return first, (extra - first if second else 0)


def check_grown_size(title: str, width: int, height: int) -> None:
    """Refuse a grown image with a side over the largest size Serena generates (`MAX_SIZE`)."""
    if width > MAX_SIZE or height > MAX_SIZE:
        raise errors.InvalidParameter(
            f"{title}: the grown image would be {width}x{height}; each side must be at most {MAX_SIZE}",
            field="script_args")


def fixed_seed(p: Any) -> int:
    """Fix the job's seed (`processing.fix_seed`) and return it (the first one when it is a list)."""
    processing.fix_seed(p)
    return int(p.seed[0] if isinstance(p.seed, list) else p.seed)


def interrupted() -> bool:
    """Whether the user asked the running job to stop (Interrupt or Skip-all)."""
    return bool(shared.state.interrupted or shared.state.stopping_generation)


def stamp_and_save(p: Any, image: Any, info: str, seed: int, save: bool, extension: str) -> None:
    """Put `info` into `image`'s PNG text (when `enable_pnginfo`) and save it to the samples folder
    when `save` and the `samples_save` option both say so."""
    if shared.opts.enable_pnginfo:
        image.info["parameters"] = info
    if save and shared.opts.samples_save:
        images.save_image(image, p.outpath_samples, "", seed, p.prompt, extension, info=info, p=p)
