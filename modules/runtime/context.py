"""A job's run context: its cancellation token and its progress sink, one per job.

`ProcessingRunner.run` (or the queue, for a whole queued job that may call `process_images` many
times) opens a :class:`RunContext` with :func:`job_context`; it is the *current* context of the
thread that runs the job (a context variable, as `opts.override`). The sampler and the pipeline
stages report to ``current().progress`` and check ``current().cancel``; `shared.state` is A1111's
view of the same objects (see `modules.shared_state`), so extension code that reads
`shared.state.interrupted` or `sampling_step` sees *its* job. Two jobs running at once in one
process each have their own context and never see each other's progress or cancellation.

Other threads (progress routes, the job service, an SSE stream) find a running job's context with
:func:`find` (by task id) or :func:`front` (the most recently started one, A1111's single
`shared.state`).
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

Listener = Callable[["ProgressEvent"], None]


class CancelToken:
    """Interrupt / skip / stop requests for one job. Plain attribute stores: any thread may set
    them, the job's thread reads them between steps."""

    __slots__ = ("interrupted", "skipped", "stopping_generation")

    def __init__(self) -> None:
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False

    def interrupt(self) -> None:
        """Stop the job: the current image ends at this step, later batches never start."""
        self.interrupted = True

    def skip(self) -> None:
        """End the current batch now; the job goes on with the next one."""
        self.skipped = True

    def stop_generating(self) -> None:
        """Finish the current image, then stop."""
        self.stopping_generation = True

    @property
    def stop_now(self) -> bool:
        """True when sampling must end at this step (interrupt or skip)."""
        return self.interrupted or self.skipped


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress listener receives: `kind` is "step" (a sampling step finished), "job" (the
    job moved to its next batch or pass) or "text" (the job's description changed)."""

    kind: str
    job_no: int
    job_count: int
    step: int
    steps: int
    textinfo: str | None


class ProgressSink:
    """A job's progress, with A1111's field names; listeners hear every change as a
    :class:`ProgressEvent` (in the job's thread: keep them quick, never raise)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.reset()

    def reset(self) -> None:
        """Back to "nothing done yet" (listeners stay)."""
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent: Any = None
        self.current_image: Any = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo: str | None = None
        self.time_start: float | None = None

    # --- listeners ---------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every event from now on; returns the function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)
        return unsubscribe

    def emit(self, kind: str) -> None:
        if not self._listeners:
            return
        event = ProgressEvent(kind, self.job_no, self.job_count, self.sampling_step, self.sampling_steps,
                              self.textinfo)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener never breaks the job
                from modules import errors
                errors.report("progress listener failed", exc_info=True)

    # --- what the pipeline reports -------------------------------------------------------------
    def start_sampling(self, steps: int) -> None:
        self.sampling_steps = steps
        self.sampling_step = 0

    def step(self, step: int, total: int, latent: Any = None) -> None:
        """Sampling step `step` (0-based) of `total` finished; `latent` is its denoised estimate."""
        if latent is not None:
            self.current_latent = latent
        self.sampling_step = step + 1
        self.sampling_steps = total
        self.emit("step")

    def next_job(self) -> None:
        """One batch (or hires pass) is done."""
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0
        self.emit("job")

    def set_text(self, text: str) -> None:
        self.job = text
        self.textinfo = text
        self.emit("text")

    def fraction(self) -> float:
        """A1111's progress formula (spec §1.5), see :func:`progress_fraction`."""
        return progress_fraction(self.job_no, self.job_count, self.sampling_step, self.sampling_steps)


def progress_fraction(job_no: int, job_count: int, step: int, steps: int) -> float:
    """A1111's progress formula (spec §1.5): 0.01 + done batches + this batch's steps, at most 1."""
    if job_count <= 0:
        return 0.0
    value = 0.01 + job_no / job_count
    if steps > 0:
        value += (step / steps) / job_count
    return min(value, 1.0)


_ids = itertools.count(1)


class RunContext:
    """One job's run context: `task_id`, `cancel` token, `progress` sink, and A1111's `state` view."""

    def __init__(self, task_id: str | None = None, job: str = "") -> None:
        self.serial = next(_ids)
        self.task_id = task_id
        self.cancel = CancelToken()
        self.progress = ProgressSink()
        self.progress.job = job
        self.progress.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.progress.time_start = time.time()
        self._state: Any = None

    @property
    def state(self) -> Any:
        """This job's `shared_state.State` (A1111's field names over `cancel` and `progress`)."""
        if self._state is None:
            from modules import shared_state
            self._state = shared_state.State(self)
        return self._state

    def __repr__(self) -> str:
        return f"RunContext(task_id={self.task_id!r}, serial={self.serial})"


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("serena_run_context", default=None)
_running: dict[int, RunContext] = {}
_running_lock = threading.Lock()
_idle = RunContext(job="")


def current() -> RunContext | None:
    """The context of the job this thread runs, or None outside a job."""
    return _current.get()


def active() -> RunContext:
    """The current job's context, else the idle one (code run outside any job, e.g. a sampler in a
    unit test, reports there)."""
    return _current.get() or _idle


def idle() -> RunContext:
    """The context `shared.state` shows when no job runs."""
    return _idle


def running() -> list[RunContext]:
    """The contexts of the jobs running now, oldest first."""
    with _running_lock:
        return sorted(_running.values(), key=lambda c: c.serial)


def front() -> RunContext | None:
    """The most recently started running job's context (what A1111's single `shared.state` shows)."""
    jobs = running()
    return jobs[-1] if jobs else None


def find(task_id: str | None) -> RunContext | None:
    """The running job with this task id, if any."""
    if not task_id:
        return None
    for ctx in running():
        if ctx.task_id == task_id:
            return ctx
    return None


@contextlib.contextmanager
def activate(ctx: RunContext) -> Iterator[RunContext]:
    """Make `ctx` this thread's current context and list it as running, inside the block."""
    token = _current.set(ctx)
    with _running_lock:
        _running[ctx.serial] = ctx
    try:
        yield ctx
    finally:
        with _running_lock:
            _running.pop(ctx.serial, None)
        _current.reset(token)


@contextlib.contextmanager
def job_context(task_id: str | None = None, job: str = "(unknown)") -> Iterator[RunContext]:
    """A fresh :class:`RunContext` for one job, current inside the block. A control sent while
    nothing ran, and progress written outside any job (both left on the idle context), are
    dropped, as A1111's `state.begin()` drops them."""
    _idle.cancel.__init__()
    _idle.progress.reset()  # nor does progress written outside any job linger in `shared.state`
    with activate(RunContext(task_id, job)) as ctx:
        yield ctx


def cancel_all(kind: str = "interrupt") -> None:
    """`interrupt`, `skip` or `stop_generating` every running job (A1111's single-job controls
    called from outside any job: the API's /interrupt, the UI's buttons)."""
    for ctx in running() or [_idle]:
        getattr(ctx.cancel, kind)()
