"""The one execution surface: every generation runs through `ProcessingRunner.run`.

`modules.processing.process_images(p)` wraps `p` in a :class:`ProcessingRequest` and hands it to
a :class:`ProcessingRunner`; callers (UI, API, CLI, scripts) keep calling `process_images` and
never see this module. The runner is a thin adapter today (milestone M10): it returns exactly what
`process_images_inner` returns, run inside a per-job run context (`modules.runtime.context`:
cancellation token, progress sink). The job service and its executors (`modules.runtime.jobs`,
`modules.runtime.executors`) build `p` and call `process_images`, so they reach this same
`run(request)` call, never go around it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.runtime import context

if TYPE_CHECKING:  # imported for annotations only: processing imports this module lazily
    from modules.processing import Processed, StableDiffusionProcessing


class ProcessingRequest:
    """One generation to run: the processing object it wraps, unchanged."""

    __slots__ = ("processing",)

    def __init__(self, processing: StableDiffusionProcessing):
        self.processing = processing

    def __repr__(self) -> str:
        return f"ProcessingRequest(processing={type(self.processing).__name__})"


class ProcessingRunner:
    """Runs a :class:`ProcessingRequest` inside a run context. Holds no state of its own."""

    def run(self, request: ProcessingRequest) -> Processed:
        """Run the pipeline for `request.processing` and return its `Processed` unchanged.

        Inside a job (a queued job, or a script's `run` calling `process_images` once per cell) the
        job's run context carries progress and cancellation; a call from outside any job gets a
        fresh context of its own, so its progress and cancellation are its own too."""
        from modules.processing import process_images_inner  # lazy: processing imports the runner
        if context.current() is not None:
            return process_images_inner(request.processing)
        with context.job_context(job="process_images"):
            return process_images_inner(request.processing)
