"""Executors: where the job service runs a job. Every executor ends in `jobs.execute`, which builds
`p` and calls `process_images` — so every job reaches `ProcessingRunner.run` in the process that
runs it.

An executor has *slots* (one per job it can run at once). The service asks :meth:`Executor.acquire`
for a free slot for the job at the head of the queue (an executor may prefer a slot that already
has the job's checkpoint loaded), runs the job with :meth:`Executor.run` in a thread of its own,
then gives the slot back with :meth:`Executor.release`.

- :class:`InProcessExecutor` (the default): one slot, jobs run in this process behind the FIFO
  lock that the UI's own jobs take too. With `threads=2` (tests only) two jobs run side by side
  without the lock: each has its own run context.
- `modules.runtime.executor_ray.RayExecutor` (`--executor ray`): one slot per Ray worker process.
  It never batches requests (each job runs in its own worker process).

Batch groups (option `jobs_batch_requests`, in-process executor only): the service runs several
compatible queued jobs on one slot at once — :meth:`InProcessExecutor.member_slots` gives each a
member slot of its own (own run context, own cancel), :meth:`InProcessExecutor.group_turn` takes the
FIFO queue's turn once for all of them, and each member's UNet calls meet in
`modules.runtime.unet_batching`.
"""
from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from modules import call_queue
from modules.runtime import context, jobs
from modules.runtime.job_store import JobRecord

Emit = Callable[[str, dict[str, Any]], None]


class WorkerLost(RuntimeError):
    """The process running a job went away before the job finished."""


@dataclass
class Slot:
    """One place a job can run. `checkpoint` is the model title loaded there (for affinity),
    `job_id` the job it runs now, `alive` False once its worker is lost. `group`: the
    `unet_batching.BatchGroup` of a batch group's member slot, else None."""

    name: str
    checkpoint: str | None = None
    job_id: str | None = None
    alive: bool = True
    handle: Any = field(default=None, repr=False)
    group: Any = field(default=None, repr=False)


class Executor(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def slots(self) -> list[Slot]: ...

    def acquire(self, job: JobRecord) -> Slot | None:
        """A free slot for `job` (marked busy), or None when all are busy."""

    def release(self, slot: Slot) -> None: ...

    def run(self, slot: Slot, job: JobRecord, emit: Emit) -> jobs.JobOutput:
        """Run `job` on `slot`, blocking; `emit(kind, data)` reports progress ("progress" events
        with step, steps, job_no, job_count, textinfo). Raises what the job raised, or
        :class:`WorkerLost`."""

    def cancel(self, slot: Slot, kind: str = "interrupt") -> None:
        """`interrupt` / `skip` the job running on `slot`."""

    def preview(self, slot: Slot) -> tuple[int, bytes | None]:
        """(preview id, PNG bytes of the latest live preview) of the job on `slot`."""


_HASH_SUFFIX = re.compile(r"\s*\[[^]]+]\s*$")


def checkpoint_key(title: str | None) -> str | None:
    """A checkpoint title without its " [shorthash]": the same in every process that lists the file
    (a title gains its hash only once that process has hashed the file)."""
    return _HASH_SUFFIX.sub("", title) if title else title


def choose_slot(slots: list[Slot], checkpoint: str | None) -> Slot | None:
    """A free live slot, preferring one whose loaded checkpoint is `checkpoint` (model affinity,
    compared by :func:`checkpoint_key`), then one with no model loaded yet, then any."""
    free = [s for s in slots if s.alive and s.job_id is None]
    if not free:
        return None
    wanted_key = checkpoint_key(checkpoint)
    for wanted in (lambda s: wanted_key is not None and checkpoint_key(s.checkpoint) == wanted_key,
                   lambda s: s.checkpoint is None):
        for slot in free:
            if wanted(slot):
                return slot
    return free[0]


def progress_data(event: context.ProgressEvent) -> dict[str, Any]:
    return {"kind": event.kind, "step": event.step, "steps": event.steps, "job_no": event.job_no, "job_count": event.job_count,
            "textinfo": event.textinfo}


def follow(ctx: context.RunContext, emit: Emit) -> Callable[[], None]:
    """Report `ctx`'s progress through `emit`; returns the unsubscribe function."""
    return ctx.progress.subscribe(lambda event: emit("progress", progress_data(event)))


def preview_png(state: Any) -> tuple[int, bytes | None]:
    """Refresh and encode the live preview of a job's `shared_state.State` as PNG."""
    import io
    state.set_current_image()
    image = state.current_image
    if image is None:
        return state.id_live_preview, None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return state.id_live_preview, buffer.getvalue()


class InProcessExecutor:
    """Runs jobs in threads of this process. `threads=1` (the default) takes the FIFO queue lock
    for each job, so the UI's jobs and the service's share one order; more threads (a test-only
    setting) run jobs side by side without it."""

    name = "local"
    registers_tasks = True  # `call_queue.queued_job` marks the task running / finished
    batches = True  # the service may run a batch group of queued jobs on one slot (`member_slots`)

    def __init__(self, threads: int = 1) -> None:
        self._slots = [Slot(f"local-{i}") for i in range(max(1, int(threads)))]
        self._lock = threading.Lock()
        self._contexts: dict[str, context.RunContext] = {}
        self._early_cancel: dict[str, str] = {}  # slot → kind, asked before the job's context existed
        self.queue_lock = call_queue.queue_lock if len(self._slots) == 1 else None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for slot in self.slots():
            if slot.job_id is not None:
                self.cancel(slot)

    def slots(self) -> list[Slot]:
        with self._lock:
            return list(self._slots)

    def acquire(self, job: JobRecord) -> Slot | None:
        with self._lock:
            slot = choose_slot(self._slots, job.checkpoint)
            if slot is not None:
                slot.job_id = job.id
            return slot

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.job_id = None
            self._contexts.pop(slot.name, None)
            self._early_cancel.pop(slot.name, None)

    def member_slots(self, slot: Slot, job_ids: list[str]) -> list[Slot]:
        """One member slot per job of a batch group run on `slot` (acquired by its first job): each
        has its own run context and cancel; they share one `unet_batching.BatchGroup`."""
        from modules.runtime import unet_batching  # torch: only where a group runs
        group = unet_batching.BatchGroup(job_ids)
        return [Slot(f"{slot.name}.{i}", checkpoint=slot.checkpoint, job_id=job_id, group=group)
                for i, job_id in enumerate(job_ids)]

    @contextlib.contextmanager
    def group_turn(self, slot: Slot, members: list[Slot]) -> Any:
        """Hold the FIFO queue's turn once for a whole batch group (its members run with no lock
        of their own) inside the block; afterwards the group is closed and `slot` released."""
        if self.queue_lock is not None:
            self.queue_lock.acquire()
        try:
            yield
        finally:
            if self.queue_lock is not None:
                self.queue_lock.release()
            for member in members:
                if member.group is not None:
                    member.group.close()
                slot.checkpoint = member.checkpoint or slot.checkpoint
            self.release(slot)

    def run(self, slot: Slot, job: JobRecord, emit: Emit) -> jobs.JobOutput:
        def started(ctx: context.RunContext) -> None:
            with self._lock:
                self._contexts[slot.name] = ctx
                early = self._early_cancel.pop(slot.name, None)
            if early is not None:
                getattr(ctx.cancel, early)()
            follow(ctx, emit)
        lock, joined = self.queue_lock, contextlib.nullcontext()
        if slot.group is not None:  # a batch group's member: the group holds the queue's turn
            from modules.runtime import unet_batching
            lock, joined = None, unet_batching.member(slot.group, job.id)
        with joined:
            output = jobs.execute(job.id, job.kind, job.request, ui=job.source == "ui", lock=lock,
                                  on_start=started)
        slot.checkpoint = output.checkpoint
        return output

    def _context(self, slot: Slot) -> context.RunContext | None:
        with self._lock:
            return self._contexts.get(slot.name)

    def cancel(self, slot: Slot, kind: str = "interrupt") -> None:
        with self._lock:
            ctx = self._contexts.get(slot.name)
            if ctx is None and slot.job_id is not None:
                self._early_cancel[slot.name] = kind
        if ctx is not None:
            getattr(ctx.cancel, kind)()

    def preview(self, slot: Slot) -> tuple[int, bytes | None]:
        ctx = self._context(slot)
        return preview_png(ctx.state) if ctx is not None else (0, None)
