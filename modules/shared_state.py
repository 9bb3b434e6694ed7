"""Progress and cancellation of the running job, with A1111's `shared.state` fields.

The sampler loop reports through :meth:`State.sampling_callback` and checks
:attr:`State.interrupted` / :attr:`State.skipped` between steps. The API reads :meth:`State.dict`
from other threads; every write here is a plain attribute store, so readers never block.
"""
from __future__ import annotations

import datetime
import threading
import time
from typing import Any


class State:
    """The running job's progress. One instance lives behind `shared.state`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._preview_lock = threading.Lock()
        self.server_start = time.time()
        self.reset()

    def reset(self) -> None:
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo: str | None = None
        self.time_start: float | None = None
        self.task_id: str | None = None

    # --- control -----------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def stop_generating(self) -> None:
        self.stopping_generation = True

    # --- lifecycle ---------------------------------------------------------------------------
    def begin(self, job: str = "(unknown)", task_id: str | None = None) -> None:
        self.reset()
        self.job = job
        self.task_id = task_id
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.time_start = time.time()

    def end(self) -> None:
        self.job = ""
        self.job_count = 0
        self.task_id = None
        self.current_latent = None
        self.current_image = None

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    # --- A1111 names extensions call --------------------------------------------------------------
    need_restart = False
    server_command: str | None = None

    def request_restart(self) -> None:
        self.interrupt()
        self.server_command = "restart"

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
        self.sampling_step = step + 1
        self.sampling_steps = total

    def progress(self) -> float:
        """A1111's progress formula (spec §1.5)."""
        if self.job_count <= 0:
            return 0.0
        value = 0.01 + self.job_no / self.job_count
        if self.sampling_steps > 0:
            value += (self.sampling_step / self.sampling_steps) / self.job_count
        return min(value, 1.0)

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
