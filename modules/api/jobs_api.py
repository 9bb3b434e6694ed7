"""Serena's own job API: queue a generation, follow it, fetch its images — without holding a request open.

`/sdapi/v1/txt2img` keeps A1111's contract (the request waits for the image). These routes put the
same request on the same queue (`modules.runtime.job_service`) and answer at once, so a client
can queue many jobs, watch them and come back for the results later (the store survives restarts).

Routes (all under `/serena/v1/jobs`, behind the API's credentials when `--api-auth` is set):

=======  ===========================  ==================================================================
POST     ``/serena/v1/jobs``           queue ``{kind, request, name?}``; 201 with the job (`Location` set)
GET      ``/serena/v1/jobs``           ``?status=…&status=…&offset=0&limit=50&newest_first=false``:
                                       ``{jobs, total, offset, limit}``
GET      ``/{id}``                     the job: status, position, timestamps, error, progress, result
POST     ``/{id}/cancel``              pending → interrupted (never runs); running → interrupt requested
GET      ``/{id}/results``             ``{images: [base64], infotexts, info}`` of a done/interrupted job
GET      ``/{id}/results/{n}``         image `n` as a file (``image/png``, ``image/jpeg``, ``image/webp``)
GET      ``/{id}/events``              a Server-Sent Events stream of the job (see below)
=======  ===========================  ==================================================================

`request` holds `/sdapi/v1/txt2img` or `img2img` fields. It is validated and resolved (infotext,
sampler, scripts, limits) before anything is queued, so a bad request is a 422 naming the field,
never a job that fails later. Errors are JSON: 404 unknown job, 409 the job is not in a state that
allows it (cancel a finished job; results of a job that is not finished or that failed).

The event stream (`text/event-stream`, one JSON object per `data:` line) sends, in order:

- ``status``: the job as it is when the stream opens (any state);
- ``queued``: the job again whenever its place in the queue changes while it waits;
- ``started``: the job once it runs;
- ``progress``: ``{step, steps, job_no, job_count, progress, textinfo}`` each time sampling
  advances (within one ``job_no`` the step strictly increases; ``job_no < job_count``);
- ``preview``: ``{id_live_preview, step, job_no, image}`` (a PNG data URL) at most every
  `show_progress_every_n_steps` steps, only while the option `live_previews_enable` is on;
- one final ``done`` / ``failed`` / ``interrupted`` event carrying the job and its result summary;
  then the stream ends. On a finished job the stream sends ``status`` and the final event at once.
  A job deleted while the stream is open ends it with a ``deleted`` event.

Between events FastAPI sends a ``: ping`` comment every 15 s, so proxies keep the connection.
Events come from :meth:`JobService.subscribe` (called in the job's threads) through an asyncio
queue fed with `loop.call_soon_threadsafe`; the subscription ends when the client goes away.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from modules import errors
from modules.api import image_io
from modules.api import models as m
from modules.api.strict_json import StrictJSONRoute
from modules.runtime import job_service, jobs
from modules.runtime.job_store import DONE, FINISHED, INTERRUPTED, PENDING, RUNNING, JobRecord

PREFIX = "/serena/v1/jobs"
POLL_S = 1.0  # how often an idle stream looks at the store (queue position, deletion, a missed end)
MAX_LIMIT = 500
MAX_OFFSET = 2 ** 53  # SQLite integers are 64-bit

Kind = Literal["txt2img", "img2img"]
Status = Literal["pending", "running", "done", "failed", "interrupted"]  # job_store.STATUSES


# --- models ----------------------------------------------------------------------------------------------
class JobSubmitRequest(BaseModel):
    """A job to queue: its kind and the `/sdapi/v1/<kind>` request body."""

    kind: Kind = Field(description="txt2img or img2img.")
    request: dict[str, Any] = Field(default_factory=dict,
                                    description="The /sdapi/v1/txt2img or /sdapi/v1/img2img request fields.")
    name: str | None = Field(None, max_length=200, description="A label for the job, shown in listings.")


class JobProgress(BaseModel):
    """Where a running job is: A1111's progress fraction and the sampler's step."""

    progress: float = Field(description="0..1, A1111's formula over batches and steps.")
    step: int
    steps: int
    job_no: int = Field(description="The batch (or pass) being sampled, 0-based.")
    job_count: int
    textinfo: str | None = None


class JobResultSummary(BaseModel):
    """What a finished job made (the images themselves: `/results`)."""

    images: int = Field(description="How many images the job made.")
    infotexts: list[str]
    info: str = Field(description="Processed.js(): the generation parameters as JSON text.")


class Job(BaseModel):
    """One job of the queue."""

    id: str
    kind: str
    status: Status
    name: str | None = None
    source: str = Field(description="Who queued it: serena (this API), sdapi, ui, ...")
    position: int | None = Field(None, description="0-based place among the pending jobs; null unless pending.")
    created: float = Field(description="Unix time the job was queued.")
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    checkpoint: str | None = Field(None, description="The checkpoint title the request asks for.")
    worker: str | None = None
    progress: JobProgress | None = Field(None, description="While running, once it reported progress.")
    result: JobResultSummary | None = Field(None, description="Once finished with images.")


class JobList(BaseModel):
    jobs: list[Job]
    total: int = Field(description="How many jobs match the filter (all pages).")
    offset: int
    limit: int


class JobResults(BaseModel):
    """The images of a finished job, base64-encoded as `/sdapi/v1/txt2img` returns them."""

    images: list[str]
    infotexts: list[str]
    info: str


class PreviewEvent(BaseModel):
    id_live_preview: int
    step: int
    job_no: int
    image: str = Field(description="data:image/png;base64,...")


# --- mapping ----------------------------------------------------------------------------------------------
def job_view(service: job_service.JobService, record: JobRecord, pending: list[str] | None = None) -> Job:
    """The API's view of a stored job (`pending`: the queue's ids, when the caller has them)."""
    if record.status == PENDING:
        pending = pending if pending is not None else service.store.pending_ids()
        position = pending.index(record.id) if record.id in pending else None
    else:
        position = None
    progress = None
    if record.status == RUNNING:
        data = service.progress(record.id)
        if data is not None:
            progress = progress_view(data)
    result = None
    if record.result is not None:
        result = JobResultSummary(images=len(record.result.get("images") or []),
                                  infotexts=[str(x) for x in record.result.get("infotexts") or []],
                                  info=str(record.result.get("info") or ""))
    return Job(id=record.id, kind=record.kind, status=record.status, name=record.name, source=record.source,
               position=position, created=record.created, started=record.started, finished=record.finished,
               error=record.error, checkpoint=record.checkpoint, worker=record.worker, progress=progress,
               result=result)


def progress_view(data: dict[str, Any]) -> JobProgress:
    """A progress event's data as :class:`JobProgress`."""
    return JobProgress(progress=job_service.progress_fraction(data), step=int(data.get("step") or 0),
                       steps=int(data.get("steps") or 0), job_no=int(data.get("job_no") or 0),
                       job_count=int(data.get("job_count") or 0), textinfo=data.get("textinfo"))


def finished_results(service: job_service.JobService, job_id: str) -> list[tuple[str, bytes]]:
    """The result files of a job that has them; Conflict while it is not finished or when it failed."""
    record = service.get(job_id)
    if record.status not in FINISHED:
        raise job_service.Conflict(f"job {job_id} is {record.status}; results exist once it is finished")
    if record.status not in (DONE, INTERRUPTED):
        raise job_service.Conflict(f"job {job_id} failed and has no results: {record.error}")
    return service.result_files(job_id)


# --- the event stream -------------------------------------------------------------------------------------
class JobEventStream:
    """One client's event stream of one job: turns the service's events (heard in job threads)
    into the ordered SSE events the module docstring lists."""

    def __init__(self, service: job_service.JobService, job_id: str) -> None:
        self.service = service
        self.job_id = job_id
        self.inbox: asyncio.Queue[job_service.JobEvent] = asyncio.Queue()
        self.last_step: tuple[int, int] | None = None  # (job_no, step) of the last progress event sent
        self.preview_at: tuple[int, int] | None = None  # (job_no, step) of the last preview asked for
        self.preview_id = 0
        self.position: int | None = None

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """The stream: subscribe first (so nothing is missed), then the job's state, then its events."""
        loop = asyncio.get_running_loop()

        def deliver(event: job_service.JobEvent) -> None:
            try:
                loop.call_soon_threadsafe(self.inbox.put_nowait, event)
            except RuntimeError:  # the loop is closed: the stream is gone
                pass

        unsubscribe = self.service.subscribe(self.job_id, deliver)
        try:
            async for item in self._run():
                yield item
        finally:
            unsubscribe()

    async def _run(self) -> AsyncIterator[ServerSentEvent]:
        job = await self._job()
        if job is None:
            yield ServerSentEvent(event="deleted", data={"id": self.job_id})
            return
        yield ServerSentEvent(event="status", data=job)
        if job.status in FINISHED:
            yield ServerSentEvent(event=job.status, data=job)
            return
        self.position, started = job.position, job.status == RUNNING
        while True:
            try:
                event = await asyncio.wait_for(self.inbox.get(), POLL_S)
            except asyncio.TimeoutError:
                event = None
            if event is None or event.type == "queued":
                job = await self._job()
                if job is None:
                    yield ServerSentEvent(event="deleted", data={"id": self.job_id})
                    return
                if job.status in FINISHED:  # its final event was missed (a requeue raced the stream)
                    yield ServerSentEvent(event=job.status, data=job)
                    return
                if job.status == PENDING and job.position != self.position:
                    self.position = job.position
                    yield ServerSentEvent(event="queued", data=job)
            elif event.type == "started" and not started:
                started = True
                job = await self._job()
                if job is not None:
                    yield ServerSentEvent(event="started", data=job)
            elif event.type == "progress":
                async for item in self._progress(event.data):
                    yield item
            elif event.type in FINISHED:
                job = await self._job()
                final = job or Job(id=self.job_id, kind="", status=event.type, source="", created=0.0,
                                   error=event.data.get("error"))
                yield ServerSentEvent(event=event.type, data=final)
                return

    async def _progress(self, data: dict[str, Any]) -> AsyncIterator[ServerSentEvent]:
        """A progress event when sampling advanced, then a live preview when one is due."""
        job_no, step, count = int(data.get("job_no") or 0), int(data.get("step") or 0), int(data.get("job_count") or 0)
        if self.last_step is not None and job_no == self.last_step[0] and step <= self.last_step[1]:
            return  # a text change or a repeat: nothing new to say about the step
        if 0 < count <= job_no:
            return  # "every batch is done": the final event says it
        self.last_step = (job_no, step)
        yield ServerSentEvent(event="progress", data=progress_view(data))
        preview = await self._preview(job_no, step)
        if preview is not None:
            yield ServerSentEvent(event="preview", data=preview)

    async def _preview(self, job_no: int, step: int) -> PreviewEvent | None:
        """The job's live preview when the options ask for one and `show_progress_every_n_steps`
        steps passed since the last one asked for; None when there is none or it is not new."""
        from modules import shared
        every = int(getattr(shared.opts, "show_progress_every_n_steps", 10))
        if not getattr(shared.opts, "live_previews_enable", True) or every <= 0 or step <= 0:
            return None
        if self.preview_at is not None and self.preview_at[0] == job_no and step - self.preview_at[1] < every:
            return None
        self.preview_at = (job_no, step)
        preview_id, png = await anyio.to_thread.run_sync(self.service.preview, self.job_id)  # decodes: not here
        if png is None or preview_id == self.preview_id:
            return None
        self.preview_id = preview_id
        return PreviewEvent(id_live_preview=preview_id, step=step, job_no=job_no,
                            image="data:image/png;base64," + base64.b64encode(png).decode("ascii"))

    async def _job(self) -> Job | None:
        """The job now (read in a worker thread: the store is SQLite); None once it is deleted."""
        def read() -> Job | None:
            try:
                return job_view(self.service, self.service.get(self.job_id))
            except errors.NotFound:
                return None
        return await anyio.to_thread.run_sync(read)


# --- routes ---------------------------------------------------------------------------------------------
_STATUS_TEXT = {
    400: "The body could not be read (not UTF-8 or not decodable).",
    401: "Missing or wrong credentials (--api-auth, or --gradio-auth when --api-auth is not set).",
    404: "No job has this id, or the job has no image with this index.",
    409: "The job's state does not allow this (already finished; not finished yet; failed).",
    413: "The body is larger than the option api_max_body_mb.",
    422: "A value Serena cannot accept; the body names the field.",
}


def declared(statuses: tuple[int, ...], authenticated: bool, *,
             streaming: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI error responses of a route (plus 401 when the router is guarded). Errors are
    JSON even where the route streams (`streaming`: FastAPI would list them as its media type)."""
    codes = set(statuses) | ({401} if authenticated else set())
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted(codes):
        model = m.UnprocessableResponse if code == 422 else m.ErrorResponse
        if streaming:
            schema = {"$ref": f"#/components/schemas/{model.__name__}"}
            out[code] = {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": schema}}}
        else:
            out[code] = {"model": model, "description": _STATUS_TEXT[code]}
    return out


def existing_job(job_id: str) -> JobRecord:
    """Dependency: the job `job_id`, or 404 before any response starts (the event stream needs it)."""
    return job_service.current().get(job_id)


def submit_job(body: JobSubmitRequest, response: Response) -> Job:
    """Validate and resolve the request now (422 naming the field), then queue it."""
    req = jobs.prepare(body.kind, jobs.request_model(body.kind, body.request))
    service = job_service.current()
    record = service.submit(body.kind, req.model_dump(mode="json"), job_id=req.force_task_id or None,
                            source="serena", name=body.name)
    response.headers["Location"] = f"{PREFIX}/{record.id}"
    return job_view(service, service.get(record.id))


def list_jobs(status: list[Status] | None = Query(None, description="Only jobs in these states (repeatable)."),
              offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(50, ge=1, le=MAX_LIMIT),
              newest_first: bool = Query(False, description="Newest first instead of queue order.")) -> JobList:
    service = job_service.current()
    records, total = service.store.list(status or None, offset=offset, limit=limit, newest_first=newest_first)
    pending = service.store.pending_ids()
    return JobList(jobs=[job_view(service, r, pending) for r in records], total=total, offset=offset, limit=limit)


def get_job(job_id: str) -> Job:
    service = job_service.current()
    return job_view(service, service.get(job_id))


def cancel_job(job_id: str) -> Job:
    """Pending: never runs (interrupted). Running: interrupted at the next step, images so far kept."""
    service = job_service.current()
    return job_view(service, service.cancel(job_id))


def job_results(job_id: str) -> JobResults:
    service = job_service.current()
    files = finished_results(service, job_id)
    result = service.get(job_id).result or {}
    return JobResults(images=[base64.b64encode(data).decode("ascii") for _, data in files],
                      infotexts=[str(x) for x in result.get("infotexts") or []], info=str(result.get("info") or ""))


def job_result_file(job_id: str, n: int = Path(ge=0, description="0-based image index.")) -> Response:
    files = finished_results(job_service.current(), job_id)
    if n >= len(files):
        raise errors.NotFound(f"job {job_id} has {len(files)} images; there is no image {n}", field="n")
    name, data = files[n]
    return Response(content=data, media_type=image_io.media_type(name))


async def job_events(job_id: str, record: JobRecord = Depends(existing_job)) -> AsyncIterator[ServerSentEvent]:
    """The job's events as Server-Sent Events (see the module docstring for the sequence)."""
    async for event in JobEventStream(job_service.current(), record.id).events():
        yield event


def add_routes(app: FastAPI, dependencies: list[Any]) -> None:
    """Register the job API on `app`; `dependencies` guard every route (the API's auth, or [])."""
    from modules.api.app import api_routes
    if any(route.path == PREFIX for route in api_routes(app.routes)):
        return  # already registered (the app builder wires it; a test may call this again)
    auth = bool(dependencies)
    router = APIRouter(prefix=PREFIX, dependencies=dependencies, route_class=StrictJSONRoute, tags=["jobs"])
    images = {"content": {t: {} for t in ("image/png", "image/jpeg", "image/webp")},
              "description": "The image file, with its infotext."}
    router.add_api_route("", submit_job, methods=["POST"], status_code=201, response_model=Job,
                         responses=declared((400, 404, 409, 413, 422), auth), summary="Queue a job")
    router.add_api_route("", list_jobs, methods=["GET"], response_model=JobList,
                         responses=declared((422,), auth), summary="List jobs")
    router.add_api_route("/{job_id}", get_job, methods=["GET"], response_model=Job,
                         responses=declared((404,), auth), summary="Get a job")
    router.add_api_route("/{job_id}/cancel", cancel_job, methods=["POST"], response_model=Job,
                         responses=declared((404, 409), auth), summary="Cancel a job")
    router.add_api_route("/{job_id}/results", job_results, methods=["GET"], response_model=JobResults,
                         responses=declared((404, 409), auth), summary="A finished job's images")
    router.add_api_route("/{job_id}/results/{n}", job_result_file, methods=["GET"], response_class=Response,
                         responses={200: images, **declared((404, 409, 422), auth)}, summary="One image file")
    router.add_api_route("/{job_id}/events", job_events, methods=["GET"], response_class=EventSourceResponse,
                         responses=declared((404,), auth, streaming=True),
                         summary="The job's events (Server-Sent Events)")
    app.include_router(router)
