"""What the browser UI's controls do, kept apart from the layout (`modules.ui`) so tests call them.

Every generation takes the API's road: the UI's values become the API's pydantic request
(`StableDiffusionTxt2ImgProcessingAPI` / `StableDiffusionImg2ImgProcessingAPI`), run as a job of
the one queue (`modules.runtime.job_service.run_request`, as the API's jobs), which builds `p` and
calls `processing.process_images` wherever the executor runs it. An img2img batch over folders
runs in this process behind the same FIFO lock. Domain errors (`errors.SerenaError`) reach the browser as `gr.Error`
with their message; nothing here prints and swallows.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import gradio as gr
from PIL import Image
from pydantic import BaseModel, ValidationError

from modules import call_queue, errors, img2img_inputs, shared
from modules.api import models

log = logging.getLogger("serena.ui")

# Names of the generation inputs, in the order the layout passes their values (after the task id).
COMMON_FIELDS: tuple[str, ...] = (
    "prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "width", "height",
    "n_iter", "batch_size", "cfg_scale", "seed",
    "seed_extras", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
    "enable_refiner", "refiner_checkpoint", "refiner_switch_at",
)
TXT2IMG_FIELDS: tuple[str, ...] = COMMON_FIELDS + (
    "enable_hr", "hr_upscaler", "hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "denoising_strength", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
)
IMG2IMG_FIELDS: tuple[str, ...] = COMMON_FIELDS + img2img_inputs.INPUT_FIELDS + (
    "resize_mode", "denoising_strength", "mask_blur", "inpainting_mask_invert",
    "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
)
FIELD_DEFAULTS: dict[str, Any] = {
    "seed_extras": False, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_w": 0, "seed_resize_from_h": 0,
    "enable_refiner": False, "refiner_checkpoint": None, "refiner_switch_at": 0.8,
    "hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Use same scheduler", "hr_prompt": "", "hr_negative_prompt": "",
    **img2img_inputs.INPUT_DEFAULTS,
}
"""What the optional controls hold when the page has not changed them (the request then equals one
made without them)."""
SAME = ("Use same checkpoint", "Use same sampler", "Use same scheduler")

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")


@dataclass
class GenerationOutput:
    """What a finished generation shows: gallery images, the infotext of the first real image,
    every image's infotext (for gallery selection) and a short HTML status line."""

    images: list[Image.Image]
    infotext: str
    infotexts: list[str]
    status_html: str
    generation_info: str = ""
    """The job's `Processed.js()` JSON (what the save buttons and send-to read)."""

    def as_tuple(self) -> tuple[list[Image.Image], str, list[str], str, str]:
        return self.images, self.infotext, self.infotexts, self.status_html, self.generation_info


# --- errors ------------------------------------------------------------------------------------------
def user_error(message: str) -> gr.Error:
    """A `gr.Error` for a user's mistake: the browser shows `message` in a toast and the server
    console gets one line (Gradio would print a traceback, which is for bugs, not bad input)."""
    log.warning("UI request refused: %s", message)
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn domain errors into `gr.Error` (the browser shows the message in a toast)."""
    try:
        yield
    except errors.SerenaError as e:
        raise user_error(e.message) from e


def _validated(cls: type[BaseModel], fields: dict[str, Any]) -> Any:
    """`cls(**fields)`; pydantic's complaints become one readable `gr.Error`."""
    try:
        return cls.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise user_error(f"invalid settings: {problems}") from e


# --- UI values → API request ---------------------------------------------------------------------------
def encode_png(image: Image.Image) -> str:
    """Base64 PNG of `image`, the form the API models take for `init_images` and `mask`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _common_fields(values: Mapping[str, Any], task_id: str | None) -> dict[str, Any]:
    """Request fields both tabs share; the UI saves its samples as A1111's UI does. The extra-seed
    fields count only while "Extra" is ticked, the refiner only while it is enabled (A1111)."""
    values = {**FIELD_DEFAULTS, **values}
    fields = {
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
        "styles": list(values.get("styles") or []),
        "sampler_name": values.get("sampler_name"),
        "scheduler": values.get("scheduler"),
        "steps": int(values["steps"]),
        "width": int(values["width"]),
        "height": int(values["height"]),
        "n_iter": int(values["n_iter"]),
        "batch_size": int(values["batch_size"]),
        "cfg_scale": float(values["cfg_scale"]),
        "seed": int(values["seed"]) if values.get("seed") is not None else -1,
        "save_images": True,
        "force_task_id": task_id,
    }
    if values.get("seed_extras"):
        fields.update(subseed=int(values["subseed"]) if values.get("subseed") is not None else -1,
                      subseed_strength=float(values.get("subseed_strength") or 0.0),
                      seed_resize_from_w=int(values.get("seed_resize_from_w") or 0),
                      seed_resize_from_h=int(values.get("seed_resize_from_h") or 0))
    if values.get("enable_refiner") and values.get("refiner_checkpoint") not in (None, "", "None"):
        fields.update(refiner_checkpoint=values["refiner_checkpoint"],
                      refiner_switch_at=float(values.get("refiner_switch_at") or 0.8))
    return fields


def txt2img_request(values: Mapping[str, Any], task_id: str | None = None) -> models.StableDiffusionTxt2ImgProcessingAPI:
    """The API request the txt2img tab's values describe (hires denoising only with hires fix on)."""
    fields = _common_fields(values, task_id)
    values = {**FIELD_DEFAULTS, **values}
    enable_hr = bool(values.get("enable_hr"))
    if enable_hr:  # the hires pass's own checkpoint, sampler, schedule and prompts ("Use same …" = none)
        fields.update({key: values[key] for key in ("hr_checkpoint_name", "hr_sampler_name", "hr_scheduler")
                       if values.get(key) not in (None, "", *SAME)})
        fields.update(hr_prompt=values.get("hr_prompt") or "", hr_negative_prompt=values.get("hr_negative_prompt") or "")
    fields.update(enable_hr=enable_hr, hr_upscaler=values.get("hr_upscaler"),
                  hr_scale=float(values.get("hr_scale") or 2.0),
                  hr_second_pass_steps=int(values.get("hr_second_pass_steps") or 0),
                  hr_resize_x=int(values.get("hr_resize_x") or 0), hr_resize_y=int(values.get("hr_resize_y") or 0),
                  denoising_strength=float(values["denoising_strength"]) if enable_hr else None)
    return _validated(models.StableDiffusionTxt2ImgProcessingAPI, fields)


def img2img_request(values: Mapping[str, Any], task_id: str | None = None) -> models.StableDiffusionImg2ImgProcessingAPI:
    """The API request the img2img tab's values describe: the chosen sub-tab's image and mask
    (`img2img_inputs.resolve`), the size from "Resize to" or the image's own size × "Resize by".
    For the Batch sub-tab the request has no image (each folder image is added by the batch).

    Raises:
        gr.Error: the chosen sub-tab holds no image.
    """
    values = {**FIELD_DEFAULTS, **values}
    fields = _common_fields(values, task_id)
    mode = int(values.get("img2img_mode") or 0)
    image = mask = None
    if mode != img2img_inputs.BATCH:
        try:
            resolved = img2img_inputs.resolve(values, str(shared.opts.img2img_background_color or "#ffffff"))
        except img2img_inputs.MissingInput as e:
            raise user_error(str(e)) from e
        image, mask = resolved.image, resolved.mask
        if int(values.get("selected_scale_tab") or 0) == 1:
            fields["width"], fields["height"] = img2img_inputs.scaled_size(image.size, float(values["scale_by"]))
    fields.update(init_images=[encode_png(image)] if image is not None else None,
                  mask=encode_png(mask) if mask is not None else None,
                  resize_mode=int(values.get("resize_mode") or 0),
                  denoising_strength=float(values["denoising_strength"]),
                  mask_blur=int(values.get("mask_blur") or 0),
                  inpainting_mask_invert=int(values.get("inpainting_mask_invert") or 0),
                  inpainting_fill=int(values.get("inpainting_fill") or 0),
                  inpaint_full_res=bool(values.get("inpaint_full_res")),
                  inpaint_full_res_padding=int(values.get("inpaint_full_res_padding") or 0))
    return _validated(models.StableDiffusionImg2ImgProcessingAPI, fields)


def batch_spec(values: Mapping[str, Any]) -> Any:
    """The Batch sub-tab's folders and PNG-info choices (`img2img_batch.BatchSpec`; the batch
    refuses folders with --hide-ui-dir-config or outside the data folder)."""
    from modules import img2img_batch
    values = {**FIELD_DEFAULTS, **values}
    return img2img_batch.BatchSpec(
        input_dir=str(values["img2img_batch_input_dir"] or ""), output_dir=str(values["img2img_batch_output_dir"] or ""),
        inpaint_mask_dir=str(values["img2img_batch_inpaint_mask_dir"] or ""),
        use_png_info=bool(values["img2img_batch_use_png_info"]),
        png_info_props=tuple(values["img2img_batch_png_info_props"] or ()),
        png_info_dir=str(values["img2img_batch_png_info_dir"] or ""),
        scale_by=float(values["scale_by"]) if int(values.get("selected_scale_tab") or 0) == 1 else None)


# --- running -------------------------------------------------------------------------------------------
def new_task_id(kind: str) -> str:
    """A1111-shaped task id the progress display follows (`task(txt2img-XXXXXXX)`)."""
    return call_queue.create_task_id(kind)


def present(processed: Any, seconds: float) -> GenerationOutput:
    """Gallery images, infotexts and a status line from a `processing.Processed`."""
    images = list(processed.images)
    infotexts = list(processed.infotexts or [])
    # Scripts may drop images but keep every infotext (X/Y/Z plot without sub images, as in A1111):
    # the infotexts still pair with the images by position.
    infotexts = infotexts[:len(images)] if len(infotexts) >= len(images) else [processed.info] * len(images)
    first = min(max(int(getattr(processed, "index_of_first_image", 0) or 0), 0), max(len(images) - 1, 0))
    shown = infotexts[first] if infotexts else ""
    status = f"<p class='serena-status'>{len(images) - first} image(s) in {seconds:.1f} s</p>"
    if getattr(processed, "comments", ""):
        status += f"<p class='serena-comments'>{html.escape(processed.comments)}</p>"
    info = processed.js() if callable(getattr(processed, "js", None)) else ""
    return GenerationOutput(images, shown, infotexts, status, info)


def _queued_job(kind: str, request: Any) -> Any:
    """Run the tab's request as a job of the one queue (the job service, as the API's jobs) and
    return its `Processed` (or, when it ran in another process, a view of it)."""
    from modules.runtime import job_service, jobs
    _, output = job_service.run_request(kind, request, source="ui")
    return jobs.processed_of(output)


def _run(run: Callable[[Any], Any], request: Any) -> GenerationOutput:
    """Call `run(request)` (a queued job, or an img2img batch) and present what it returns."""
    started = time.perf_counter()
    with user_errors():
        processed = run(request)
    return present(processed, time.perf_counter() - started)


@dataclass(frozen=True)
class ScriptSlot:
    """Where one script's controls sit in a tab's flat script argument values."""

    title: str
    alwayson: bool
    args_from: int
    args_to: int


def script_layout(runner: Any) -> list[ScriptSlot]:
    """The layout of `runner`'s scripts: AlwaysVisible ones, then the selectable ones in dropdown order.
    A tab keeps the layout it was built with, so a later script reload cannot shift its values."""
    slots = [ScriptSlot(s.title(), True, s.args_from, s.args_to) for s in runner.alwayson_scripts
             if s.args_from is not None]
    slots += [ScriptSlot(s.title(), False, s.args_from or 0, s.args_to or 0) for s in runner.selectable_scripts]
    return slots


def script_fields(is_img2img: bool, script_values: Sequence[Any],
                  layout: Sequence[ScriptSlot] | None = None) -> dict[str, Any]:
    """The request's `script_name`, `script_args` and `alwayson_scripts` from the tab's flat script
    argument values (slot 0: the "Script" dropdown's index, 0 = none), so the UI's scripts take the
    API's road. An AlwaysVisible script always gets its slice; a selectable one only when chosen.
    `layout` is the one the tab was built with (default: the current runner's)."""
    from modules import scripts
    if not script_values:
        return {}
    if layout is None:
        layout = script_layout(scripts.scripts_img2img if is_img2img else scripts.scripts_txt2img)
    values = list(script_values)
    fields: dict[str, Any] = {"alwayson_scripts": {
        slot.title: {"args": values[slot.args_from:slot.args_to]} for slot in layout
        if slot.alwayson and slot.args_to > slot.args_from}}
    selectable = [slot for slot in layout if not slot.alwayson]
    chosen = values[0] if values and isinstance(values[0], int) else 0
    if 0 < chosen <= len(selectable):
        slot = selectable[chosen - 1]
        fields["script_name"] = slot.title
        fields["script_args"] = values[slot.args_from:slot.args_to]
    return fields


def generate_txt2img(values: Mapping[str, Any], task_id: str | None = None, script_values: Sequence[Any] = (),
                     layout: Sequence[ScriptSlot] | None = None) -> GenerationOutput:
    """Run the txt2img tab's values (and its scripts' values) as a queued job."""
    request = txt2img_request(values, task_id)
    request = request.model_copy(update=script_fields(False, script_values, layout))
    return _run(functools.partial(_queued_job, "txt2img"), request)


def generate_img2img(values: Mapping[str, Any], task_id: str | None = None, script_values: Sequence[Any] = (),
                     layout: Sequence[ScriptSlot] | None = None) -> GenerationOutput:
    """Run the img2img tab's values (and its scripts' values) as a queued job (a batch: in process)."""
    request = img2img_request(values, task_id)
    request = request.model_copy(update=script_fields(True, script_values, layout))
    if int(values.get("img2img_mode") or 0) == img2img_inputs.BATCH:
        from modules import img2img_batch
        spec = batch_spec(values)
        return _run(lambda req: img2img_batch.run_img2img_batch(req, spec, ui=True), request)
    return _run(functools.partial(_queued_job, "img2img"), request)


def txt2img(task_id: str | None, *values: Any, layout: Sequence[ScriptSlot] | None = None
            ) -> tuple[list[Image.Image], str, list[str], str, str]:
    """Gradio entry point: values in `TXT2IMG_FIELDS` order, then the scripts' flat argument values."""
    n = len(TXT2IMG_FIELDS)
    return generate_txt2img(dict(zip(TXT2IMG_FIELDS, values[:n], strict=True)), task_id, values[n:],
                            layout).as_tuple()


def img2img(task_id: str | None, *values: Any, layout: Sequence[ScriptSlot] | None = None
            ) -> tuple[list[Image.Image], str, list[str], str, str]:
    """Gradio entry point: values in `IMG2IMG_FIELDS` order, then the scripts' flat argument values."""
    n = len(IMG2IMG_FIELDS)
    return generate_img2img(dict(zip(IMG2IMG_FIELDS, values[:n], strict=True)), task_id, values[n:],
                            layout).as_tuple()


def select_infotext(infotexts: Sequence[str] | None, evt: gr.SelectData) -> str:
    """The infotext of the gallery image the user clicked."""
    if not infotexts or evt.index is None:
        return ""
    index = evt.index if isinstance(evt.index, int) else int(evt.index[0])
    return infotexts[index] if 0 <= index < len(infotexts) else ""


def seed_from_infotext(infotext: str | None) -> int:
    """The seed recorded in the shown infotext, or -1 (the "reuse seed" button)."""
    from modules import infotext_utils
    if not infotext:
        return -1
    try:
        return int(infotext_utils.parse_generation_parameters(infotext).get("Seed", -1))
    except (TypeError, ValueError):
        return -1


# --- progress and cancellation: modules/ui_progress.py (names kept here for callers) ----------------------
from modules.ui_progress import interrupt, progress_html, skip  # noqa: E402,F401


# --- checkpoint -----------------------------------------------------------------------------------------------
def checkpoint_titles() -> list[str]:
    """Titles of the known checkpoints (`name.safetensors [hash]`), A1111's dropdown entries."""
    from modules import sd_models
    return sd_models.checkpoint_tiles()


def current_checkpoint() -> str | None:
    """The title of the loaded checkpoint, else what the option names."""
    from modules import sd_models
    model = sd_models.model_data.sd_model
    info = getattr(model, "sd_checkpoint_info", None) if model is not None else None
    if info is not None:
        return info.title
    wanted = shared.opts.sd_model_checkpoint
    found = sd_models.get_closet_checkpoint_match(wanted) if wanted else None
    return found.title if found is not None else wanted


def _config_file() -> str:
    return getattr(shared.cmd_opts, "ui_settings_file", None) or shared.data_paths.config_file


def change_checkpoint(title: str) -> Any:
    """Set option `sd_model_checkpoint` (its hook loads the model) between jobs, and save config.json.

    On failure the previous model stays loaded: a warning toast says why and the dropdown goes
    back to the current checkpoint.
    """
    try:
        with call_queue.queue_lock:  # never swap a model in the middle of a job
            shared.opts.set("sd_model_checkpoint", title)
        shared.opts.save(_config_file())
    except errors.SerenaError as e:
        gr.Warning(f"Checkpoint not changed: {e.message}")
        return gr.update(value=current_checkpoint())
    return gr.update(value=current_checkpoint())


def checkpoint_dropdown() -> Any:
    """The dropdown's choices and value now (page load: the API may have switched the model)."""
    return gr.update(choices=checkpoint_titles(), value=current_checkpoint())


def refresh_checkpoints() -> Any:
    """Rescan the model folders, then refresh the dropdown."""
    from modules import sd_models
    sd_models.list_models()
    return checkpoint_dropdown()


# --- PNG Info --------------------------------------------------------------------------------------------------
def png_info(image: Image.Image | None) -> tuple[str, dict[str, Any]]:
    """The infotext an image carries and its parsed parameters (empty when it carries none)."""
    from modules import infotext_utils
    if image is None:
        return "", {}
    text, items = infotext_utils.read_info_from_image(image)
    if not text:
        other = {k: v for k, v in items.items() if isinstance(v, str)}
        return "", other
    return text, infotext_utils.parse_generation_parameters(text)


# --- "Send to txt2img / img2img" (paste an infotext into a tab) ----------------------------------------------
# The tab fields a pasted infotext fills, with the type each control takes; which infotext label
# feeds which field is the API's mapping (`generation.infotext_labels`), kept in one place.
_PASTED_TYPES: dict[str, type] = {
    "prompt": str, "negative_prompt": str, "steps": int, "cfg_scale": float, "seed": int, "width": int,
    "height": int, "denoising_strength": float, "hr_scale": float, "hr_upscaler": str,
    "hr_second_pass_steps": int, "hr_resize_x": int, "hr_resize_y": int,
    "subseed": int, "subseed_strength": float, "seed_resize_from_w": int, "seed_resize_from_h": int,
    "hr_checkpoint_name": str, "hr_sampler_name": str, "hr_scheduler": str, "hr_prompt": str,
    "hr_negative_prompt": str, "refiner_checkpoint": str, "refiner_switch_at": float,
}


def _cast(value: Any, kind: type) -> Any:
    return int(float(value)) if kind is int else kind(value)


def fields_from_infotext(text: str | None) -> dict[str, Any]:
    """Tab values an infotext describes (A1111's paste): prompts, sampling, size, seed, hires fix.

    Values that do not parse, and a sampler or scheduler Serena does not know, are left out.
    """
    from modules import infotext_utils, sd_samplers
    from modules.runtime import jobs as generation
    if not text:
        return {}
    params = infotext_utils.parse_generation_parameters(text)
    values: dict[str, Any] = {}
    for label, name in generation.infotext_labels(is_img2img=False).items():
        if label in params and name in _PASTED_TYPES:
            with contextlib.suppress(TypeError, ValueError):
                values[name] = _cast(params[label], _PASTED_TYPES[name])
    with contextlib.suppress(errors.SerenaError):
        values["sampler_name"], values["scheduler"] = sd_samplers.get_sampler_and_scheduler(
            params.get("Sampler"), params.get("Schedule type"))
    values["enable_hr"] = "Hires upscale" in params or "Hires upscaler" in params
    values["seed_extras"] = any(k in params for k in ("Variation seed", "Seed resize from-1"))
    values["enable_refiner"] = "Refiner" in params
    return values


def _like(default: Any, value: Any) -> Any:
    """`value` (parsed from infotext text) converted to the type of a control's `default`;
    "no change" when it does not convert."""
    from modules.options import cast_like
    try:
        return cast_like(default, value)
    except (TypeError, ValueError):
        return gr.update()


def paste_script_fields(text: str | None, fields: Sequence[tuple[Any, Any]]) -> list[Any]:
    """One output per scripts' infotext field (control, key): the value its key names in the pasted
    infotext — a label, or a function of the parsed parameters (A1111's `infotext_fields`) — or
    "no change" when the infotext does not have it. A failing function is reported, not raised."""
    from modules import infotext_utils
    params = infotext_utils.parse_generation_parameters(text or "")
    out: list[Any] = []
    for control, key in fields:
        try:
            value = key(params) if callable(key) else params.get(key)
        except Exception:
            errors.report(f"Error pasting infotext field into {getattr(control, 'elem_id', None) or control}",
                          exc_info=True)
            value = None
        out.append(gr.update() if value is None else _like(getattr(control, "value", None), value))
    return out


def paste_infotext(text: str | None, field_order: Sequence[str]) -> list[Any]:
    """One output per name of `field_order`: the pasted value, or "no change"."""
    values = fields_from_infotext(text)
    if "enable_hr" in field_order and not values.get("enable_hr"):
        values.pop("denoising_strength", None)  # txt2img's denoising slider belongs to hires fix
    return [values[name] if name in values else gr.update() for name in field_order]
