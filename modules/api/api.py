"""The `/sdapi/v1` routes: thin handlers that validate, build a processing object, run it through
the FIFO queue and `processing.process_images`, and map the result to A1111's response shapes.

Routes that wait for the queue (generation, extras, reloads) run in worker threads of their own
limiter, so any number of queued requests never starves the routes that must stay responsive
while a job runs (progress, interrupt, skip, options GET and the listings), which are `async`
and never block. Errors are raised as `modules.errors` exceptions; `modules.api.app` maps them.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import inspect
import os
import sys
import time
from typing import Any, Callable

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI

from modules import call_queue, errors, shared
from modules.api import image_io
from modules.runtime import job_service
from modules.runtime import jobs as generation
from modules.api import models as m
from modules.api.strict_json import StrictJSONRoute

# A1111 names extensions import from here (`from modules.api.api import decode_base64_to_image`).
decode_base64_to_image = image_io.decode_base64_to_image
encode_pil_to_base64 = image_io.encode_pil_to_base64

_JOB_THREADS = 256
_RELOADING_OPTIONS = ("sd_model_checkpoint", "sd_vae")
_SECRET_FLAGS = ("api_auth", "gradio_auth", "ngrok")


class NotSupported(errors.SerenaError):
    """The route exists for compatibility but Serena has no implementation behind it."""

    status_code = 501


class Api:
    """Registers every `/sdapi/v1` route on `app` (plus A1111's `/internal/progress`)."""

    def __init__(self, app: FastAPI, *, cmd_opts: argparse.Namespace | None = None,
                 auth: Callable[..., None] | None = None,
                 queue_lock: call_queue.FIFOLock = call_queue.queue_lock) -> None:
        self.app = app
        self.cmd_opts = cmd_opts if cmd_opts is not None else shared.cmd_opts
        self.queue_lock = queue_lock
        self._limiter: anyio.CapacityLimiter | None = None
        guarded = [Depends(auth)] if auth else []
        self.router = APIRouter(prefix="/sdapi/v1", dependencies=guarded, route_class=StrictJSONRoute)
        r = self.add_api_route
        generation_errors = (403, 404)  # read-only option in override_settings; checkpoint, upscaler, init image
        r("txt2img", self.text2imgapi, ["POST"], m.TextToImageResponse, generation_errors)
        r("img2img", self.img2imgapi, ["POST"], m.ImageToImageResponse, generation_errors)
        r("extra-single-image", self.extras_single_image_api, ["POST"], m.ExtrasSingleImageResponse, (404,))
        r("extra-batch-images", self.extras_batch_images_api, ["POST"], m.ExtrasBatchImagesResponse, (404,))
        r("png-info", self.pnginfoapi, ["POST"], m.PNGInfoResponse)
        r("progress", self.progressapi, ["GET"], m.ProgressResponse)
        r("interrogate", self.interrogateapi, ["POST"], m.InterrogateResponse, (404,))
        r("interrupt", self.interruptapi, ["POST"], None)
        r("skip", self.skip, ["POST"], None)
        r("options", self.get_config, ["GET"], None)
        r("options", self.set_config, ["POST"], None, (403, 404))  # frozen or read-only option; checkpoint
        r("cmd-flags", self.get_cmd_flags, ["GET"], None)
        r("samplers", self.get_samplers, ["GET"], list[m.SamplerItem])
        r("schedulers", self.get_schedulers, ["GET"], list[m.SchedulerItem])
        r("upscalers", self.get_upscalers, ["GET"], list[m.UpscalerItem])
        r("latent-upscale-modes", self.get_latent_upscale_modes, ["GET"], list[m.LatentUpscalerModeItem])
        r("sd-models", self.get_sd_models, ["GET"], list[m.SDModelItem])
        r("sd-vae", self.get_sd_vaes, ["GET"], list[m.SDVaeItem])
        r("hypernetworks", self.get_hypernetworks, ["GET"], list[m.HypernetworkItem])
        r("face-restorers", self.get_face_restorers, ["GET"], list[m.FaceRestorerItem])
        r("realesrgan-models", self.get_realesrgan_models, ["GET"], list[m.RealesrganItem])
        r("prompt-styles", self.get_prompt_styles, ["GET"], list[m.PromptStyleItem])
        r("embeddings", self.get_embeddings, ["GET"], m.EmbeddingsResponse)
        r("refresh-embeddings", self.refresh_embeddings, ["POST"], None)
        r("refresh-checkpoints", self.refresh_checkpoints, ["POST"], None)
        r("refresh-vae", self.refresh_vae, ["POST"], None)
        r("create/embedding", self.create_embedding, ["POST"], m.CreateResponse, (501,))
        r("create/hypernetwork", self.create_hypernetwork, ["POST"], m.CreateResponse, (501,))
        r("train/embedding", self.train_embedding, ["POST"], m.CreateResponse, (501,))
        r("train/hypernetwork", self.train_hypernetwork, ["POST"], m.CreateResponse, (501,))
        r("memory", self.get_memory, ["GET"], m.MemoryResponse)
        r("unload-checkpoint", self.unloadapi, ["POST"], None)
        r("reload-checkpoint", self.reloadapi, ["POST"], None, (404, 422))  # the selected file is gone or broken
        r("scripts", self.get_scripts_list, ["GET"], m.ScriptsList)
        r("script-info", self.get_script_info, ["GET"], list[m.ScriptInfo])
        r("extensions", self.get_extensions_list, ["GET"], list[m.ExtensionItem])
        r("loras", self.get_loras, ["GET"], list[m.LoraItem])
        r("refresh-loras", self.refresh_loras, ["POST"], None)
        if getattr(self.cmd_opts, "api_server_stop", False):
            r("server-kill", self.kill_webui, ["POST"], None)
            r("server-restart", self.restart_webui, ["POST"], None, (501,))
            r("server-stop", self.stop_webui, ["POST"], None)
        app.include_router(self.router)
        # Task ids and live previews: behind --api-auth like /sdapi/v1 (A1111 leaves them open).
        app.add_api_route("/internal/progress", self.internal_progress, methods=["POST"],
                          response_model=m.InternalProgressResponse, dependencies=guarded,
                          responses=declared_responses(self.internal_progress, ["POST"], (), bool(auth)))
        app.add_api_route("/internal/pending-tasks", self.pending_tasks, methods=["GET"], dependencies=guarded,
                          responses=declared_responses(self.pending_tasks, ["GET"], (), bool(auth)))

    def add_api_route(self, path: str, endpoint: Callable, methods: list[str], response_model: Any,
                      statuses: tuple[int, ...] = ()) -> None:
        """A1111's helper name; every route lands under the (optionally authenticated) router.

        `statuses` are the error statuses the route can answer beyond the ones every route of its
        kind can (see :func:`declared_responses`); all of them are declared in the OpenAPI document.
        """
        responses = declared_responses(endpoint, methods, statuses, bool(self.router.dependencies))
        self.router.add_api_route("/" + path, endpoint, methods=methods, response_model=response_model,
                                  responses=responses)

    async def _in_job_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking handler in a worker thread that does not use the default thread pool."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(_JOB_THREADS)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _queued(self, fn: Callable[[], Any]) -> Any:
        """Call `fn` holding the queue lock (model reloads never overlap a job)."""
        with self.queue_lock:
            return fn()

    # --- generation ---------------------------------------------------------------------------------
    async def text2imgapi(self, txt2imgreq: m.StableDiffusionTxt2ImgProcessingAPI) -> m.TextToImageResponse:
        return await self._in_job_thread(self.text2img, txt2imgreq)

    async def img2imgapi(self, img2imgreq: m.StableDiffusionImg2ImgProcessingAPI) -> m.ImageToImageResponse:
        return await self._in_job_thread(self.img2img, img2imgreq)

    def text2img(self, req: m.StableDiffusionTxt2ImgProcessingAPI) -> m.TextToImageResponse:
        """Blocking txt2img: submit to the job service and wait; A1111's response."""
        req, output = job_service.run_request("txt2img", req, source="sdapi")
        return m.TextToImageResponse(images=self._encode_images(output, req.send_images),
                                     parameters=req.model_dump(), info=output.info)

    def img2img(self, req: m.StableDiffusionImg2ImgProcessingAPI) -> m.ImageToImageResponse:
        """Blocking img2img; init images and mask are echoed only with `include_init_images`."""
        req, output = job_service.run_request("img2img", req, source="sdapi")
        parameters = req.model_dump()
        if not req.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        return m.ImageToImageResponse(images=self._encode_images(output, req.send_images),
                                      parameters=parameters, info=output.info)

    @staticmethod
    def _encode_images(output: Any, send_images: bool) -> list[str]:
        if not send_images:
            return []
        return [base64.b64encode(data).decode("ascii") for data in output.images]

    # --- extras, png-info, interrogate -------------------------------------------------------------------
    async def extras_single_image_api(self, req: m.ExtrasSingleImageRequest) -> m.ExtrasSingleImageResponse:
        return await self._in_job_thread(self.extras_single_image, req)

    async def extras_batch_images_api(self, req: m.ExtrasBatchImagesRequest) -> m.ExtrasBatchImagesResponse:
        return await self._in_job_thread(self.extras_batch_images, req)

    def extras_single_image(self, req: m.ExtrasSingleImageRequest) -> m.ExtrasSingleImageResponse:
        images, html = self._run_extras(req, [image_io.decode_base64_to_image(req.image, "image")])
        return m.ExtrasSingleImageResponse(html_info=html, image=image_io.encode_pil_to_base64(images[0]))

    def extras_batch_images(self, req: m.ExtrasBatchImagesRequest) -> m.ExtrasBatchImagesResponse:
        limit = int(shared.opts.api_max_batch_images)
        if len(req.imageList) > limit:  # before decoding: a tiny flat PNG decodes to megabytes
            raise errors.InvalidParameter(
                f"imageList holds {len(req.imageList)} images; api_max_batch_images={limit}", field="imageList")
        images = [image_io.decode_base64_to_image(f.data, f"imageList[{i}]") for i, f in enumerate(req.imageList)]
        out, html = self._run_extras(req, images)
        return m.ExtrasBatchImagesResponse(html_info=html, images=[image_io.encode_pil_to_base64(x) for x in out])

    def _run_extras(self, req: m.ExtrasBaseRequest, images: list[Any]) -> tuple[list[Any], str]:
        """Run the extras operation on every image under the queue lock; (images, html_info)."""
        from modules import upscaling
        known = upscaling.upscaler_names()
        for field in ("upscaler_1", "upscaler_2"):
            if getattr(req, field) not in known:
                raise errors.NotFound(f"Upscaler {getattr(req, field)!r} not found; installed: {', '.join(known)}",
                                      field=field)
        for image in images:
            w, h = image.size
            tw, th = ((int(w * req.upscaling_resize), int(h * req.upscaling_resize)) if req.resize_mode == 0
                      else (req.upscaling_resize_w, req.upscaling_resize_h))
            if tw * th > int(shared.opts.api_max_pixels):
                raise errors.InvalidParameter(
                    f"extras output {tw}x{th} exceeds api_max_pixels={shared.opts.api_max_pixels}",
                    field="upscaling_resize")
        kwargs = req.model_dump(exclude={"image", "imageList", "show_extras_results"})
        outputs, html = [], ""
        with call_queue.queued_job(call_queue.create_task_id("extras"), "extras", self.queue_lock):
            for image in images:  # every image a script makes (flipped copies, split tiles …) comes back
                made, html = upscaling.run_extras_images(image, **kwargs)
                outputs.extend(made)
        return outputs, html

    def pnginfoapi(self, req: m.PNGInfoRequest) -> m.PNGInfoResponse:
        from modules import infotext_utils, script_callbacks
        if not req.image.strip():
            return m.PNGInfoResponse(info="", items={}, parameters={})
        image = image_io.decode_base64_to_image(req.image.strip(), "image")
        geninfo, items = infotext_utils.read_info_from_image(image)
        geninfo = geninfo or ""
        params = infotext_utils.parse_generation_parameters(geninfo)
        script_callbacks.infotext_pasted_callback(geninfo, params)
        items = {k: v for k, v in items.items() if isinstance(v, (str, int, float, bool, type(None)))}
        return m.PNGInfoResponse(info=geninfo, items=items, parameters=params)

    def interrogateapi(self, req: m.InterrogateRequest) -> m.InterrogateResponse:
        if not req.image:
            raise errors.NotFound("Image not found", field="image")
        image_io.decode_base64_to_image(req.image, "image")
        if req.model not in ("clip", "deepdanbooru"):
            raise errors.NotFound(f"Model not found: {req.model!r}", field="model")
        raise errors.NotFound(f"Interrogator model {req.model!r} is not installed in Serena", field="model")

    # --- progress and control (async: never wait behind the queue) --------------------------------------
    async def progressapi(self, skip_current_image: bool = False) -> m.ProgressResponse:
        state = shared.state
        if state.job_count == 0:
            return m.ProgressResponse(progress=0, eta_relative=0, state=state.dict(), textinfo=state.textinfo)
        progress = state.progress()
        elapsed = time.time() - (state.time_start or time.time())
        eta_relative = elapsed / progress - elapsed if progress > 0 else 0.0
        current_image = None
        if not skip_current_image:
            state.set_current_image()
            if state.current_image is not None:
                current_image = image_io.encode_pil_to_base64(state.current_image)
        return m.ProgressResponse(progress=progress, eta_relative=eta_relative, state=state.dict(),
                                  current_image=current_image, textinfo=state.textinfo)

    async def internal_progress(self, req: m.InternalProgressRequest) -> m.InternalProgressResponse:
        """A1111's UI progress for one task id: queued (with how many jobs run first) / active /
        completed, its ETA and its live preview (a data URL, only when newer than `id_live_preview`)."""
        from modules import progress
        return m.InternalProgressResponse(**progress.progress_payload(req.id_task, req.id_live_preview,
                                                                      req.live_preview))

    async def pending_tasks(self) -> dict[str, Any]:
        return {"size": len(call_queue.pending_tasks), "tasks": list(call_queue.pending_tasks)}

    async def interruptapi(self) -> dict:
        shared.state.interrupt()
        return {}

    async def skip(self) -> None:
        shared.state.skip()

    # --- options -------------------------------------------------------------------------------------
    async def get_config(self) -> dict[str, Any]:
        opts = shared.opts
        return {key: opts.data.get(key, info.default) for key, info in opts.data_labels.items()}

    async def set_config(self, req: dict[str, Any] = Body(...)) -> None:
        await self._in_job_thread(self._set_config, req)

    def _set_config(self, req: dict[str, Any]) -> None:
        """Validate every key first, then set them (a checkpoint or VAE change waits for the queue)."""
        opts = shared.opts
        for key, value in req.items():
            if key not in opts.data_labels:
                raise errors.UnknownOption(key)
            generation.check_option_value(key, value)
        checkpoint = req.get("sd_model_checkpoint")
        if checkpoint is not None:
            from modules import sd_models
            info = sd_models.get_closet_checkpoint_match(checkpoint)
            if info is None:
                raise errors.CheckpointNotFound(f"model {checkpoint!r} not found", field="sd_model_checkpoint")
            req = {**req, "sd_model_checkpoint": info.title}  # clients compare it with sd-models titles
        reloads = any(k in req for k in _RELOADING_OPTIONS)
        with self.queue_lock if reloads else contextlib.nullcontext():  # never swap a model mid-job
            for key, value in req.items():
                opts.set(key, value, is_api=True)
        opts.save(getattr(self.cmd_opts, "ui_settings_file", None) or shared.data_paths.config_file)

    async def get_cmd_flags(self) -> dict[str, Any]:
        flags = dict(vars(self.cmd_opts))
        for key in _SECRET_FLAGS:  # A1111 echoes them; Serena does not hand out passwords
            if flags.get(key):
                flags[key] = "***"
        return flags

    # --- listings -------------------------------------------------------------------------------------
    async def get_samplers(self) -> list[dict[str, Any]]:
        from modules import sd_samplers
        return sd_samplers.sampler_api_items()

    async def get_schedulers(self) -> list[dict[str, Any]]:
        from modules import sd_schedulers
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases or []) or None,
                 "default_rho": s.default_rho, "need_inner_model": s.need_inner_model}
                for s in sd_schedulers.schedulers]

    async def get_upscalers(self) -> list[dict[str, Any]]:
        from modules import upscaling
        return upscaling.list_upscalers()

    async def get_latent_upscale_modes(self) -> list[dict[str, str]]:
        from modules import upscaling
        return upscaling.list_latent_upscale_modes()

    async def get_sd_models(self) -> list[dict[str, Any]]:
        from modules import sd_models
        out = []
        for info in sd_models.checkpoints_list.values():
            config = os.path.splitext(info.filename)[0] + ".yaml"
            out.append({"title": info.title, "model_name": info.model_name, "hash": info.shorthash,
                        "sha256": info.sha256, "filename": info.filename,
                        "config": config if os.path.exists(config) else None})
        return out

    async def get_sd_vaes(self) -> list[dict[str, str]]:
        from modules import sd_vae
        return sd_vae.vae_items()

    async def get_hypernetworks(self) -> list[dict[str, str]]:
        """Every `.pt` under `--hypernetwork-dir` (rescanned), as A1111 lists them: `name`, `path`."""
        from modules.hypernetworks import hypernetwork
        listed = await anyio.to_thread.run_sync(hypernetwork.list_hypernetworks, hypernetwork.hypernetwork_dir())
        return [{"name": name, "path": path} for name, path in listed.items()]

    async def get_face_restorers(self) -> list:
        """A1111's ``{name, cmd_dir}`` for each restorer whose weight and detector files are present."""
        from modules import face_restoration
        return [{"name": r.name(), "cmd_dir": r.cmd_dir} for r in face_restoration.face_restorers()]

    async def get_realesrgan_models(self) -> list[dict[str, Any]]:
        from modules import shared, upscaler_spandrel
        return upscaler_spandrel.list_realesrgan_models(shared.data_paths.models_path)

    async def get_prompt_styles(self) -> list[dict[str, Any]]:
        database = getattr(shared, "prompt_styles", None)
        if database is None:
            return []
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in database.styles.values()]

    async def get_embeddings(self) -> dict[str, dict]:
        return await self._in_job_thread(self._list_embeddings)

    def _list_embeddings(self) -> dict[str, dict]:
        """Loads the database on first use (the model loads then too), as the next job would."""
        from modules.textual_inversion import textual_inversion
        database = textual_inversion.embedding_db

        def load() -> None:
            if database._signature is None:
                from modules import sd_models
                database.load_textual_inversion_embeddings(sd_models.model_data.get_sd_model())
        self._queued(load)

        def item(embedding: Any) -> dict[str, Any]:
            return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
                    "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
                    "vectors": embedding.vectors}
        return {"loaded": {name: item(e) for name, e in database.word_embeddings.items()},
                "skipped": {name: item(e) for name, e in database.skipped_embeddings.items()}}

    async def refresh_embeddings(self) -> None:
        from modules.textual_inversion import textual_inversion
        from modules import sd_models
        await self._in_job_thread(self._queued, lambda: textual_inversion.embedding_db.load_textual_inversion_embeddings(
            sd_models.model_data.get_sd_model(), force_reload=True))

    async def refresh_checkpoints(self) -> None:
        from modules import sd_models
        await self._in_job_thread(self._queued, sd_models.list_models)

    async def refresh_vae(self) -> None:
        from modules import sd_vae
        await self._in_job_thread(self._queued, sd_vae.refresh_vae_list)

    def create_embedding(self, args: dict = Body(default_factory=dict)) -> None:
        raise NotSupported("Creating embeddings is not supported by Serena")

    def create_hypernetwork(self, args: dict = Body(default_factory=dict)) -> None:
        raise NotSupported("Creating hypernetworks is not supported by Serena")

    def train_embedding(self, args: dict = Body(default_factory=dict)) -> None:
        raise NotSupported("Training embeddings is not supported by Serena")

    def train_hypernetwork(self, args: dict = Body(default_factory=dict)) -> None:
        raise NotSupported("Training hypernetworks is not supported by Serena")

    async def get_memory(self) -> dict[str, Any]:
        return {"ram": _ram_info(), "cuda": _cuda_info()}

    async def unloadapi(self) -> dict:
        from modules import sd_models
        await self._in_job_thread(self._queued, sd_models.unload_model_weights)
        return {}

    async def reloadapi(self) -> dict:
        from modules import sd_models
        await self._in_job_thread(self._queued, sd_models.reload_model_weights)
        return {}

    async def get_scripts_list(self) -> dict[str, list[str]]:
        out = {}
        for kind in ("txt2img", "img2img"):
            runner = generation.script_runner(kind == "img2img")
            out[kind] = [generation.script_title(s) for s in (getattr(runner, "scripts", None) or [])]
        return out

    async def get_script_info(self) -> list[dict[str, Any]]:
        out = []
        for kind in ("txt2img", "img2img"):
            runner = generation.script_runner(kind == "img2img")
            for script in getattr(runner, "scripts", None) or []:
                info = getattr(script, "api_info", None)
                if info is not None:
                    out.append(info if isinstance(info, dict) else dataclasses.asdict(info))
        return out

    def get_extensions_list(self) -> list[dict[str, Any]]:
        """Every installed extension that is a git checkout with a remote (A1111 lists only those),
        enabled or not, with its git fields read locally."""
        from modules import extensions
        extensions.list_extensions()
        out = []
        for ext in extensions.extensions:
            ext.read_info_from_repo()
            if ext.remote is not None:
                out.append({"name": ext.name, "remote": ext.remote, "branch": ext.branch,
                            "commit_hash": ext.commit_hash, "commit_date": ext.commit_date,
                            "version": ext.version, "enabled": ext.enabled})
        return out

    def get_loras(self) -> list[dict[str, Any]]:
        from modules import lora_networks
        networks = lora_networks.list_available_networks()  # the Lora folder and its subfolders
        return [{"name": e.name, "alias": e.alias, "path": e.filename, "metadata": e.metadata}
                for e in networks.values()]

    def refresh_loras(self) -> None:
        from modules import lora_networks
        lora_networks.list_available_networks(force=True)
        return None

    # --- server control (--api-server-stop) ----------------------------------------------------------
    def kill_webui(self) -> None:
        os._exit(0)

    def restart_webui(self) -> None:
        if not os.environ.get("SD_WEBUI_RESTART"):
            raise NotSupported("Restart is only available when launched by webui.sh (SD_WEBUI_RESTART unset)")
        os.makedirs(os.path.join(shared.data_paths.data_path, "tmp"), exist_ok=True)
        open(os.path.join(shared.data_paths.data_path, "tmp", "restart"), "w").close()
        os._exit(0)

    def stop_webui(self) -> str:
        server = getattr(self.app.state, "uvicorn_server", None)
        if server is not None:
            server.should_exit = True
        self.server_command = "stop"
        return "Stopping."


_STATUS_TEXT = {
    400: "The body could not be read (not UTF-8 or not decodable).",
    401: "Missing or wrong credentials (--api-auth, or --gradio-auth when --api-auth is not set).",
    403: "The option is read-only (--freeze-settings, or a folder option under --hide-ui-dir-config).",
    404: "A named thing (checkpoint, upscaler, model, image) does not exist.",
    413: "The body is larger than the option api_max_body_mb.",
    422: "A value Serena cannot accept; the body names the field.",
    501: "The route exists for A1111 compatibility but Serena does not implement it.",
}


def declared_responses(endpoint: Callable, methods: list[str], statuses: tuple[int, ...],
                       authenticated: bool) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route: every error status it can answer, each with its model.

    Every POST can meet an unreadable body (400), a body over the limit (413) and a value it
    cannot accept (422); a GET with parameters can meet a 422; guarded routes can answer 401.
    """
    codes = set(statuses)
    if "POST" in methods:
        codes |= {400, 413, 422}
    elif inspect.signature(endpoint).parameters:
        codes.add(422)
    if authenticated:
        codes.add(401)
    return {code: {"model": m.UnprocessableResponse if code == 422 else m.ErrorResponse,
                   "description": _STATUS_TEXT[code]} for code in sorted(codes)}


def _model_files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """File names (not paths) directly in `folder` with one of `extensions`; [] if it does not exist."""
    try:
        return sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions)
                      and os.path.isfile(os.path.join(folder, n)))
    except OSError:
        return []


def _lora_metadata(path: str) -> dict[str, Any]:
    """The safetensors header metadata of a LoRA file; {} for other formats or unreadable headers."""
    from modules import safe_load
    if not path.lower().endswith(".safetensors"):
        return {}
    try:
        return safe_load.read_safetensors_metadata(path)
    except errors.SerenaError:
        return {}


def _ram_info() -> dict[str, Any]:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        avail = os.sysconf("SC_AVPHYS_PAGES")
        total, free = pages * page_size, avail * page_size
        return {"free": free, "used": total - free, "total": total}
    except (ValueError, OSError, AttributeError) as e:
        return {"error": f"{e}"}


def _cuda_info() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"error": "unavailable"}
    try:
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}_bytes.all.current", 0), "peak": stats.get(f"{name}_bytes.all.peak", 0)}
        return {"system": {"free": free, "used": total - free, "total": total},
                "active": pair("active"), "allocated": pair("allocated"),
                "reserved": pair("reserved"), "inactive": pair("inactive_split"),
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
    except Exception as e:  # noqa: BLE001 - memory stats are best effort, reported as an error field
        return {"error": f"{e}"}
