"""Latents ↔ pixels, and the compositing applied to finished images (A1111 helper names).

Pure functions, no `p`: the VAE round trip (`decode_latent_batch`, `images_tensor_to_samples`),
tensor ↔ PIL conversions, the overlay that pastes the unmasked original back over an inpainting
result (`apply_overlay`), and img2img colour correction (`setup_color_correction` /
`apply_color_correction`, Lab histogram matching). They sit apart from `modules/processing.py`
because every mode uses them — the batch stages, the hires fix and img2img — and none of them
needs the processing classes. `modules.processing` re-exports the A1111 names; where one of these
calls another A1111 name (`decode_first_stage`, `uncrop`) it looks it up there when called, as
A1111's own functions do, so an extension's replacement is used.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from modules import errors, shared

log = logging.getLogger(__name__)

opt_C = 4
"""Latent channels of an SD1 model (A1111 name)."""
opt_f = 8
"""Pixels per latent cell along each axis (A1111 name)."""


# --- latents and tensors --------------------------------------------------------------------------
def decode_first_stage(model: Any, latent: torch.Tensor) -> torch.Tensor:
    """Latent → image in about [-1, 1] (A1111 name)."""
    return model.decode_first_stage(latent.to(getattr(model, "dtype_vae", latent.dtype)))


def decode_latent_batch(model: Any, batch: torch.Tensor, target_device: torch.device | None = None,
                        check_for_nans: bool = False) -> list[torch.Tensor]:
    """Decode image by image, so an image of a batch decodes exactly as it would alone.

    `check_for_nans` raises on a NaN result unless `--disable-nan-check` is given (A1111's flag).
    """
    from modules import processing  # A1111 names are looked up there: extensions replace them
    decoded = []
    check_for_nans = check_for_nans and not getattr(shared.cmd_opts, "disable_nan_check", False)
    for i in range(batch.shape[0]):
        image = processing.decode_first_stage(model, batch[i:i + 1])[0]
        if check_for_nans and torch.isnan(image).any() and _upcast_vae(model):
            image = processing.decode_first_stage(model, batch[i:i + 1])[0]
        if check_for_nans and torch.isnan(image).any():
            raise errors.NansDetected(
                f"VAE produced NaNs decoding image {i} of the batch: the job's values (extreme prompt weights, "
                "CFG scale, denoising or hires settings) or the model's precision pushed the latents out of "
                "range; lower them, or run the VAE in full precision (--no-half-vae)")
        decoded.append(image.to(target_device) if target_device is not None else image)
    return decoded


def _upcast_vae(model: Any) -> bool:
    """Option `auto_vae_precision` (A1111): after a NaN from a half-precision VAE, convert the
    model's VAE to float32 for good and say so in the log. Returns whether it converted."""
    vae = getattr(model, "first_stage_model", None)
    if not shared.opts.auto_vae_precision or vae is None or model.dtype_vae == torch.float32:
        return False
    log.warning("A tensor with NaNs was produced in the VAE (%s); converting the VAE to 32-bit floats and "
                "decoding again. Pass --no-half-vae to start that way.", model.dtype_vae)
    vae.to(torch.float32)
    return True


def images_tensor_to_samples(image: torch.Tensor, model: Any) -> torch.Tensor:
    """Images in [0, 1] (B×3×H×W) → scaled latents."""
    x = image * 2.0 - 1.0
    return model.encode_first_stage(x.to(getattr(model, "device", x.device), getattr(model, "dtype_vae", x.dtype)))


def sample_to_image(x_sample: torch.Tensor) -> Image.Image:
    """One decoded image in [0, 1] (3×H×W) → an 8-bit RGB image."""
    arr = 255.0 * np.moveaxis(x_sample.cpu().float().numpy(), 0, 2)
    return Image.fromarray(arr.astype(np.uint8))


def image_to_array(image: Image.Image) -> np.ndarray:
    """An RGB image → float32 3×H×W in [0, 1]."""
    return np.moveaxis(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, 2, 0)


# --- overlay --------------------------------------------------------------------------------------
def uncrop(image: Image.Image, dest_size: tuple[int, int], paste_loc: tuple[int, int, int, int]) -> Image.Image:
    """Place a processed crop back at `paste_loc` (x, y, w, h) on a transparent canvas of `dest_size`."""
    from modules import images
    x, y, w, h = paste_loc
    base = Image.new("RGBA", dest_size)
    base.paste(images.resize_image(1, image, w, h), (x, y))
    return base


def apply_overlay(image: Image.Image, paste_loc: tuple | None,
                  overlay: Image.Image | None) -> tuple[Image.Image, Image.Image]:
    """Composite the original (outside the mask) over the result; returns (image, denoised image)."""
    from modules import processing  # A1111 names are looked up there: extensions replace them
    if overlay is None:
        return image, image.copy()
    if paste_loc is not None:
        image = processing.uncrop(image, (overlay.width, overlay.height), paste_loc)
    original_denoised = image.copy()
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB"), original_denoised


# --- colour correction ----------------------------------------------------------------------------
def setup_color_correction(image: Image.Image) -> np.ndarray:
    """The colour target of an init image: its pixels in CIE Lab."""
    return rgb_to_lab(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0)


def apply_color_correction(correction: np.ndarray, original_image: Image.Image) -> Image.Image:
    """Match the image's Lab histograms to the init image, keeping the image's own lightness."""
    lab = rgb_to_lab(np.asarray(original_image.convert("RGB"), dtype=np.float64) / 255.0)
    matched = np.stack([match_histogram(lab[..., c], correction[..., c]) for c in range(3)], axis=-1)
    matched[..., 0] = lab[..., 0]
    rgb = np.clip(lab_to_rgb(matched), 0.0, 1.0)
    return Image.fromarray(np.rint(rgb * 255.0).astype(np.uint8))


def match_histogram(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map `source` values so their distribution matches `reference` (quantile matching)."""
    src_values, src_index, src_counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    src_quantiles = np.cumsum(src_counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    mapped = np.interp(src_quantiles, ref_quantiles, ref_values)
    return mapped[src_index].reshape(source.shape)


_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (H×W×3) → CIE Lab (D65)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB2XYZ.T / _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) → sRGB in [0, 1] (unclipped)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    xyz = np.where(f ** 3 > 0.008856, f ** 3, (f - 16.0 / 116.0) / 7.787) * _D65
    linear = np.clip(xyz @ np.linalg.inv(_RGB2XYZ).T, 0.0, None)
    return np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
