"""The one execution surface: every generation runs through `ProcessingRunner.run`.

`modules.processing.process_images(p)` wraps `p` in a :class:`ProcessingRequest` and hands it to
a :class:`ProcessingRunner`; callers (UI, API, CLI, scripts) keep calling `process_images` and
never see this module. The runner is a thin adapter today (milestone M10): it returns exactly what
`process_images_inner` returns. A job queue, progress and cancellation, and other executors will
extend it behind this same `run(request)` call, never around it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

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
    """Runs a :class:`ProcessingRequest`. Holds no state and no runtime context (M10)."""

    def run(self, request: ProcessingRequest) -> Processed:
        """Run the pipeline for `request.processing` and return its `Processed` unchanged."""
        from modules.processing import process_images_inner  # lazy: processing imports the runner
        return process_images_inner(request.processing)
