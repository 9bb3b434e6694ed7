"""From a request to a finished job: the one path every generation takes (API, UI, CLI, job service).

`prepare(kind, req)` resolves a request once (infotext) and refuses what cannot run; `execute`
runs a stored job for the job service and its executors. `run_txt2img(req)` / `run_img2img(req)` resolve a validated request model in A1111's order
(spec §1.3: infotext, selectable script, sampler and scheduler, save flags, API-only keys removed,
script-args array), refuse what the request limits forbid, then wait for the FIFO queue, build
the `StableDiffusionProcessing*` object and run it through the selected script's `run` or
`processing.process_images`. They return the `Processed`; mapping it to HTTP is `modules.api.api`'s.
The request models stay in `modules.api.models` (A1111's import path for extensions).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable

from modules import call_queue, errors, options, shared
from modules.api import image_io
from modules.api import models as m

# --- request → processing arguments ------------------------------------------------------------------
# Infotext labels applied to txt2img fields (spec §1.4); img2img takes only the script-owned ones.
_INFOTEXT_TXT2IMG = {
    "Prompt": "prompt", "Negative prompt": "negative_prompt", "CFG scale": "cfg_scale",
    "Size-1": "width", "Size-2": "height", "Batch size": "batch_size", "Styles array": "styles",
    "Denoising strength": "denoising_strength", "Hires upscale": "hr_scale", "Hires upscaler": "hr_upscaler",
    "Hires steps": "hr_second_pass_steps", "Hires resize-1": "hr_resize_x", "Hires resize-2": "hr_resize_y",
    "Hires checkpoint": "hr_checkpoint_name", "Hires sampler": "hr_sampler_name",
    "Hires schedule type": "hr_scheduler", "Hires prompt": "hr_prompt", "Hires negative prompt": "hr_negative_prompt",
}
_INFOTEXT_SCRIPT_FIELDS = {
    "Steps": "steps", "Sampler": "sampler_name", "Schedule type": "scheduler", "Seed": "seed",
    "Variation seed": "subseed", "Variation seed strength": "subseed_strength",
    "Seed resize from-1": "seed_resize_from_w", "Seed resize from-2": "seed_resize_from_h",
    "Refiner": "refiner_checkpoint", "Refiner switch at": "refiner_switch_at",
}
_USE_SAME = {"Use same checkpoint", "Use same sampler", "Use same scheduler"}


def _cast_like(value: Any, like: Any) -> Any:
    """Cast an infotext string to the type of `like` (a field's current value or default)."""
    if isinstance(like, bool):
        return str(value).lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)
    if isinstance(like, int):
        return int(float(value))
    if isinstance(like, float):
        return float(value)
    return value


def infotext_labels(is_img2img: bool) -> dict[str, str]:
    """Infotext label → request field, as A1111 applies a pasted infotext (spec §1.4)."""
    mapping = dict(_INFOTEXT_SCRIPT_FIELDS)
    if not is_img2img:
        mapping.update(_INFOTEXT_TXT2IMG)
    return mapping


def apply_infotext(req: m._ProcessingFields, is_img2img: bool) -> m._ProcessingFields:
    """Fill fields not set in the request from `req.infotext`; option labels go to override_settings."""
    if not req.infotext:
        return req
    from modules import infotext_utils
    params = infotext_utils.parse_generation_parameters(req.infotext)
    update: dict[str, Any] = {}
    for label, field in infotext_labels(is_img2img).items():
        if label not in params or field in req.model_fields_set:
            continue
        value = params[label]
        if value in _USE_SAME:
            value = None
        default = type(req).model_fields[field].default
        try:
            update[field] = value if value is None or default is None else _cast_like(value, default)
        except (TypeError, ValueError) as e:
            raise errors.InvalidParameter(f"infotext: {label}: {value!r} is not valid: {e}", field="infotext") from e
    if not is_img2img and "enable_hr" not in req.model_fields_set:
        update["enable_hr"] = "Denoising strength" in params and any(
            k in params for k in ("Hires upscale", "Hires upscaler", "Hires resize-1"))
    overrides = dict(req.override_settings or {})
    for key, info in shared.opts.data_labels.items():
        if not info.infotext or info.infotext not in params or key in overrides:
            continue
        if key == "sd_model_checkpoint" and shared.opts.disable_weights_auto_swap:
            continue
        value = params[info.infotext]
        current = getattr(shared.opts, key)
        try:
            value = _cast_like(value, current if current is not None else info.default)
        except (TypeError, ValueError):
            continue
        if value != current:
            overrides[key] = value
    if overrides:
        update["override_settings"] = overrides
    return type(req).model_validate({**req.model_dump(), **update})


def check_limits(req: m._ProcessingFields) -> None:
    """Request limits from the options (api_max_pixels, api_max_batch_images, api_max_steps,
    api_max_prompt_chars)."""
    opts = shared.opts
    max_pixels, max_images, max_steps = int(opts.api_max_pixels), int(opts.api_max_batch_images), int(opts.api_max_steps)
    if req.width * req.height > max_pixels:
        raise errors.InvalidParameter(
            f"width x height = {req.width}x{req.height} exceeds api_max_pixels={max_pixels}", field="width")
    if req.batch_size * req.n_iter > max_images:
        raise errors.InvalidParameter(
            f"batch_size x n_iter = {req.batch_size}x{req.n_iter} exceeds api_max_batch_images={max_images}",
            field="batch_size")
    for field in ("steps", "hr_second_pass_steps"):
        steps = getattr(req, field, 0) or 0
        if steps > max_steps:
            raise errors.InvalidParameter(f"{field}={steps} exceeds api_max_steps={max_steps}", field=field)
    if getattr(req, "enable_hr", False):
        w, h = hires_target(req)
        if w * h > max_pixels:
            raise errors.InvalidParameter(
                f"hires target {w}x{h} exceeds api_max_pixels={max_pixels}", field="hr_scale")
    check_prompt_lengths(req, int(opts.api_max_prompt_chars))


def check_prompt_lengths(req: m._ProcessingFields, limit: int) -> None:
    """Prompt parsing grows faster than linearly on deeply nested brackets: bound the text."""
    for field in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        value = getattr(req, field, "") or ""
        length = sum(len(x) for x in value) if isinstance(value, list) else len(value)
        if length > limit:
            raise errors.InvalidParameter(f"{field} is {length} characters, over api_max_prompt_chars={limit}",
                                          field=field)


def hires_target(req: m.StableDiffusionTxt2ImgProcessingAPI) -> tuple[int, int]:
    """The hires pass's output size (spec §1.3), for the pixel limit only."""
    if req.hr_resize_x == 0 and req.hr_resize_y == 0:
        return int(req.width * req.hr_scale), int(req.height * req.hr_scale)
    if req.hr_resize_y == 0:
        return req.hr_resize_x, req.hr_resize_x * req.height // req.width
    if req.hr_resize_x == 0:
        return req.hr_resize_y * req.width // req.height, req.hr_resize_y
    return req.hr_resize_x, req.hr_resize_y


def init_params(cls: type) -> set[str]:
    """Names the processing class's constructor accepts."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    return set(inspect.signature(cls).parameters)


# --- scripts (spec §1.3 "Script argument array") --------------------------------------------------------
def script_runner(is_img2img: bool) -> Any:
    try:
        from modules import scripts
    except ImportError:
        return None
    return getattr(scripts, "scripts_img2img" if is_img2img else "scripts_txt2img", None)


def script_title(script: Any) -> str:
    title = script.title() if callable(getattr(script, "title", None)) else getattr(script, "name", "")
    return str(title).lower()


def _find_script(runner: Any, name: str, scripts: list[Any]) -> Any:
    wanted = name.lower()
    for script in scripts:
        if script_title(script) == wanted:
            return script
    return None


def script_args_from_infotext(text: str | None, runner: Any) -> dict[int, Any]:
    """The script controls' values an infotext names, by script-args index (A1111 writes the
    scripts' `infotext_fields` into the args array when a request carries `infotext`). A key is an
    infotext label or a function of the parsed parameters; values that do not convert to the
    control's type are left out, a failing function is reported."""
    from modules import infotext_utils, options
    if not text or runner is None:
        return {}
    params = infotext_utils.parse_generation_parameters(text)
    positions = {id(control): i for i, control in enumerate(getattr(runner, "inputs", None) or [])}
    found: dict[int, Any] = {}
    for control, key in getattr(runner, "infotext_fields", None) or []:
        index = positions.get(id(control))
        if index is None:
            continue
        try:
            value = key(params) if callable(key) else params.get(key)
        except Exception:  # noqa: BLE001 - an extension's function: reported, the request goes on
            errors.report(f"infotext field of {getattr(control, 'elem_id', None) or control} failed", exc_info=True)
            continue
        if isinstance(value, dict):  # a gr.update(value=...)
            value = value.get("value")
        if value is None:
            continue
        try:
            found[index] = options.cast_like(getattr(control, "value", None), value)
        except (TypeError, ValueError):
            continue
    return found


def build_script_args(req: m._ProcessingFields, runner: Any,
                      infotext_args: dict[int, Any] | None = None) -> tuple[Any, list[Any]]:
    """The selected script (or None) and the flat script-args array, as A1111 lays it out:
    the controls' defaults, then what the infotext names (`infotext_args`), then the request's
    `script_args` and `alwayson_scripts` (explicit values win)."""
    if runner is None:
        if req.script_name:
            raise errors.InvalidParameter(f"Script '{req.script_name}' not found", field="script_name")
        for name in req.alwayson_scripts:
            raise errors.InvalidParameter(f"Script '{name}' not found", field="alwayson_scripts")
        return None, []
    selectable = list(getattr(runner, "selectable_scripts", []) or [])
    every = list(getattr(runner, "scripts", []) or [])
    script = None
    if req.script_name:
        script = _find_script(runner, req.script_name, selectable)
        if script is None:
            raise errors.InvalidParameter(f"Script '{req.script_name}' not found", field="script_name")
    size = max([1] + [getattr(s, "args_to", 0) or 0 for s in every])
    args: list[Any] = [None] * size
    inputs = getattr(runner, "inputs", None) or []
    for i, control in enumerate(inputs[:size]):
        args[i] = getattr(control, "value", None)
    for i, value in (infotext_args or {}).items():
        if 0 < i < size:
            args[i] = value
    args[0] = 0
    if script is not None:
        given = list(req.script_args)
        if len(given) <= script.args_to - script.args_from:
            # Fewer values than the script has controls: the rest keep their defaults. (A1111 shrinks
            # the array instead, so `run` gets too few arguments and fails.)
            args[script.args_from:script.args_from + len(given)] = given
        else:
            args[script.args_from:script.args_to] = given  # more values: passed on, as in A1111
        args[0] = selectable.index(script) + 1
    for name, spec in req.alwayson_scripts.items():
        found = _find_script(runner, name, every)
        if found is None:
            raise errors.InvalidParameter(f"Script '{name}' not found", field="alwayson_scripts")
        if not getattr(found, "alwayson", False):
            raise errors.InvalidParameter("Cannot have a selectable script in the always on scripts params",
                                          field="alwayson_scripts")
        given = list((spec or {}).get("args", []) if isinstance(spec, dict) else [])
        n = min(len(given), found.args_to - found.args_from)
        args[found.args_from:found.args_from + n] = given[:n]
    return script, args


def check_option_value(key: str, value: Any) -> None:
    """Reject an option value a client may not set: a type the option cannot hold (bool for a bool
    option, finite number for a number …), a value outside its range or choices, a read-only
    option (`--hide-ui-dir-config`), or a folder outside the data folder."""
    info = shared.opts.data_labels[key]
    if key in options.RESTRICTED_OPTS and getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise errors.ReadOnlyOption(f"option {key!r} is read-only (--hide-ui-dir-config)", field=key)
    options.check_location_option(key, value, shared.data_paths.data_path,
                                  allow_outside=bool(getattr(shared.cmd_opts, "allow_outside_data_dir", False)))
    default = info.default
    ok = True
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and ((info.minimum is not None and value < info.minimum) or
                   (info.maximum is not None and value > info.maximum)):
            raise errors.InvalidParameter(
                f"option {key!r}: {value!r} is outside [{info.minimum}, {info.maximum}]", field=key)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    if not ok:
        raise errors.InvalidParameter(
            f"option {key!r} expects {type(default).__name__}, got {type(value).__name__} {value!r}", field=key)
    if info.choices and isinstance(value, str) and value not in info.choices:
        raise errors.InvalidParameter(f"option {key!r}: {value!r} is not one of {list(info.choices)}", field=key)


# --- running -----------------------------------------------------------------------------------------
def processing_args(req: m._ProcessingFields, cls: type) -> dict[str, Any]:
    """Constructor arguments of `cls` for `req`: limits checked, sampler resolved, API-only keys removed."""
    from modules import sd_samplers
    check_limits(req)
    overrides = shared.opts.validate_overrides(req.override_settings or {})
    for key, value in overrides.items():
        check_option_value(key, value)
    # A1111 applies overrides with opts.set(is_api=True): restrict_api options are silently ignored.
    overrides = {k: v for k, v in overrides.items() if not shared.opts.data_labels[k].restrict_api}
    sampler, scheduler = sd_samplers.get_sampler_and_scheduler(req.sampler_name or req.sampler_index, req.scheduler)
    args = req.model_dump(exclude=set(m.API_ONLY_FIELDS))
    args.update(sampler_name=sampler, scheduler=scheduler, do_not_save_samples=not req.save_images,
                do_not_save_grid=not req.save_images, styles=req.styles or [],
                override_settings=overrides, comments={})
    accepted = init_params(cls)
    return {k: v for k, v in args.items() if k in accepted}


def run_txt2img(req: m.StableDiffusionTxt2ImgProcessingAPI, outdir: str | None = None, *, ui: bool = False,
                prepared: bool = False, **queue: Any) -> Any:
    """Run a txt2img request queued; returns the `Processed` (images saved to `outdir` if given).

    `ui=True` marks a browser-UI job: `p.is_api` is False and the general output folders
    (`outdir_samples`, `outdir_grids`) win over the per-tab ones, as in A1111's UI.
    `prepared=True`: the request already went through :func:`prepare` (infotext applied once).
    `queue`: `task_id`, `lock`, `on_start` as for :func:`run`.
    """
    from modules import processing
    if not prepared:
        req = apply_infotext(req, is_img2img=False)
    args = processing_args(req, processing.StableDiffusionProcessingTxt2Img)
    if req.firstphase_width and req.firstphase_height:  # legacy hires: width/height are the target
        args.update(hr_resize_x=req.width, hr_resize_y=req.height, width=req.firstphase_width,
                    height=req.firstphase_height, firstphase_width=0, firstphase_height=0)
    return run(req, processing.StableDiffusionProcessingTxt2Img, args, "txt2img", outdir=outdir, ui=ui, **queue)


def run_img2img(req: m.StableDiffusionImg2ImgProcessingAPI, outdir: str | None = None, *, ui: bool = False,
                prepared: bool = False, **queue: Any) -> Any:
    """Run an img2img request queued (init images and mask decoded first); returns the `Processed`.

    `outdir`, `ui`, `prepared` and `queue` as for :func:`run_txt2img`.

    Raises:
        errors.NotFound: `init_images` is null ("Init image not found", as A1111).
        errors.InvalidParameter / errors.InvalidImage: more init images than batch_size, bad images.
    """
    from modules import processing
    if not prepared:
        req = _resolve(True, req)  # the full checks follow as `p` is built (images decoded once)
    args = processing_args(req, processing.StableDiffusionProcessingImg2Img)
    args["init_images"] = [image_io.decode_base64_to_image(x, f"init_images[{i}]") for i, x in enumerate(req.init_images)]
    args["mask"] = image_io.decode_base64_to_image(req.mask, "mask") if req.mask else None
    if req.mask_blur is not None:
        args["mask_blur_x"] = args["mask_blur_y"] = req.mask_blur
    return run(req, processing.StableDiffusionProcessingImg2Img, args, "img2img", outdir=outdir, ui=ui, **queue)


REQUEST_MODELS = {"txt2img": m.StableDiffusionTxt2ImgProcessingAPI, "img2img": m.StableDiffusionImg2ImgProcessingAPI}


def prepare(kind: str, req: m._ProcessingFields) -> m._ProcessingFields:
    """The request resolved once, at submission: infotext applied, and everything that can be
    refused before the job runs checked now (limits, sampler, options, scripts, images), so a job
    service refuses a bad request with a 4xx instead of queueing a job that fails. Returns the
    resolved request; run it with `prepared=True`.

    Raises:
        errors.NotFound: an img2img request without `init_images`.
        errors.InvalidParameter (and subclasses): what :func:`processing_args` and
            :func:`build_script_args` refuse, images that do not decode.
    """
    from modules import processing
    is_img2img = kind == "img2img"
    req = _resolve(is_img2img, req)
    if is_img2img:
        for i, x in enumerate(req.init_images):
            image_io.decode_base64_to_image(x, f"init_images[{i}]")
        if req.mask:
            image_io.decode_base64_to_image(req.mask, "mask")
    cls = processing.StableDiffusionProcessingImg2Img if is_img2img else processing.StableDiffusionProcessingTxt2Img
    processing_args(req, cls)
    build_script_args(req, script_runner(is_img2img))
    return req


def _resolve(is_img2img: bool, req: m._ProcessingFields) -> m._ProcessingFields:
    """Infotext applied once; an img2img request has init images, no more than its batch size."""
    if is_img2img and req.init_images is None:
        raise errors.NotFound("Init image not found", field="init_images")
    req = apply_infotext(req, is_img2img=is_img2img)
    if is_img2img and len(req.init_images) > 1 and len(req.init_images) > req.batch_size:
        raise errors.InvalidParameter(
            f"{len(req.init_images)} init_images but batch_size is {req.batch_size}", field="init_images")
    return req


def request_model(kind: str, fields: dict[str, Any]) -> m._ProcessingFields:
    """A stored request body (JSON) back into its request model.

    Raises:
        errors.InvalidParameter: unknown kind, or fields the model refuses (e.g. a hand-edited store).
    """
    import pydantic
    model = REQUEST_MODELS.get(kind)
    if model is None:
        raise errors.InvalidParameter(f"unknown job kind {kind!r}; expected one of {sorted(REQUEST_MODELS)}",
                                      field="kind")
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError as e:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())) or "request"
        raise errors.InvalidParameter(f"{where}: {first.get('msg', e)}", field=where) from e


@dataclasses.dataclass
class JobOutput:
    """What a finished job hands back, in a form that crosses processes: the images encoded as the
    API sends them (`samples_format`, infotext embedded), their infotexts, `info`
    (`Processed.js()`), whether the job was interrupted, and the checkpoint loaded at the end.
    `processed` is the `Processed` itself, only where the job ran in this process."""

    images: list[bytes]
    formats: list[str]
    infotexts: list[str]
    info: str
    interrupted: bool = False
    checkpoint: str | None = None
    processed: Any = dataclasses.field(default=None, compare=False, repr=False)

    def without_processed(self) -> "JobOutput":
        return dataclasses.replace(self, processed=None)


class OutputView:
    """What the UI presents of a `Processed`, rebuilt from a :class:`JobOutput` made in another
    process (a Ray worker): the images decoded (infotext kept in `image.info`), their infotexts,
    `info`, `comments`, `index_of_first_image` and `js()`."""

    def __init__(self, output: JobOutput) -> None:
        import io
        import json

        from PIL import Image
        self._js = output.info
        data = json.loads(output.info or "{}")
        self.images = []
        for blob in output.images:
            image = Image.open(io.BytesIO(blob))
            image.load()
            self.images.append(image)
        self.infotexts = list(output.infotexts)
        self.info = self.infotexts[0] if self.infotexts else ""
        self.comments = data.get("comments", "") or ""
        self.index_of_first_image = int(data.get("index_of_first_image", 0) or 0)

    def js(self) -> str:
        return self._js


def processed_of(output: JobOutput) -> Any:
    """The job's `Processed` where it ran in this process, else an :class:`OutputView` of it."""
    return output.processed if output.processed is not None else OutputView(output)


def encode_output(processed: Any, interrupted: bool = False) -> JobOutput:
    """The :class:`JobOutput` of a `Processed`: every image with its infotext embedded (when
    `enable_pnginfo`), in the option `samples_format`, exactly the bytes the API returns."""
    from modules import infotext_utils, sd_models
    fmt = str(shared.opts.samples_format or "png").lower()
    infotexts = [str(x) for x in (getattr(processed, "infotexts", None) or [])]
    images, formats = [], []
    for i, image in enumerate(processed.images):
        if "parameters" not in image.info and i < len(infotexts) and shared.opts.enable_pnginfo:
            image.info["parameters"] = infotexts[i]
        images.append(infotext_utils.image_to_bytes(image, fmt, None))
        formats.append("jpg" if fmt == "jpeg" else fmt)
    loaded = getattr(sd_models.model_data.sd_model, "sd_checkpoint_info", None)
    return JobOutput(images, formats, infotexts, processed.js(), interrupted,
                     getattr(loaded, "title", None), processed)


def execute(job_id: str, kind: str, request: dict[str, Any], *, ui: bool = False,
            lock: Any = call_queue.queue_lock, on_start: Callable[[Any], None] | None = None) -> JobOutput:
    """Run one stored job (a request resolved by :func:`prepare`, as JSON) in this process: build
    `p`, run it through the selected script or `process_images` — so through the runner — and
    encode the result. Job services and executors (in-process threads, Ray workers) call this.
    `on_start(ctx)` gets the job's run context when it starts (to follow its progress)."""
    req = request_model(kind, request)
    run_fn = run_img2img if kind == "img2img" else run_txt2img
    seen: dict[str, Any] = {}

    def started(ctx: Any) -> None:
        seen["ctx"] = ctx
        if on_start is not None:
            on_start(ctx)
    processed = run_fn(req, ui=ui, prepared=True, task_id=job_id, lock=lock, on_start=started)
    ctx = seen.get("ctx")
    return encode_output(processed, interrupted=bool(ctx is not None and ctx.cancel.interrupted))


def output_folders(kind: str, outdir: str | None, ui: bool) -> tuple[str, str]:
    """(samples, grids) folders: `outdir` for both if given; the UI honours the general options."""
    opts = shared.opts
    if outdir:
        return outdir, outdir
    samples, grids = getattr(opts, f"outdir_{kind}_samples"), getattr(opts, f"outdir_{kind}_grids")
    if ui:
        return opts.outdir_samples or samples, opts.outdir_grids or grids
    return samples, grids


def run(req: m._ProcessingFields, cls: type, args: dict[str, Any], kind: str, *, outdir: str | None = None,
        ui: bool = False, task_id: str | None = None, lock: Any = call_queue.queue_lock,
        on_start: Callable[[Any], None] | None = None) -> Any:
    """Build `p` inside the FIFO queue (`lock`; None: no waiting) and run the selected script's
    `run`, else `process_images`. `on_start(ctx)` is called with the job's run context first."""
    from modules import processing
    is_img2img = kind == "img2img"
    runner = script_runner(is_img2img)
    script, script_args = build_script_args(req, runner, script_args_from_infotext(req.infotext, runner))
    task_id = task_id or req.force_task_id or call_queue.create_task_id(kind)
    with call_queue.queued_job(task_id, f"scripts_{kind}", lock) as ctx:
        if on_start is not None:
            on_start(ctx)
        p = cls(**args)
        p.is_api = not ui
        p.outpath_samples, p.outpath_grids = output_folders(kind, outdir, ui)
        if runner is not None:
            p.scripts = runner
            p.script_args = tuple(script_args)
        try:
            processed = runner.run(p, *script_args) if script is not None else processing.process_images(p)
        finally:
            p.close()
    if processed is None:
        raise errors.SerenaError(f"script '{req.script_name}' returned no result")
    return processed
