"""The routes of the A1111 extension `sd-webui-agent-scheduler`, answered by Serena's job service.

Scripts written against that extension queue generations with `POST /agent-scheduler/v1/queue/txt2img`
and poll `GET /agent-scheduler/v1/task/{id}` or `/results`. Serena serves the same paths, request
fields and response shapes on its one queue (`modules.runtime.job_service`), so those scripts run
unchanged while the jobs share the queue, the store and the executors of every other front end.

Routes (under `/agent-scheduler/v1`; the extension's older spellings are served too, left out of
`/openapi.json`):

==========  ==================================  ====================================================
POST        ``queue/txt2img``, ``queue/img2img``  queue a request → ``{task_id}``
GET         ``queue?limit&offset``                running then pending tasks, current task, paused
GET         ``history?status&limit&offset``       finished tasks, newest first
GET         ``task/{id}``                         ``{success, data: task}``
GET         ``task/{id}/position``                ``{success, data: {status, position}}``
GET         ``task/{id}/results?zip``             ``{success, data: [{image, infotext}]}`` or a zip
DELETE      ``task/{id}``                         cancel a pending task, interrupt the running one
POST        ``task/{id}/move/{over_id}``          ``top``, ``bottom``, or just before task `over_id`
POST        ``task/{id}/run``                     move it to the top (it runs next)
POST        ``task/{id}/requeue``                 queue a copy of the task ("Copy of <name>")
POST        ``task/requeue-failed``               failed tasks back to pending, in place
POST        ``task/{id}/rename?name``             rename
POST        ``queue/pause``, ``queue/resume``     pause / resume the queue
POST        ``queue/clear``, ``history/clear``    drop every pending / finished task
GET         ``samplers``, ``sd-models``           names, as the extension lists them
==========  ==================================  ====================================================

Where Serena differs from the extension, on purpose:

- errors are HTTP errors in the API's error shape (404 unknown task, 409 a task in the wrong state,
  422 a bad value naming the field) instead of ``{"success": false}`` with status 200;
- ``DELETE task/{id}`` on a pending task cancels it (status ``interrupted``, kept in the history)
  instead of deleting it, and on a finished task answers 409;
- results carry the stored images as they were made (infotext embedded, `samples_format`);
- bookmarks are not kept (``bookmarked`` is always false; the bookmark routes answer 501).

Statuses are the extension's words, which are also the job store's: pending, running, done,
failed, interrupted.

`callback_url`: when the task finishes, the extension's multipart POST (form fields `task_id` and
`status`, one `files` part per result image) is sent to it from a background thread, with a 5 s
timeout and up to 3 tries on connection errors, for every final status (the extension sends it for
done tasks only; here an interrupted task sends its partial images, a failed one none) — only while
the option ``agent_scheduler_enable_callbacks`` is on (off by default), and, while
`api_forbid_local_requests` is on, only to public addresses (a local one is refused at submit
time with a 422 naming `callback_url`).
"""
from __future__ import annotations

import base64
import http
import io
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
import weakref
import zipfile
from datetime import datetime, timezone
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from fastapi import APIRouter, FastAPI, Query, Response
from pydantic import BaseModel, Field, field_serializer

from modules import errors, shared
from modules.api import image_io
from modules.api import models as m
from modules.api.strict_json import StrictJSONRoute
from modules.runtime import job_service, jobs
from modules.runtime.job_store import (DONE, FAILED, FINISHED, INTERRUPTED, PENDING, RUNNING, STATUSES, JobRecord,
                                       MalformedJob)

log = logging.getLogger(__name__)

PREFIX = "/agent-scheduler/v1"
SOURCE = "agent-scheduler"
CALLBACK_OPTION = "agent_scheduler_enable_callbacks"
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_TRIES = 3
MAX_LIMIT = 1000
PARAMS_LEFT_OUT = ("alwayson_scripts", "script_args", "init_images")  # large; the extension leaves them out too


class NotSupported(errors.SerenaError):
    """An extension route with nothing behind it in Serena."""

    status_code = 501


# --- request models --------------------------------------------------------------------------------------
class _TaskFields(m._NullMeansDefault):
    """What a queued task carries beyond the `/sdapi/v1` request."""

    checkpoint: Optional[str] = Field(None, description="Checkpoint to run with (becomes override_settings."
                                                        "sd_model_checkpoint); the current one if not given.")
    vae: Optional[str] = Field(None, description="VAE to run with (becomes override_settings.sd_vae).")
    callback_url: Optional[str] = Field(None, max_length=2048,
                                        description="Where the result is POSTed when the task finishes "
                                                    f"(only while the option {CALLBACK_OPTION} is on).")
    name: Optional[str] = Field(None, max_length=255, description="A label for the task (Serena addition).")


TASK_FIELDS = tuple(_TaskFields.model_fields)


class Txt2ImgApiTaskArgs(m.StableDiffusionTxt2ImgProcessingAPI, _TaskFields):
    """POST queue/txt2img: every `/sdapi/v1/txt2img` field, plus checkpoint, vae, callback_url, name."""


class Img2ImgApiTaskArgs(m.StableDiffusionImg2ImgProcessingAPI, _TaskFields):
    """POST queue/img2img: every `/sdapi/v1/img2img` field, plus checkpoint, vae, callback_url, name."""


# --- response models -------------------------------------------------------------------------------------
class TaskModel(BaseModel):
    """A task as the extension shows it."""

    id: str = Field(title="Task Id")
    api_task_id: Optional[str] = Field(None, title="API Task Id")
    api_task_callback: Optional[str] = Field(None, title="API Task Callback")
    name: Optional[str] = Field(None, title="Task Name")
    type: str = Field(title="Task Type", description="Either txt2img or img2img")
    status: str = Field("pending", title="Task Status",
                        description="pending, running, done, failed or interrupted")
    params: dict[str, Any] = Field(title="Task Parameters", description="The request fields of the task")
    priority: Optional[int] = Field(None, title="Task Priority",
                                    description="Creation time in ms; the queue order is `position`")
    position: Optional[int] = Field(None, title="Task Position",
                                    description="0-based place in the queue (running tasks first)")
    result: Optional[str] = Field(None, title="Task Result",
                                  description="JSON {images, infotexts, geninfo} once done; the error once failed")
    bookmarked: Optional[bool] = Field(False, title="Is task bookmarked")
    created_at: Optional[datetime] = Field(None, title="Task Created At")
    updated_at: Optional[datetime] = Field(None, title="Task Updated At")


class ListedTask(TaskModel):
    """A task in a listing: times in milliseconds since the epoch, as the extension lists them."""

    @field_serializer("created_at", "updated_at")
    def _milliseconds(self, value: Optional[datetime]) -> Optional[int]:
        return int(value.timestamp() * 1000) if value is not None else None


class QueueTaskResponse(BaseModel):
    task_id: str = Field(title="Task Id")


class QueueStatusResponse(BaseModel):
    current_task_id: Optional[str] = Field(None, title="Current Task Id", description="The running task")
    pending_tasks: list[ListedTask] = Field(title="Pending Tasks", description="Running, then pending tasks")
    total_pending_tasks: int = Field(title="Queue length")
    paused: bool = Field(title="Paused", description="Whether the queue is paused")


class HistoryResponse(BaseModel):
    tasks: list[ListedTask] = Field(title="Tasks")
    total: int = Field(title="Task count")


class ActionResponse(BaseModel):
    success: bool = True
    message: str


class RequeueResponse(ActionResponse):
    task_id: str = Field(description="The id of the new task (Serena addition)")


class TaskResponse(BaseModel):
    success: bool = True
    data: TaskModel


class TaskPosition(BaseModel):
    status: str
    position: Optional[int] = None


class TaskPositionResponse(BaseModel):
    success: bool = True
    data: TaskPosition


class TaskResult(BaseModel):
    image: str = Field(description="A data URL of the image, infotext embedded")
    infotext: str


class TaskResultsResponse(BaseModel):
    success: bool = True
    data: list[TaskResult]


# --- records → extension models ----------------------------------------------------------------------
def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value is not None else None


def _params(record: JobRecord) -> dict[str, Any]:
    params = {k: v for k, v in record.request.items() if k not in PARAMS_LEFT_OUT}
    params["checkpoint"] = (record.request.get("override_settings") or {}).get("sd_model_checkpoint")
    return params


def _result(record: JobRecord) -> str | None:
    if record.status == FAILED:
        return record.error
    if not record.result:
        return None
    try:
        geninfo = json.loads(record.result.get("info") or "{}")
    except ValueError:
        geninfo = {}
    return json.dumps({"images": record.result.get("images") or [], "infotexts": record.result.get("infotexts") or [],
                       "geninfo": geninfo})


def task_model(record: JobRecord, position: int | None = None, cls: type[TaskModel] = TaskModel) -> TaskModel:
    """The extension's view of a job record."""
    return cls(id=record.id, api_task_callback=record.callback_url, name=record.name, type=record.kind,
               status=record.status, params=_params(record), priority=int(record.created * 1000),
               position=position, result=_result(record), created_at=_time(record.created),
               updated_at=_time(record.finished or record.started or record.created))


def queue_ids(service: job_service.JobService) -> list[str]:
    """Running jobs, then pending jobs in queue order: the extension's queue."""
    running = service.running_ids()
    return running + [x for x in service.store.pending_ids() if x not in running]


# --- callbacks -----------------------------------------------------------------------------------------
def callbacks_enabled() -> bool:
    return bool(getattr(shared.opts, CALLBACK_OPTION, False))


def _public_addresses(host: str) -> list[str]:
    """`host`'s addresses; raises a 422 on `callback_url` unless every one is public unicast."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as e:
        raise errors.InvalidParameter(f"callback_url: cannot resolve {host!r}", field="callback_url") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not image_io.is_public_unicast(address):
            raise errors.InvalidParameter(
                f"callback_url: {host!r} resolves to non-public address {address} (api_forbid_local_requests)",
                field="callback_url")
    return [str(a) for a in addresses]


def check_callback_url(url: str) -> str:
    """An http(s) URL with a host; with `api_forbid_local_requests`, a host whose addresses are all
    public. Raises errors.InvalidParameter (422, field `callback_url`) otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise errors.InvalidParameter(f"callback_url: {url!r} is not an http(s) URL", field="callback_url")
    try:
        parsed.port
    except ValueError as e:
        raise errors.InvalidParameter(f"callback_url: {url!r} has a bad port", field="callback_url") from e
    if shared.opts.api_forbid_local_requests:
        _public_addresses(parsed.hostname)
    return url


def _pinned(url: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(target URL, headers, httpx extensions): with `api_forbid_local_requests`, the URL points at the
    address checked now (Host header and TLS SNI keep the name), so DNS cannot change it afterwards."""
    if not shared.opts.api_forbid_local_requests:
        return url, {}, {}
    parsed = urlparse(url)
    address = _public_addresses(parsed.hostname or "")[0]
    netloc = f"[{address}]" if ":" in address else address
    if parsed.port:
        netloc += f":{parsed.port}"
    return (parsed._replace(netloc=netloc).geturl(), {"host": parsed.netloc.rsplit("@", 1)[-1]},
            {"sni_hostname": parsed.hostname or ""})


def post_callback(url: str, task_id: str, status: str, files: list[tuple[str, bytes]]) -> bool:
    """POST the extension's callback form (`task_id`, `status`, one `files` part per image); a few
    tries on connection errors. True when the receiver answered below 400."""
    import httpx
    parts = [("files", (name, data, image_io.media_type(name))) for name, data in files]
    for attempt in range(CALLBACK_TRIES):
        try:
            target, headers, extensions = _pinned(url)
            with httpx.Client(timeout=CALLBACK_TIMEOUT_S, follow_redirects=False) as client:
                request = client.build_request("POST", target, headers=headers, extensions=extensions,
                                               data={"task_id": task_id, "status": status}, files=parts or None)
                response = client.send(request)
            if response.status_code >= 400:
                log.warning("callback for task %s: %s answered %s", task_id, url, response.status_code)
                return False
            return True
        except errors.SerenaError as e:
            log.warning("callback for task %s not sent: %s", task_id, e)
            return False
        except httpx.TransportError as e:
            log.warning("callback for task %s to %s failed (try %d): %s", task_id, url, attempt + 1, e)
            time.sleep(1.0 if attempt + 1 < CALLBACK_TRIES else 0)
    return False


def _deliver(service: job_service.JobService, record: JobRecord | None) -> None:
    """Finish listener: send the callback of a finished task in a thread of its own."""
    if record is None or not record.callback_url or not callbacks_enabled():
        return

    def send() -> None:
        try:
            files = service.result_files(record.id) if record.status in (DONE, INTERRUPTED) else []
        except (errors.SerenaError, OSError, ValueError):
            files = []
        post_callback(record.callback_url, record.id, record.status, files)
    threading.Thread(target=send, name=f"agent-scheduler-callback-{record.id}", daemon=True).start()


_installed: "weakref.WeakSet[job_service.JobService]" = weakref.WeakSet()
_installed_lock = threading.Lock()


def install_callbacks(service: job_service.JobService) -> None:
    """Have `service` send the callbacks of its finished tasks (once per service)."""
    with _installed_lock:
        if service in _installed:
            return
        _installed.add(service)
    service.add_finish_listener(lambda record: _deliver(service, record))


def current_service() -> job_service.JobService:
    """The process's job service, sending callbacks."""
    service = job_service.current()
    install_callbacks(service)
    return service


# --- route handlers ------------------------------------------------------------------------------------
def _queue(kind: str, body: _TaskFields) -> QueueTaskResponse:
    """Resolve and check the request now (a bad one is a 4xx, nothing queued), then queue it."""
    fields = body.model_dump(exclude=set(TASK_FIELDS), exclude_unset=True)
    overrides = dict(fields.get("override_settings") or {})
    if body.checkpoint and body.checkpoint != "System":  # "System": the current checkpoint (extension)
        overrides["sd_model_checkpoint"] = checkpoint_title(body.checkpoint)
    if body.vae:
        overrides["sd_vae"] = vae_name(body.vae)
    if overrides:
        fields["override_settings"] = overrides
    callback_url = check_callback_url(body.callback_url) if body.callback_url else None
    req = jobs.prepare(kind, jobs.request_model(kind, fields))
    record = current_service().submit(kind, req.model_dump(mode="json"), job_id=str(uuid.uuid4()), source=SOURCE,
                                      name=body.name, callback_url=callback_url)
    return QueueTaskResponse(task_id=record.id)


def checkpoint_title(name: str) -> str:
    """The title of the checkpoint `name` (title, file name or hash) names; 404 on `checkpoint` if none.
    (An unknown `override_settings.sd_model_checkpoint` only warns, as in A1111; a task's named
    checkpoint is its point, so it is checked.)"""
    from modules import sd_models
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        raise errors.CheckpointNotFound(f"checkpoint {name!r} not found", field="checkpoint")
    return info.title


def vae_name(name: str) -> str:
    """`name` if it is "Automatic", "None" or a known VAE; 404 on `vae` otherwise."""
    from modules import sd_vae
    if name in (*sd_vae.AUTOMATIC, "None"):
        return name
    try:
        sd_vae.get_vae_file(name)
    except errors.CheckpointNotFound as e:
        raise errors.CheckpointNotFound(e.message, field="vae") from e
    return name


def queue_txt2img(body: Txt2ImgApiTaskArgs) -> QueueTaskResponse:
    return _queue("txt2img", body)


def queue_img2img(body: Img2ImgApiTaskArgs) -> QueueTaskResponse:
    return _queue("img2img", body)


def queue_status(limit: int = Query(20, ge=1, le=MAX_LIMIT), offset: int = Query(0, ge=0)) -> QueueStatusResponse:
    service = current_service()
    ids = queue_ids(service)
    page = []
    for position, job_id in enumerate(ids[offset:offset + limit], start=offset):
        try:
            record = service.store.get(job_id)
        except MalformedJob:
            continue  # it fails when the dispatcher reaches it
        if record is not None and record.status in (PENDING, RUNNING):
            page.append(task_model(record, position, ListedTask))
    running = service.running_ids()
    return QueueStatusResponse(current_task_id=running[0] if running else None, pending_tasks=page,
                               total_pending_tasks=len(ids), paused=service.paused)


def history(status: Optional[str] = Query(None, description="all, bookmarked, or one status"),
            limit: int = Query(20, ge=1, le=MAX_LIMIT), offset: int = Query(0, ge=0)) -> HistoryResponse:
    if status == "bookmarked":
        return HistoryResponse(tasks=[], total=0)  # Serena keeps no bookmarks
    if status not in (None, "", "all") and status not in STATUSES:
        raise errors.InvalidParameter(f"status {status!r} is not one of all, bookmarked, {', '.join(STATUSES)}",
                                      field="status")
    statuses = list(FINISHED) if status in (None, "", "all") else [status]
    records, total = current_service().store.list(statuses, offset=offset, limit=limit, newest_first=True)
    return HistoryResponse(tasks=[task_model(r, cls=ListedTask) for r in records], total=total)


def _position(service: job_service.JobService, record: JobRecord) -> int | None:
    if record.status not in (PENDING, RUNNING):
        return None
    ids = queue_ids(service)
    return ids.index(record.id) if record.id in ids else None


def get_task(id: str) -> TaskResponse:
    service = current_service()
    record = service.get(id)
    return TaskResponse(data=task_model(record, _position(service, record)))


def get_task_position(id: str) -> TaskPositionResponse:
    service = current_service()
    record = service.get(id)
    return TaskPositionResponse(data=TaskPosition(status=record.status, position=_position(service, record)))


def delete_task(id: str) -> ActionResponse:
    """Pending: cancelled (interrupted, never runs). Running: interrupted, images so far kept.
    Finished: 409."""
    service = current_service()
    was_running = service.get(id).status == RUNNING
    service.cancel(id)
    return ActionResponse(message="Task interrupted" if was_running else "Task cancelled")


def move_task(id: str, over_id: str) -> ActionResponse:
    service = current_service()
    service.move(id, over_id)
    messages = {"top": "Task moved to top", "bottom": "Task moved to bottom"}
    return ActionResponse(message=messages.get(over_id, "Task moved"))


def run_task(id: str) -> ActionResponse:
    """The extension starts the task now; Serena's queue runs it next (after the resume, if paused)."""
    service = current_service()
    record = service.get(id)
    if record.status != PENDING:
        raise job_service.Conflict(f"task {id} is {record.status}, not pending")
    service.move(id, "top")
    message = "Task is scheduled to run next"
    return ActionResponse(message=message + (" (the queue is paused)" if service.paused else ""))


def requeue_task(id: str) -> RequeueResponse:
    """A copy of the task at the end of the queue; the original stays as it is."""
    service = current_service()
    record = service.get(id)
    callback_url = check_callback_url(record.callback_url) if record.callback_url else None
    req = jobs.prepare(record.kind, jobs.request_model(record.kind, record.request))
    copy = service.submit(record.kind, req.model_dump(mode="json"), job_id=str(uuid.uuid4()), source=SOURCE,
                          name=f"Copy of {record.name}" if record.name else None, callback_url=callback_url)
    return RequeueResponse(message="Task requeued", task_id=copy.id)


def requeue_failed() -> ActionResponse:
    service = current_service()
    failed, _ = service.store.list([FAILED], limit=1_000_000)
    for record in failed:
        service.requeue(record.id)
    if not failed:
        return ActionResponse(success=False, message="No failed tasks")
    return ActionResponse(message=f"Requeued {len(failed)} failed tasks")


def rename_task(id: str, name: str = Query(max_length=255)) -> ActionResponse:
    service = current_service()
    service.get(id)
    service.store.update(id, name=name)
    return ActionResponse(message="Task renamed.")


def bookmark_task(id: str) -> ActionResponse:
    current_service().get(id)
    raise NotSupported("Serena keeps no bookmarks")


def task_results(id: str, zip: bool = False) -> Any:
    """The images of a done (or interrupted) task: data URLs with their infotexts, or one zip file."""
    service = current_service()
    record = service.get(id)
    if record.status not in (DONE, INTERRUPTED) or not record.result:
        raise job_service.Conflict(f"Task is {record.status}" + (f": {record.error}" if record.error else ""))
    files = service.result_files(id)
    if zip:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in files:
                archive.writestr(name, data)
        return Response(content=buffer.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f"attachment; filename=results-{id}.zip"})
    infotexts = list(record.result.get("infotexts") or [])
    data = [TaskResult(image=f"data:{image_io.media_type(name)};base64," + base64.b64encode(blob).decode("ascii"),
                       infotext=str(infotexts[i]) if i < len(infotexts) else "")
            for i, (name, blob) in enumerate(files)]
    return TaskResultsResponse(data=data)


def pause_queue() -> ActionResponse:
    current_service().pause()
    return ActionResponse(message="Queue paused.")


def resume_queue() -> ActionResponse:
    current_service().resume()
    return ActionResponse(message="Queue resumed.")


def clear_queue() -> ActionResponse:
    """Every pending task is cancelled and removed (a running one goes on)."""
    service = current_service()
    for job_id in service.store.pending_ids():
        try:
            service.cancel(job_id)
            service.delete(job_id)
        except (errors.NotFound, job_service.Conflict):
            continue  # it started or went meanwhile
    return ActionResponse(message="Queue cleared.")


def clear_history() -> ActionResponse:
    service = current_service()
    finished, _ = service.store.list(list(FINISHED), limit=1_000_000)
    for record in finished:
        service.delete(record.id)
    return ActionResponse(message="History cleared.")


def list_samplers() -> list[str]:
    from modules import sd_samplers
    return [sampler.name for sampler in sd_samplers.all_samplers]


def list_sd_models() -> list[str]:
    from modules import sd_models
    return [info.title for info in sd_models.checkpoints_list.values()]


# --- registration ----------------------------------------------------------------------------------------
def _declared(statuses: tuple[int, ...], authenticated: bool) -> dict[int | str, dict[str, Any]]:
    codes = set(statuses) | ({401} if authenticated else set())
    return {code: {"model": m.UnprocessableResponse if code == 422 else m.ErrorResponse,
                   "description": http.HTTPStatus(code).phrase} for code in sorted(codes)}


# (method, path, handler, response model, error statuses, older paths the extension also serves)
_ROUTES: list[tuple[str, str, Callable[..., Any], Any, tuple[int, ...], tuple[str, ...]]] = [
    ("GET", "/samplers", list_samplers, list[str], (), ()),
    ("GET", "/sd-models", list_sd_models, list[str], (), ()),
    ("POST", "/queue/txt2img", queue_txt2img, QueueTaskResponse, (400, 403, 404, 409, 413, 422), ()),
    ("POST", "/queue/img2img", queue_img2img, QueueTaskResponse, (400, 403, 404, 409, 413, 422), ()),
    ("GET", "/queue", queue_status, QueueStatusResponse, (422,), ()),
    ("GET", "/history", history, HistoryResponse, (422,), ()),
    ("POST", "/queue/pause", pause_queue, ActionResponse, (), ("/pause",)),
    ("POST", "/queue/resume", resume_queue, ActionResponse, (), ("/resume",)),
    ("POST", "/queue/clear", clear_queue, ActionResponse, (), ()),
    ("POST", "/history/clear", clear_history, ActionResponse, (409,), ()),
    ("POST", "/task/requeue-failed", requeue_failed, ActionResponse, (409,), ()),
    ("GET", "/task/{id}", get_task, TaskResponse, (404, 409), ()),
    ("DELETE", "/task/{id}", delete_task, ActionResponse, (404, 409), ()),
    ("GET", "/task/{id}/position", get_task_position, TaskPositionResponse, (404, 409), ()),
    ("POST", "/task/{id}/run", run_task, ActionResponse, (404, 409), ("/run/{id}",)),
    ("POST", "/task/{id}/requeue", requeue_task, RequeueResponse, (403, 404, 409, 422), ("/requeue/{id}",)),
    ("POST", "/task/{id}/move/{over_id}", move_task, ActionResponse, (404, 409), ("/move/{id}/{over_id}",)),
    ("POST", "/task/{id}/rename", rename_task, ActionResponse, (404, 409, 422), ("/rename/{id}",)),
    ("POST", "/task/{id}/bookmark", bookmark_task, ActionResponse, (404, 409, 501), ("/bookmark/{id}",)),
    ("POST", "/task/{id}/unbookmark", bookmark_task, ActionResponse, (404, 409, 501), ("/unbookmark/{id}",)),
    ("GET", "/task/{id}/results", task_results, TaskResultsResponse, (404, 409, 422), ("/results/{id}",)),
]


def add_routes(app: FastAPI, dependencies: list[Any]) -> None:
    """Serve the agent-scheduler routes on `app`; `dependencies` guard every one (the API's auth, or [])."""
    from modules.api.app import api_routes
    if any(route.path.startswith(PREFIX + "/") for route in api_routes(app.routes)):
        return  # already served (the app builder wires it; a test may call this again)
    auth = bool(dependencies)
    router = APIRouter(prefix=PREFIX, dependencies=dependencies, route_class=StrictJSONRoute, tags=["agent-scheduler"])
    zip_response = {200: {"content": {"application/json": {}, "application/zip": {}},
                          "description": "The images as data URLs, or a zip file with `zip=true`."}}
    for method, path, handler, model, statuses, old_paths in _ROUTES:
        responses = _declared(statuses, auth)
        if handler is task_results:
            responses = {**zip_response, **responses}
        for n, route in enumerate((path, *old_paths)):  # older spellings: served, not in the schema
            router.add_api_route(route, handler, methods=[method], response_model=model, responses=responses,
                                 deprecated=n > 0 or None, include_in_schema=n == 0)
    app.include_router(router)
