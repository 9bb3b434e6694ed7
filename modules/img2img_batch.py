"""img2img's "Batch" tab: one img2img request run over every image of an input folder.

A1111 v1.10 calls this `process_batch` (modules/img2img.py). The whole batch is one queued job
(one task id, so the page's progress line follows it from the first image to the last); each
image is its own generation through the selected script's `run` or `processing.process_images`,
so every image reaches `ProcessingRunner.run`. What the request asks for is the starting point of
every image; an image changes only its own copy: its init image, its mask, its size ("Resize by"),
and what its PNG info supplies. The results of all images come back as one `Processed`.

With an output folder the samples are saved there under the input's name (A1111's file name
pattern ``<stem>`` or ``<stem>-[generation_number]``, no subfolder). Those settings are this
batch's own: they apply around each image's generation and never reach `config.json`, not even
when the request keeps its overrides (``override_settings_restore_afterwards`` false).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps

from modules import call_queue, errors, folder_access, shared
from modules.img2img_inputs import scaled_size
from modules.runtime import jobs as generation
from modules.api import models as m

log = logging.getLogger("serena.img2img.batch")

PNG_INFO_PROPS = ("Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash")
"""What "PNG info" may take from each input's infotext (A1111's choices, in its order)."""

_OUTPUT_SETTINGS = ("save_to_dirs", "samples_filename_pattern", "save_images_replace_action")
"""Options an output folder sets for the batch (a request's overrides of them give way)."""


@dataclass(frozen=True)
class BatchSpec:
    """The Batch tab's own controls (A1111's ``img2img_batch_*`` arguments).

    Folders are relative to the data folder (absolute ones must lie inside it unless the server
    runs with ``--allow-outside-data-dir``).
    """

    input_dir: str
    output_dir: str = ""
    """"" → the normal img2img output folder (`generation.output_folders`, UI rules)."""
    inpaint_mask_dir: str = ""
    """One file → the mask of every image; else each image's mask has its stem (none: no mask)."""
    use_png_info: bool = False
    png_info_props: tuple[str, ...] = ()
    """The subset of `PNG_INFO_PROPS` taken from each input's infotext."""
    png_info_dir: str = ""
    """Read the infotext from the same-named file here instead of from the input itself."""
    scale_by: float | None = None
    """"Resize by": each image's own size × scale_by (down to a multiple of 8); None: the request's size."""


@dataclass(frozen=True)
class BatchFolders:
    """A batch's folders, checked and made absolute ("" where not given)."""

    inputs: tuple[str, ...]
    output_dir: str = ""
    masks: tuple[str, ...] = ()
    png_info_dir: str = ""


# --- folders -------------------------------------------------------------------------------------------
def _confined(path: str, what: str, field: str, *, must_exist: bool) -> str:
    """A typed folder ("" stays ""), confined to the data folder; it must exist if `must_exist`."""
    if not (path or "").strip():
        return ""
    folder = folder_access.confined_folder(path.strip(), f"img2img batch: {what}", field)
    if must_exist and not os.path.isdir(folder):
        raise errors.InvalidParameter(f"img2img batch: {what} {path!r} does not exist", field=field)
    return folder


def resolve_folders(batch: BatchSpec) -> BatchFolders:
    """Check the batch's folders before any work.

    Raises:
        errors.InvalidParameter: a folder outside the data folder, a missing input, mask or PNG info
            folder, no images in the input folder, a PNG info property A1111 does not offer, or the
            server runs with ``--hide-ui-dir-config`` (batch img2img disabled, as in A1111).
    """
    if getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise errors.InvalidParameter("Launched with --hide-ui-dir-config, batch img2img disabled",
                                      field="img2img_batch_input_dir")
    unknown = [p for p in batch.png_info_props if p not in PNG_INFO_PROPS]
    if unknown:
        raise errors.InvalidParameter(f"img2img batch: PNG info properties {unknown} are not among "
                                      f"{list(PNG_INFO_PROPS)}", field="img2img_batch_png_info_props")
    if batch.scale_by is not None and not batch.scale_by > 0:
        raise errors.InvalidParameter(f"img2img batch: scale_by must be above 0, got {batch.scale_by}",
                                      field="scale_by")
    inputs = folder_access.directory_images(batch.input_dir, "img2img batch: input directory",
                                            "img2img_batch_input_dir", recursive=True,
                                            missing="img2img batch: enter an input directory")
    mask_dir = _confined(batch.inpaint_mask_dir, "inpaint mask directory", "img2img_batch_inpaint_mask_dir",
                         must_exist=True)
    info_dir = _confined(batch.png_info_dir, "PNG info directory", "img2img_batch_png_info_dir",
                         must_exist=True) if batch.use_png_info else ""
    return BatchFolders(inputs=tuple(inputs),
                        output_dir=_confined(batch.output_dir, "output directory", "img2img_batch_output_dir",
                                             must_exist=False),
                        masks=tuple(folder_access.image_files(mask_dir)) if mask_dir else (),
                        png_info_dir=info_dir)


def mask_path(image_path: str, masks: tuple[str, ...]) -> str | None:
    """The mask of one input: the only mask, else the first with the input's stem, else None."""
    if len(masks) == 1:
        return masks[0]
    stem = _stem(image_path)
    return next((mask for mask in masks if _stem(mask) == stem), None)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# --- one image -----------------------------------------------------------------------------------------
def _read(path: str) -> Image.Image | None:
    """The image file, loaded; None (and one log line) when it is not an image."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (OSError, ValueError) as e:  # the rest of the batch goes on, as in A1111
        log.warning("img2img batch: skipped %s: %s", path, e)
        return None


def png_info(image: Image.Image, image_path: str, batch: BatchSpec, info_dir: str) -> dict[str, Any]:
    """The selected PNG info properties of one input: parsed from its own infotext, or from the
    same-named file in `info_dir`. An input without infotext (or no such file) gives {}."""
    from modules import infotext_utils
    if not batch.use_png_info or not batch.png_info_props:
        return {}
    source = image
    if info_dir:
        source = _read(os.path.join(info_dir, os.path.basename(image_path)))
        if source is None:
            return {}
    geninfo, _ = infotext_utils.read_info_from_image(source)
    if not geninfo:
        return {}
    parsed = infotext_utils.parse_generation_parameters(geninfo)
    return {key: value for key, value in parsed.items() if key in batch.png_info_props}


def apply_png_info(args: dict[str, Any], params: dict[str, Any], where: str) -> dict[str, Any]:
    """`args` with one input's PNG info applied as A1111 does: prompts appended after the
    request's own with a space; seed, CFG scale, sampler and steps replaced; a known model hash
    selects that checkpoint for this image (override setting).

    Raises:
        errors.InvalidParameter: a value that is not a number, or an unknown sampler; names `where`.
    """
    from modules import sd_models, sd_samplers
    out = dict(args)
    try:
        if "Prompt" in params:
            out["prompt"] = f"{args['prompt']} {params['Prompt']}"
        if "Negative prompt" in params:
            out["negative_prompt"] = f"{args['negative_prompt']} {params['Negative prompt']}"
        if "Seed" in params:
            out["seed"] = int(float(params["Seed"]))
        if "CFG scale" in params:
            out["cfg_scale"] = float(params["CFG scale"])
        if "Steps" in params:
            out["steps"] = int(float(params["Steps"]))
        if "Sampler" in params:
            out["sampler_name"], out["scheduler"] = sd_samplers.get_sampler_and_scheduler(
                str(params["Sampler"]), args.get("scheduler"))
    except (TypeError, ValueError) as e:
        message = e.message if isinstance(e, errors.SerenaError) else str(e)
        raise errors.InvalidParameter(f"img2img batch: PNG info of {where}: {message}",
                                      field="img2img_batch_png_info_props") from e
    checkpoint = sd_models.get_closet_checkpoint_match(params.get("Model hash"))
    if checkpoint is not None:
        out["override_settings"] = {**args["override_settings"], "sd_model_checkpoint": checkpoint.name}
    return out


def _check_scaled_sizes(paths: tuple[str, ...], scale_by: float | None) -> None:
    """Refuse, before any work, an input whose "Resize by" size is outside the sizes a job takes
    (64–2048 per side) or exceeds ``api_max_pixels``."""
    from modules.processing_validation import MAX_SIZE, MIN_SIZE
    if scale_by is None:
        return
    limit = int(shared.opts.api_max_pixels)
    for path in paths:
        try:
            with Image.open(path) as opened:  # reads the header only
                width, height = scaled_size(opened.size, scale_by)
        except (OSError, ValueError):
            continue  # skipped (and logged) when its turn comes
        if not (MIN_SIZE <= min(width, height) and max(width, height) <= MAX_SIZE) or width * height > limit:
            raise errors.InvalidParameter(
                f"img2img batch: {os.path.basename(path)} resized by {scale_by} is {width}x{height}: each side "
                f"must be {MIN_SIZE}–{MAX_SIZE} and the area at most api_max_pixels={limit}", field="scale_by")


def output_settings(stem: str, args: dict[str, Any]) -> dict[str, Any]:
    """The options an output folder sets while one input is generated (A1111 facts): no subfolder,
    the input's stem as the file name pattern (numbered when one input makes several images), and
    a number suffix instead of replacing a taken name (for a script's images only: see `_generate`)."""
    several = args.get("n_iter", 1) > 1 or args.get("batch_size", 1) > 1
    return {"save_to_dirs": False,
            "samples_filename_pattern": f"{stem}-[generation_number]" if several else stem,
            "save_images_replace_action": "Add number suffix"}


def image_args(base: dict[str, Any], image: Image.Image, mask: Image.Image | None,
               batch: BatchSpec) -> dict[str, Any]:
    """One input's constructor arguments: the request's, with its init images, mask and size."""
    args = dict(base, init_images=[image] * int(base.get("batch_size", 1)), mask=mask)
    if batch.scale_by is not None:
        args["width"], args["height"] = scaled_size(image.size, batch.scale_by)
    return args


# --- the batch -----------------------------------------------------------------------------------------
@dataclass
class _Job:
    """What every input of one batch shares, filled before the first input."""

    cls: type
    base: dict[str, Any]
    runner: Any
    script: Any
    script_args: list[Any]
    samples_dir: str
    grids_dir: str
    ui: bool


def _generate(job: _Job, args: dict[str, Any], settings: dict[str, Any]) -> Any:
    """One input through the selected script's `run`, else `processing.process_images`."""
    from modules import processing
    p = job.cls(**args)
    p.is_api = not job.ui
    p.outpath_samples, p.outpath_grids = job.samples_dir, job.grids_dir
    if job.runner is not None:
        p.scripts = job.runner
        p.script_args = tuple(job.script_args)
    try:
        processed = None
        if job.script is not None:
            with shared.opts.override(settings):
                processed = job.runner.run(p, *job.script_args)
        if processed is None:  # no script, or it made nothing: the plain path keeps the replace action
            plain = {k: v for k, v in settings.items() if k != "save_images_replace_action"}
            with shared.opts.override(plain):
                processed = processing.process_images(p)
        return processed
    finally:
        p.close()


def _combined(total: Any, processed: Any, limit: int) -> Any:
    """Append one input's images and infotexts to the batch's (the first input's `Processed`);
    only the first `limit` (``img2img_batch_show_results_limit``, -1: all) are kept."""
    if processed is None:
        return total
    if total is None:
        total = processed
    else:
        total.images.extend(processed.images)
        total.infotexts.extend(processed.infotexts)
    if 0 <= limit < len(total.images):
        total.images, total.infotexts = total.images[:limit], total.infotexts[:limit]
    return total


def _one_input(job: _Job, path: str, image: Image.Image, folders: BatchFolders, batch: BatchSpec) -> Any:
    """Generate one input: its mask, PNG info, size and output settings applied."""
    found = mask_path(path, folders.masks)
    mask = _read(found) if found else None
    args = image_args(job.base, ImageOps.exif_transpose(image), mask, batch)
    args = apply_png_info(args, png_info(image, path, batch, folders.png_info_dir), os.path.basename(path))
    settings: dict[str, Any] = {}
    if folders.output_dir:
        settings = output_settings(_stem(path), args)
        args["override_settings"] = {k: v for k, v in args["override_settings"].items() if k not in _OUTPUT_SETTINGS}
        args["do_not_save_samples"] = False
    return _generate(job, args, settings)


def _prepare(req: m.StableDiffusionImg2ImgProcessingAPI, folders: BatchFolders, ui: bool) -> _Job:
    """The request resolved once for the whole batch (limits, sampler, scripts, seeds fixed)."""
    from modules import processing
    req = generation.apply_infotext(req.model_copy(update={"init_images": None, "mask": None}), is_img2img=True)
    cls = processing.StableDiffusionProcessingImg2Img
    base = generation.processing_args(req, cls)
    base.update(init_images=None, mask=None, seed=processing.get_fixed_seed(base["seed"]),
                subseed=processing.get_fixed_seed(base.get("subseed", -1)))
    if req.mask_blur is not None:
        base["mask_blur_x"] = base["mask_blur_y"] = req.mask_blur
    runner = generation.script_runner(True)
    script, script_args = generation.build_script_args(req, runner)
    samples, grids = generation.output_folders("img2img", None, ui)
    return _Job(cls, base, runner, script, script_args, folders.output_dir or samples, grids, ui)


def run_img2img_batch(req: m.StableDiffusionImg2ImgProcessingAPI, batch: BatchSpec, *, ui: bool = True) -> Any:
    """Run `req` over every image of `batch.input_dir` as one queued job (A1111's img2img batch).

    Each input: opened with its EXIF orientation, repeated `batch_size` times as the init images,
    masked per `BatchSpec.inpaint_mask_dir`, resized by `scale_by`, given its PNG info, then run
    through the selected script or `processing.process_images`. Interrupt stops the batch (what is
    done is returned); Skip skips the current input. `req.init_images` and `req.mask` are ignored.

    Args:
        req: the img2img request every input starts from (the UI's values).
        batch: the Batch tab's folders and options.
        ui: a browser-UI job (`p.is_api` False, the general output folders win), as `run_img2img`.

    Returns:
        One `Processed`: the first input's, with the images and infotexts of the others appended
        (an empty one when nothing was generated).

    Raises:
        errors.InvalidParameter: see `resolve_folders`; request limits as `generation.run_img2img`;
            a bad PNG info value.
    """
    from modules import processing
    folders = resolve_folders(batch)
    _check_scaled_sizes(folders.inputs, batch.scale_by)
    job = _prepare(req, folders, ui)
    limit = int(shared.opts.img2img_batch_show_results_limit)
    total = None
    task_id = req.force_task_id or call_queue.create_task_id("img2img")
    with call_queue.queued_job(task_id, "scripts_img2img") as ctx:
        state = ctx.state
        state.job_count = len(folders.inputs) * int(job.base.get("n_iter", 1))
        log.info("img2img batch: %d images, %d new images each", len(folders.inputs),
                 job.base.get("n_iter", 1) * job.base.get("batch_size", 1))
        for i, path in enumerate(folders.inputs):
            state.job = f"{i + 1} out of {len(folders.inputs)}"
            state.skipped = False
            if state.interrupted or state.stopping_generation:
                break
            image = _read(path)
            if image is not None:
                total = _combined(total, _one_input(job, path, image, folders, batch), limit)
    if total is None:
        empty = job.cls(**job.base)
        total = processing.Processed(empty, [], empty.seed, "")
    return total


__all__ = ["BatchFolders", "BatchSpec", "PNG_INFO_PROPS", "apply_png_info", "image_args", "mask_path",
           "output_settings", "png_info", "resolve_folders", "run_img2img_batch"]
