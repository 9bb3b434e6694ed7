"""Upscalers: the built-in pixel upscalers, model upscalers, latent upscale modes and the extras operation.

A1111 ships "None", "Lanczos" and "Nearest" without any model; model upscalers (ESRGAN,
Real-ESRGAN, SwinIR, DAT, HAT, ScuNET) are the files in A1111's folders under ``models/``, found
and run by `modules.upscaler_spandrel`. The list is rescanned when one of those folders changes
(or the models directory does), so a file dropped in is usable without a restart; extensions add
their own with :func:`register_upscaler`. Names, the ``/sdapi/v1/upscalers`` shape, the
``// 8 * 8`` target rounding and the extras infotext are A1111's (spec §1.2, §1.7).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image

from modules import errors
from modules.util import plaintext_to_html  # noqa: F401  (one home; A1111 exports it from here too)

if TYPE_CHECKING:  # annotations only: upscaler_spandrel imports torch, loaded when a model upscaler is listed
    from modules.upscaler_spandrel import ModelFile

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

UpscaleStep = Callable[[Image.Image, float], Image.Image]
"""One pass of an upscaler: ``(image, scale) -> image`` (may return the input unchanged)."""


@dataclass(frozen=True)
class UpscalerData:
    """One entry of the upscaler list (A1111's ``shared.sd_upscalers`` item).

    Attributes:
        name: the display name used in requests (``hr_upscaler``, ``upscaler_1``, …).
        step: one pass of the upscaler; see :data:`UpscaleStep`.
        model_name, model_path, model_url: as ``/sdapi/v1/upscalers`` reports them.
        scale: the model's native factor (4 for the built-ins, as in A1111).
    """

    name: str
    step: UpscaleStep
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float = 4

    def api_dict(self) -> dict[str, Any]:
        """The ``/sdapi/v1/upscalers`` item."""
        return {"name": self.name, "model_name": self.model_name, "model_path": self.model_path,
                "model_url": self.model_url, "scale": self.scale}

    def upscale(self, img: Image.Image, scale: float) -> Image.Image:
        """Scale ``img`` by ``scale`` to a size rounded down to a multiple of 8 (A1111's Upscaler.upscale).

        The step runs up to three times while the image is still below the target (at least once
        for ``scale == 1``, so a 1× restoration model such as ScuNET runs), then a Lanczos resize
        lands exactly on the target.
        """
        from modules import shared
        dest_w = int((img.width * scale) // 8 * 8)
        dest_h = int((img.height * scale) // 8 * 8)
        if dest_w <= 0 or dest_h <= 0:
            raise errors.InvalidParameter(
                f"upscaling {img.width}x{img.height} by {scale} gives an empty image ({dest_w}x{dest_h})",
                field="scale")
        for i in range(3):
            if img.width >= dest_w and img.height >= dest_h and (i > 0 or scale != 1):
                break
            if getattr(shared.state, "interrupted", False):
                break
            shape = img.size
            img = self.step(img, scale)
            if img.size == shape:
                break
        if img.size != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), resample=LANCZOS)
        return img

    # A1111's UpscalerData fields, read by extensions: `upscaler.scaler.upscale(img, scale,
    # upscaler.data_path)` is how scripts (Ultimate SD upscale, SD upscale) run a chosen upscaler.
    @property
    def data_path(self) -> str | None:
        """The model file (None for the built-ins), A1111's `data_path`."""
        return self.model_path

    @property
    def local_data_path(self) -> str | None:
        return self.model_path

    @property
    def model(self) -> None:
        """A1111 keeps a loaded model here; Serena loads it per call, so it is always None."""
        return None

    @property
    def scaler(self) -> ScalerView:
        """A1111's `Upscaler` object behind this entry."""
        return ScalerView(self)


@dataclass(frozen=True)
class ScalerView:
    """What A1111's `Upscaler` offers extensions, over one :class:`UpscalerData`: `upscale(img, scale,
    selected_model)` (the `// 8 * 8` target, several passes) and `do_upscale(img, selected_model)`
    (one pass at the model's own factor). `selected_model` names the model in A1111; here the entry
    already is one model, so it is ignored."""

    data: UpscalerData

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def scalers(self) -> list[UpscalerData]:
        return [self.data]

    def upscale(self, img: Image.Image, scale: float, selected_model: Any = None) -> Image.Image:
        return self.data.upscale(img, scale)

    def do_upscale(self, img: Image.Image, selected_model: Any = None) -> Image.Image:
        return self.data.step(img, self.data.scale)


def _step_none(img: Image.Image, scale: float) -> Image.Image:
    return img


def _step_lanczos(img: Image.Image, scale: float) -> Image.Image:
    return img.resize((int(img.width * scale), int(img.height * scale)), resample=LANCZOS)


def _step_nearest(img: Image.Image, scale: float) -> Image.Image:
    return img.resize((int(img.width * scale), int(img.height * scale)), resample=NEAREST)


BUILTIN_NAMES = ("None", "Lanczos", "Nearest")
_upscalers: list[UpscalerData] = [
    UpscalerData("None", _step_none),
    UpscalerData("Lanczos", _step_lanczos),
    UpscalerData("Nearest", _step_nearest),
]
"""Every upscaler, in ``/sdapi/v1/upscalers`` order: the built-ins, then models by name. Read it as
``upscaling.sd_upscalers`` (A1111's name), which rescans the model folders first."""
_discovered: set[str] = set()
_scan_signature: tuple | None = None
_scan_lock = threading.RLock()


def __getattr__(name: str) -> Any:
    if name == "sd_upscalers":
        refresh_model_upscalers()
        return _upscalers
    raise AttributeError(f"module 'modules.upscaling' has no attribute {name!r}")


def register_upscaler(data: UpscalerData) -> None:
    """Add (or replace, by name) a model upscaler; built-ins stay first, the rest sorted by name.

    Raises:
        errors.InvalidParameter: the name is a built-in's.
    """
    if data.name in BUILTIN_NAMES:
        raise errors.InvalidParameter(f"upscaler name {data.name!r} is reserved for a built-in", field="name")
    with _scan_lock:
        models = [u for u in _upscalers[3:] if u.name != data.name] + [data]
        _upscalers[3:] = sorted(models, key=lambda u: u.name.lower())


def _model_upscaler(model: ModelFile) -> UpscalerData:
    """The list entry of a model file; its step loads (and caches) the model on first use."""
    from modules import upscaler_spandrel
    return UpscalerData(model.name, functools.partial(upscaler_spandrel.upscale_step, model),
                        model_name=model.model_name, model_path=model.path, scale=model.scale)


def refresh_model_upscalers(force: bool = False) -> None:
    """Rescan the model upscaler folders when they (or the models directory, or the enabled-model
    options) changed since the last scan, or always with ``force``.

    A name found twice (the same stem in two folders) keeps its first file, in folder order.
    """
    global _scan_signature
    from modules import shared, upscaler_spandrel
    models_path = shared.data_paths.models_path
    enabled = {"realesrgan_enabled_models": list(getattr(shared.opts, "realesrgan_enabled_models", None) or []),
               "dat_enabled_models": list(getattr(shared.opts, "dat_enabled_models", None) or [])}
    signature = (upscaler_spandrel.folders_signature(models_path), repr(sorted(enabled.items())))
    with _scan_lock:
        if not force and signature == _scan_signature:
            return
        found = upscaler_spandrel.discover(models_path, enabled,
                                           list_hidden=bool(getattr(shared.opts, "list_hidden_files", True)))
        kept = [u for u in _upscalers[3:] if u.name not in _discovered]
        names = {u.name for u in kept} | set(BUILTIN_NAMES)
        added = []
        for model in found:
            if model.name not in names:
                names.add(model.name)
                added.append(_model_upscaler(model))
        _upscalers[3:] = sorted(kept + added, key=lambda u: u.name.lower())
        _discovered.clear()
        _discovered.update(u.name for u in added)
        _scan_signature = signature


def list_upscalers() -> list[dict[str, Any]]:
    """The ``/sdapi/v1/upscalers`` response."""
    refresh_model_upscalers()
    return [u.api_dict() for u in _upscalers]


def upscaler_names() -> list[str]:
    """Every upscaler name, in list order."""
    refresh_model_upscalers()
    return [u.name for u in _upscalers]


def find_upscaler(name: str) -> UpscalerData:
    """The upscaler called ``name`` (exact match, as A1111 matches).

    Raises:
        errors.InvalidParameter: unknown name; the message lists the valid ones.
    """
    refresh_model_upscalers()
    for upscaler in _upscalers:
        if upscaler.name == name:
            return upscaler
    valid = ", ".join(u.name for u in _upscalers)
    raise errors.InvalidParameter(f"unknown upscaler {name!r}; valid upscalers: {valid}", field="upscaler")


def upscale_image(image: Image.Image, name: str | None, scale: float | None = None,
                  size: tuple[int, int] | None = None) -> Image.Image:
    """Upscale with the named upscaler, by a factor or to an exact size.

    Args:
        image: the image.
        name: an upscaler name; None or ``"None"`` with ``size`` means a plain Lanczos resize.
        scale: factor; the result is rounded down to multiples of 8 as in A1111's extras.
        size: ``(width, height)``; when it enlarges the image the upscaler runs first, then a
            Lanczos resize lands exactly on the size (A1111's img2img / hires fix behaviour).

    Raises:
        errors.InvalidParameter: not exactly one of ``scale`` / ``size``, a non-positive value, or
            an unknown upscaler.
    """
    if (scale is None) == (size is None):
        raise errors.InvalidParameter(
            f"upscale_image needs exactly one of scale or size, got scale={scale!r} size={size!r}", field="scale")
    if scale is not None:
        if scale <= 0:
            raise errors.InvalidParameter(f"upscale scale must be > 0, got {scale!r}", field="scale")
        return find_upscaler(name if name is not None else "None").upscale(image, scale)
    width, height = size  # type: ignore[misc]
    if width <= 0 or height <= 0:
        raise errors.InvalidParameter(f"upscale size must be positive, got {width}x{height}", field="size")
    if name is None or name == "None" or image.mode == "L":
        return image.resize((width, height), resample=LANCZOS)
    upscaler = find_upscaler(name)
    factor = max(width / image.width, height / image.height)
    if factor > 1.0:
        image = upscaler.upscale(image, factor)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


# --- latent space -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentUpscaleMode:
    """How a ``Latent*`` hires upscaler resizes: a ``torch.nn.functional.interpolate`` mode."""

    mode: str
    antialias: bool

    def __getitem__(self, key: str) -> Any:
        """A1111 code reads these as ``latent_upscale_modes[name]["mode"]``."""
        return getattr(self, key)


latent_upscale_default_mode = "Latent"
latent_upscale_modes: dict[str, LatentUpscaleMode] = {
    "Latent": LatentUpscaleMode("bilinear", False),
    "Latent (antialiased)": LatentUpscaleMode("bilinear", True),
    "Latent (bicubic)": LatentUpscaleMode("bicubic", False),
    "Latent (bicubic antialiased)": LatentUpscaleMode("bicubic", True),
    "Latent (nearest)": LatentUpscaleMode("nearest", False),
    "Latent (nearest-exact)": LatentUpscaleMode("nearest-exact", False),
}


def list_latent_upscale_modes() -> list[dict[str, str]]:
    """The ``/sdapi/v1/latent-upscale-modes`` response."""
    return [{"name": name} for name in latent_upscale_modes]


def find_latent_upscale_mode(mode_name: str) -> LatentUpscaleMode:
    """The mode called ``mode_name``.

    Raises:
        errors.InvalidParameter: unknown name; the message lists the valid ones.
    """
    if mode_name not in latent_upscale_modes:
        valid = ", ".join(latent_upscale_modes)
        raise errors.InvalidParameter(f"unknown latent upscale mode {mode_name!r}; valid modes: {valid}",
                                      field="hr_upscaler")
    return latent_upscale_modes[mode_name]


def upscale_latent(latent: Any, mode_name: str, height: int, width: int) -> Any:
    """Resize a latent batch ``[B, C, h, w]`` to ``[B, C, height, width]``.

    ``height`` and ``width`` are in latent cells (pixels // 8), as A1111's hires fix passes them.

    Raises:
        errors.InvalidParameter: unknown mode, non-positive size, or a latent that is not 4-D.
    """
    import torch
    mode = find_latent_upscale_mode(mode_name)
    if height <= 0 or width <= 0:
        raise errors.InvalidParameter(f"latent upscale size must be positive, got {height}x{width}", field="size")
    if latent.dim() != 4:
        raise errors.InvalidParameter(f"latent must be [B, C, H, W], got shape {tuple(latent.shape)}", field="latent")
    return torch.nn.functional.interpolate(latent, size=(height, width), mode=mode.mode, antialias=mode.antialias)


# --- extras ----------------------------------------------------------------------------------------
# The Extras operation runs the postprocessing scripts (`modules.scripts_postprocessing`); the built-in
# Upscale / GFPGAN / CodeFormer scripts (scripts/postprocessing_*.py) call the steps below.
def limit_size_by_one_dimension(w: float, h: float, limit: int) -> tuple[int, int]:
    """Shrink ``w``×``h`` so its longer side is at most ``limit``, keeping the aspect ratio."""
    if h > w and h > limit:
        w, h = limit * w // h, limit
    elif w > limit:
        w, h = limit, limit * h // w
    return int(w), int(h)


def extras_target_size(width: int, height: int, mode: int, upscale_by: float, max_side_length: int,
                       to_w: int | None, to_h: int | None) -> tuple[int | None, int | None]:
    """The size the Upscale script announces in its first pass (``pp.shared.target_*``).

    Mode 1 ("Scale to") gives ``to_w``×``to_h``; mode 0 the scaled size, limited to
    ``max_side_length`` when that is above 0 (A1111 also applies a limit of 0, which turns every
    non-square target into 0×0 and so switches off the scripts that read it; Serena does not).
    """
    if mode == 1:
        return to_w, to_h
    target = int(width * upscale_by), int(height * upscale_by)
    if max_side_length and max_side_length > 0:
        target = limit_size_by_one_dimension(target[0], target[1], max_side_length)
    return target


_upscale_cache: "collections.OrderedDict[tuple, Image.Image]" = collections.OrderedDict()
_upscale_cache_lock = threading.Lock()


def _cache_key(image: Image.Image, upscaler: UpscalerData, *params: Any) -> tuple:
    """Pixels, mode, size and info of ``image``, the upscaler entry (a rescanned model file is a new
    entry), the tiling options model upscalers read, and the upscale parameters."""
    from modules import shared
    digest = hashlib.sha256(image.tobytes()).hexdigest()
    info = tuple(sorted((str(k), repr(v)) for k, v in (image.info or {}).items()))
    tiling = tuple((k, repr(getattr(shared.opts, k))) for k in sorted(shared.opts.data_labels)
                   if k.endswith(("_tile", "_tile_overlap")))
    return (digest, image.mode, image.size, info, upscaler, tiling, *params)


def _cached_upscale(image: Image.Image, upscaler: UpscalerData, upscale_by: float, key: tuple) -> Image.Image:
    """``upscaler.upscale(image, upscale_by)``, remembered for the last
    ``upscaling_max_images_in_cache`` requests (A1111's extras upscale cache); copies go in and out."""
    from modules import shared
    limit = int(getattr(shared.opts, "upscaling_max_images_in_cache", 5) or 0)
    with _upscale_cache_lock:
        cached = _upscale_cache.pop(key, None)
        if cached is not None:
            _upscale_cache[key] = cached
            return cached.copy()
    result = upscaler.upscale(image, upscale_by)
    if limit > 0:
        with _upscale_cache_lock:
            _upscale_cache[key] = result.copy()
            while len(_upscale_cache) > limit:
                _upscale_cache.popitem(last=False)
    return result


def clear_upscale_cache() -> None:
    """Forget the cached extras upscales (the Upscale script's ``image_changed``)."""
    with _upscale_cache_lock:
        _upscale_cache.clear()


def upscale_for_extras(image: Image.Image, info: dict[str, Any], upscaler: UpscalerData, mode: int,
                       upscale_by: float, max_side_length: int, to_w: int, to_h: int,
                       crop: bool) -> Image.Image:
    """One extras upscale pass (A1111's postprocessing Upscale), recording its info keys.

    Mode 0 scales by ``upscale_by`` (limited to ``max_side_length`` when above 0); mode 1 scales
    to cover ``to_w``×``to_h`` and, with ``crop``, centre-crops to exactly that size.
    """
    if mode == 1:
        upscale_by = max(to_w / image.width, to_h / image.height)
        info["Postprocess upscale to"] = f"{to_w}x{to_h}"
    else:
        info["Postprocess upscale by"] = upscale_by
        if max_side_length != 0 and max(image.size) * upscale_by > max_side_length:
            mode, crop = 1, False
            to_w, to_h = limit_size_by_one_dimension(image.width * upscale_by, image.height * upscale_by,
                                                     max_side_length)
            upscale_by = max(to_w / image.width, to_h / image.height)
            info["Max side length"] = max_side_length
    key = _cache_key(image, upscaler, mode, upscale_by, to_w, to_h, crop)
    image = _cached_upscale(image, upscaler, upscale_by, key)
    if mode == 1 and crop:
        cropped = Image.new("RGB", (to_w, to_h))
        cropped.paste(image, box=(to_w // 2 - image.width // 2, to_h // 2 - image.height // 2))
        image = cropped
        info["Postprocess crop to"] = f"{image.width}x{image.height}"
    return image


def blend_upscales(first: Image.Image, second: Image.Image, visibility: float) -> Image.Image:
    """``second`` blended over ``first`` by ``visibility`` (converted and resized to ``first`` if needed)."""
    if second.mode != first.mode:
        second = second.convert(first.mode)
    if second.size != first.size:
        second = second.resize(first.size, resample=LANCZOS)
    return Image.blend(first, second, visibility)


def _check_extras_request(resize_mode: int, upscaling_resize: float, upscaling_resize_w: int,
                          upscaling_resize_h: int, gfpgan_visibility: float, codeformer_visibility: float) -> None:
    if resize_mode not in (0, 1):
        raise errors.InvalidParameter(f"resize_mode must be 0 (scale by) or 1 (scale to), got {resize_mode!r}",
                                      field="resize_mode")
    if resize_mode == 0 and upscaling_resize <= 0:
        raise errors.InvalidParameter(f"upscaling_resize must be > 0, got {upscaling_resize!r}",
                                      field="upscaling_resize")
    if resize_mode == 1 and (upscaling_resize_w <= 0 or upscaling_resize_h <= 0):
        raise errors.InvalidParameter(
            f"upscaling_resize_w/h must be > 0, got {upscaling_resize_w}x{upscaling_resize_h}",
            field="upscaling_resize_w")
    visibilities = (("gfpgan_visibility", gfpgan_visibility), ("codeformer_visibility", codeformer_visibility))
    for field, visibility in visibilities:
        if not 0 <= visibility <= 1:
            raise errors.InvalidParameter(f"{field} must be between 0 and 1, got {visibility!r}", field=field)
    for (field, visibility), name in zip(visibilities, ("GFPGAN", "CodeFormer")):
        if visibility:  # before any work: a missing file is named without upscaling first
            from modules import face_restoration
            face_restoration.check_available(name, field=field)


def restore_faces_for_extras(image: Image.Image, info: dict[str, Any], name: str, visibility: float,
                             codeformer_weight: float | None = None) -> Image.Image:
    """A1111's GFPGAN / CodeFormer postprocessing step: restore, blend by ``visibility``, record it.

    ``codeformer_weight`` is CodeFormer's fidelity (GFPGAN has none, so it is not passed for it).
    """
    import numpy as np

    from modules import face_restoration
    if not visibility:
        return image
    pixels = np.asarray(image, dtype=np.uint8)
    if name == "CodeFormer":
        restored = Image.fromarray(face_restoration.restore(pixels, name, codeformer_weight))
    else:
        restored = Image.fromarray(face_restoration.restore(pixels, name))
    if visibility < 1.0:
        restored = Image.blend(image, restored, visibility)
    info[f"{name} visibility"] = round(visibility, 3)
    if name == "CodeFormer":
        info["CodeFormer weight"] = round(codeformer_weight, 3)
    return restored


def extras_infotext(info: dict[str, Any]) -> str:
    """The extras parameter line (same entry rules as the generation infotext)."""
    from modules import infotext_utils
    return infotext_utils.build_parameters_line(info)


def extras_scripts_args(resize_mode: int = 0, upscaling_resize: float = 2.0, upscaling_resize_w: int = 512,
                        upscaling_resize_h: int = 512, upscaling_crop: bool = True,
                        upscaler_1: str | None = "None", upscaler_2: str | None = "None",
                        extras_upscaler_2_visibility: float = 0.0, gfpgan_visibility: float = 0.0,
                        codeformer_visibility: float = 0.0, codeformer_weight: float = 0.0,
                        max_side_length: int = 0) -> dict[str, dict[str, Any]]:
    """The postprocessing scripts' arguments for an extras API request (A1111's old ``run_extras``
    handler): Upscale, GFPGAN and CodeFormer enabled with the request's values; every other
    script is named nowhere, so its arguments are None."""
    return {
        "Upscale": {
            "upscale_enabled": True, "upscale_mode": resize_mode, "upscale_by": upscaling_resize,
            "max_side_length": max_side_length, "upscale_to_width": upscaling_resize_w,
            "upscale_to_height": upscaling_resize_h, "upscale_crop": upscaling_crop,
            "upscaler_1_name": upscaler_1, "upscaler_2_name": upscaler_2,
            "upscaler_2_visibility": extras_upscaler_2_visibility,
        },
        "GFPGAN": {"enable": True, "gfpgan_visibility": gfpgan_visibility},
        "CodeFormer": {"enable": True, "codeformer_visibility": codeformer_visibility,
                       "codeformer_weight": codeformer_weight},
    }


def postprocess_image(image: Image.Image, args: list[Any], runner: Any = None) -> list[Any]:
    """Run the postprocessing scripts on one image (converted to RGB, as A1111 does).

    Args:
        image: the input image.
        args: the flat argument list (`ScriptPostprocessingRunner.create_args_for_run`).
        runner: the runner; default `scripts_postprocessing.current_runner()`.

    Returns:
        The `PostprocessedImage` of the input, then one for each extra image the scripts made.
    """
    from modules import scripts_postprocessing, shared
    runner = runner or scripts_postprocessing.current_runner()
    pp = scripts_postprocessing.PostprocessedImage(image.convert("RGB"))
    state = shared.state
    previous_job = state.job
    state.skipped = False
    try:
        runner.run(pp, args)
    finally:
        state.job = previous_job
    return [pp, *pp.extra_images]


def run_extras_images(image: Image.Image, resize_mode: int = 0, upscaling_resize: float = 2.0,
                      upscaling_resize_w: int = 512, upscaling_resize_h: int = 512, upscaling_crop: bool = True,
                      upscaler_1: str | None = "None", upscaler_2: str | None = "None",
                      extras_upscaler_2_visibility: float = 0.0, upscale_first: bool = False,
                      gfpgan_visibility: float = 0.0, codeformer_visibility: float = 0.0,
                      codeformer_weight: float = 0.0, max_side_length: int = 0) -> tuple[list[Image.Image], str]:
    """The extras operation with every image it makes: see :func:`run_extras`.

    Returns:
        ``(images, html_info)``: the processed image, then the extra images scripts made (e.g. an
        extension's flipped copies), and the ``<p>…</p>`` infotext of the last of them (A1111's
        ``html_info``).
    """
    _check_extras_request(resize_mode, upscaling_resize, upscaling_resize_w, upscaling_resize_h,
                          gfpgan_visibility, codeformer_visibility)
    for name in (upscaler_1, upscaler_2):  # unknown names fail before any work
        if name not in (None, "None"):
            find_upscaler(name)
    from modules import scripts_postprocessing
    runner = scripts_postprocessing.current_runner()
    args = runner.create_args_for_run(extras_scripts_args(
        resize_mode, upscaling_resize, upscaling_resize_w, upscaling_resize_h, upscaling_crop, upscaler_1,
        upscaler_2, extras_upscaler_2_visibility, gfpgan_visibility, codeformer_visibility, codeformer_weight,
        max_side_length))
    entries = postprocess_image(image, args, runner)
    return [e.image for e in entries], plaintext_to_html(extras_infotext(entries[-1].info))


def run_extras(image: Image.Image, resize_mode: int = 0, upscaling_resize: float = 2.0,
               upscaling_resize_w: int = 512, upscaling_resize_h: int = 512, upscaling_crop: bool = True,
               upscaler_1: str | None = "None", upscaler_2: str | None = "None",
               extras_upscaler_2_visibility: float = 0.0, upscale_first: bool = False,
               gfpgan_visibility: float = 0.0, codeformer_visibility: float = 0.0,
               codeformer_weight: float = 0.0, max_side_length: int = 0) -> tuple[Image.Image, str]:
    """The extras operation behind ``/sdapi/v1/extra-single-image`` (spec §1.7).

    It runs the postprocessing scripts (`modules.scripts_postprocessing`: the built-in ones and
    every extension's) with the request's values for Upscale, GFPGAN and CodeFormer, as A1111's API
    does. The image is converted to RGB and upscaled by ``upscaler_1`` (nothing happens when it
    is "None"); with ``upscaler_2`` and a visibility above 0 a second upscale is blended in.
    Then, in A1111's script order, faces are restored with GFPGAN (``gfpgan_visibility`` above 0)
    and then CodeFormer (``codeformer_visibility``, fidelity ``codeformer_weight``), each result
    blended over its input by its visibility (`modules.face_restoration`); then any other script
    (an extension's) runs. ``upscale_first`` is accepted for the API shape and, as in A1111
    v1.10, changes nothing.

    Returns:
        ``(image, html_info)``, e.g. ``<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>``;
        the extra images a script makes are left out (see :func:`run_extras_images`).

    Raises:
        errors.InvalidParameter: bad mode or size, unknown upscaler name.
        errors.InvalidParameter: a visibility outside ``[0, 1]``.
        face_restoration.FaceRestorerUnavailable: a restorer asked for (visibility above 0) whose
            weight file or face detector file is missing; the message names the file and folder.
    """
    images, html_info = run_extras_images(
        image, resize_mode, upscaling_resize, upscaling_resize_w, upscaling_resize_h, upscaling_crop, upscaler_1,
        upscaler_2, extras_upscaler_2_visibility, upscale_first, gfpgan_visibility, codeformer_visibility,
        codeformer_weight, max_side_length)
    return images[0], html_info
