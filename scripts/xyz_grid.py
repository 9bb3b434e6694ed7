"""X/Y/Z plot: A1111's built-in selectable script of the same title (A1111 v1.10 `scripts/xyz_grid.py`).

For every combination of up to three axes' values the script copies the job, applies the values
and runs the copy through `modules.processing.process_images` (so every cell goes through the
runner), then tiles each cell's first image into one labelled grid per Z value and puts those side
by side in the main grid. The response holds the main grid, then (with "Include Sub Grids") the
per-Z grids, then (with "Include Sub Images") every cell's image, X fastest, then Y, then Z.

API clients send the arguments positionally, as A1111 lays them out: x_type, x_values,
x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values, z_values_dropdown,
draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x, vary_seeds_y,
vary_seeds_z, margin_size, csv_mode. An axis type is an index into `axis_options` filtered for the
tab (`current_axis_options`), in A1111's order; its label is accepted too.

Extensions reach into this module as they do into A1111's: they find it through
`scripts.scripts_data` (`script_class.__module__ == "xyz_grid.py"`), append their own `AxisOption`s
to `axis_options` and use the helpers (`apply_field`, `apply_override`, `format_value*`,
`boolean_choice`, `csv_string_to_list_strip`, …) with A1111's signatures.

Axes whose feature Serena does not have stay in the list, so that every index means what it means
in A1111, and refuse to run with a 422 that says why (`unsupported`); an `apply_override` axis
whose option does not exist refuses the same way.

Differences from A1111, on purpose:

- Bad input is a domain error (`errors.InvalidParameter`, HTTP 422) raised before the first cell
  is generated: a value that is not a number, an empty or runaway range, an unknown sampler,
  scheduler, checkpoint or VAE, Prompt S/R text missing from the prompt, a grid over
  `img_max_size_mp`, and, for API jobs, Steps/Size values beyond the API's request limits.
  A cell whose job raises a domain error stops the plot with that error; any other error blanks
  the cell, as in A1111.
- Descending ranges include their end: `5-1 (-1)` is 5, 4, 3, 2, 1 (A1111 stops at 3).
- A choice axis (Sampler, Checkpoint, …) whose dropdown list is empty reads its values text.
- Grids are saved only when the job saves grids (`do_not_save_grid`, i.e. the API's `save_images`).
- The request's `override_settings` are in effect for the grids' infotexts and saving too.
- Each cell gets its own `override_settings` / `extra_generation_params` / `comments`, so one
  cell's values never reach another.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import random
import re
from collections import namedtuple
from copy import copy
from dataclasses import dataclass
from io import StringIO
from itertools import chain, permutations
from typing import Any, Callable, Iterable, Iterator

import gradio as gr
from PIL import Image

from modules import errors, images, processing, scripts, sd_models, sd_samplers, sd_schedulers, shared
from modules.processing import Processed, StableDiffusionProcessingTxt2Img
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)

fill_values_symbol = "\U0001f4d2"  # 📒
AxisInfo = namedtuple("AxisInfo", ["axis", "values"])
"""What `shared.state.xyz_plot_x/y/z` hold while a plot runs (A1111 name): the option and its values."""

MAX_AXIS_VALUES = 10_000
"""The most values one axis may expand to: a typo like `1-1000000000` is refused, not allocated."""


def _bad(message: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"X/Y/Z plot: {message}", field="script_args")


# --- applying a value to a job (`apply(p, x, xs)`) ------------------------------------------------
def apply_field(field: str) -> Callable[[Any, Any, list], None]:
    """An axis applier that sets `p.<field>` to the value."""
    def apply(p: Any, x: Any, xs: list) -> None:
        setattr(p, field, x)

    apply.field = field  # type: ignore[attr-defined]
    return apply


def apply_override(field: str, boolean: bool = False) -> Callable[[Any, Any, list], None]:
    """An axis applier that sets option `field` for the cell's job (`p.override_settings`);
    with `boolean`, the value "true" (any case) is True and anything else False."""
    def apply(p: Any, x: Any, xs: list) -> None:
        if boolean:
            x = str(x).lower() == "true"
        p.override_settings[field] = x

    apply.override_key = field  # type: ignore[attr-defined]
    return apply


def _replace(text: Any, old: str, new: str) -> Any:
    if isinstance(text, list):
        return [t.replace(old, new) for t in text]
    return (text or "").replace(old, new)


def _contains(text: Any, part: str) -> bool:
    return any(part in t for t in text) if isinstance(text, list) else part in (text or "")


def apply_prompt(p: Any, x: str, xs: list) -> None:
    """Prompt S/R: the first value is the search text; replace it by `x` in both prompts."""
    if not (_contains(p.prompt, xs[0]) or _contains(p.negative_prompt, xs[0])):
        raise _bad(f"Prompt S/R did not find {xs[0]!r} in prompt or negative prompt")
    p.prompt = _replace(p.prompt, xs[0], x)
    p.negative_prompt = _replace(p.negative_prompt, xs[0], x)


def apply_order(p: Any, x: tuple, xs: list) -> None:
    """Prompt order: the tokens keep their places in the prompt but appear in the order of `x`."""
    rest = p.prompt
    pieces = []
    for _, token in sorted((p.prompt.find(token), token) for token in x):
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(piece + token for piece, token in zip(pieces, x)) + rest


def apply_checkpoint(p: Any, x: str, xs: list) -> None:
    """Checkpoint name: the cell's job runs on that checkpoint (loaded by `process_images`)."""
    info = sd_models.get_closet_checkpoint_match(x)
    if info is None:
        raise errors.CheckpointNotFound(f"X/Y/Z plot: unknown checkpoint {x!r}", field="script_args")
    p.override_settings["sd_model_checkpoint"] = info.name


def find_vae(name: str) -> str:
    """The `sd_vae` option value for an axis value: Automatic, None, or a VAE file's name."""
    from modules import sd_vae
    wanted = name.strip().lower()
    if wanted in ("auto", "automatic"):
        return "Automatic"
    if wanted == "none":
        return "None"
    for key in sd_vae.vae_dict:
        if key.lower() == wanted:
            return key
    raise _bad(f"unknown VAE {name!r}; known: Automatic, None, {', '.join(sd_vae.vae_dict)}")


def apply_vae(p: Any, x: str, xs: list) -> None:
    p.override_settings["sd_vae"] = find_vae(x)


def apply_styles(p: Any, x: str, xs: list) -> None:
    """Styles: the comma-separated style names are added to the job's styles."""
    p.styles.extend(x.split(","))


def apply_uni_pc_order(p: Any, x: int, xs: list) -> None:
    p.override_settings["uni_pc_order"] = min(x, p.steps - 1)


def apply_face_restore(p: Any, opt: str, x: list) -> None:
    """Face restore: "CodeFormer"/"GFPGAN" pick that restorer; true/yes/y/1 turn the default one on."""
    value = opt.lower()
    if value in ("codeformer", "gfpgan"):
        p.override_settings["face_restoration_model"] = "CodeFormer" if value == "codeformer" else "GFPGAN"
        p.restore_faces = True
    else:
        p.restore_faces = value in ("true", "yes", "y", "1")


def parse_size(x: str) -> tuple[int, int]:
    """"W x H" → (W, H)."""
    width, sep, height = str(x).lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(width.strip()), int(height.strip())
    except ValueError:
        raise _bad(f"size {x!r} is not of the form WIDTHxHEIGHT") from None


def apply_size(p: Any, x: str, xs: list) -> None:
    p.width, p.height = parse_size(x)


def do_nothing(p: Any, x: Any, xs: list) -> None:
    pass


# --- checking an axis's values before the first cell (`confirm(p, xs)`) -----------------------------
def confirm_samplers(p: Any, xs: list) -> None:
    for x in xs:
        if str(x).lower() not in sd_samplers.samplers_map:
            raise errors.UnknownSampler(
                f"X/Y/Z plot: unknown sampler {x!r}; valid: {', '.join(sd_samplers.visible_sampler_names())}",
                field="script_args")


def confirm_schedulers(p: Any, xs: list) -> None:
    for x in xs:
        sd_schedulers.find_scheduler(x)


def confirm_checkpoints(p: Any, xs: list) -> None:
    for x in xs:
        if sd_models.get_closet_checkpoint_match(x) is None:
            raise errors.CheckpointNotFound(f"X/Y/Z plot: unknown checkpoint {x!r}", field="script_args")


def confirm_checkpoints_or_none(p: Any, xs: list) -> None:
    confirm_checkpoints(p, [x for x in xs if x not in (None, "", "None", "none")])


def confirm_vae(p: Any, xs: list) -> None:
    for x in xs:
        find_vae(x)


def confirm_size(p: Any, xs: list) -> None:
    for x in xs:
        parse_size(x)


def confirm_prompt_sr(p: Any, xs: list) -> None:
    if xs and not (_contains(p.prompt, xs[0]) or _contains(p.negative_prompt, xs[0])):
        raise _bad(f"Prompt S/R did not find {xs[0]!r} in prompt or negative prompt")


def confirm_prompt_order(p: Any, xs: list) -> None:
    for token in xs[0] if xs else ():
        if token not in p.prompt:
            raise _bad(f"Prompt order: {token!r} is not in the prompt")


def confirm_range(min_val: float, max_val: float, axis_label: str) -> Callable[[Any, list], None]:
    """A confirm function refusing values outside [min_val, max_val]."""
    def confirm(p: Any, xs: list) -> None:
        for x in xs:
            if not min_val <= x <= max_val:
                raise _bad(f"{axis_label} value {x!r} out of range [{min_val}, {max_val}]")

    return confirm


def confirm_choices(choices: Callable[[], list]) -> Callable[[Any, list], None]:
    """A confirm function refusing values not among `choices()`."""
    def confirm(p: Any, xs: list) -> None:
        valid = choices()
        for x in xs:
            if x not in valid:
                raise _bad(f"{x!r} is not one of {valid}")

    return confirm


def unsupported(reason: str) -> Callable[[Any, list], None]:
    """The confirm function of an A1111 axis Serena keeps for its index but cannot apply."""
    def confirm(p: Any, xs: list) -> None:
        raise _bad(f"this axis is not supported: {reason}")

    return confirm


# --- labels ----------------------------------------------------------------------------------------
def format_value_add_label(p: Any, opt: AxisOption, x: Any) -> str:
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p: Any, opt: AxisOption, x: Any) -> Any:
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p: Any, opt: AxisOption, x: Iterable[str]) -> str:
    return ", ".join(x)


def format_nothing(p: Any, opt: AxisOption, x: Any) -> str:
    return ""


def format_remove_path(p: Any, opt: AxisOption, x: str) -> str:
    return os.path.basename(x)


def str_permutations(x: Any) -> Any:
    """The `type` of an axis whose values are every ordering of the given ones (Prompt order)."""
    return x


def list_to_csv_string(data_list: Iterable[Any]) -> str:
    """One CSV line of the values (quoted where needed)."""
    with StringIO() as out:
        csv.writer(out).writerow(data_list)
        return out.getvalue().strip()


def csv_string_to_list_strip(data_str: str) -> list[str]:
    """The comma-separated values of `data_str` (quotes allowed, lines joined), each stripped."""
    return [value.strip() for value in chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))]


def boolean_choice(reverse: bool = False) -> Callable[[], list[str]]:
    """The choices of a True/False axis ("False" first when `reverse`)."""
    def choices() -> list[str]:
        return ["False", "True"] if reverse else ["True", "False"]

    return choices


# --- axis options --------------------------------------------------------------------------------
class AxisOption:
    """One axis type: its label, value type, how a value is applied, labelled and checked.

    `cost` orders the loops (the costliest axis changes least often); `choices`, when set, is a
    function listing the values the UI offers in a dropdown; `prepare` turns the values text into
    a list itself (instead of the CSV/range parsing).
    """

    def __init__(self, label: str, type: Callable, apply: Callable, format_value: Callable = format_value_add_label,
                 confirm: Callable | None = None, cost: float = 0.0, choices: Callable | None = None,
                 prepare: Callable | None = None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    """An axis offered on the img2img tab only."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    """An axis offered on the txt2img tab only."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


def _sampler_names() -> list[str]:
    return [name for name in sd_samplers.visible_sampler_names() if name not in shared.opts.hide_samplers]


def _checkpoint_titles() -> list[str]:
    return sorted(sd_models.checkpoints_list, key=str.casefold)


def _hires_upscalers() -> list[str]:
    return [*shared.latent_upscale_modes, *[x.name for x in shared.sd_upscalers]]


def _vae_names() -> list[str]:
    from modules import sd_vae
    return ["Automatic", "None", *sd_vae.vae_dict]


def _rng_sources() -> list[str]:
    return ["GPU", "CPU", "NV"]


axis_options: list[AxisOption] = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOptionImg2Img("Image CFG Scale", float, apply_field("image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value, confirm=confirm_prompt_sr),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list,
               confirm=confirm_prompt_order),
    AxisOptionTxt2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_names),
    AxisOptionTxt2Img("Hires sampler", str, apply_field("hr_sampler_name"), confirm=confirm_samplers,
                      choices=_sampler_names),
    AxisOptionImg2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_names),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path,
               confirm=confirm_checkpoints, cost=1.0, choices=_checkpoint_titles),
    AxisOption("Negative Guidance minimum sigma", float, apply_field("s_min_uncond")),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption("Schedule type", str, apply_field("scheduler"), confirm=confirm_schedulers,
               choices=lambda: [x.label for x in sd_schedulers.schedulers]),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    AxisOption("Beta schedule alpha", float, apply_override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, apply_override("beta_dist_beta")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, apply_override("img2img_extra_noise")),
    AxisOptionTxt2Img("Hires upscaler", str, apply_field("hr_upscaler"), choices=_hires_upscalers),
    AxisOptionImg2Img("Cond. Image Mask Weight", float, apply_field("inpainting_mask_weight")),
    AxisOption("VAE", str, apply_vae, confirm=confirm_vae, cost=0.7, choices=_vae_names),
    AxisOption("Styles", str, apply_styles, choices=lambda: list(shared.prompt_styles.styles)),
    AxisOption("UniPC Order", int, apply_uni_pc_order, cost=0.5),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio"),
               confirm=unsupported("Serena applies no token merging")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr"),
               confirm=unsupported("Serena applies no token merging")),
    AxisOption("Always discard next-to-last sigma", str,
               apply_override("always_discard_next_to_last_sigma", boolean=True), choices=boolean_choice(reverse=True)),
    AxisOption("SGM noise multiplier", str, apply_override("sgm_noise_multiplier", boolean=True),
               choices=boolean_choice(reverse=True)),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), format_value=format_remove_path,
               confirm=confirm_checkpoints_or_none, cost=1.0, choices=lambda: ["None", *_checkpoint_titles()]),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    AxisOption("RNG source", str, apply_override("randn_source"), confirm=confirm_choices(_rng_sources),
               choices=_rng_sources),
    AxisOption("FP8 mode", str, apply_override("fp8_storage"), cost=0.9,
               confirm=unsupported("Serena keeps weights in their load precision (no FP8 storage)"),
               choices=lambda: ["Disable", "Enable for SDXL", "Enable"]),
    AxisOption("Size", str, apply_size, confirm=confirm_size),
]
"""Every axis type, in A1111 v1.10's order; extensions append theirs."""


def current_axis_options(is_img2img: bool) -> list[AxisOption]:
    """The axis types of one tab: plain `AxisOption`s and the tab's own subclasses, in list order."""
    return [opt for opt in axis_options
            if type(opt) is AxisOption or getattr(opt, "is_img2img", None) in (None, is_img2img)]


# --- values text → values -------------------------------------------------------------------------
_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
re_range = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
"""`start-end` or `start-end (+step)`: integers from start to end inclusive."""
re_range_float = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
"""`start-end (+step)` for decimals."""
re_range_count = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\[(\d+)\s*\])?\s*")
"""`start-end [count]`: count integers spread evenly from start to end."""
re_range_count_float = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\[(\d+(?:\.\d*)?)\s*\])?\s*")
"""`start-end [count]` for decimals."""


def _number(text: str, kind: Callable) -> Any:
    return kind(text.replace(" ", ""))


def _check_count(count: int, text: str) -> None:
    if count <= 0:
        raise _bad(f"range {text.strip()!r} has no values (a descending range needs a negative step, "
                   f"e.g. '5-1 (-1)')")
    if count > MAX_AXIS_VALUES:
        raise _bad(f"range {text.strip()!r} has {count} values, more than {MAX_AXIS_VALUES}")


def int_range(start: int, end: int, step: int, text: str = "") -> list[int]:
    """Integers from `start` towards `end` by `step`, `end` included when reached."""
    if step == 0:
        raise _bad(f"range {text.strip()!r} has a step of 0")
    values = range(start, end + (1 if step > 0 else -1), step)
    _check_count(len(values), text)
    return list(values)


def float_range(start: float, end: float, step: float, text: str = "") -> list[float]:
    """Decimals from `start` towards `end` by `step`, `end` included when reached (to 1e-9)."""
    if step == 0:
        raise _bad(f"range {text.strip()!r} has a step of 0")
    count = math.floor((end - start) / step + 1e-9) + 1
    _check_count(count, text)
    return [round(start + i * step, 10) for i in range(count)]


def linspace(start: float, end: float, count: int, text: str = "") -> list[float]:
    """`count` values spread evenly from `start` to `end`, both included."""
    _check_count(count, text)
    if count == 1:
        return [float(start)]
    return [start + (end - start) * i / (count - 1) for i in range(count)]


def _expand_values(values: Iterable[str], kind: Callable, step_range: re.Pattern, count_range: re.Pattern,
                   make_range: Callable) -> list[Any]:
    """Each value matching `step_range` (`a-b`, `a-b (+s)`, default step 1) expanded by
    `make_range`, each matching `count_range` (`a-b [n]`) spread by `linspace`, every number
    converted by `kind`; other values kept, blank strings dropped."""
    out: list[Any] = []
    for value in values:
        if not isinstance(value, str):
            out.append(value)
            continue
        if not value.strip():
            continue
        if m := step_range.fullmatch(value):
            step = _number(m.group(3), kind) if m.group(3) else kind(1)
            out += make_range(_number(m.group(1), kind), _number(m.group(2), kind), step, value)
        elif m := count_range.fullmatch(value):
            count = int(kind(m.group(3)))
            out += [kind(x) for x in linspace(_number(m.group(1), kind), _number(m.group(2), kind), count, value)]
        else:
            out.append(value)
    return out


def expand_int_values(values: Iterable[str]) -> list[Any]:
    """Each `a-b`, `a-b (+s)` or `a-b [n]` expanded to integers; other values kept (blank ones dropped)."""
    return _expand_values(values, int, re_range, re_range_count, int_range)


def expand_float_values(values: Iterable[str]) -> list[Any]:
    """Each `a-b (+s)` (step 1 if absent) or `a-b [n]` expanded to decimals; other values kept."""
    return _expand_values(values, float, re_range_float, re_range_count_float, float_range)


def axis_value_strings(opt: AxisOption, text: Any, dropdown: Any, csv_mode: bool) -> list:
    """The raw values of one axis: the dropdown list for a choice axis (unless `csv_mode` or the
    list is empty), else `opt.prepare(text)`, else the CSV values of `text`."""
    if opt.choices is not None and not csv_mode and dropdown:
        return list(dropdown)
    if isinstance(text, (list, tuple)):
        return [str(x) for x in text]
    if opt.prepare is not None:
        return list(opt.prepare(text or ""))
    return csv_string_to_list_strip(str(text or ""))


def parse_axis_values(opt: AxisOption, strings: list, name: str = "X") -> list:
    """The typed values of one axis (ranges expanded); `name` is for the error message."""
    if opt.label == "Nothing":
        return [0]
    if opt.type is int:
        strings = expand_int_values(strings)
    elif opt.type is float:
        strings = expand_float_values(strings)
    elif opt.type is str_permutations:
        strings = list(permutations(strings))
    if len(strings) > MAX_AXIS_VALUES:
        raise _bad(f"{name} values: {len(strings)} values, more than {MAX_AXIS_VALUES}")
    try:
        values = [opt.type(x) for x in strings]
    except (TypeError, ValueError) as e:
        bad = next((x for x in strings if not _converts(opt.type, x)), None)
        type_name = getattr(opt.type, "__name__", str(opt.type))
        raise _bad(f"{name} values: {bad!r} is not a valid {type_name} for axis {opt.label!r}") from e
    if not values:
        raise _bad(f"{name} values are empty for axis {opt.label!r}")
    return values


def _converts(kind: Callable, x: Any) -> bool:
    try:
        kind(x)
        return True
    except (TypeError, ValueError):
        return False


def resolve_axis(options: list[AxisOption], value: Any, name: str = "X") -> AxisOption:
    """The axis option an `x_type` argument means: an index into `options` (A1111) or a label."""
    if value is None or value == "":
        return options[0]
    index = None
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, float) and value.is_integer():
        index = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value)
    elif isinstance(value, str):
        for opt in options:
            if opt.label.lower() == value.strip().lower():
                return opt
    if index is not None and 0 <= index < len(options):
        return options[index]
    raise _bad(f"{name} type {value!r} is neither an axis index 0..{len(options) - 1} nor one of "
               f"{[o.label for o in options]}")


# --- the grid --------------------------------------------------------------------------------------
def processing_order(x_opt: AxisOption, y_opt: AxisOption, z_opt: AxisOption) -> tuple[str, str]:
    """(outermost, middle) loop axes: the costliest axis outermost when it alone is costliest,
    else Z then Y (A1111's choice), so a slow change (a checkpoint) happens as seldom as possible."""
    cost = {"x": x_opt.cost, "y": y_opt.cost, "z": z_opt.cost}
    top = max(cost.values())
    costliest = [a for a in "xyz" if cost[a] == top]
    first = costliest[0] if len(costliest) == 1 else "z"
    second = max((a for a in "zyx" if a != first), key=lambda a: cost[a])
    return first, second


def cell_order(nx: int, ny: int, nz: int, first: str, second: str) -> Iterator[tuple[int, int, int]]:
    """(ix, iy, iz) of every cell, `first` axis outermost, `second` in the middle."""
    sizes = {"x": nx, "y": ny, "z": nz}
    third = next(a for a in "xyz" if a not in (first, second))
    for a in range(sizes[first]):
        for b in range(sizes[second]):
            for c in range(sizes[third]):
                at = {first: a, second: b, third: c}
                yield at["x"], at["y"], at["z"]


def _annotated(grid: Image.Image, tiles: list[Image.Image], hor: list, ver: list, margin: int) -> Image.Image:
    width = max(t.width for t in tiles)
    height = max(t.height for t in tiles)
    return images.draw_grid_annotations(grid, width, height, hor, ver, margin)


def _labels(values: list) -> list[list[images.GridAnnotation]]:
    return [[images.GridAnnotation(str(v))] for v in values]


def tile_grids(tiles: list[Image.Image], nx: int, ny: int, x_labels: list, y_labels: list, z_labels: list,
               draw_legend: bool, margin_size: int) -> tuple[Image.Image, list[Image.Image]]:
    """(main grid, one grid per Z value) of the cells' images, X fastest; labelled with the legend."""
    per_z = nx * ny
    sub_grids = []
    for iz in range(len(tiles) // per_z):
        own = tiles[iz * per_z:(iz + 1) * per_z]
        grid = images.image_grid(own, rows=ny)
        sub_grids.append(_annotated(grid, own, _labels(x_labels), _labels(y_labels), margin_size)
                         if draw_legend else grid)
    main = images.image_grid(sub_grids, rows=1)
    if draw_legend:
        main = _annotated(main, sub_grids, _labels(z_labels), [[images.GridAnnotation()]], 0)
    return main, sub_grids


def draw_xyz_grid(p: Any, xs: list, ys: list, zs: list, x_labels: list, y_labels: list, z_labels: list,
                  cell: Callable[..., Processed], draw_legend: bool, include_lone_images: bool,
                  include_sub_grids: bool, first_axes_processed: str, second_axes_processed: str,
                  margin_size: int) -> Processed:
    """Run `cell(x, y, z, ix, iy, iz)` for every combination and tile the results (A1111 signature).

    Returns a `Processed` whose images are the main grid, one grid per Z value, then every cell's
    first image (X fastest); `infotexts` follow the images (the grids take their first cell's),
    `all_prompts` / `all_seeds` start at the per-Z grids (`index_of_first_image` is 1). A cell
    that made no image is black. `include_lone_images` / `include_sub_grids` are applied by the
    caller (`Script.run`), as in A1111.
    """
    nx, ny, nz = len(xs), len(ys), len(zs)
    shared.state.job_count = nx * ny * nz * p.n_iter
    results: list[Processed | None] = [None] * (nx * ny * nz)
    for ix, iy, iz in cell_order(nx, ny, nz, first_axes_processed, second_axes_processed):
        index = ix + iy * nx + iz * nx * ny
        shared.state.job = f"{index + 1} out of {len(results)}"
        results[index] = cell(xs[ix], ys[iy], zs[iz], ix, iy, iz)

    made = [r for r in results if r is not None and r.images]
    if not made:
        log.warning("X/Y/Z plot: no cell produced an image")
        return Processed(p, [])
    blank = made[0].images[0]
    tiles = [r.images[0] if r is not None and r.images else Image.new(blank.mode, blank.size) for r in results]
    main, sub_grids = tile_grids(tiles, nx, ny, x_labels, y_labels, z_labels, draw_legend, margin_size)

    def infotext(r: Processed | None) -> str:
        return r.infotexts[0] if r is not None and r.infotexts else ""

    firsts = [results[iz * nx * ny] for iz in range(nz)]
    result = copy(made[0])
    result.images = [main, *sub_grids, *tiles]
    result.infotexts = [infotext(results[0]), *[infotext(r) for r in firsts], *[infotext(r) for r in results]]
    result.all_prompts = [r.prompt if r is not None else p.prompt for r in [*firsts, *results]]
    result.all_seeds = [r.seed if r is not None else p.seed for r in [*firsts, *results]]
    result.index_of_first_image = 1
    return result


class SharedSettingsStackHelper:
    """Puts back, on exit, the options an axis wrote straight into `opts.data` (older extension
    axes do; Serena's own axes use the cell job's `override_settings`, which end with the job)."""

    def __enter__(self) -> SharedSettingsStackHelper:
        self.saved = dict(shared.opts.data)
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        data = shared.opts.data
        for key in list(data):
            if key not in self.saved:
                del data[key]
            elif data[key] != self.saved[key]:
                data[key] = self.saved[key]
        for key, value in self.saved.items():
            data.setdefault(key, value)


# --- the script ------------------------------------------------------------------------------------
@dataclass
class _Axis:
    """One axis of a run: its name ("X"), option, values, and the values text for the infotext."""

    name: str
    opt: AxisOption
    values: list
    text: str
    vary_seeds: bool


def _in_blocks() -> bool:
    from gradio.context import Context
    return Context.root_block is not None


class Script(scripts.Script):
    """The "X/Y/Z plot" selectable script."""

    def title(self) -> str:
        return "X/Y/Z plot"

    # --- UI ----------------------------------------------------------------------------------------
    def _axis_row(self, axis: str, labels: list[str], default: str) -> tuple:
        upper = axis.upper()
        with gr.Row():
            axis_type = gr.Dropdown(label=f"{upper} type", choices=labels, value=default, type="index",
                                    elem_id=self.elem_id(f"{axis}_type"))
            values = gr.Textbox(label=f"{upper} values", value="", lines=1, elem_id=self.elem_id(f"{axis}_values"))
            # custom values allowed: a pasted infotext may fill the list before the axis's choices arrive
            dropdown = gr.Dropdown(label=f"{upper} values", choices=[], value=[], visible=False, multiselect=True,
                                   interactive=True, allow_custom_value=True)
            fill = ToolButton(value=fill_values_symbol, elem_id=f"xyz_grid_fill_{axis}_tool_button", visible=False)
        return axis_type, values, dropdown, fill

    def ui(self, is_img2img: bool) -> list:
        self.current_axis_options = current_axis_options(is_img2img)
        labels = [opt.label for opt in self.current_axis_options]
        with gr.Row():
            with gr.Column(scale=19):
                x_row = self._axis_row("x", labels, labels[1])
                y_row = self._axis_row("y", labels, labels[0])
                z_row = self._axis_row("z", labels, labels[0])
        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                             elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary = [gr.Checkbox(label=f"Vary seeds for {a}", value=False, min_width=80,
                                        elem_id=self.elem_id(f"vary_seeds_{a.lower()}"),
                                        info=f"Use different seeds for images along {a} axis.") for a in "XYZ"]
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        with gr.Row(variant="compact", elem_id="swap_axes"):
            swaps = [gr.Button(value=f"Swap {a}/{b} axes", elem_id=f"{a.lower()}{b.lower()}_grid_swap_axes_button")
                     for a, b in (("X", "Y"), ("Y", "Z"), ("X", "Z"))]
        if _in_blocks():
            self._wire_events((x_row, y_row, z_row), swaps, csv_mode)
        self.infotext_fields = [
            field for axis, row in zip("XYZ", (x_row, y_row, z_row))
            for field in ((row[0], f"{axis} Type"), (row[1], f"{axis} Values"),
                          (row[2], lambda params, axis=axis: gr.update(
                              value=csv_string_to_list_strip(params.get(f"{axis} Values", "")))))]
        return [*x_row[:3], *y_row[:3], *z_row[:3], draw_legend, include_lone_images, include_sub_grids,
                no_fixed_seeds, *vary, margin_size, csv_mode]

    def _wire_events(self, rows: tuple, swaps: list, csv_mode: Any) -> None:
        """Swap buttons, the fill buttons and the text/dropdown switch of each axis."""
        options = self.current_axis_options

        def swap(type1, values1, dropdown1, type2, values2, dropdown2):
            return options[type2].label, values2, dropdown2, options[type1].label, values1, dropdown1

        for button, (a, b) in zip(swaps, ((0, 1), (1, 2), (0, 2))):
            args = [*rows[a][:3], *rows[b][:3]]
            button.click(swap, inputs=args, outputs=args)

        def fill(axis_type, csv):
            choices = options[axis_type].choices
            if choices is None:
                return gr.update(), gr.update()
            return (list_to_csv_string(choices()), gr.update()) if csv else (gr.update(), choices())

        def select(axis_type, values, dropdown, csv):
            choices = options[axis_type].choices
            if choices is None:
                return gr.update(visible=False), gr.update(visible=True, value=values), gr.update(visible=False)
            offered = choices()
            if csv and dropdown:
                values, dropdown = list_to_csv_string([x for x in dropdown if x in offered]), []
            elif not csv and values:
                values, dropdown = "", [x for x in csv_string_to_list_strip(values) if x in offered]
            return (gr.update(visible=True), gr.update(visible=csv, value=values),
                    gr.update(choices=offered, visible=not csv, value=dropdown))

        for axis_type, values, dropdown, fill_button in rows:
            fill_button.click(fill, inputs=[axis_type, csv_mode], outputs=[values, dropdown])
            axis_type.change(select, inputs=[axis_type, values, dropdown, csv_mode],
                             outputs=[fill_button, values, dropdown])

        def switch_mode(csv, *axes):
            return tuple(chain.from_iterable(select(*axes[i:i + 3], csv) for i in range(0, 9, 3)))

        csv_mode.change(switch_mode, inputs=[csv_mode, *[c for row in rows for c in row[:3]]],
                        outputs=[c for row in rows for c in (row[3], row[1], row[2])])

    # --- run ---------------------------------------------------------------------------------------
    def _axis(self, p: Any, name: str, opt: AxisOption, text: Any, dropdown: Any, csv_mode: bool,
              vary_seeds: bool) -> _Axis:
        """Parse and check one axis's values (nothing is generated yet)."""
        if opt.choices is not None and not csv_mode and dropdown:
            text = list_to_csv_string(dropdown)
        values = parse_axis_values(opt, axis_value_strings(opt, text, dropdown, csv_mode), name)
        key = getattr(opt.apply, "override_key", None)
        if key is not None and key not in shared.opts.data_labels:
            raise _bad(f"axis {opt.label!r} is not supported: Serena has no option {key!r}")
        if opt.confirm:
            try:
                opt.confirm(p, values)
            except errors.SerenaError:
                raise
            except (RuntimeError, ValueError, KeyError, TypeError) as e:
                raise _bad(f"{name} values for axis {opt.label!r}: {e}") from e
        _check_api_limits(p, opt, values, name)
        return _Axis(name, opt, values, text if isinstance(text, str) else list_to_csv_string(text or []),
                     vary_seeds)

    def run(self, p: Any, x_type: Any, x_values: Any, x_values_dropdown: Any, y_type: Any, y_values: Any,
            y_values_dropdown: Any, z_type: Any, z_values: Any, z_values_dropdown: Any, draw_legend: bool,
            include_lone_images: bool, include_sub_grids: bool, no_fixed_seeds: bool, vary_seeds_x: bool,
            vary_seeds_y: bool, vary_seeds_z: bool, margin_size: Any, csv_mode: bool) -> Processed:
        """Generate every cell through `process_images` and return the grid(s) and images."""
        options = current_axis_options(isinstance(p, processing.StableDiffusionProcessingImg2Img))
        self.current_axis_options = options
        if not no_fixed_seeds:
            processing.fix_seed(p)
        if not shared.opts.return_grid:
            p.batch_size = 1
        given = (("X", x_type, x_values, x_values_dropdown, vary_seeds_x),
                 ("Y", y_type, y_values, y_values_dropdown, vary_seeds_y),
                 ("Z", z_type, z_values, z_values_dropdown, vary_seeds_z))
        axes = [self._axis(p, name, resolve_axis(options, kind, name), text, dropdown, bool(csv_mode), bool(vary))
                for name, kind, text, dropdown, vary in given]
        _check_grid_size(p, axes)
        if not no_fixed_seeds:
            for axis in axes:
                axis.values = fix_axis_seeds(axis.opt, axis.values)
        _announce(p, axes)
        first, second = processing_order(*(a.opt for a in axes))
        grid_infotexts: list[str | None] = [None] * (1 + len(axes[2].values))

        def cell(x: Any, y: Any, z: Any, ix: int, iy: int, iz: int) -> Processed:
            return self._cell(p, axes, (x, y, z), (ix, iy, iz), grid_infotexts, bool(no_fixed_seeds))

        with SharedSettingsStackHelper():
            processed = draw_xyz_grid(
                p, xs=axes[0].values, ys=axes[1].values, zs=axes[2].values,
                x_labels=[axes[0].opt.format_value(p, axes[0].opt, x) for x in axes[0].values],
                y_labels=[axes[1].opt.format_value(p, axes[1].opt, y) for y in axes[1].values],
                z_labels=[axes[2].opt.format_value(p, axes[2].opt, z) for z in axes[2].values],
                cell=cell, draw_legend=bool(draw_legend), include_lone_images=bool(include_lone_images),
                include_sub_grids=bool(include_sub_grids), first_axes_processed=first,
                second_axes_processed=second, margin_size=int(margin_size or 0))
        if not processed.images:
            return processed
        return _finish(p, processed, grid_infotexts, len(axes[2].values), bool(include_lone_images),
                       bool(include_sub_grids))

    def _cell(self, p: Any, axes: list[_Axis], values: tuple, at: tuple, grid_infotexts: list,
              no_fixed_seeds: bool) -> Processed:
        """One cell: a copy of the job with the three values applied, run by `process_images`."""
        if shared.state.interrupted or shared.state.stopping_generation:
            return Processed(p, [], p.seed, "")
        pc = cell_job(p, axes, values, at)
        try:
            res = processing.process_images(pc)
        except errors.Interrupted:
            res = Processed(p, [], p.seed, "")
        except errors.SerenaError:
            raise
        except Exception as e:  # A1111: a failing cell is reported and left blank, the plot goes on
            errors.display(e, "generating image for xyz plot")
            res = Processed(p, [], p.seed, "")
        ix, iy, iz = at
        if ix == 0 and iy == 0 and pc.all_prompts:
            self._grid_infotexts(pc, axes, iz, grid_infotexts, no_fixed_seeds)
        return res

    def _grid_infotexts(self, pc: Any, axes: list[_Axis], iz: int, grid_infotexts: list,
                        no_fixed_seeds: bool) -> None:
        """The infotexts of Z value `iz`'s grid (Script, X/Y keys) and of the main grid (+ Z keys)."""
        params = dict(pc.extra_generation_params)
        params["Script"] = self.title()
        for axis in axes[:2]:
            params.update(axis_infotext(axis, no_fixed_seeds))
        with shared.opts.override(pc.override_settings):
            pc.extra_generation_params = params
            grid_infotexts[1 + iz] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)
            if iz == 0:
                pc.extra_generation_params = {**params, **axis_infotext(axes[2], no_fixed_seeds)}
                grid_infotexts[0] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)


def axis_infotext(axis: _Axis, no_fixed_seeds: bool) -> dict[str, str]:
    """`X Type`, `X Values` (and `Fixed X Values` for a fixed seed axis); nothing for Nothing."""
    if axis.opt.label == "Nothing":
        return {}
    params = {f"{axis.name} Type": axis.opt.label, f"{axis.name} Values": axis.text}
    if axis.opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
        params[f"Fixed {axis.name} Values"] = ", ".join(str(v) for v in axis.values)
    return params


def cell_job(p: Any, axes: list[_Axis], values: tuple, at: tuple) -> Any:
    """A copy of `p` with each axis's value applied and, with "Vary seeds", the seed moved along."""
    pc = copy(p)
    pc.styles = list(pc.styles or [])
    pc.override_settings = dict(pc.override_settings or {})
    pc.extra_generation_params = dict(pc.extra_generation_params or {})
    pc.comments = dict(pc.comments or {})
    for axis, value in zip(axes, values):
        axis.opt.apply(pc, value, axis.values)
    stride = 1
    for axis, index in zip(axes, at):
        if axis.vary_seeds and isinstance(pc.seed, int) and pc.seed != -1:  # -1 stays random
            pc.seed += index * stride
        stride *= len(axis.values) if axis.vary_seeds else 1
    return pc


def fix_axis_seeds(opt: AxisOption, values: list) -> list:
    """Seed / Var. seed values of -1 (or empty) become random seeds, so every cell uses the same one."""
    if opt.label not in ("Seed", "Var. seed"):
        return values
    return [random.randrange(4294967294) if v is None or v == "" or v == -1 else v for v in values]


def _check_grid_size(p: Any, axes: list[_Axis]) -> None:
    cells = math.prod(len(a.values) for a in axes)
    grid_mp = round(cells * p.width * p.height / 1_000_000)
    limit = shared.opts.img_max_size_mp
    if grid_mp >= limit:
        raise _bad(f"the grid would be too large ({grid_mp} megapixels for {cells} cells); "
                   f"img_max_size_mp is {limit}")


def _check_api_limits(p: Any, opt: AxisOption, values: list, name: str) -> None:
    """An API job's cells keep to the request limits the API checks on the request itself."""
    if not getattr(p, "is_api", False):
        return
    if opt.label in ("Steps", "Hires steps"):
        limit = int(shared.opts.api_max_steps)
        for v in values:
            if v > limit:
                raise _bad(f"{name} values: {opt.label} {v} exceeds api_max_steps={limit}")
    elif opt.label == "Size":
        limit = int(shared.opts.api_max_pixels)
        for v in values:
            w, h = parse_size(v)
            if w * h > limit:
                raise _bad(f"{name} values: size {v} exceeds api_max_pixels={limit}")


def _announce(p: Any, axes: list[_Axis]) -> None:
    """Progress totals for the whole plot and `state.xyz_plot_x/y/z` (A1111 sets these)."""
    counts = [len(a.values) for a in axes]
    cells = math.prod(counts)
    steps = next((sum(a.values) * cells // len(a.values) for a in axes if a.opt.label == "Steps"), p.steps * cells)
    if isinstance(p, StableDiffusionProcessingTxt2Img) and p.enable_hr:
        hires = next((sum(a.values) * cells // len(a.values) for a in axes if a.opt.label == "Hires steps"), None)
        steps += hires if hires is not None else (p.hr_second_pass_steps * cells if p.hr_second_pass_steps else steps)
    steps *= p.n_iter
    per_cell = p.n_iter * p.batch_size
    log.info("X/Y/Z plot will create %d images on %d %dx%d grid%s%s. (Total steps to process: %d)",
             cells * per_cell, counts[2], counts[0], counts[1], "s" if counts[2] > 1 else "",
             f"; {per_cell} images per cell" if per_cell > 1 else "", steps)
    shared.total_tqdm.updateTotal(steps)
    state = shared.state
    state.xyz_plot_x, state.xyz_plot_y, state.xyz_plot_z = (AxisInfo(a.opt, a.values) for a in axes)


def _finish(p: Any, processed: Processed, grid_infotexts: list, z_count: int, include_lone_images: bool,
            include_sub_grids: bool) -> Processed:
    """Grid infotexts in place, the images asked for kept, the grids saved (A1111's `xyz_grid` name)."""
    for i, text in enumerate(grid_infotexts):
        if text is not None:
            processed.infotexts[i] = text
    if not include_lone_images:
        processed.images = processed.images[:1 + z_count]
    if shared.opts.grid_save and not p.do_not_save_grid:
        with shared.opts.override(p.override_settings):
            saved = 1 + z_count if include_sub_grids and z_count > 1 else 1
            for g in range(saved):
                entry = max(g - 1, 0)  # all_prompts / all_seeds start at the per-Z grids
                images.save_image(processed.images[g], p.outpath_grids, "xyz_grid", info=processed.infotexts[g],
                                  extension=shared.opts.grid_format, prompt=processed.all_prompts[entry],
                                  seed=processed.all_seeds[entry], grid=True, p=processed)
    if not include_sub_grids:
        del processed.images[1:1 + z_count]
        del processed.infotexts[1:1 + z_count]
        del processed.all_prompts[:z_count]
        del processed.all_seeds[:z_count]
    return processed
