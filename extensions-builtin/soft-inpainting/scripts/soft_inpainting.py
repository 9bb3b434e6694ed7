"""Soft inpainting: A1111's built-in img2img script that blends original and inpainted content by mask opacity.

An AlwaysVisible img2img script ("Soft Inpainting", off by default). When enabled on an inpainting job it
1. turns off mask rounding (`p.mask_round = False`) so partial mask values reach the latent mask, and
   writes its settings to the infotext (`process`);
2. replaces the per-step latent blend: the original latent is kept with a weight softened by the
   step's noise level, and the two latents are mixed with magnitude-preserving interpolation
   (`on_mask_blend`; the final blend keeps the sampler's output as it is);
3. after sampling, builds one composite mask per image from how far the sampled latent moved away from
   the original (`post_sample`), and
4. hands those masks and freshly built overlays to the final composite (`postprocess_maskoverlay`).

The numeric parts are small pure functions (tensors / arrays in, tensors / arrays out) so each can be
tested alone. The per-job composite masks travel on `p` (attribute `soft_inpainting_composite`), never
on the script instance, so two jobs running at once cannot see each other's masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from modules import scripts

TITLE = "Soft Inpainting"
ENABLED_LABEL = "Soft inpainting"
ENABLED_INFOTEXT = "Soft inpainting enabled"
ENABLED_ELEM_ID = "soft_inpainting_enabled"
COMPOSITE_ATTRIBUTE = "soft_inpainting_composite"
"""The attribute of `p` holding the composite masks of the batch being finished (a `Composite`)."""

MAGNITUDE_EPSILON = 0.00001
"""Added to the mixed latent's length before dividing by it."""
MASK_SCALAR_EPSILON = 1.00001
"""Denominator offset of the mask-biased difference threshold (keeps a fully kept pixel finite)."""
COMPOSITE_BLUR_RADIUS = 4
"""Radius of the Gaussian blur that smooths the upscaled composite mask."""
KERNEL_STDDEV = 1.5
KERNEL_RADIUS = 2
"""The weighted-histogram filter's kernel: a Gaussian of this deviation cut off past this radius."""
FILTER_PASSES = ((0.9, 1.0), (0.25, 0.75))
"""(percentile_min, percentile_max) of the two filter passes: a near-maximum, then an inter-quartile mean."""


# --- settings ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftInpaintingSettings:
    """The six parameters, in the script's argument order (after the enable flag)."""

    mask_blend_power: float = 1.0
    mask_blend_scale: float = 0.5
    inpaint_detail_preservation: float = 4.0
    composite_mask_influence: float = 0.0
    composite_difference_threshold: float = 0.5
    composite_difference_contrast: float = 2.0

    @classmethod
    def from_args(cls, *values: Any) -> "SoftInpaintingSettings":
        """Settings from the script's six slider values (strings and ints accepted)."""
        names = [f.name for f in fields(cls)]
        if len(values) != len(names):
            raise ValueError(f"soft inpainting needs {len(names)} values ({', '.join(names)}), got {values!r}")
        return cls(*(float(v) for v in values))

    def add_generation_params(self, dest: dict[str, Any]) -> None:
        """Write the enable flag and every parameter under its infotext label into `dest`."""
        dest[ENABLED_INFOTEXT] = True
        for control in CONTROLS:
            dest[control.infotext] = plain_number(getattr(self, control.field))


@dataclass(frozen=True)
class Control:
    """One slider: the settings field it sets, its label, hint, infotext key, elem_id and range."""

    field: str
    label: str
    info: str
    infotext: str
    minimum: float
    maximum: float
    step: float


CONTROLS = (
    Control("mask_blend_power", "Schedule bias",
            "Moves original-content preservation earlier (above 1) or later (below 1) in the denoising.",
            "Soft inpainting schedule bias", 0, 8, 0.1),
    Control("mask_blend_scale", "Preservation strength",
            "How much of the original content partially masked areas keep.",
            "Soft inpainting preservation strength", 0, 8, 0.05),
    Control("inpaint_detail_preservation", "Transition contrast boost",
            "Restores contrast that mixing original and new content in partial areas would wash out.",
            "Soft inpainting transition contrast boost", 1, 32, 0.5),
    Control("composite_mask_influence", "Mask influence",
            "How much the painted mask, rather than the change in content, decides the final blend.",
            "Soft inpainting mask influence", 0, 1, 0.05),
    Control("composite_difference_threshold", "Difference threshold",
            "The amount of change at which the original pixels drop below half opacity.",
            "Soft inpainting difference threshold", 0, 8, 0.25),
    Control("composite_difference_contrast", "Difference contrast",
            "How abruptly the final blend switches from original to new pixels.",
            "Soft inpainting difference contrast", 0, 8, 0.25),
)
"""The sliders in argument order; each control's elem_id is its `field` (A1111's ids)."""

DEFAULTS = SoftInpaintingSettings()


def plain_number(value: float) -> int | float:
    """`value` for the infotext: whole numbers without ".0", as A1111's UI writes slider values."""
    return int(value) if float(value).is_integer() else float(value)


def uses_inpainting(p: Any) -> bool:
    """Whether the job inpaints: it has a user mask or latent masks."""
    return any(getattr(p, name, None) is not None for name in ("image_mask", "mask", "nmask"))


# --- per-step blending ---------------------------------------------------------------------------------
def softened_nmask(nmask: torch.Tensor, sigma: Any, settings: SoftInpaintingSettings) -> torch.Tensor:
    """The step's blend weight of the denoised latent: `nmask ** (sigma ** power * scale)`.

    `nmask` is 1 where the mask fully repaints and 0 where it keeps the original. Raising a
    transparency to a power stands for blending that many times, so the original's pull is
    proportional to the noise level, shifted by the schedule bias (power) and preservation
    strength (scale). Fully kept (0) and fully repainted (1) pixels are unchanged.
    """
    exponent = sigma ** settings.mask_blend_power * settings.mask_blend_scale
    return torch.pow(nmask, exponent)


def _blend_weights(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-channel weight [B|1, C, H, W], per-pixel weight [B|1, 1, H, W]) from a [C, H, W] or [B, C, H, W] mask."""
    if t.dim() == 3:
        return t.unsqueeze(0), t[0][None, None]
    return t, t[:, :1]


def _wide_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for the magnitude arithmetic, float32 on devices without float64 (MPS, XPU)."""
    return torch.float32 if tensor.device.type in ("mps", "xpu") else torch.float64


def magnitude_preserving_blend(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor,
                               detail_preservation: float) -> torch.Tensor:
    """Mix latents `a` (t=0) and `b` (t=1) per pixel; the result's length is interpolated separately.

    The direction is the linear mix `a·(1-t) + b·t`; its length (over channels) is set to the
    power mean `(|a|^d·(1-t) + |b|^d·t)^(1/d)` with d = `detail_preservation`, so a larger d leans
    toward the longer of the two vectors and mixing does not wash out contrast. Lengths are
    computed in float64 (large powers) and the result has the latents' dtype.
    """
    t_full, t_pixel = _blend_weights(t)
    mixed = a * (1 - t_full) + b * t_full
    wide = _wide_dtype(mixed)
    current = torch.linalg.vector_norm(mixed, ord=2, dim=1, keepdim=True).to(wide) + MAGNITUDE_EPSILON
    d = detail_preservation
    length_a = torch.linalg.vector_norm(a, ord=2, dim=1, keepdim=True).to(wide) ** d * (1 - t_pixel)
    length_b = torch.linalg.vector_norm(b, ord=2, dim=1, keepdim=True).to(wide) ** d * t_pixel
    desired = (length_a + length_b) ** (1 / d)
    return mixed * (desired / current).to(mixed.dtype)


def first_sigma(sigma: Any) -> Any:
    """The step's noise level: the first entry of the per-image sigmas (all the same), or the scalar."""
    if isinstance(sigma, torch.Tensor) and sigma.dim() > 0:
        return sigma.reshape(-1)[0]
    return sigma


# --- the composite masks -------------------------------------------------------------------------------
def smootherstep(x: Any) -> Any:
    """Perlin's smootherstep 6x^5 - 15x^4 + 10x^3 (input in [0, 1])."""
    return x * x * x * (x * (6 * x - 15) + 10)


def gaussian_kernel(stddev_radius: float = 1.0, max_radius: int = 2) -> tuple[np.ndarray, int]:
    """A (2r+1)² kernel `exp(-d²/σ²)`, lowered and rescaled so it is 1 at the centre and 0 at r+1.

    Returns the kernel and its centre index (r).
    """
    zero = math.exp(-((max_radius + 1.0) ** 2) / (stddev_radius * stddev_radius))
    scale = 1 / (1 - zero)
    size = 2 * max_radius + 1
    kernel = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            sqr = float(y - max_radius) ** 2.0 + float(x - max_radius) ** 2.0
            kernel[y, x] = max(0.0, (math.exp(-sqr / (stddev_radius * stddev_radius)) - zero) * scale)
    return kernel, max_radius


def _windows(img: np.ndarray, kernel: np.ndarray, center: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's kernel window, row-major: values [H, W, K] and weights [H, W, K] (0 off the image)."""
    kh, kw = kernel.shape
    cy, cx = center
    pad = ((cy, kh - 1 - cy), (cx, kw - 1 - cx))
    values = np.lib.stride_tricks.sliding_window_view(np.pad(img, pad), (kh, kw))
    inside = np.lib.stride_tricks.sliding_window_view(np.pad(np.ones(img.shape, bool), pad), (kh, kw))
    h, w = img.shape
    weights = np.where(inside, kernel, 0.0).reshape(h, w, kh * kw)
    return values.reshape(h, w, kh * kw), weights


def _histogram_window(total: np.ndarray, percentile_min: float, percentile_max: float,
                      min_width: float) -> tuple[np.ndarray, np.ndarray]:
    """The [low, high] slice of each pixel's weight stack to average over, at least `min_width` wide
    and kept inside [0, total]."""
    low, high = total * percentile_min, total * percentile_max
    narrow = (high - low) < min_width
    middle = (low + high) / 2
    low = np.where(narrow, middle - min_width / 2, low)
    high = np.where(narrow, middle + min_width / 2, high)
    over = narrow & (high > total)
    low, high = np.where(over, total - min_width, low), np.where(over, total, high)
    under = narrow & (low < 0)
    return np.where(under, 0.0, low), np.where(under, min_width, high)


def weighted_histogram_filter(img: np.ndarray, kernel: np.ndarray, kernel_center: Any,
                              percentile_min: float = 0.0, percentile_max: float = 1.0,
                              min_width: float = 1.0) -> np.ndarray:
    """A weighted percentile-range mean filter over a 2-D array (mean, median, min or max by the range).

    For each pixel the neighbours under the kernel (clipped at the borders) are sorted by value and
    stacked with heights equal to their kernel weights; the result is the mean of the values in the
    stack slice [percentile_min, percentile_max] of its height, each weighted by how much of the
    slice it covers. A slice narrower than `min_width` (weight units) is widened about its centre
    and kept inside the stack. The same numbers as A1111's per-pixel loop, all pixels at once.

    Args:
        img: 2-D float array.
        kernel: 2-D float weights.
        kernel_center: the kernel's centre index, an int or a (row, column) pair.
        percentile_min, percentile_max: the slice of the stack, fractions of its height.
        min_width: the narrowest slice, in weight units (> 0).

    Returns:
        The filtered array, same shape and dtype as `img`.
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"weighted_histogram_filter needs a 2-D array, got shape {img.shape}")
    center = tuple(int(c) for c in np.broadcast_to(np.asarray(kernel_center), (2,)))
    values, weights = _windows(img, np.asarray(kernel, dtype=np.float64), center)
    order = np.argsort(values, axis=-1, kind="stable")
    values = np.take_along_axis(values, order, axis=-1)
    weights = np.take_along_axis(weights, order, axis=-1)
    top = np.cumsum(weights, axis=-1)  # sequential sums, as a running total
    bottom = np.concatenate([np.zeros_like(top[..., :1]), top[..., :-1]], axis=-1)
    low, high = _histogram_window(top[..., -1], percentile_min, percentile_max, min_width)
    total = np.zeros(img.shape)
    covered = np.zeros(img.shape)
    for k in range(values.shape[-1]):  # in sorted order: the same sums, term by term
        overlaps = (low < top[..., k]) & (high > bottom[..., k])
        width = np.where(overlaps, np.minimum(high, top[..., k]) - np.maximum(low, bottom[..., k]), 0.0)
        total += values[..., k] * width
        covered += width
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(covered != 0, total / covered, 0.0)
    return mean.astype(img.dtype)


def mask_scalars(nmask: torch.Tensor, settings: SoftInpaintingSettings) -> np.ndarray:
    """Per-pixel multiplier of the difference threshold, from the latent mask ([H, W] or [B, H, W]).

    With mask influence 0 it is about 1 everywhere; at 1 it grows without bound where the mask
    keeps the original and falls to 0 where the mask fully repaints.
    """
    latent_mask = (nmask[0] if nmask.dim() == 3 else nmask[:, 0]).float()
    keep = 1 - torch.clamp(latent_mask, min=0, max=1) ** (settings.mask_blend_scale / 2)
    influence = settings.composite_mask_influence
    keep = 0.5 * (1 - influence) + keep * influence
    return (keep / (MASK_SCALAR_EPSILON - keep)).cpu().numpy()


def difference_mask(distance: np.ndarray, scalar: np.ndarray, settings: SoftInpaintingSettings,
                    kernel: np.ndarray, kernel_center: Any) -> np.ndarray:
    """The uint8 composite mask at latent size of one image: 255 where the new content replaces the
    original, 0 where the original stays, from the per-pixel latent `distance` [H, W]."""
    smoothed = distance
    for low, high in FILTER_PASSES:
        smoothed = weighted_histogram_filter(smoothed, kernel, kernel_center, low, high, min_width=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        relative = smoothed / (settings.composite_difference_threshold * scalar)
        original_opacity = smootherstep(1 / (1 + relative ** settings.composite_difference_contrast))
        return (255. * (1 - original_opacity)).astype(np.uint8)


def upscale_mask(mask: np.ndarray, width: int, height: int, paste_to: tuple | None,
                 canvas_size: tuple[int, int]) -> Image.Image:
    """A latent-size uint8 mask as an "L" image of the result: resized, blurred, placed back into the
    whole picture when only the masked area was processed."""
    from modules import images, processing  # A1111 names are looked up on processing: extensions replace them
    image = images.resize_image(2, Image.fromarray(mask), width, height)
    image = processing.create_binary_mask(image, round=False)
    image = image.filter(ImageFilter.GaussianBlur(radius=COMPOSITE_BLUR_RADIUS))
    if paste_to is not None:
        image = processing.uncrop(image, canvas_size, paste_to)
    return image


def masked_overlay(original: Image.Image, mask: Image.Image) -> Image.Image:
    """The original where `mask` is 0, fading out to transparent where it is 255 (premultiplied paste)."""
    overlay = Image.new("RGBa", original.size)
    overlay.paste(original.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    return overlay.convert("RGBA")


@dataclass
class Composite:
    """What `post_sample` leaves for `postprocess_maskoverlay`: one mask and overlay per image of the batch."""

    masks: list[Image.Image]
    overlays: list[Image.Image]


def original_images(p: Any) -> list[Image.Image]:
    """The batch's init images as the result is composited over them (flattened, resized), RGBA."""
    from modules import images, shared
    originals = []
    for img in p.init_images:
        image = images.flatten(img, shared.opts.img2img_background_color)
        if p.paste_to is None:
            if p.resize_mode != 3:
                image = images.resize_image(p.resize_mode, image, p.width, p.height)
            elif image.size != (p.width, p.height):  # latent upscale stretches the result: stretch the original too
                image = images.resize_image(0, image, p.width, p.height)
        originals.append(image.convert("RGBA"))
    return originals * p.batch_size if len(originals) == 1 else originals


def adaptive_composite(p: Any, samples: torch.Tensor, settings: SoftInpaintingSettings) -> Composite:
    """Per-image composite masks from how far each sampled latent moved from the original latent."""
    scalars = mask_scalars(p.nmask, settings)
    distances = torch.linalg.vector_norm(samples - p.init_latent, ord=2, dim=1).float().cpu().numpy()
    kernel, center = gaussian_kernel(stddev_radius=KERNEL_STDDEV, max_radius=KERNEL_RADIUS)
    originals = original_images(p)
    masks, overlays = [], []
    for i, distance in enumerate(distances):
        scalar = scalars if scalars.ndim == 2 else scalars[i if i < len(scalars) else 0]
        latent_mask = difference_mask(distance, scalar, settings, kernel, center)
        original = originals[i]
        mask = upscale_mask(latent_mask, p.width, p.height, p.paste_to, original.size)
        masks.append(mask)
        overlays.append(masked_overlay(original, mask))
    return Composite(masks, overlays)


def mask_only_composite(p: Any, settings: SoftInpaintingSettings) -> Composite:
    """Composite masks from the latent mask alone, for samples that arrive already decoded."""
    latent_mask = (p.nmask[0] if p.nmask.dim() == 3 else p.nmask[0, 0]).float()
    latent_mask = torch.clamp(latent_mask, min=0, max=1) ** (settings.mask_blend_scale / 2)
    array = (255. * latent_mask).cpu().numpy().astype(np.uint8)
    originals = original_images(p)
    masks, overlays = [], []
    for original in originals:
        mask = upscale_mask(array, p.width, p.height, p.paste_to, original.size)
        masks.append(mask)
        overlays.append(masked_overlay(original, mask))
    return Composite(masks, overlays)


# --- the script ----------------------------------------------------------------------------------------
HELP = f"""
**{CONTROLS[0].label}**: the original is held with a weight that follows each step's noise level.
Below 1 the hold is strongest near the end of denoising, above 1 near the start.

**{CONTROLS[1].label}**: low values favour the new content in partially masked areas, high values
the original.

**{CONTROLS[2].label}**: mixing two latents linearly dims their detail; higher values keep the
mix's strength close to the stronger of the two (too high can oversaturate).

**Pixel composite**: after sampling, each area is compared with the original; where it barely
changed, the original pixels are used.

**{CONTROLS[3].label}**: 0 looks only at how much the content changed, 1 follows the painted mask.

**{CONTROLS[4].label}**: low values keep the original only where almost nothing changed; high
values keep it even through larger changes.

**{CONTROLS[5].label}**: low values give long, gradual transitions (some ghosting), high values
short, sudden ones.
"""


class Script(scripts.Script):
    """A1111's "Soft Inpainting" AlwaysVisible img2img script."""

    section = "inpaint"

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible if is_img2img else False

    def ui(self, is_img2img: bool) -> list | None:
        """The "Soft inpainting" accordion (its checkbox is the enable flag) and the six sliders."""
        if not is_img2img:
            return None
        import gradio as gr

        from modules.ui_components import InputAccordion
        sliders = []
        with InputAccordion(False, label=ENABLED_LABEL, elem_id=ENABLED_ELEM_ID) as enabled:
            with gr.Group():
                gr.Markdown("Blends the inpainted result into the original by the mask's opacity; "
                            "a large **Mask blur** gives the smoothest transitions.")
                for i, control in enumerate(CONTROLS):
                    if i == 3:
                        gr.Markdown("### Pixel composite")
                    sliders.append(gr.Slider(label=control.label, info=control.info, minimum=control.minimum,
                                             maximum=control.maximum, step=control.step,
                                             value=getattr(DEFAULTS, control.field), elem_id=control.field))
                with gr.Accordion("Help", open=False):
                    gr.Markdown(HELP)
        self.infotext_fields = [(enabled, ENABLED_INFOTEXT)] + [
            (slider, control.infotext) for slider, control in zip(sliders, CONTROLS)]
        self.paste_field_names = [key for _, key in self.infotext_fields]
        return [enabled, *sliders]

    def process(self, p: Any, enabled: bool, *values: Any) -> None:
        """Turn off mask rounding and write the settings to the infotext."""
        if not enabled or not uses_inpainting(p):
            return
        p.mask_round = False
        SoftInpaintingSettings.from_args(*values).add_generation_params(p.extra_generation_params)

    def on_mask_blend(self, p: Any, mba: scripts.MaskBlendArgs, enabled: bool, *values: Any) -> None:
        """Each step: the softened, magnitude-preserving blend; the final blend keeps the sampler's output."""
        if not enabled or not uses_inpainting(p):
            return
        if mba.is_final_blend:
            mba.blended_latent = mba.current_latent
            return
        if mba.sigma is None:
            return
        settings = SoftInpaintingSettings.from_args(*values)
        weight = softened_nmask(mba.nmask, first_sigma(mba.sigma), settings)
        mba.blended_latent = magnitude_preserving_blend(mba.init_latent, mba.current_latent, weight,
                                                        settings.inpaint_detail_preservation)

    def post_sample(self, p: Any, ps: scripts.PostSampleArgs, enabled: bool, *values: Any) -> None:
        """Build this batch's composite masks and overlays (left on `p` for the overlay hook)."""
        if not enabled or not uses_inpainting(p):
            return
        setattr(p, COMPOSITE_ATTRIBUTE, None)
        if getattr(p, "nmask", None) is None:
            return
        settings = SoftInpaintingSettings.from_args(*values)
        if getattr(ps.samples, "already_decoded", False):
            composite = mask_only_composite(p, settings)
        else:
            composite = adaptive_composite(p, ps.samples, settings)
        setattr(p, COMPOSITE_ATTRIBUTE, composite)

    def postprocess_maskoverlay(self, p: Any, ppmo: scripts.PostProcessMaskOverlayArgs, enabled: bool,
                                *values: Any) -> None:
        """Use image `ppmo.index`'s composite mask and overlay for the final composite."""
        if not enabled or not uses_inpainting(p):
            return
        composite = getattr(p, COMPOSITE_ATTRIBUTE, None)
        if composite is None or ppmo.index >= len(composite.masks):
            return
        ppmo.mask_for_overlay = composite.masks[ppmo.index]
        ppmo.overlay_image = composite.overlays[ppmo.index]
