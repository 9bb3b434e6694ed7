"""The one process-wide job queue: a FIFO lock and the task-id registry progress reads.

A1111 serialises every generation (API and UI alike) behind `call_queue.queue_lock`. Serena keeps
the name and the role, but the lock is a ticket lock: waiters are served strictly in arrival
order, which a plain `threading.Lock` does not promise. The registry keeps which task is pending,
running or finished, so `/internal/progress` can answer for a given task id while the job itself
runs in another thread.

Nothing here runs a job by itself: callers (API routes, UI handlers) take the lock with
:func:`queued_job` and call `modules.processing.process_images` inside it.
"""
from __future__ import annotations

import collections
import contextlib
import random
import string
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

_TASK_ID_ALPHABET = string.ascii_uppercase + string.digits
_FINISHED_KEPT = 64


class FIFOLock:
    """A ticket lock: granted in the order `acquire` was called. Re-entrant for the holding thread
    (an option hook wrapped with :func:`wrap_queued_call` may run inside a queued route)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for our turn. Returns False (and gives the turn up) if `timeout` passes first."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            ticket = self._next_ticket
            self._next_ticket += 1
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._serving != ticket:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._abandoned.add(ticket)  # skipped when its turn comes
                    return False
                self._cond.wait(remaining)
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        """Hand the lock to the next ticket in line (skipping abandoned ones).

        Raises:
            RuntimeError: the calling thread does not hold the lock.
        """
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("FIFOLock.release() called by a thread that does not hold it")
            self._depth -= 1
            if self._depth:
                return
            self._owner = None
            self._serving += 1
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
            self._cond.notify_all()

    def locked(self) -> bool:
        with self._cond:
            return self._owner is not None

    def waiting(self) -> int:
        """How many callers hold a ticket (the running one included)."""
        with self._cond:
            return self._next_ticket - self._serving - len(self._abandoned)

    def __enter__(self) -> "FIFOLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


queue_lock = FIFOLock()


# --- task registry (A1111's modules/progress.py names) -------------------------------------------
_registry_lock = threading.Lock()
pending_tasks: dict[str, float] = {}
current_task: str | None = None  # the most recently started running task (A1111's name)
running_tasks: set[str] = set()  # every running task (an executor may run several at once)
finished_tasks: collections.OrderedDict[str, float] = collections.OrderedDict()


def create_task_id(task_type: str) -> str:
    """`task(<type>-XXXXXXX)`, X drawn from A–Z and 0–9, as A1111 makes them."""
    suffix = "".join(random.choices(_TASK_ID_ALPHABET, k=7))
    return f"task({task_type}-{suffix})"


def add_task_to_queue(id_job: str) -> None:
    """Register a waiting task (its first registration's time keeps its place)."""
    with _registry_lock:
        pending_tasks.setdefault(id_job, time.time())


def forget_task(id_job: str) -> None:
    """Drop a task that will not run (a cancelled or deleted pending job)."""
    with _registry_lock:
        pending_tasks.pop(id_job, None)


def start_task(id_job: str) -> None:
    global current_task
    with _registry_lock:
        current_task = id_job
        running_tasks.add(id_job)
        pending_tasks.pop(id_job, None)


def finish_task(id_job: str) -> None:
    global current_task
    with _registry_lock:
        running_tasks.discard(id_job)
        if current_task == id_job:
            current_task = next(iter(running_tasks), None)
        pending_tasks.pop(id_job, None)
        finished_tasks[id_job] = time.time()
        while len(finished_tasks) > _FINISHED_KEPT:
            finished_tasks.popitem(last=False)


def task_status(id_job: str) -> tuple[bool, bool, bool]:
    """(active, queued, completed) for a task id, as `/internal/progress` reports them."""
    with _registry_lock:
        return id_job in running_tasks, id_job in pending_tasks, id_job in finished_tasks


def queue_position(id_job: str) -> int | None:
    """0-based position of a pending task among the pending ones, or None if it is not pending."""
    with _registry_lock:
        if id_job not in pending_tasks:
            return None
        ordered = sorted(pending_tasks.items(), key=lambda kv: kv[1])
        return [k for k, _ in ordered].index(id_job)


@contextlib.contextmanager
def queued_job(id_task: str, job: str, lock: FIFOLock | None = queue_lock) -> Iterator[Any]:
    """Register `id_task`, wait for the FIFO `lock`, and run the block as that task's job.

    Inside the block a fresh run context (`modules.runtime.context`) is current: progress and
    cancellation belong to this job only, `shared.state` shows it, and a stale interrupt from an
    earlier job never reaches it. Yields the context. `lock=None` runs without waiting (an
    executor that runs jobs side by side).
    """
    from modules.runtime import context
    add_task_to_queue(id_task)
    try:
        if lock is not None:
            lock.acquire()
    except BaseException:
        with _registry_lock:
            pending_tasks.pop(id_task, None)
        raise
    try:
        start_task(id_task)
        try:
            with context.job_context(id_task, job) as ctx:
                yield ctx
        finally:
            finish_task(id_task)
    finally:
        if lock is not None:
            lock.release()


def wrap_queued_call(func: Callable[..., T]) -> Callable[..., T]:
    """A1111 helper: run `func` under the queue lock."""
    def f(*args: Any, **kwargs: Any) -> T:
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_call(func: Callable[..., Any], extra_outputs: Any = None, add_stats: bool = False) -> Callable[..., Any]:
    """A1111 helper for UI handlers: call `func`; if it raises, report the error and return what
    the outputs should show instead — `extra_outputs` (a list, or None for one empty output per
    output) followed by an HTML line with the error — so the page shows the failure, not a crash.
    `add_stats` is accepted (A1111 appends timing HTML; Serena's progress line shows it)."""
    import html as html_lib

    from modules import errors

    def f(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as e:
            errors.report(f"Error completing request {getattr(func, '__name__', func)}", exc_info=True)
            message = f"<div class='error'>{html_lib.escape(type(e).__name__)}: {html_lib.escape(str(e))}</div>"
            return [*(extra_outputs if extra_outputs is not None else [None]), message]

    return f


def wrap_gradio_gpu_call(func: Callable[..., T], extra_outputs: Any = None) -> Callable[..., T]:
    """A1111 helper for UI handlers: run `func` as a queued job with progress reporting.

    The task id is the first positional argument when it looks like `task(...)` (the UI sends
    it), else a fresh one; `shared.state` describes the job while it runs.
    """
    def f(*args: Any, **kwargs: Any) -> T:
        first = args[0] if args else None
        id_task = first if isinstance(first, str) and first.startswith("task(") else create_task_id("gradio")
        with queued_job(id_task, getattr(func, "__name__", "job")):
            return func(*args, **kwargs)
    return f
