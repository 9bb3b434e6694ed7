"""A1111's `shared.state`: the running job's progress and cancellation under A1111's names.

Each job has its own :class:`~modules.runtime.context.RunContext` (cancellation token, progress
sink); :class:`State` is A1111's view of one, and :class:`StateFacade` — the object behind
`shared.state` — resolves to the calling job's view, so extension code keeps reading
`shared.state.interrupted` or `sampling_step` and two jobs in one process never mix. Every write is
a plain attribute store, so readers in other threads never block.
"""
from __future__ import annotations

import datetime
import threading
import time
from typing import Any


_CANCEL_FIELDS = ("interrupted", "skipped", "stopping_generation")
_PROGRESS_FIELDS = ("job", "job_no", "job_count", "processing_has_refined_job_count", "job_timestamp",
                    "sampling_step", "sampling_steps", "current_latent", "current_image",
                    "current_image_sampling_step", "id_live_preview", "textinfo", "time_start")


def _forward(part: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self._ctx, part), name),
                    lambda self, value: setattr(getattr(self._ctx, part), name, value),
                    doc=f"A1111's `state.{name}`: `RunContext.{part}.{name}`.")


class State:
    """A1111's `shared.state` fields and methods for one job: a view of a
    :class:`~modules.runtime.context.RunContext` (cancellation token and progress sink)."""

    def __init__(self, ctx: Any = None) -> None:
        from modules.runtime import context
        self._ctx = ctx if ctx is not None else context.RunContext(job="")
        self._preview_lock = threading.Lock()

    for _name in _CANCEL_FIELDS:
        locals()[_name] = _forward("cancel", _name)
    for _name in _PROGRESS_FIELDS:
        locals()[_name] = _forward("progress", _name)
    del _name

    @property
    def context(self) -> Any:
        return self._ctx

    @property
    def task_id(self) -> str | None:
        return self._ctx.task_id

    @task_id.setter
    def task_id(self, value: str | None) -> None:
        self._ctx.task_id = value

    def reset(self) -> None:
        self._ctx.cancel.__init__()
        self._ctx.progress.reset()

    # --- control -----------------------------------------------------------------------------
    def interrupt(self) -> None:
        self._ctx.cancel.interrupt()

    def skip(self) -> None:
        self._ctx.cancel.skip()

    def stop_generating(self) -> None:
        self._ctx.cancel.stop_generating()

    # --- lifecycle ---------------------------------------------------------------------------
    def begin(self, job: str = "(unknown)", task_id: str | None = None) -> None:
        self.reset()
        self.job = job
        if task_id is not None:
            self.task_id = task_id
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.time_start = time.time()

    def end(self) -> None:
        self.job = ""
        self.job_count = 0
        self.current_latent = None
        self.current_image = None

    def nextjob(self) -> None:
        self._ctx.progress.next_job()

    def assign_current_image(self, image: Any) -> None:
        """Make `image` the live preview."""
        self.current_image = image
        self.id_live_preview += 1

    def set_current_image(self) -> None:
        """Make a new live preview from the latest latent when `show_progress_every_n_steps` steps
        passed since the last one (and `live_previews_enable` is on). The progress routes call
        this when they are asked for a preview, so the sampler never waits for a decode."""
        from modules import shared
        opts = shared.opts
        every = int(getattr(opts, "show_progress_every_n_steps", 10))
        if not getattr(opts, "live_previews_enable", True) or every <= 0 or self.current_latent is None:
            return
        if self.sampling_step - self.current_image_sampling_step < every:
            return
        self.do_set_current_image()

    def do_set_current_image(self) -> None:
        """Decode the latest latent now with the option `show_progress_type` (one image, or a grid of
        the batch with `show_progress_grid`). Only one thread decodes at a time; others skip."""
        latent, step = self.current_latent, self.sampling_step
        if latent is None or not self._preview_lock.acquire(blocking=False):
            return
        try:
            from modules import sd_samplers_common, shared
            if latent.dim() == 3:
                latent = latent.unsqueeze(0)
            if getattr(shared.opts, "show_progress_grid", True) and latent.shape[0] > 1:
                image = sd_samplers_common.samples_to_image_grid(latent)
            else:
                image = sd_samplers_common.sample_to_image(latent)
            self.assign_current_image(image)
            self.current_image_sampling_step = step
        except Exception:
            from modules import errors
            errors.report("Live preview failed", exc_info=True)
            self.current_image_sampling_step = step  # do not retry the same latent on every poll
        finally:
            self._preview_lock.release()

    def sampling_callback(self, step: int, total: int) -> None:
        """Record that sampling step `step` (0-based) of `total` finished."""
        self._ctx.progress.step(step, total)

    def progress(self) -> float:
        """A1111's progress formula (spec §1.5)."""
        return self._ctx.progress.fraction()

    def dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }


class StateFacade:
    """`shared.state`: A1111's one global state object, resolved per job. Inside a job it is that
    job's :class:`State`; from any other thread it shows the most recently started running job (the
    progress routes, extensions' own routes), or an idle state when nothing runs. `interrupt`,
    `skip` and `stop_generating` from outside a job reach every running job. What belongs to the
    process — `server_start`, `server_command`, `need_restart`, `lock` — lives here."""

    _OWN = frozenset({"server_start", "server_command", "need_restart", "lock"})

    def __init__(self) -> None:
        object.__setattr__(self, "lock", threading.Lock())
        object.__setattr__(self, "server_start", time.time())
        object.__setattr__(self, "server_command", None)
        object.__setattr__(self, "need_restart", False)

    @staticmethod
    def target() -> State:
        """The :class:`State` this facade stands for in the calling thread right now."""
        from modules.runtime import context
        ctx = context.current() or context.front() or context.idle()
        return ctx.state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.target(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.target(), name)

    # The fields are data descriptors here too (not only reached through __getattr__), so tools that
    # patch and restore attributes (pytest's monkeypatch) put the old value back on the job's state.
    for _name in _CANCEL_FIELDS + _PROGRESS_FIELDS + ("task_id",):
        locals()[_name] = property(
            lambda self, _n=_name: getattr(StateFacade.target(), _n),
            lambda self, value, _n=_name: setattr(StateFacade.target(), _n, value))
    del _name

    def _control(self, kind: str) -> None:
        from modules.runtime import context
        ctx = context.current()
        if ctx is not None:
            getattr(ctx.cancel, kind)()
        else:
            context.cancel_all(kind)

    def interrupt(self) -> None:
        self._control("interrupt")

    def skip(self) -> None:
        self._control("skip")

    def stop_generating(self) -> None:
        self._control("stop_generating")

    def request_restart(self) -> None:
        self.interrupt()
        self.server_command = "restart"


class TotalTQDM:
    """A second console progress bar for a whole job (A1111's `shared.total_tqdm`), shown when the
    option `multiple_tqdm` is on. Extensions that run their own loops call `update`/`updateTotal`."""

    def __init__(self) -> None:
        self._tqdm: Any = None

    @staticmethod
    def _enabled() -> bool:
        from modules import shared
        try:
            return bool(shared.opts.multiple_tqdm) and not getattr(shared.cmd_opts, "disable_console_progressbars", False)
        except AttributeError:
            return False

    def reset(self) -> None:
        from modules import shared
        import tqdm
        self._tqdm = tqdm.tqdm(desc="Total progress", total=shared.state.job_count * shared.state.sampling_steps,
                               position=1)

    def update(self) -> None:
        if not self._enabled():
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.update()

    def updateTotal(self, new_total: int) -> None:  # noqa: N802 (A1111 name)
        if not self._enabled():
            return
        if self._tqdm is None:
            self.reset()
        self._tqdm.total = new_total

    def clear(self) -> None:
        if self._tqdm is not None:
            self._tqdm.refresh()
            self._tqdm.close()
            self._tqdm = None
