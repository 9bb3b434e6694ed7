"""Saving images and grids, file naming, and the PIL helpers img2img needs (spec §8).

``save_image`` keeps A1111's signature because scripts and extensions call it. Every file it
writes goes through :mod:`modules.fileio`, so a reader watching the folder sees a file either
complete or not at all. The infotext is embedded by :mod:`modules.infotext_utils`, the one home
of that format.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import math
import os
import re
import string
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Callable, IO, NamedTuple

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from modules import errors, fileio, infotext_utils

log = logging.getLogger(__name__)

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
INVALID_FILENAME_CHARS_UNIX = "/"
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
DEFAULT_MAX_FILENAME_PART_LENGTH = 128

# A1111 kept these in `modules.images`; extensions still import them from here.
read_info_from_image = infotext_utils.read_info_from_image
IGNORED_INFO_KEYS = infotext_utils.IGNORED_INFO_KEYS

# Separators of [prompt_words]: whitespace and ASCII punctuation except the backslash. A1111 pastes
# string.punctuation unescaped into a character class, where "\]" reads as an escaped "]", so a
# backslash never separates words there (it is later sanitised to "_" like any reserved character).
re_nonletters = re.compile(r"[\s" + re.escape(string.punctuation.replace("\\", "")) + r"]+")
re_pattern = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
re_pattern_arg = re.compile(r"(.*)<([^>]*)>$")


class _SkipPrecedingText:
    """Marker a tag returns to expand to nothing and also drop the literal text before it."""

    def __repr__(self) -> str:
        return "NOTHING_AND_SKIP_PREVIOUS_TEXT"


NOTHING_AND_SKIP_PREVIOUS_TEXT = _SkipPrecedingText()


def _opts() -> Any:
    from modules import shared
    return shared.opts


def _cmd_opt(name: str, default: Any) -> Any:
    from modules import shared
    return getattr(shared.cmd_opts, name, default)


# --- file names --------------------------------------------------------------------------------------
def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """Make ``text`` safe inside a file name (spec §8 "Sanitisation").

    Reserved characters become ``_`` (only ``/`` with ``--unix-filenames-sanitization``), leading
    spaces go, the part is cut to ``--filenames-max-length`` (128), then trailing spaces and dots go.
    """
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    invalid = INVALID_FILENAME_CHARS_UNIX if _cmd_opt("unix_filenames_sanitization", False) else INVALID_FILENAME_CHARS
    text = text.translate({ord(c): "_" for c in invalid})
    limit = int(_cmd_opt("filenames_max_length", DEFAULT_MAX_FILENAME_PART_LENGTH))
    text = text.lstrip(INVALID_FILENAME_PREFIX)[:limit]
    return text.rstrip(INVALID_FILENAME_POSTFIX)


def _p_attr(p: Any, name: str, default: Any = None) -> Any:
    return getattr(p, name, default) if p is not None else default


@functools.lru_cache(maxsize=1)
def _zone_names_by_lowercase() -> dict[str, str]:
    """Every IANA zone name this system knows, keyed by its lowercase form.

    ``Factory`` and ``localtime`` are left out: they are files of the zone database, not zones, and
    pytz (which A1111 asks) does not list them, so there they mean local time like any unknown name.
    """
    names = zoneinfo.available_timezones() - {"Factory", "localtime"}
    return {name.lower(): name for name in names}


def _time_zone(name: str) -> datetime.tzinfo | None:
    """The zone ``[datetime<fmt><zone>]`` names, or None (local time) when it names none.

    A1111 asks pytz, which reads ``utc`` in any case, accepts ASCII names only, turns ``_plus_`` and
    ``_minus_`` into ``+`` and ``-``, then matches the name case-insensitively (``asia/tokyo``).
    """
    if name.upper() == "UTC":
        return datetime.timezone.utc
    if not name.isascii():
        return None
    canonical = _zone_names_by_lowercase().get(name.replace("_plus_", "+").replace("_minus_", "-").lower())
    if canonical is None:
        return None
    try:
        return zoneinfo.ZoneInfo(canonical)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


class FilenameGenerator:
    """Expands ``[tag]`` patterns for directory and file names (spec §8 "Pattern tags").

    A tag may carry arguments as ``<…>`` suffixes, e.g. ``[datetime<%Y%m%d><UTC>]`` or
    ``[prompt_hash<12>]``. A tag that is unknown or cannot be computed (for example ``[steps]``
    without a processing object) is written back as its name in brackets, without its arguments
    (``[image_hash<10>]`` without an image gives ``[image_hash]``), as A1111 does.
    """

    default_time_format = "%Y%m%d%H%M%S"

    replacements: dict[str, Callable[..., Any]] = {}
    """Tags extensions add or replace, as in A1111: `FilenameGenerator.replacements["tag"] =
    lambda self, *args: ...` (the function gets the generator, then the tag's `<…>` arguments).
    They take precedence over the built-in tags of the same name."""

    def __init__(self, p: Any, seed: Any, prompt: str | None, image: Image.Image | None,
                 zip: bool = False, basename: str = ""):
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename
        self.builtin_tags: dict[str, Callable[..., Any]] = {
            "basename": lambda: self.basename or "img",
            "seed": lambda: self.seed if self.seed is not None else "",
            "seed_first": self._seed_first,
            "seed_last": self._seed_last,
            "steps": lambda: _p_attr(self.p, "steps"),
            "cfg": lambda: _p_attr(self.p, "cfg_scale"),
            "width": lambda: self.image.width if self.image is not None else None,
            "height": lambda: self.image.height if self.image is not None else None,
            "styles": self._styles,
            "sampler": lambda: self.p and sanitize_filename_part(self.p.sampler_name, replace_spaces=False),
            "sampler_scheduler": lambda: self.p and self._sampler_scheduler(True),
            "scheduler": lambda: self.p and self._sampler_scheduler(False),
            "model_hash": self._model_hash,
            "model_name": self._model_name,
            "date": lambda: datetime.datetime.now().strftime("%Y-%m-%d"),
            "datetime": self._datetime,
            "job_timestamp": self._job_timestamp,
            "prompt_hash": lambda *a: self._string_hash(self.prompt, *a),
            "negative_prompt_hash": lambda *a: self.p and self._string_hash(self.p.negative_prompt, *a),
            "full_prompt_hash": lambda *a: self.p and self._string_hash(f"{self.p.prompt} {self.p.negative_prompt}", *a),
            "prompt": lambda: sanitize_filename_part(self.prompt),
            "prompt_no_styles": self._prompt_no_styles,
            "prompt_spaces": lambda: sanitize_filename_part(self.prompt, replace_spaces=False),
            "prompt_words": self._prompt_words,
            "batch_number": self._batch_number,
            "batch_size": lambda: _p_attr(self.p, "batch_size"),
            "generation_number": self._generation_number,
            "hasprompt": self._hasprompt,
            "clip_skip": lambda: _opts().CLIP_stop_at_last_layers,
            "denoising": self._denoising,
            "user": lambda: _p_attr(self.p, "user"),
            "vae_filename": self._vae_filename,
            "none": lambda: "",
            "image_hash": self._image_hash,
        }

    def tag_function(self, name: str) -> Callable[..., Any] | None:
        """What expands `[name]`: an extension's class-level replacement, else the built-in tag."""
        added = type(self).replacements.get(name)
        if added is not None:
            return functools.partial(added, self)
        return self.builtin_tags.get(name)

    # --- tags ------------------------------------------------------------------------------------
    def _seed_first(self) -> Any:
        if self.p is None:
            return None
        return self.seed if self.p.batch_size == 1 else self.p.all_seeds[0]

    def _seed_last(self) -> Any:
        if self.p is None:
            return None
        return NOTHING_AND_SKIP_PREVIOUS_TEXT if self.p.batch_size == 1 else self.p.all_seeds[-1]

    def _styles(self) -> str | None:
        if self.p is None or self.p.styles is None:  # A1111 writes the tag back then
            return None
        names = [s for s in (self.p.styles or []) if s != "None"]
        return sanitize_filename_part(", ".join(names) or "None", replace_spaces=False)

    def _sampler_scheduler(self, with_sampler: bool) -> Any:
        """``Sampler Scheduler`` or ``Scheduler``; "Automatic" resolves to the sampler's default."""
        if not hasattr(self.p, "scheduler") or not hasattr(self.p, "sampler_name"):
            return NOTHING_AND_SKIP_PREVIOUS_TEXT
        scheduler = scheduler_label(self.p.sampler_name, self.p.scheduler)
        text = f"{self.p.sampler_name} {scheduler}" if with_sampler else scheduler
        return sanitize_filename_part(text, replace_spaces=False)

    def _model_hash(self) -> str | None:
        value = _p_attr(self.p, "sd_model_hash")
        if value is None:
            from modules import shared
            value = getattr(shared.sd_model, "sd_model_hash", None)
        return value

    def _model_name(self) -> str | None:
        name = _p_attr(self.p, "sd_model_name")
        if name is None:
            from modules import shared
            info = getattr(shared.sd_model, "sd_checkpoint_info", None)
            name = getattr(info, "name_for_extra", None)
        return sanitize_filename_part(name, replace_spaces=False)

    def _job_timestamp(self) -> str | None:
        value = _p_attr(self.p, "job_timestamp")
        if value is None:
            from modules import shared
            value = getattr(shared.state, "job_timestamp", None)
        return value

    def _datetime(self, *args: str) -> str | None:
        fmt = args[0] if args and args[0] != "" else self.default_time_format
        zone = _time_zone(args[1]) if len(args) > 1 else None
        now = datetime.datetime.now().astimezone(zone)
        try:
            text = now.strftime(fmt)
        except (ValueError, TypeError):
            text = now.strftime(self.default_time_format)
        return sanitize_filename_part(text, replace_spaces=False)

    def _string_hash(self, text: str | None, *args: str) -> str | None:
        if text is None:
            return None
        length = int(args[0]) if args and args[0] != "" else 8
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def _image_hash(self, *args: str) -> str | None:
        if self.image is None:
            return None
        length = int(args[0]) if args and args[0] != "" else None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[:length]

    def _prompt_no_styles(self) -> str | None:
        if self.p is None or self.prompt is None:
            return None
        from modules import shared
        database = getattr(shared, "prompt_styles", None)
        texts = database.get_style_prompts(self.p.styles or []) if database is not None else []
        text = self.prompt
        for style in texts:
            if not style:
                continue
            for part in style.split("{prompt}"):
                text = text.replace(part, "").replace(", ,", ",").strip().strip(",")
            text = text.replace(style, "").strip().strip(",").strip()
        return sanitize_filename_part(text, replace_spaces=False)

    def _prompt_words(self) -> str | None:
        words = [w for w in re_nonletters.split(self.prompt or "") if w] or ["empty"]
        count = int(_opts().directories_max_prompt_words)
        return sanitize_filename_part(" ".join(words[:count]), replace_spaces=False)

    def _batch_number(self) -> Any:
        if self.p is None:
            return None
        if self.p.batch_size == 1 or self.zip:
            return NOTHING_AND_SKIP_PREVIOUS_TEXT
        return self.p.batch_index + 1

    def _generation_number(self) -> Any:
        if self.p is None:
            return None
        if (self.p.n_iter == 1 and self.p.batch_size == 1) or self.zip:
            return NOTHING_AND_SKIP_PREVIOUS_TEXT
        return self.p.iteration * self.p.batch_size + self.p.batch_index + 1

    def _hasprompt(self, *args: str) -> str | None:
        """Each ``<word|otherwise>``: ``word`` (lowercased) if the prompt holds it, else ``otherwise``.

        As in A1111 the argument is split at every ``|`` and only the first two pieces count, so
        ``<a|b|c>`` writes ``b`` when the prompt lacks ``a``; the match ignores case.
        """
        if self.p is None or self.prompt is None:
            return None
        lower = self.prompt.lower()
        out = ""
        for arg in args:
            if arg == "":
                continue
            pieces = arg.split("|")
            expected = pieces[0].lower()
            out += expected if expected in lower else (pieces[1] if len(pieces) > 1 else "")
        return sanitize_filename_part(out)

    def _denoising(self) -> Any:
        strength = _p_attr(self.p, "denoising_strength")
        return strength if strength else NOTHING_AND_SKIP_PREVIOUS_TEXT

    def _vae_filename(self) -> str:
        try:
            from modules import sd_vae
            loaded = getattr(sd_vae, "loaded_vae_file", None)
        except ImportError:
            loaded = None
        if loaded is None:
            return "NoneType"
        parts = os.path.basename(loaded).split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]

    # --- expansion ---------------------------------------------------------------------------------
    def apply(self, x: str) -> str:
        """Expand every ``[tag]`` of ``x``; see the class docstring."""
        res = ""
        for m in re_pattern.finditer(x):
            text, tag = m.groups()
            if tag is None:
                res += text
                continue
            name, args = tag, []
            while (arg_match := re_pattern_arg.match(name)) is not None:
                name, arg = arg_match.groups()
                args.insert(0, arg)
            fun = self.tag_function(name.lower())
            replacement = None
            if fun is not None:
                try:
                    replacement = fun(*args)
                except Exception as e:  # A1111 writes any failing tag back as text; so does Serena
                    log.warning("File name tag [%s] with arguments %r could not be expanded: %s", name, args, e)
                    replacement = None
            if replacement is NOTHING_AND_SKIP_PREVIOUS_TEXT:
                continue
            res += text + (str(replacement) if replacement is not None else f"[{name}]")
        return res


def scheduler_label(sampler_name: str, scheduler: str | None) -> str:
    """The scheduler as file names show it: "Automatic" becomes the sampler's default, capitalised."""
    scheduler = scheduler or "Automatic"
    if scheduler == "Automatic":
        try:
            from modules import sd_samplers
            config = sd_samplers.find_sampler_config(sampler_name)
        except (ImportError, AttributeError, errors.SerenaError):
            config = None
        scheduler = (getattr(config, "options", None) or {}).get("scheduler", "Automatic")
    return str(scheduler).capitalize()


def get_next_sequence_number(path: str, basename: str) -> int:
    """One more than the largest number leading the names in ``path`` (after ``basename-``); 0 if none.

    A name counts as A1111 counts it: drop the prefix and the extension, take the text before the
    first ``-``, and read it with ``int()`` — so ``" 7"``, ``"+3"``, ``"1_0"`` (10) and other Unicode
    decimal digits count, while ``"²"`` or ``"x"`` is skipped rather than failing the save.
    """
    result = -1
    prefix = f"{basename}-" if basename != "" else ""
    if not os.path.isdir(path):
        return 0
    for name in os.listdir(path):
        if not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
        try:
            result = max(int(first), result)
        except ValueError:
            continue
    return result + 1


# --- writing -----------------------------------------------------------------------------------------
def _write_image(f: IO[bytes], image: Image.Image, geninfo: str | None, extension: str,
                 pnginfo: dict[str, Any], section: str) -> None:
    """Encode ``image`` into ``f`` with its infotext, as A1111's save_image_with_geninfo does."""
    opts = _opts()
    pil_format = infotext_utils.normalize_format(extension)
    if pil_format == "PNG":
        items = dict(pnginfo)
        if opts.enable_pnginfo:
            items[section] = geninfo
            chunks = infotext_utils.png_info({k: str(v) for k, v in items.items() if v is not None})
        else:
            chunks = None
        image.save(f, format="PNG", pnginfo=chunks)
        return
    image = infotext_utils.to_rgb_for_lossy(image)
    kwargs: dict[str, Any] = {"quality": int(opts.jpeg_quality)}
    if pil_format == "WEBP":
        kwargs["lossless"] = bool(opts.webp_lossless)
    if opts.enable_pnginfo and geninfo is not None:
        kwargs["exif"] = infotext_utils.exif_with_user_comment(geninfo)
    image.save(f, format=pil_format, **kwargs)


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str, extension: str | None = None,
                            existing_pnginfo: dict[str, Any] | None = None,
                            pnginfo_section_name: str = "parameters") -> None:
    """Write ``image`` atomically to ``filename`` with ``geninfo`` embedded (format from ``extension``)."""
    ext = extension or os.path.splitext(filename)[1]
    fileio.atomic_write(filename, lambda f: _write_image(
        f, image, geninfo, ext, existing_pnginfo or {}, pnginfo_section_name))


@dataclass
class ImageSaveParams:
    """What ``before_image_saved`` callbacks may change: the image, the file name, the text chunks."""

    image: Image.Image
    p: Any
    filename: str
    pnginfo: dict[str, Any] = field(default_factory=dict)


def _callbacks() -> Any:
    try:
        from modules import script_callbacks
    except ImportError:
        return None
    return script_callbacks


def _file_decoration(namegen: FilenameGenerator, seed: Any, short_filename: bool, suffix: str) -> str:
    opts = _opts()
    if short_filename or seed is None:
        pattern = ""
    elif opts.save_to_dirs:
        pattern = opts.samples_filename_pattern or "[seed]"
    else:
        pattern = opts.samples_filename_pattern or "[seed]-[prompt_spaces]"
    return namegen.apply(pattern) + suffix


def _choose_filename(path: str, basename: str, decoration: str, extension: str) -> str:
    """``NNNNN-decoration.ext`` (``basename-NNNN-…`` with a basename), or without the counter."""
    add_number = _opts().save_images_add_number or decoration == ""
    if not add_number:
        return os.path.join(path, f"{decoration}.{extension}")
    if decoration != "":
        decoration = f"-{decoration}"
    count = get_next_sequence_number(path, basename)
    fullfn = ""
    for i in range(500):
        number = f"{count + i:05}" if basename == "" else f"{basename}-{count + i:04}"
        fullfn = os.path.join(path, f"{number}{decoration}.{extension}")
        if not os.path.exists(fullfn):
            break
    return fullfn


def _final_name(filename: str) -> str:
    """Honour ``save_images_replace_action``: replace, or add ``-1``, ``-2`` … to a taken name."""
    if _opts().save_images_replace_action == "Replace":
        return filename
    stem, ext = os.path.splitext(filename)
    n = 0
    while os.path.exists(filename):
        n += 1
        filename = f"{stem}-{n}{ext}"
    return filename


def _limit_name_length(fullfn: str, folder: str) -> str:
    stem, ext = os.path.splitext(fullfn)
    if hasattr(os, "statvfs"):
        limit = os.statvfs(folder).f_namemax
        head, tail = os.path.split(stem)
        stem = os.path.join(head, tail[:limit - max(4, len(ext))])
    return stem + ext


def _ensure_inside(root: str, target: str, field: str) -> None:
    """Refuse a file-name pattern that would put a file outside the output folder `root`."""
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(target)]) != base:
        raise errors.InvalidParameter(
            f"{field} leads outside the output folder {root!r}: {target!r}", field=field)


def save_image(image: Image.Image, path: str, basename: str, seed: Any = None, prompt: str | None = None,
               extension: str = "png", info: str | None = None, short_filename: bool = False,
               no_prompt: bool = False, grid: bool = False, pnginfo_section_name: str = "parameters",
               p: Any = None, existing_info: dict[str, Any] | None = None, forced_filename: str | None = None,
               suffix: str = "", save_to_dirs: bool | None = None) -> tuple[str, str | None]:
    """Save an image into ``path`` the A1111 way (spec §8 "Sample file naming").

    Args:
        image: the image.
        path: the output folder (e.g. ``outputs/txt2img-images``).
        basename: file name prefix; ``""`` for samples, ``"grid"`` for grids.
        seed, prompt: for the file name patterns.
        extension: png, jpg, jpeg or webp (JPEG above 65535 px or WebP above 16383 px falls back to png).
        info: the infotext to embed (PNG chunk ``pnginfo_section_name``, or EXIF UserComment).
        short_filename: no pattern part in the name, only the counter.
        no_prompt: do not use the per-date (pattern) subfolder.
        grid: decides the subfolder option (``grid_save_to_dirs`` instead of ``save_to_dirs``).
        p: the processing object for the pattern tags, or None.
        existing_info: other PNG text chunks to write.
        forced_filename: the name without extension; skips patterns and counter.
        suffix: appended to the pattern part, e.g. ``-before-highres-fix``.
        save_to_dirs: None means the options decide.

    Returns:
        ``(fullfn, txt_fullfn)``: the image path, and the ``.txt`` sidecar path when ``save_txt``.

    Raises:
        errors.InvalidParameter: an unknown extension. Nothing is left on disk when writing fails.
    """
    opts = _opts()
    extension = extension.lower().lstrip(".")
    infotext_utils.normalize_format(extension)
    if (extension in ("jpg", "jpeg") and max(image.size) > 65535) or (extension == "webp" and max(image.size) > 16383):
        extension = "png"
    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)

    if save_to_dirs is None:
        save_to_dirs = (grid and opts.grid_save_to_dirs) or (not grid and opts.save_to_dirs and not no_prompt)
    root = path
    if save_to_dirs:
        dirname = namegen.apply(opts.directories_filename_pattern or "[prompt_words]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, dirname)
    _ensure_inside(root, path, "directories_filename_pattern")
    os.makedirs(path, exist_ok=True)

    if forced_filename is None:
        decoration = _file_decoration(namegen, seed, short_filename, suffix)
        fullfn = _choose_filename(path, basename, decoration, extension)
    else:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")
    _ensure_inside(root, fullfn, "samples_filename_pattern")

    pnginfo = dict(existing_info or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    callbacks = _callbacks()
    params = getattr(callbacks, "ImageSaveParams", ImageSaveParams)(image, p, fullfn, pnginfo)
    if callbacks is not None and hasattr(callbacks, "before_image_saved_callback"):
        callbacks.before_image_saved_callback(params)
    image, info = params.image, params.pnginfo.get(pnginfo_section_name)
    fullfn = _final_name(_limit_name_length(params.filename, path))
    params.filename = fullfn
    stem, ext = os.path.splitext(fullfn)
    extra = {k: v for k, v in params.pnginfo.items() if k != pnginfo_section_name}
    save_image_with_geninfo(image, info, fullfn, ext, extra, pnginfo_section_name)
    image.already_saved_as = fullfn  # type: ignore[attr-defined]

    _export_for_4chan(image, fullfn, info, extra, pnginfo_section_name)

    txt_fullfn = None
    if opts.save_txt and info is not None:
        txt_fullfn = f"{stem}.txt"
        fileio.atomic_write_text(txt_fullfn, f"{info}\n")
    if callbacks is not None and hasattr(callbacks, "image_saved_callback"):
        callbacks.image_saved_callback(params)
    return fullfn, txt_fullfn


def _export_for_4chan(image: Image.Image, fullfn: str, info: str | None, extra: dict[str, Any],
                      section: str) -> str | None:
    """Write a ``.jpg`` copy of a large image (option ``export_for_4chan``); returns its path.

    Large means a side above ``target_side_length`` (the copy is scaled to fit) or a file above
    ``img_downscale_threshold`` MB. A file that is already a JPEG gets no copy (A1111 would
    overwrite the original with the downscaled copy).
    """
    opts = _opts()
    stem, ext = os.path.splitext(fullfn)
    if not opts.export_for_4chan or ext.lower() in (".jpg", ".jpeg"):
        return None
    limit = float(opts.target_side_length)
    oversize = image.width > limit or image.height > limit
    if not oversize and os.stat(fullfn).st_size <= float(opts.img_downscale_threshold) * 1024 * 1024:
        return None
    if oversize:
        if image.width > image.height:
            size = round(limit), round(image.height * limit / image.width)
        else:
            size = round(image.width * limit / image.height), round(limit)
        try:
            image = image.resize(size, LANCZOS)
        except ValueError:
            image = image.resize(size)
    target = _final_name(f"{stem}.jpg")
    save_image_with_geninfo(image, info, target, ".jpg", extra, section)
    return target


# --- grids and PIL helpers --------------------------------------------------------------------------
def grid_rows(count: int, batch_size: int = 1) -> int:
    """Rows for a grid of ``count`` images from the option ``n_rows`` (-1 auto, 0 batch size)."""
    opts = _opts()
    if opts.n_rows > 0:
        rows = int(opts.n_rows)
    elif opts.n_rows == 0:
        rows = batch_size
    elif opts.grid_prevent_empty_spots:
        rows = max(1, math.floor(math.sqrt(count)))
        while count % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """Tile images into one RGB grid, row by row, on ``grid_background_color``.

    Cells are the size of the largest image; smaller images are centred in their cell.

    Raises:
        errors.InvalidParameter: no images, or ``rows`` below 1.
    """
    if not imgs:
        raise errors.InvalidParameter("image_grid needs at least one image, got 0", field="imgs")
    if rows is None:
        rows = grid_rows(len(imgs), batch_size)
    if rows < 1:
        raise errors.InvalidParameter(f"image_grid rows must be at least 1, got {rows}", field="rows")
    rows = min(rows, len(imgs))
    cols = math.ceil(len(imgs) / rows)

    callbacks = _callbacks()
    if callbacks is not None and hasattr(callbacks, "ImageGridLoopParams") and hasattr(callbacks, "image_grid_callback"):
        params = callbacks.ImageGridLoopParams(imgs, cols, rows)
        callbacks.image_grid_callback(params)
        imgs, cols, rows = params.imgs, params.cols, params.rows

    w = max(img.width for img in imgs)
    h = max(img.height for img in imgs)
    color = ImageColor.getcolor(_opts().grid_background_color, "RGB")
    grid = Image.new("RGB", (cols * w, rows * h), color=color)
    for i, img in enumerate(imgs):
        x = (i % cols) * w + (w - img.width) // 2
        y = (i // cols) * h + (h - img.height) // 2
        grid.paste(img, box=(x, y))
    return grid


def get_font(fontsize: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The grid-annotation font at ``fontsize``: the TrueType file of the option ``font`` if set and
    readable, else Pillow's bundled scalable font (the same on every machine)."""
    size = max(int(fontsize), 1)
    path = getattr(_opts(), "font", "") or ""
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            log.warning("font %r could not be read; using the built-in font", path)
    return ImageFont.load_default(size=size)


class GridAnnotation:
    """One line of text around a grid: ``is_active`` False draws it greyed and struck through."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size: tuple[int, int] | None = None
        self.allowed_width = 0

    def __repr__(self) -> str:
        return f"GridAnnotation({self.text!r}, is_active={self.is_active})"


def _wrap_words(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: float) -> list[str]:
    """Greedy word wrap of ``text`` to ``max_width`` pixels (a single long word stays on its line)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if not current or draw.textlength(candidate, font=font) <= max_width:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines


def _color_option(name: str, default: str) -> tuple:
    value = getattr(_opts(), name, default) or default
    return ImageColor.getcolor(value, "RGB") if isinstance(value, str) else tuple(value)


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0) -> Image.Image:
    """A grid of ``width``×``height`` cells with labels: ``hor_texts[c]`` above column c and
    ``ver_texts[r]`` left of row r, ``margin`` pixels between cells.

    Labels use a font of size (width + height) // 25, wrapped to the cell width (column labels) or
    to the left band, which is 3/4 of a cell wide when any row label has text. Inactive labels
    are grey and struck through. The input lists are not modified.

    Raises:
        errors.InvalidParameter: the number of label lists does not match the grid's columns/rows.
    """
    cols = im.width // width
    rows = im.height // height
    if cols != len(hor_texts) or rows != len(ver_texts):
        raise errors.InvalidParameter(
            f"grid of {cols}x{rows} cells needs {cols} column and {rows} row label lists, "
            f"got {len(hor_texts)} and {len(ver_texts)}", field="hor_texts")

    fontsize = (width + height) // 25
    spacing = fontsize // 2
    font = get_font(fontsize)
    active = _color_option("grid_text_active_color", "#000000")
    inactive = _color_option("grid_text_inactive_color", "#999999")
    background = _color_option("grid_background_color", "#ffffff")
    has_row_text = any(a.text for labels in ver_texts for a in labels)
    pad_left = width * 3 // 4 if has_row_text else 0

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def lay_out(labels: list[GridAnnotation], allowed: int) -> list[GridAnnotation]:
        out = []
        for label in labels:
            for text in _wrap_words(measure, label.text, font, allowed):
                line = GridAnnotation(text, label.is_active)
                left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=font)
                line.size = (right - left, bottom - top)
                line.allowed_width = allowed
                out.append(line)
        return out

    columns = [lay_out(labels, width) for labels in hor_texts]
    row_labels = [lay_out(labels, pad_left) for labels in ver_texts]
    column_heights = [sum(a.size[1] + spacing for a in lines) - spacing for lines in columns]
    row_heights = [sum(a.size[1] for a in lines) for lines in row_labels]
    pad_top = max(column_heights) + spacing * 2 if sum(column_heights) > 0 else 0

    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       background)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    draw = ImageDraw.Draw(result)

    def draw_lines(center_x: float, top: float, lines: list[GridAnnotation]) -> None:
        for line in lines:
            line_font, size = font, fontsize
            while size > 1 and draw.multiline_textbbox((0, 0), line.text, font=line_font)[2] > line.allowed_width:
                size -= 1
                line_font = get_font(size)
            middle = top + line.size[1] / 2
            draw.multiline_text((center_x, middle), line.text, font=line_font, fill=active if line.is_active else inactive,
                                anchor="mm", align="center")
            if not line.is_active:
                half = line.size[0] // 2
                draw.line((center_x - half, middle, center_x + half, middle), fill=inactive, width=4)
            top += line.size[1] + spacing

    for col, lines in enumerate(columns):
        draw_lines(pad_left + (width + margin) * col + width / 2, pad_top / 2 - column_heights[col] / 2, lines)
    for row, lines in enumerate(row_labels):
        draw_lines(pad_left / 2, pad_top + (height + margin) * row + height / 2 - row_heights[row] / 2, lines)
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0) -> Image.Image:
    """Label a prompt-matrix grid: ``all_prompts[1:]`` are the optional parts; the first half (rounded
    up) goes across the columns, the rest down the rows. Column/row index bit i says whether part i
    is in that cell's prompt (shown active) or not (struck through)."""
    parts = all_prompts[1:]
    split = math.ceil(len(parts) / 2)
    across, down = parts[:split], parts[split:]

    def labels(texts: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, is_active=bool(pos & (1 << i))) for i, text in enumerate(texts)]
                for pos in range(1 << len(texts))]

    return draw_grid_annotations(im, width, height, labels(across), labels(down), margin)


class Grid(NamedTuple):
    """Overlapping tiles of one image (SD upscale): ``tiles`` is ``[[y, tile_h, [[x, tile_w, tile], …]], …]``."""

    tiles: list
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length``: evenly spread, the last one flush with the end."""
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1) if count > 1 else 0
    starts = []
    for i in range(count):
        start = int(i * step)
        starts.append(length - tile if start + tile >= length else start)
    return starts


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Cut ``image`` into ``tile_w``×``tile_h`` tiles overlapping by at least ``overlap`` pixels.

    Raises:
        errors.InvalidParameter: ``overlap`` not below both tile sides.
    """
    if not 0 <= overlap < min(tile_w, tile_h):
        raise errors.InvalidParameter(
            f"split_grid overlap must be in [0, {min(tile_w, tile_h)}), got {overlap}", field="overlap")
    w, h = image.size
    rows = []
    for y in _tile_starts(h, tile_h, overlap):
        row = [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))] for x in _tile_starts(w, tile_w, overlap)]
        rows.append([y, tile_h, row])
    return Grid(rows, tile_w, tile_h, w, h, overlap)


def _ramp(width: int, height: int, horizontal: bool, overlap: int) -> Image.Image:
    """An "L" mask rising from 0 to ~255 across ``overlap`` pixels, left→right or top→bottom."""
    mask = Image.new("L", (width, height))
    for i in range(overlap):
        value = int(i * 255 / overlap)
        box = (i, 0, i + 1, height) if horizontal else (0, i, width, i + 1)
        mask.paste(value, box)
    return mask


def combine_grid(grid: Grid) -> Image.Image:
    """Reassemble :func:`split_grid` tiles, cross-fading each overlap with a linear ramp."""
    ov = grid.overlap
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        mask_w = _ramp(ov, h, True, ov)
        for x, w, tile in row:
            if x == 0:
                line.paste(tile, (0, 0))
                continue
            line.paste(tile.crop((0, 0, ov, h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((ov, 0, w, h)), (x + ov, 0))
        if y == 0:
            combined.paste(line, (0, 0))
            continue
        combined.paste(line.crop((0, 0, line.width, ov)), (0, y), mask=_ramp(grid.image_w, ov, False, ov))
        combined.paste(line.crop((0, ov, line.width, h)), (0, y + ov))
    return combined


def _resize(im: Image.Image, w: int, h: int, upscaler_name: str | None, plain: bool = False) -> Image.Image:
    """Resize to exactly ``w``×``h``; enlarging goes through the named upscaler first (not ``plain``)."""
    if plain or upscaler_name is None or upscaler_name == "None" or im.mode == "L":
        return im.resize((w, h), resample=LANCZOS)
    from modules import upscaling
    return upscaling.upscale_image(im, upscaler_name, size=(w, h))


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None, force_RGBA: bool = False) -> Image.Image:
    """img2img resize modes: 0 just resize, 1 crop and resize, 2 and 3 resize and fill.

    Mode 1 scales to cover ``width``×``height`` and crops the centre. Mode 2 scales to fit inside
    and fills the two empty bands by stretching the image's outermost row or column. Mode 3
    ("just resize (latent upscale)") resizes pixels as mode 2 does, as in A1111: its latent
    upscale happens in img2img, not here.
    ``upscaler_name`` None means the option ``upscaler_for_img2img``. ``force_RGBA`` (A1111's
    name) resizes with Lanczos only and pastes modes 1 to 3 on an RGBA canvas, keeping alpha.

    Raises:
        errors.InvalidParameter: an unknown mode or a non-positive size.
    """
    if width <= 0 or height <= 0:
        raise errors.InvalidParameter(f"resize_image needs a positive size, got {width}x{height}", field="width")
    if resize_mode not in (0, 1, 2, 3):
        raise errors.InvalidParameter(
            f"resize_mode must be 0 (just resize), 1 (crop and resize), 2 (resize and fill) or 3 (latent upscale:"
            f" resize and fill), got {resize_mode!r}", field="resize_mode")
    upscaler_name = upscaler_name or _opts().upscaler_for_img2img
    if resize_mode == 0:
        return _resize(im, width, height, upscaler_name, plain=force_RGBA)
    ratio, src_ratio = width / height, im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = _resize(im, src_w, src_h, upscaler_name, plain=force_RGBA)
    res = Image.new("RGBA" if force_RGBA else "RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if resize_mode != 1:
        _fill_bands(res, resized, width, height, src_w, src_h, ratio, src_ratio)
    return res


def _fill_bands(res: Image.Image, resized: Image.Image, width: int, height: int, src_w: int, src_h: int,
                ratio: float, src_ratio: float) -> None:
    """Mode 2: stretch the outer row (or column) of ``resized`` over the empty bands of ``res``."""
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            res.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                      box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            res.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill + src_w, 0))


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """Replace transparency with ``bgcolor`` (e.g. ``"#ffffff"``); always returns RGB."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_png_transparency(image: Image.Image) -> Image.Image:
    """An RGB/P image with a ``transparency`` chunk becomes RGBA so the transparency is kept."""
    if image.mode not in ("RGB", "P") or not isinstance(image.info.get("transparency"), bytes):
        return image
    return image.convert("RGBA")


def fix_image(image: Image.Image | None) -> Image.Image | None:
    """Apply the EXIF orientation and PNG transparency of an uploaded image."""
    if image is None:
        return None
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):
        pass
    return fix_png_transparency(image)
