"""The stages `process_images_inner` calls, in the order it calls them (spec §2.3.3).

`modules/processing.py` keeps the orchestrator, a screen of numbered stage calls; each stage is a
function here that can be run and tested alone on a processing object: job preparation and seeds
(stages 1 and 3), the batch loop's start and body (stage 7: noise, hooks, conditioning, sampling,
decoding, script post-processing), each image's finishing (colour correction, overlay, infotext,
saving, mask outputs) and the grid (stage 8). Mode-specific work is not here: `p.init` / `p.sample`
delegate to `modules/processing_hires.py` and `modules/processing_img2img.py`.

What a job produces is gathered in a :class:`JobOutput`. `run_hook`, `save_sample` and `data_dir`
are shared with the mode modules. `modules.processing` re-exports every stage name.

A1111's functions (`create_infotext`, `decode_latent_batch`, `apply_overlay`,
`apply_color_correction`, `get_fixed_seed`) are looked up on `modules.processing` when they are
called, never bound at import: extensions replace them there. The lookup is a local import
because `modules.processing` imports this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from modules import rng, shared
from modules.runtime import context
from modules.processing_images import opt_C, opt_f, sample_to_image
from modules.scripts import PostprocessBatchListArgs, PostprocessImageArgs, PostProcessMaskOverlayArgs, PostSampleArgs

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import StableDiffusionProcessing


@dataclass
class JobOutput:
    """What the batch loop produces, in order (filled batch by batch)."""

    images: list = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    index_of_first_image: int = 0


def run_hook(p: StableDiffusionProcessing, hook: str, *args: Any, **kwargs: Any) -> None:
    """Fire a script hook if the job has a script runner (None: no scripts)."""
    if p.scripts is not None:
        getattr(p.scripts, hook)(p, *args, **kwargs)


def data_dir(path: str) -> str:
    """`path` as given when absolute, else under the data folder."""
    return path if os.path.isabs(path) else os.path.join(shared.data_paths.data_path, path)


# --- stages 1 and 3: the job ----------------------------------------------------------------------
def prepare_job(p: StableDiffusionProcessing) -> None:
    """Stage 1: option defaults for restore_faces/tiling, model name and hash, output folders."""
    from modules.processing import StableDiffusionProcessingImg2Img  # lazy: processing imports this module
    opts = shared.opts
    if p.restore_faces is None:
        p.restore_faces = opts.face_restoration
    if p.tiling is None:
        p.tiling = opts.tiling
    if p.restore_faces:  # a missing weight file skips restoration with a comment naming it (A1111 warns and skips)
        from modules import face_restoration
        try:
            face_restoration.check_available(opts.face_restoration_model, field="restore_faces")
        except face_restoration.FaceRestorerUnavailable as e:
            p.comment(f"{e}; skipped")
            p.restore_faces = False
    if opts.randn_source == "NV":
        p.comment("randn_source NV: noise is drawn on the CPU generator (no NVIDIA Philox port yet)")
    model = p.sd_model
    info = getattr(model, "sd_checkpoint_info", None)
    p.sd_model_name = getattr(info, "name_for_extra", None) or getattr(info, "model_name", None)
    p.sd_model_hash = getattr(model, "sd_model_hash", None)
    from modules import sd_vae  # lazy: model code loads on first use
    p.sd_vae_name, p.sd_vae_hash = sd_vae.get_loaded_vae_name(model), sd_vae.get_loaded_vae_hash(model)
    kind = "img2img" if isinstance(p, StableDiffusionProcessingImg2Img) else "txt2img"
    p.outpath_samples = data_dir(p.outpath_samples or opts.outdir_samples or getattr(opts, f"outdir_{kind}_samples"))
    p.outpath_grids = data_dir(p.outpath_grids or opts.outdir_grids or getattr(opts, f"outdir_{kind}_grids"))


def fix_seed(p: StableDiffusionProcessing) -> None:
    """Replace random seeds (-1) on `p` by concrete ones (A1111 helper)."""
    p.seed = _fixed(p.seed)
    p.subseed = _fixed(p.subseed)


def _fixed(seed: Any) -> Any:
    from modules import processing  # A1111 names are looked up there: extensions replace them
    fixed = processing.get_fixed_seed
    return [fixed(s) for s in seed] if isinstance(seed, list) else fixed(seed)


def compute_seeds(p: StableDiffusionProcessing) -> None:
    """Stage 3: seed+i per image (the same seed for all with a variation strength), subseed+i (spec §5)."""
    seed, subseed = _fixed(p.seed), _fixed(p.subseed)
    count = len(p.all_prompts)
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + (i if p.subseed_strength == 0 else 0)
                                                       for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]


# --- stage 7: the batch loop ----------------------------------------------------------------------
def set_job_count(p: StableDiffusionProcessing) -> None:
    """Progress: one job per batch, two with the hires fix."""
    state = context.active().progress
    if state.job_count <= 0:
        state.job_count = p.n_iter
    if getattr(p, "enable_hr", False) and not state.processing_has_refined_job_count:
        state.job_count *= 2
        state.processing_has_refined_job_count = True


def begin_batch(p: StableDiffusionProcessing, n: int) -> bool:
    """Start batch `n`: False when the job was interrupted; clears a pending skip."""
    ctx = context.active()
    p.iteration = n
    ctx.cancel.skipped = False
    if ctx.cancel.interrupted or ctx.cancel.stopping_generation:
        return False
    if p.n_iter > 1:  # as A1111: a single batch leaves the caller's job text (img2img batch: "i out of N")
        ctx.progress.set_text(f"Batch {n + 1} out of {p.n_iter}")
    start, end = n * p.batch_size, (n + 1) * p.batch_size
    p.prompts, p.negative_prompts = p.all_prompts[start:end], p.all_negative_prompts[start:end]
    p.seeds, p.subseeds = p.all_seeds[start:end], p.all_subseeds[start:end]
    return len(p.prompts) > 0


def run_batch(p: StableDiffusionProcessing, n: int, output: JobOutput) -> None:
    """Stage 7: noise, hooks, conditioning, sampling, decoding, then every image's finishing."""
    latent_shape = (getattr(p.sd_model, "latent_channels", opt_C), p.height // opt_f, p.width // opt_f)
    p.rng = rng.ImageRNG(latent_shape, p.seeds, subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                         seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w)
    batch = dict(batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
    run_hook(p, "before_process_batch", **batch)
    p.parse_extra_network_prompts()  # tags leave the prompts even when extra networks are disabled (A1111)
    if not p.disable_extra_networks:  # A1111 fires this hook from the activation it skips when disabled
        from modules import extra_networks
        extra_networks.activate(p, p.extra_network_data)
        run_hook(p, "after_extra_networks_activate", **batch, extra_network_data=p.extra_network_data)
    run_hook(p, "process_batch", **batch)
    p.setup_conds()
    if n == 0:
        write_params_txt(p)
    samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                       subseed_strength=p.subseed_strength, prompts=p.prompts)
    if p.scripts is not None:
        ps = PostSampleArgs(samples)
        p.scripts.post_sample(p, ps)
        samples = ps.samples
    x_samples = decode_batch(p, samples)
    context.active().progress.next_job()
    x_samples = postprocess_batch(p, n, x_samples)
    save = p.save_samples()
    for i, x_sample in enumerate(x_samples):
        finish_image(p, n, i, x_sample, save, output)


def decode_batch(p: StableDiffusionProcessing, samples: Any) -> torch.Tensor:
    """Stage 7.9: latents → images in [0, 1] (already-decoded hires output passes through)."""
    from modules import processing  # A1111 names are looked up there: extensions replace them
    if getattr(samples, "already_decoded", False):
        decoded = samples
    else:
        decoded = processing.decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"),
                                                 check_for_nans=True)
    stacked = torch.stack(list(decoded)).float()
    return torch.clamp((stacked + 1.0) / 2.0, min=0.0, max=1.0)


def postprocess_batch(p: StableDiffusionProcessing, n: int, x_samples: torch.Tensor) -> list:
    """Stages 7.10–7.11: scripts' `postprocess_batch` and `postprocess_batch_list`."""
    if p.scripts is None:
        return list(x_samples)
    p.scripts.postprocess_batch(p, x_samples, batch_number=n)
    start, end = n * p.batch_size, (n + 1) * p.batch_size
    p.prompts, p.negative_prompts = p.all_prompts[start:end], p.all_negative_prompts[start:end]
    args = PostprocessBatchListArgs(list(x_samples))
    p.scripts.postprocess_batch_list(p, args, batch_number=n)
    return args.images


# --- stage 7.12: each image -----------------------------------------------------------------------
def _batch_infotext(p: StableDiffusionProcessing, i: int, use_main_prompt: bool = False) -> str:
    from modules import processing  # A1111 names are looked up there: extensions replace them
    return processing.create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt, index=i,
                                      all_negative_prompts=p.negative_prompts)


def finish_image(p: StableDiffusionProcessing, n: int, i: int, x_sample: Any, save: bool, output: JobOutput) -> None:
    """Stage 7.12 for one image: face restoration, postprocess hooks, colour correction, overlay, save, infotext."""
    from modules import processing  # A1111 names are looked up there: extensions replace them
    opts = shared.opts
    p.batch_index = i
    image = x_sample if isinstance(x_sample, Image.Image) else sample_to_image(x_sample)
    if p.restore_faces:
        image = _restore_faces(p, i, image, save)
    image = _postprocess_image_hook(p, "postprocess_image", image)
    mask_for_overlay, overlay = _mask_overlay(p, i)
    if p.color_corrections is not None and i < len(p.color_corrections):
        if save and opts.save_images_before_color_correction:
            before = processing.apply_overlay(image, p.paste_to, overlay)[0]
            save_sample(p, i, before, suffix="-before-color-correction")
        image = processing.apply_color_correction(p.color_corrections[i], image)
    image, original_denoised = processing.apply_overlay(image, p.paste_to, overlay)
    image = _postprocess_image_hook(p, "postprocess_image_after_composite", image)
    text = _batch_infotext(p, i)
    if save:
        save_sample(p, i, image)
    output.infotexts.append(text)
    if opts.enable_pnginfo:
        image.info["parameters"] = text
    output.images.append(image)
    if mask_for_overlay is not None:
        _mask_outputs(p, i, image, original_denoised, mask_for_overlay, save, output, text)


def _restore_faces(p: StableDiffusionProcessing, i: int, image: Image.Image, save: bool) -> Image.Image:
    """Image `i` with its faces restored (A1111: before scripts' `postprocess_image`), the original
    saved first with the suffix -before-face-restoration when the option asks for it."""
    import numpy as np

    from modules import face_restoration
    if save and shared.opts.save_images_before_face_restoration:
        save_sample(p, i, image, suffix="-before-face-restoration")
    return Image.fromarray(face_restoration.restore_faces(np.asarray(image.convert("RGB"))))


def _postprocess_image_hook(p: StableDiffusionProcessing, hook: str, image: Image.Image) -> Image.Image:
    if p.scripts is None:
        return image
    pp = PostprocessImageArgs(image)
    getattr(p.scripts, hook)(p, pp)
    return pp.image


def _mask_overlay(p: StableDiffusionProcessing, i: int) -> tuple[Any, Any]:
    """The mask and the original-outside-mask overlay of image `i` (after scripts' hook)."""
    mask_for_overlay = p.mask_for_overlay
    overlay = None
    if shared.opts.overlay_inpaint and p.overlay_images is not None and i < len(p.overlay_images):
        overlay = p.overlay_images[i]
    if p.scripts is not None:
        ppmo = PostProcessMaskOverlayArgs(i, mask_for_overlay, overlay)
        p.scripts.postprocess_maskoverlay(p, ppmo)
        mask_for_overlay, overlay = ppmo.mask_for_overlay, ppmo.overlay_image
    return mask_for_overlay, overlay


def _mask_outputs(p: StableDiffusionProcessing, i: int, image: Image.Image, original_denoised: Image.Image,
                  mask_for_overlay: Image.Image, save: bool, output: JobOutput, text: str) -> None:
    """`return_mask` / `save_mask` and the masked composite variants (suffixes -mask, -mask-composite)."""
    from modules import images
    opts = shared.opts
    if opts.return_mask or opts.save_mask:
        mask_image = mask_for_overlay.convert("RGB")
        if save and opts.save_mask:
            save_sample(p, i, mask_image, suffix="-mask")
        if opts.return_mask:
            output.images.append(mask_image)
            output.infotexts.append(text)
    if opts.return_mask_composite or opts.save_mask_composite:
        mask = images.resize_image(2, mask_for_overlay, image.width, image.height).convert("L")
        composite = Image.composite(original_denoised.convert("RGBA").convert("RGBa"),
                                    Image.new("RGBa", image.size), mask).convert("RGBA")
        if save and opts.save_mask_composite:
            save_sample(p, i, composite, suffix="-mask-composite")
        if opts.return_mask_composite:
            output.images.append(composite)
            output.infotexts.append(text)


def save_sample(p: StableDiffusionProcessing, i: int, image: Image.Image, suffix: str = "") -> None:
    """Save image `i` of this batch to the samples folder with its infotext."""
    from modules import images
    images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], shared.opts.samples_format,
                      info=_batch_infotext(p, i), p=p, suffix=suffix)


# --- stage 8 and params.txt -----------------------------------------------------------------------
def make_grid(p: StableDiffusionProcessing, output: JobOutput) -> None:
    """Stage 8: a grid first in the results and/or saved, when there is more than one image."""
    from modules import images, processing  # A1111 names are looked up on processing: extensions replace them
    opts = shared.opts
    unwanted = len(output.images) < 2 and opts.grid_only_if_multiple
    if not (opts.return_grid or opts.grid_save) or p.do_not_save_grid or unwanted or not output.images:
        return
    grid = images.image_grid(output.images, p.batch_size)
    text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True)
    if opts.return_grid:
        if opts.enable_pnginfo:
            grid.info["parameters"] = text
        output.images.insert(0, grid)
        output.infotexts.insert(0, text)
        output.index_of_first_image = 1
    if opts.grid_save:
        images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format,
                          info=text, short_filename=not opts.grid_extended_filename, p=p, grid=True)


def write_params_txt(p: StableDiffusionProcessing) -> None:
    """`<data>/params.txt`: the first image's infotext, written atomically (not with --no-prompt-history)."""
    from modules.fileio import atomic_write_text
    from modules.processing import Processed  # lazy: processing imports this module
    if getattr(shared.cmd_opts, "no_prompt_history", False):
        return
    text = Processed(p, []).infotext(p, 0)
    atomic_write_text(os.path.join(shared.data_paths.data_path, "params.txt"), text)
