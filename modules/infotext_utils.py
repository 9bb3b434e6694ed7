"""The "parameters" text (infotext): building it, parsing it, and carrying it inside image files.

This is the one home of the format (spec §3). Processing decides *which* keys go in and in what
order; this module decides how they are written and read back. The guarantee the rest of Serena
relies on: for every infotext processing produces, ``build -> parse -> build`` gives back the
same text (see ``test/test_infotext.py``).

Files carry the text as a PNG text chunk named ``parameters`` (tEXt, or iTXt when the text is not
Latin-1 — Pillow picks), or as the EXIF UserComment of JPEG/WebP files, encoded as piexif's
"unicode" UserComment: the 8-byte header ``UNICODE\\0`` and then UTF-16 big-endian.
"""
from __future__ import annotations

import io
import json
import math
import re
from typing import Any, Callable, Iterable

from PIL import Image, PngImagePlugin

from modules import errors

# --- EXIF constants ------------------------------------------------------------------------------
EXIF_IFD = 0x8769
"""Tag of the pointer to the Exif sub-IFD."""
USER_COMMENT = 0x9286
"""Tag of UserComment inside the Exif sub-IFD."""

_UC_UNICODE = b"UNICODE\0"
_UC_ASCII = b"ASCII\0\0\0"
_UC_JIS = b"JIS\0\0\0\0\0"
_UC_UNDEFINED = b"\0" * 8

# Keys of `image.info` that are file-format bookkeeping, not generation info (A1111's list).
IGNORED_INFO_KEYS = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
    "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity",
    "photoshop",
})

# --- parsing patterns (spec §3, step 3 and 4) ------------------------------------------------------
_KEY = r"\w[\w \-/]+"
_VALUE = r'"(?:\\.|[^\\"])+"|[^,]*'
re_param_code = r"\s*(" + _KEY + r"):\s*(" + _VALUE + r")(?:,|$)"
re_param = re.compile(re_param_code)
"""A ``Key: value`` pair on the parameter line; A1111's pattern."""
_re_entry = re.compile(r"\s*(" + _KEY + r")(?::\s*(" + _VALUE + r"))?(?:,|$)")
"""A pair or a bare key (an entry whose value equalled its key when it was written)."""
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

StyleExtractor = Callable[[str, str], "tuple[list[str], str, str]"]
style_extractor: StyleExtractor | None = None
"""Hook for spec §3 step 6: ``(prompt, negative) -> (found_styles, prompt, negative)`` with the
found styles' text removed. When unset, ``shared.prompt_styles.extract_styles_from_prompt`` is used
if the styles database exists; otherwise no styles are inferred."""


# --- quoting ---------------------------------------------------------------------------------------
def _needs_quotes(text: str) -> bool:
    """Whether a value must be written as a JSON string.

    A1111 quotes a value when it contains ``,``, ``:`` or a newline. Serena additionally quotes the
    few values A1111's own parser would read back wrongly (empty, surrounded by whitespace, or
    already wrapped in double quotes): A1111 cannot produce a different reading of those, so this
    only changes text A1111 itself could not round-trip.
    """
    if any(c in text for c in ",:\n"):
        return True
    if text == "" or text != text.strip():
        return True
    return len(text) >= 2 and text[0] == '"' and text[-1] == '"'


def quote(text: Any) -> str:
    """Write a value the way the infotext needs it: as is, or as a JSON string (non-ASCII kept)."""
    text = str(text)
    if not _needs_quotes(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo :func:`quote`: a JSON string is decoded; anything else (or bad JSON) is returned as is."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        return text
    return decoded if isinstance(decoded, str) else text


# --- building ----------------------------------------------------------------------------------------
def build_parameters_line(params: dict[str, Any]) -> str:
    """The last line: ``Key: value`` entries joined by ``, `` in the caller's order.

    None values are left out; a value whose string form equals its key is written as the bare key.
    """
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        parts.append(key if key == value else f"{key}: {quote(value)}")
    return ", ".join(parts)


def build_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Assemble an infotext (spec §3 format).

    Args:
        prompt: the positive prompt; may contain newlines.
        negative_prompt: written on a ``Negative prompt:`` line only when non-empty.
        params: ordered ``key -> value``; see :func:`build_parameters_line`.

    Returns:
        ``prompt`` [``\\nNegative prompt: negative``] ``\\n`` parameter line, trimmed.
    """
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{build_parameters_line(params)}".strip()


# --- parsing -----------------------------------------------------------------------------------------
def parse_parameters_line(line: str) -> dict[str, str]:
    """Read the parameter line into ``key -> str`` (``WxH`` values split into ``Key-1``/``Key-2``).

    Quoted values are JSON-decoded. A bare key reads as ``key -> key``. An entry with an empty
    value is dropped, as A1111 drops it.
    """
    res: dict[str, str] = {}
    for m in _re_entry.finditer(line):
        key, value = m.group(1), m.group(2)
        if value is None:
            res.setdefault(key, key)
            continue
        if not value:
            continue
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = re_imagesize.match(value)
        if size is not None:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value
    return res


def _split_prompts(lines: Iterable[str]) -> tuple[str, str]:
    """Spec §3 step 2: lines before ``Negative prompt:`` are the prompt, the rest the negative."""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if not in_negative and line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):]
            line = line[1:] if line.startswith(" ") else line
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative)


def parse_generation_parameters(text: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """Parse an infotext into A1111's dict (spec §3 parsing steps 1–11).

    Values read from the text stay strings; the injected defaults keep A1111's types (for example
    ``Hires resize-1`` is the int 0 when absent). ``Prompt`` and ``Negative prompt`` are always set.

    Args:
        text: the infotext.
        skip_fields: keys to drop at the end; None means the option ``infotext_skip_pasting``.
    """
    *lines, last = text.strip().split("\n")
    if len(re_param.findall(last)) < 3:
        lines.append(last)
        last = ""
    res: dict[str, Any] = parse_parameters_line(last)
    prompt, negative = _split_prompts(lines)

    prompt, negative = _infer_styles(res, prompt, negative)
    res["Prompt"] = prompt
    res["Negative prompt"] = negative
    _inject_defaults(res, prompt, negative)
    backcompat(res)

    if skip_fields is None:
        skip_fields = list(_opt("infotext_skip_pasting", []) or [])
    for key in skip_fields:
        res.pop(key, None)
    return res


def _opt(name: str, default: Any) -> Any:
    """Read an option, falling back to `default` when the option does not exist."""
    from modules import shared
    try:
        return getattr(shared.opts, name)
    except AttributeError:
        return default


def _infer_styles(res: dict[str, Any], prompt: str, negative: str) -> tuple[str, str]:
    """Spec §3 step 6: remove known styles from the prompts and report them as ``Styles array``."""
    mode = _opt("infotext_styles", "Apply if any")
    extractor = style_extractor
    if extractor is None:
        from modules import shared
        database = getattr(shared, "prompt_styles", None)
        extractor = getattr(database, "extract_styles_from_prompt", None)
    if mode == "Ignore" or extractor is None:
        return prompt, negative
    found, prompt_ns, negative_ns = extractor(prompt, negative)
    if ("Hires prompt" in res or "Hires negative prompt" in res) and _hires_styles_recorded(res):
        hr_prompt = res.get("Hires prompt", prompt)
        hr_negative = res.get("Hires negative prompt", negative)
        hr_found, hr_prompt_ns, hr_negative_ns = extractor(hr_prompt, hr_negative)
        if hr_found != found:
            return prompt, negative
        res["Hires prompt"] = "" if hr_prompt_ns == prompt_ns else hr_prompt_ns
        res["Hires negative prompt"] = "" if hr_negative_ns == negative_ns else hr_negative_ns
    if (mode == "Apply if any" and found) or mode == "Apply":
        res["Styles array"] = found
    return prompt_ns, negative_ns


def _hires_styles_recorded(res: dict[str, Any]) -> bool:
    """Whether the writer applied styles to the hires prompts too (A1111 after v1.8.0-139)."""
    from packaging import version
    ver = parse_version(res.get("Version"))
    return ver is None or ver > version.parse("1.8.0-139")


_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_DEFAULTS_AFTER_HIRES: tuple[tuple[str, Any], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def _inject_defaults(res: dict[str, Any], prompt: str, negative: str) -> None:
    """Spec §3 steps 8–9: fill what an infotext leaves out because it was at its default."""
    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, value in _DEFAULTS:
        res.setdefault(key, value)
    restore_old_hires_fix_params(res)
    for key, value in _DEFAULTS_AFTER_HIRES:
        res.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if "Emphasis" not in res and (_uses_emphasis(prompt) or _uses_emphasis(negative)):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)


def _uses_emphasis(text: str) -> bool:
    """Whether attention parsing gives any chunk a weight other than 1 (A1111's test)."""
    try:
        from modules import prompt_parser
        parse = prompt_parser.parse_prompt_attention
    except (ImportError, AttributeError):
        return re.search(r"(?<!\\)[(\[]", text) is not None
    return any(weight != 1.0 and chunk != "BREAK" for chunk, weight in parse(text))


def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """The first-pass size the pre-1.0 hires fix used: ~512² pixels, sides rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def restore_old_hires_fix_params(res: dict[str, Any]) -> None:
    """Convert the legacy ``First pass size`` (and the old width/height option) to today's keys."""
    if _opt("use_old_hires_fix_width_height", False):
        hires_w, hires_h = int(res.get("Hires resize-1", 0)), int(res.get("Hires resize-2", 0))
        if hires_w and hires_h:
            res["Size-1"], res["Size-2"] = hires_w, hires_h
            return
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(first_w), int(first_h)
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    if first_w == 0 or first_h == 0:
        first_w, first_h = old_hires_fix_first_pass_dimensions(width, height)
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


# --- version-based backward compatibility (spec §3 step 10) -----------------------------------------
def parse_version(text: str | None):
    """``Version`` value -> comparable version, or None when absent or unreadable."""
    from packaging import version
    if text is None:
        return None
    m = re.match(r"([^-]+-[^-]+)-.*", text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except version.InvalidVersion:
        return None


def backcompat(res: dict[str, Any]) -> None:
    """Add the flags that make an old infotext reproduce the old behaviour (option auto_backcompat)."""
    from packaging import version
    if not _opt("auto_backcompat", True):
        return
    ver = parse_version(res.get("Version"))
    if ver is None:
        return
    if ver < version.parse("1.6.0") and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < version.parse("1.6.0") and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < version.parse("v1.7.0-225"):
        res["Downcast alphas_cumprod"] = True
    if ver < version.parse("1.8.0") and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


# --- images ------------------------------------------------------------------------------------------
def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment in piexif's "unicode" form: ``UNICODE\\0`` + UTF-16 big-endian."""
    return _UC_UNICODE + text.encode("utf-16-be")


def decode_user_comment(data: bytes | str) -> str:
    """Read an EXIF UserComment whatever its declared character code.

    Raises:
        ValueError: the 8-byte character-code header is not one EXIF defines.
    """
    if isinstance(data, str):
        return data
    header, body = data[:8], data[8:]
    if header == _UC_UNICODE:
        if body[:2] == b"\xff\xfe":
            return body[2:].decode("utf-16-le", errors="replace")
        if body[:2] == b"\xfe\xff":
            body = body[2:]
        return body.decode("utf-16-be", errors="replace")
    if header == _UC_ASCII or header == _UC_UNDEFINED:
        return body.decode("ascii", errors="replace").rstrip("\0")
    if header == _UC_JIS:
        return body.decode("shift_jis", errors="replace")
    raise ValueError(f"EXIF UserComment has an unknown character code header {header!r}")


def exif_with_user_comment(text: str) -> bytes:
    """EXIF block (``Exif\\0\\0`` + TIFF) holding only ``text`` as UserComment."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = encode_user_comment(text)
    return exif.tobytes()


def read_user_comment(exif_bytes: bytes) -> str | None:
    """The UserComment of raw EXIF bytes, or None when absent or unreadable."""
    exif = Image.Exif()
    try:
        exif.load(exif_bytes)
        comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return None
    if comment is None:
        return None
    try:
        return decode_user_comment(comment)
    except ValueError:
        return comment.decode("utf8", errors="ignore")


_NOVELAI_SAMPLERS = {
    "k_euler_ancestral": "Euler a", "k_euler": "Euler", "k_lms": "LMS", "k_heun": "Heun",
    "k_dpm_2": "DPM2", "k_dpm_2_ancestral": "DPM2 a", "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M", "k_dpmpp_sde": "DPM++ SDE", "ddim": "DDIM", "plms": "PLMS",
}


def _novelai_infotext(items: dict[str, Any], image: Image.Image) -> str | None:
    """Convert NovelAI's ``Description``/``Comment`` chunks into an infotext; None if malformed."""
    try:
        info = json.loads(items["Comment"])
        sampler = _NOVELAI_SAMPLERS.get(info["sampler"], "Euler a")
        return (f"{items['Description']}\nNegative prompt: {info['uc']}\n"
                f"Steps: {info['steps']}, Sampler: {sampler}, CFG scale: {info['scale']}, "
                f"Seed: {info['seed']}, Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337")
    except (KeyError, TypeError, json.JSONDecodeError):
        return None


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """The infotext stored in an image and the image's other info items.

    Looks at the PNG ``parameters`` chunk, then the EXIF UserComment (JPEG/WebP), then a GIF
    ``comment``, then NovelAI's chunks. Format bookkeeping keys (dpi, exif, icc_profile, …) are
    removed from the returned items.
    """
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        comment = read_user_comment(items["exif"])
        if comment:
            geninfo = comment
    elif "comment" in items:
        comment = items["comment"]
        geninfo = comment.decode("utf8", errors="ignore") if isinstance(comment, bytes) else comment
    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)
    if items.get("Software") == "NovelAI":
        converted = _novelai_infotext(items, image)
        if converted is not None:
            geninfo = converted
    return geninfo, items


def normalize_format(fmt: str) -> str:
    """``png``/``jpg``/``jpeg``/``webp`` (any case, optional dot) -> Pillow's format name.

    Raises:
        errors.InvalidParameter: any other format, naming it.
    """
    name = fmt.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
    if name not in formats:
        raise errors.InvalidParameter(
            f"Invalid image format {fmt!r}: expected one of png, jpg, jpeg, webp", field="samples_format")
    return formats[name]


def png_info(items: dict[str, Any]) -> PngImagePlugin.PngInfo | None:
    """PNG text chunks for every string item (tEXt, or iTXt for non-Latin-1 text); None if none."""
    info = PngImagePlugin.PngInfo()
    used = False
    for key, value in items.items():
        if isinstance(key, str) and isinstance(value, str):
            info.add_text(key, value)
            used = True
    return info if used else None


def to_rgb_for_lossy(image: Image.Image) -> Image.Image:
    """JPEG/WebP cannot hold alpha or palettes the way Serena writes them: convert to RGB."""
    if image.mode in ("RGBA", "P", "LA", "PA"):
        return image.convert("RGB")
    if image.mode == "I;16":
        return image.point(lambda v: v * (255 / 65535)).convert("RGB")
    return image


def image_to_bytes(image: Image.Image, fmt: str, infotext: str | None, *, quality: int | None = None) -> bytes:
    """Encode an image the way the API returns it (spec §1.1 "Image output").

    PNG keeps every string item of ``image.info`` as a text chunk and stores ``infotext`` as
    ``parameters``. JPEG/WebP are converted to RGB when needed and carry ``infotext`` (or an empty
    text) as EXIF UserComment.

    Args:
        image: the image.
        fmt: png, jpg, jpeg or webp.
        infotext: the parameters text; None keeps whatever ``image.info['parameters']`` holds.
        quality: JPEG/WebP quality; None means the option ``jpeg_quality``.

    Raises:
        errors.InvalidParameter: unknown format.
    """
    pil_format = normalize_format(fmt)
    if quality is None:
        quality = int(_opt("jpeg_quality", 80))
    if infotext is None:
        infotext = image.info.get("parameters")
    buffer = io.BytesIO()
    if pil_format == "PNG":
        items = {k: v for k, v in (image.info or {}).items() if k != "parameters"}
        if infotext is not None:
            items["parameters"] = infotext
        image.save(buffer, format="PNG", pnginfo=png_info(items))
    else:
        image = to_rgb_for_lossy(image)
        image.save(buffer, format=pil_format, exif=exif_with_user_comment(infotext or ""), quality=quality)
    return buffer.getvalue()


# --- paste registries extensions use (A1111's `generation_parameters_copypaste` names) ------------------
class PasteField(tuple):
    """`(component, target)`: paste the infotext value `target` (a key, or a function of the parsed
    dict) into `component`; `api` names the API field it corresponds to."""

    def __new__(cls, component: Any, target: Any, *, api: str | None = None):
        return super().__new__(cls, (component, target))

    def __init__(self, component: Any, target: Any, *, api: str | None = None):
        super().__init__()
        self.component = component
        self.target = target
        self.api = api


class ParamBinding:
    """A "send to <tab>" button registered by an extension (`register_paste_params_button`)."""

    def __init__(self, paste_button: Any, tabname: str, source_text_component: Any = None,
                 source_image_component: Any = None, source_tabname: str | None = None,
                 override_settings_component: Any = None, paste_field_names: list[str] | None = None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


paste_fields: dict[str, dict[str, Any]] = {}
"""tab name → {"init_img", "fields" (list of PasteField / (component, target)), "override_settings_component",
"paste_field_names"}; filled by the UI and by extensions through `add_paste_fields`."""
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


def add_paste_fields(tabname: str, init_img: Any, fields: list | None, override_settings_component: Any = None) -> None:
    """Register the components a pasted infotext fills on tab `tabname` (an extension's own tab too)."""
    fields = [f if isinstance(f, PasteField) else PasteField(*f) for f in (fields or [])]
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component,
                             "paste_field_names": [f.api for f in fields if f.api]}


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


def create_override_settings_dict(text_pairs: Iterable[str]) -> dict[str, Any]:
    """Settings from "Infotext key: value" strings (the override-settings dropdown's values):
    each key that an option records in infotexts (its `infotext` label) becomes that option,
    with the value cast to the option's type. Other keys are ignored."""
    from modules import shared
    params: dict[str, str] = {}
    for pair in text_pairs or []:
        key, sep, value = str(pair).partition(":")
        if sep:
            params[key.strip()] = value.strip()
    result: dict[str, Any] = {}
    for name, info in shared.opts.data_labels.items():
        label = getattr(info, "infotext", None)
        if label and label in params:
            try:
                result[name] = shared.opts.cast_value(name, params[label])
            except ValueError:
                continue
    return result
