"""The job service: one persistent queue for every front end, run by an executor.

A job is a request body (A1111 field names, resolved once by `jobs.prepare`) stored in the
:class:`~modules.runtime.job_store.JobStore`. A dispatcher thread takes pending jobs in queue order
and hands each to a free slot of the executor (`modules.runtime.executors`); each job runs in a
thread of its own that waits for the executor, writes the result images to disk, then marks the
job done / interrupted / failed in the store. Front ends:

- `/sdapi/v1/txt2img` and `img2img`: :meth:`JobService.run` (submit and wait; same response).
- the agent-scheduler routes and Serena's own job API (`modules.api.jobs_api`): submit, get,
  list, cancel, move, requeue, pause / resume, results, and :meth:`JobService.subscribe` for events.

Events (:class:`JobEvent`) a subscriber hears, in order: ``queued``, ``started``, ``progress``
(many), and one of ``done`` / ``failed`` / ``interrupted``.

Batch groups (option `jobs_batch_requests`, off by default; in-process executor only): when the
dispatcher starts the head of the queue it also takes the pending jobs right behind it whose
requests may share its UNet calls (:func:`batch_key`, at most `jobs_batch_max` in all). They run at
once, each as a job of its own (own thread, run context, events, results); only their UNet
evaluations meet, and merge where that is bit-identical (`modules.runtime.unet_batching`).
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from modules import call_queue, errors
from modules.runtime import context, job_store
from modules.runtime.job_store import (DONE, FAILED, FINISHED, INTERRUPTED, PENDING, RUNNING, JobRecord, JobStore,
                                       MalformedJob)

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[A-Za-z0-9_\-().]{1,96}$")
INTERACTIVE_SOURCES = ("ui", "sdapi")
"""Where a caller waits for the job: these run even while the queue is paused."""
_WAKE_S = 1.0


class Conflict(errors.SerenaError):
    """The job is in a state that does not allow this (e.g. cancelling a finished job)."""

    status_code = 409


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job: `type` is queued / started / progress / done / failed /
    interrupted; `data` holds the details (progress: step, steps, job_no, job_count, textinfo,
    progress; finished: status, error)."""

    job_id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Subscriber = Callable[[JobEvent], None]


def progress_fraction(data: dict[str, Any]) -> float:
    """A1111's progress formula from a progress event's fields."""
    return context.progress_fraction(int(data.get("job_no") or 0), int(data.get("job_count") or 0),
                                     int(data.get("step") or 0), int(data.get("steps") or 0))


class JobService:
    """Queue, store and executor together. Thread-safe; build with :func:`build`."""

    def __init__(self, store: JobStore, executor: Any) -> None:
        self.store = store
        self.executor = executor
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._futures: dict[str, concurrent.futures.Future] = {}
        self._slots: dict[str, Any] = {}  # running job id → executor slot
        self._cancelled: set[str] = set()
        self._last_progress: dict[str, dict[str, Any]] = {}
        self._finish_listeners: list[Callable[[JobRecord], None]] = []
        self._dispatch_lock = threading.Lock()  # a pause never lands between "not paused" and a start
        self.recovered: list[str] = []

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> "JobService":
        """Fail the jobs a dead process left running, start the executor and the dispatcher."""
        self.recovered = self.store.recover()
        for job_id in self.recovered:
            log.warning("job %s was running when the server stopped: marked failed", job_id)
        self.executor.start()
        self._thread = threading.Thread(target=self._loop, name="serena-job-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; interrupt the running ones and wait for them (up to `timeout`)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            running = dict(self._slots)
        for slot in running.values():
            self.executor.cancel(slot)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slots and time.monotonic() < deadline:
                self._cond.wait(0.1)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.executor.stop()

    @property
    def paused(self) -> bool:
        return self.store.get_meta("paused", "0") == "1"

    def pause(self) -> None:
        """Running jobs finish; no new queued job starts after this returns until :meth:`resume`
        (kept across restarts). Interactive jobs — someone is waiting for them: the UI's Generate,
        the synchronous `/sdapi/v1` routes — still run: pausing the queue never hangs the page."""
        with self._dispatch_lock:
            self.store.set_meta("paused", "1")

    def resume(self) -> None:
        self.store.set_meta("paused", "0")
        self._wake()

    # --- submitting and waiting ------------------------------------------------------------------
    def submit(self, kind: str, request: dict[str, Any], *, job_id: str | None = None, source: str = "serena",
               name: str | None = None, callback_url: str | None = None, keep_output: bool = False) -> JobRecord:
        """Queue a job (the request already resolved by `jobs.prepare`) at the end of the queue.
        `keep_output`: keep the finished output in memory for :meth:`wait` (a waiting caller)."""
        job_id = job_id or call_queue.create_task_id(kind)
        if not JOB_ID.match(job_id) or job_id in (".", ".."):
            raise errors.InvalidParameter(f"job id {job_id!r} is not valid", field="task_id")
        if self.store.status_of(job_id) is not None:
            raise Conflict(f"job {job_id} already exists")
        record = JobRecord(id=job_id, kind=kind, request=request, source=source, name=name,
                           callback_url=callback_url, checkpoint=requested_checkpoint(request))
        if keep_output:
            with self._cond:
                self._futures[job_id] = concurrent.futures.Future()
        self.store.add(record)
        call_queue.add_task_to_queue(job_id)  # `/internal/progress` and pending-tasks see it waiting
        self._publish(JobEvent(job_id, "queued", {"position": self.position(job_id)}))
        self._wake()
        return record

    def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """The `jobs.JobOutput` of a job submitted with `keep_output`; raises what the job raised.
        An interrupted job returns what it made (A1111's API does the same)."""
        with self._cond:
            future = self._futures.get(job_id)
        if future is None:
            raise errors.NotFound(f"job {job_id} is not awaited in this process", field="task_id")
        try:
            return future.result(timeout)
        finally:
            with self._cond:
                self._futures.pop(job_id, None)

    def run(self, kind: str, request: dict[str, Any], **submit: Any) -> Any:
        """Submit and wait: what the synchronous `/sdapi/v1` routes do."""
        record = self.submit(kind, request, keep_output=True, **submit)
        return self.wait(record.id)

    # --- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        """The job's record. Raises errors.NotFound for an unknown id."""
        try:
            record = self.store.get(job_id)
        except MalformedJob as e:
            raise Conflict(str(e)) from e
        if record is None:
            raise errors.NotFound(f"job {job_id!r} not found", field="task_id")
        return record

    def position(self, job_id: str) -> int | None:
        """0-based place among the pending jobs, None when not pending."""
        ids = self.store.pending_ids()
        return ids.index(job_id) if job_id in ids else None

    def running_ids(self) -> list[str]:
        with self._cond:
            return list(self._slots)

    def progress(self, job_id: str) -> dict[str, Any] | None:
        """The latest progress event's data of a running job (None when it reported none)."""
        with self._cond:
            data = self._last_progress.get(job_id)
        return dict(data) if data is not None else None

    def preview(self, job_id: str) -> tuple[int, bytes | None]:
        """(preview id, PNG) of a running job's live preview, from its executor."""
        with self._cond:
            slot = self._slots.get(job_id)
        return self.executor.preview(slot) if slot is not None else (0, None)

    def result_files(self, job_id: str) -> list[tuple[str, bytes]]:
        """(file name, bytes) of a finished job's images, in order."""
        record = self.get(job_id)
        names = (record.result or {}).get("images") or []
        return [(name, self.store.read_result(job_id, name)) for name in names]

    # --- changing ------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        """A pending job is cancelled (interrupted, never run); a running one is interrupted (its
        images so far are kept). Raises Conflict for a finished job, NotFound for an unknown one."""
        record = self.get(job_id)
        if record.status in FINISHED:
            raise Conflict(f"job {job_id} is already {record.status}")
        with self._cond:
            slot = self._slots.get(job_id)
            self._cancelled.add(job_id)
        if slot is not None:
            self.executor.cancel(slot)
            return self.get(job_id)
        if self.store.status_of(job_id) == PENDING:
            self.store.finish(job_id, INTERRUPTED, error="cancelled before it ran")
            self._finished(job_id, INTERRUPTED, "cancelled before it ran", None)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Remove a job that is not running, with its result files."""
        record = self.get(job_id)
        if record.status == RUNNING:
            raise Conflict(f"job {job_id} is running; cancel it first")
        self.store.delete(job_id)
        self.store.remove_results(job_id)

    def move(self, job_id: str, where: str) -> None:
        """Move a pending job to the `top` or `bottom` of the queue, or just before job `where`."""
        positions = self.store.positions()
        if job_id not in positions:
            self.get(job_id)
            raise Conflict(f"job {job_id} is not pending")
        others = sorted(v for k, v in positions.items() if k != job_id)
        if where == "top":
            new = (others[0] - 1.0) if others else 0.0
        elif where == "bottom":
            new = (others[-1] + 1.0) if others else 0.0
        else:
            if where not in positions:
                self.get(where)
                raise Conflict(f"job {where} is not pending")
            target = positions[where]
            before = [v for v in others if v < target]
            new = (before[-1] + target) / 2 if before else target - 1.0
        self.store.move(job_id, new)
        self._wake()

    def requeue(self, job_id: str) -> JobRecord:
        """Run a finished job again: back to pending at the end of the queue, its old result removed."""
        record = self.get(job_id)
        if record.status not in FINISHED:
            raise Conflict(f"job {job_id} is {record.status}, not finished")
        top = max(self.store.positions().values(), default=0.0)
        self.store.remove_results(job_id)
        self.store.update(job_id, status=PENDING, error=None, result=None, started=None, finished=None,
                          worker=None, position=max(top, record.position) + 1.0)
        with self._cond:
            self._cancelled.discard(job_id)
        call_queue.add_task_to_queue(job_id)
        self._wake()
        return self.get(job_id)

    # --- events ----------------------------------------------------------------------------------
    def subscribe(self, job_id: str, fn: Subscriber) -> Callable[[], None]:
        """Call `fn` with each event of job `job_id` ("*": every job) from now on."""
        with self._cond:
            self._subscribers.setdefault(job_id, []).append(fn)

        def unsubscribe() -> None:
            with self._cond:
                listeners = self._subscribers.get(job_id, [])
                if fn in listeners:
                    listeners.remove(fn)
                if not listeners:
                    self._subscribers.pop(job_id, None)
        return unsubscribe

    def add_finish_listener(self, fn: Callable[[JobRecord], None]) -> None:
        """Call `fn(record)` after each job finishes (callbacks, notifications)."""
        self._finish_listeners.append(fn)

    def _publish(self, event: JobEvent) -> None:
        if event.type == "progress":
            with self._cond:
                self._last_progress[event.job_id] = event.data
        with self._cond:
            listeners = list(self._subscribers.get(event.job_id, [])) + list(self._subscribers.get("*", []))
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a subscriber never breaks a job
                log.exception("job event subscriber failed")

    # --- dispatching -----------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                with self._dispatch_lock:
                    started = self._dispatch_one(INTERACTIVE_SOURCES if self.paused else None)
            except Exception:  # noqa: BLE001 - the dispatcher never dies
                log.exception("job dispatcher failed; going on")
                started = False
            if not started:
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(_WAKE_S)

    def _dispatch_one(self, sources: tuple[str, ...] | None = None) -> bool:
        """Start the head of the queue (of the jobs from `sources`, if given) if a slot is free —
        with the jobs right behind it as one batch group where :func:`batch_limit` allows; True
        when something changed."""
        ids = self.store.pending_ids(sources)
        if not ids:
            return False
        job_id = ids[0]
        try:
            record = self.store.get(job_id)
            if record is None:
                return True
            if record.kind not in job_store.KINDS:
                raise MalformedJob(f"job {job_id}: unknown kind {record.kind!r}")
        except MalformedJob as e:
            reason = f"malformed job in the store: {e}"
            self.store.finish(job_id, FAILED, error=reason)
            self._finished(job_id, FAILED, reason, None)
            return True
        slot = self.executor.acquire(record)
        if slot is None:
            return False
        if not self.store.claim(job_id, worker=getattr(slot, "name", None)):
            self.executor.release(slot)
            return True
        members = self._claim_members(self._batch_candidates(record, ids[1:]), slot)
        if members:
            self._start_group(slot, [record, *members])
            return True
        with self._cond:
            self._slots[job_id] = slot
        threading.Thread(target=self._run_job, args=(record, slot), name=f"serena-job-{job_id}", daemon=True).start()
        return True

    # --- batch groups (option `jobs_batch_requests`) ------------------------------------------------------
    def _batch_candidates(self, head: JobRecord, later: list[str]) -> list[JobRecord]:
        """The pending jobs right behind `head` (in queue order, stopping at the first that does
        not fit, so no job jumps another) that may run with it as one batch group; [] when the
        option is off, the executor does not batch, or `head` cannot be grouped."""
        limit = batch_limit(self.executor)
        key = batch_key(head) if limit > 1 else None
        if key is None:
            return []
        found: list[JobRecord] = []
        for job_id in later[:limit - 1]:
            try:
                record = self.store.get(job_id)
            except MalformedJob:
                break
            if record is None or batch_key(record) != key:
                break
            found.append(record)
        return found

    def _claim_members(self, records: list[JobRecord], slot: Any) -> list[JobRecord]:
        """The candidates this dispatcher could claim (one cancelled meanwhile is left out)."""
        return [r for r in records if self.store.claim(r.id, worker=getattr(slot, "name", None))]

    def _start_group(self, slot: Any, records: list[JobRecord]) -> None:
        """Run `records` (claimed) as one batch group on `slot`: each is still a job of its own."""
        member_slots = self.executor.member_slots(slot, [r.id for r in records])
        with self._cond:
            for record, member in zip(records, member_slots):
                self._slots[record.id] = member
        log.info("jobs %s run as one batch group (jobs_batch_requests)", ", ".join(r.id for r in records))
        threading.Thread(target=self._run_group, args=(slot, records, member_slots),
                         name=f"serena-group-{records[0].id}", daemon=True).start()

    def _run_group(self, slot: Any, records: list[JobRecord], member_slots: list[Any]) -> None:
        """The group's turn in the queue, each member in a thread of its own (events, results and
        store rows as for a single job); the slot is free again when all have finished."""
        threads = [threading.Thread(target=self._run_job, args=(r, s), name=f"serena-job-{r.id}", daemon=True)
                   for r, s in zip(records, member_slots)]
        try:
            with self.executor.group_turn(slot, member_slots):
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            for record, thread in zip(records, threads):
                if thread.ident is None:  # never started: the group's turn failed
                    self._fail_unstarted(record)
            self._wake()

    def _fail_unstarted(self, record: JobRecord) -> None:
        reason = "its batch group could not start"
        with self._cond:
            self._slots.pop(record.id, None)
        self.store.finish(record.id, FAILED, error=reason)
        self._finished(record.id, FAILED, reason, None)

    def _run_job(self, record: JobRecord, slot: Any) -> None:
        job_id = record.id
        self._publish(JobEvent(job_id, "started", {"worker": getattr(slot, "name", None)}))
        if not getattr(self.executor, "registers_tasks", False):  # in-process: `queued_job` does it
            call_queue.start_task(job_id)
        outcome: Any = None
        error = None
        try:
            with self._cond:
                cancelled_early = job_id in self._cancelled
            if cancelled_early:
                self.executor.cancel(slot)
            output = self.executor.run(slot, record, lambda kind, data: self._publish(JobEvent(job_id, kind, data)))
            with self._cond:
                cancelled = job_id in self._cancelled
            status = INTERRUPTED if (output.interrupted or cancelled) else DONE
            names = self.store.write_results(job_id, list(zip(output.images, output.formats)))
            result = {"images": names, "infotexts": output.infotexts, "info": output.info}
            error = "interrupted" if status == INTERRUPTED else None
            self.store.finish(job_id, status, error=error, result=result)
            outcome = output
        except BaseException as e:  # noqa: BLE001 - the job failed; the service goes on
            status, error, outcome = FAILED, f"{type(e).__name__}: {e}", e
            if not isinstance(e, errors.SerenaError):
                log.error("job %s failed", job_id, exc_info=True)
            try:
                self.store.finish(job_id, FAILED, error=error)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of job %s", job_id)
        finally:
            if not getattr(self.executor, "registers_tasks", False):
                call_queue.finish_task(job_id)
            self.executor.release(slot)
            with self._cond:
                self._slots.pop(job_id, None)
                self._cancelled.discard(job_id)
                self._last_progress.pop(job_id, None)
                self._cond.notify_all()
        self._finished(job_id, status, error, outcome)

    def _finished(self, job_id: str, status: str, error: str | None, outcome: Any) -> None:
        call_queue.forget_task(job_id)
        self._prune()  # before a waiter wakes: it sees the store as it stays
        with self._cond:
            future = self._futures.get(job_id)
        if future is not None and not future.done():
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            elif outcome is None:
                future.set_exception(errors.Interrupted(f"job {job_id} was {status}: {error}"))
            else:
                future.set_result(outcome)
        self._publish(JobEvent(job_id, status, {"status": status, "error": error}))
        record = self.store.get(job_id) if self._finish_listeners else None
        for fn in list(self._finish_listeners):
            try:
                fn(record)
            except Exception:  # noqa: BLE001
                log.exception("job finish listener failed")


    def _prune(self) -> None:
        """Keep the newest `jobs_keep_finished` finished jobs (and their images); remove older ones."""
        from modules import shared
        try:
            keep = int(getattr(shared.opts, "jobs_keep_finished", 500))
            for old in self.store.finished_beyond(keep):
                with self._cond:
                    if old in self._futures:
                        continue
                self.store.delete(old)
                self.store.remove_results(old)
        except Exception:  # noqa: BLE001 - pruning never fails a job
            log.exception("pruning finished jobs failed")


def run_request(kind: str, req: Any, *, source: str) -> Any:
    """What the synchronous front ends do (`/sdapi/v1/txt2img|img2img`, the UI's Generate): resolve
    the request model once (`jobs.prepare`, 4xx for what cannot run), run it as a job of the one
    queue and wait. A `force_task_id` names the job (progress polls use it); a finished job of the
    same id is replaced, as A1111 reuses ids freely. Returns the `jobs.JobOutput`."""
    from modules.runtime import jobs
    req = jobs.prepare(kind, req)
    service = current()
    if req.force_task_id and service.store.status_of(req.force_task_id) in FINISHED:
        service.delete(req.force_task_id)
    return req, service.run(kind, req.model_dump(mode="json"), job_id=req.force_task_id, source=source)


def batch_limit(executor: Any) -> int:
    """How many queued jobs may run as one batch group: `jobs_batch_max` with the option
    `jobs_batch_requests` on and an executor that batches (the in-process one; never Ray), else 1."""
    from modules import shared
    if not getattr(executor, "batches", False) or not getattr(shared.opts, "jobs_batch_requests", False):
        return 1
    return max(1, int(getattr(shared.opts, "jobs_batch_max", 1)))


def batch_key(record: JobRecord) -> str | None:
    """The job's batch-group key (`unet_batching.request_key`), or None when it must run alone
    now: besides what the request says, its checkpoint must be the loaded one and its VAE the
    selected one — a member that loads or swaps a model would change it under the others."""
    from modules import sd_models, shared
    from modules.runtime import executors, unet_batching
    loaded = getattr(sd_models.model_data.sd_model, "sd_checkpoint_info", None)
    if loaded is None:
        return None
    loaded_key = executors.checkpoint_key(loaded.title)
    if record.checkpoint is not None and executors.checkpoint_key(record.checkpoint) != loaded_key:
        return None  # None: the job names no checkpoint and runs on the loaded one
    overrides = record.request.get("override_settings") or {}
    if "sd_vae" in overrides and overrides["sd_vae"] != getattr(shared.opts, "sd_vae", None):
        return None
    return unet_batching.request_key(record.kind, record.request, loaded_key)


def requested_checkpoint(request: dict[str, Any]) -> str | None:
    """The checkpoint title a request asks for (its `override_settings`, else the current option),
    resolved like the job will resolve it; None when it names none that is known."""
    from modules import sd_models, shared
    name = (request.get("override_settings") or {}).get("sd_model_checkpoint") or shared.opts.sd_model_checkpoint
    if not name:
        return None
    info = sd_models.get_closet_checkpoint_match(str(name))
    return info.title if info is not None else None


# --- the process's service (composition: `webui`, the API app) -------------------------------------------
_service: JobService | None = None
_service_lock = threading.Lock()


def build(folder: str, executor: Any) -> JobService:
    """A started service on the store in `folder`."""
    return JobService(JobStore(folder), executor).start()


def make_executor(cmd_opts: Any) -> Any:
    """The executor the flags ask for: `--executor local` (default) or `ray` (`--ray-address`,
    `--ray-workers`)."""
    from modules.runtime import executors
    kind = getattr(cmd_opts, "executor", None) or "local"
    if kind == "ray":
        from modules.runtime import executor_ray
        return executor_ray.RayExecutor.from_cmd_opts(cmd_opts)
    return executors.InProcessExecutor()


def store_folder() -> str:
    from modules import shared
    return os.path.join(shared.data_paths.data_path, "jobs")


def current() -> JobService:
    """The process's job service for the current data folder, started on first use (a new data
    folder — a test building its own runtime — gets a new service; the old one is stopped)."""
    global _service
    from modules import shared
    folder = store_folder()
    with _service_lock:
        if _service is not None and _service.store.folder == os.path.abspath(folder):
            return _service
        old, _service = _service, None
        if old is not None:
            old.stop()
            old.store.close()
        _service = build(folder, make_executor(shared.cmd_opts))
        return _service


def shutdown() -> None:
    """Stop the process's service (server exit)."""
    global _service
    with _service_lock:
        old, _service = _service, None
    if old is not None:
        old.stop()
        old.store.close()
