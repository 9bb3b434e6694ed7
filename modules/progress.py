"""What the page asks about one task (A1111's `modules/progress.py` role): where it stands in the
queue, how far it is, its live preview, and — after it finished — its results, kept so that a page
reloaded mid-job can find them again by task id (`record_results` / `restore_progress`).

The task registry itself (pending / running / finished ids) lives in `modules/call_queue.py`.
"""
from __future__ import annotations

import base64
import collections
import io
import threading
import time
from typing import Any

from modules import call_queue, shared

RESULTS_KEPT = 8
"""How many finished tasks' results are kept for a reloaded page (A1111 keeps a few too)."""

_results_lock = threading.Lock()
recorded_results: collections.OrderedDict[str, Any] = collections.OrderedDict()
_preview_cache: dict[str, Any] = {"id": None, "url": None}


# --- results kept for restore -----------------------------------------------------------------------------
def record_results(id_task: str | None, result: Any) -> None:
    """Keep what task `id_task` produced (whatever its caller shows) for `restore_progress`."""
    if not id_task:
        return
    with _results_lock:
        recorded_results[id_task] = result
        recorded_results.move_to_end(id_task)
        while len(recorded_results) > RESULTS_KEPT:
            recorded_results.popitem(last=False)


def recorded_result(id_task: str | None) -> Any:
    """The results recorded for `id_task`, or None."""
    with _results_lock:
        return recorded_results.get(id_task or "")


def is_waiting_or_running(id_task: str | None) -> bool:
    active, queued, _completed = call_queue.task_status(id_task or "")
    return active or queued


def restore_progress(id_task: str | None, poll_s: float = 0.1, timeout_s: float | None = None) -> Any:
    """Wait while `id_task` is queued or running, then return its recorded results (None when the
    task is unknown or its results were not kept)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while is_waiting_or_running(id_task):
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(poll_s)
    # the job's thread records right after the task is marked finished: give it a moment
    for _ in range(20):
        result = recorded_result(id_task)
        if result is not None:
            return result
        time.sleep(poll_s / 2)
    return None


# --- queue and progress ---------------------------------------------------------------------------------------
def jobs_ahead(id_task: str | None) -> int | None:
    """How many jobs run before `id_task`: the pending ones queued earlier plus the running one.
    None when `id_task` is not waiting."""
    position = call_queue.queue_position(id_task or "")
    if position is None:
        return None
    running = call_queue.current_task
    return position + (1 if running is not None and running != id_task else 0)


def eta_seconds(state: Any, fraction: float) -> float | None:
    """Seconds left for the running job, extrapolated from the time spent so far."""
    if not state.time_start or fraction <= 0:
        return None
    elapsed = time.time() - state.time_start
    return max(elapsed / fraction - elapsed, 0.0)


def live_preview_data_url(state: Any) -> tuple[int, str | None]:
    """(id_live_preview, data URL of `state.current_image`), refreshing the preview first. The
    encoded image is cached by its id, so repeated polls do not re-encode it."""
    state.set_current_image()
    image, preview_id = state.current_image, state.id_live_preview
    if image is None:
        return preview_id, None
    if _preview_cache["id"] != (id(image), preview_id):
        fmt = str(getattr(shared.opts, "live_previews_image_format", "png") or "png").lower()
        fmt = fmt if fmt in ("png", "jpeg", "webp") else "png"
        buffer = io.BytesIO()
        (image.convert("RGB") if fmt == "jpeg" else image).save(buffer, format=fmt.upper())
        url = f"data:image/{fmt};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        _preview_cache.update(id=(id(image), preview_id), url=url)
    return preview_id, _preview_cache["url"]


def progress_payload(id_task: str | None, id_live_preview: int = -1, live_preview: bool = True) -> dict[str, Any]:
    """A1111's `/internal/progress` answer for one task: `active`, `queued`, `completed`,
    `progress`, `eta`, `live_preview` (a data URL, only when newer than `id_live_preview`),
    `id_live_preview`, `textinfo` ("In queue: N ahead" while it waits)."""
    active, queued, completed = call_queue.task_status(id_task or "")
    if not active:
        textinfo = None
        if queued:
            ahead = jobs_ahead(id_task) or 0
            textinfo = f"In queue: {ahead} ahead" if ahead else "Waiting..."
        return {"active": False, "queued": queued, "completed": completed, "progress": None, "eta": None,
                "live_preview": None, "id_live_preview": -1, "textinfo": textinfo, "queue_ahead": jobs_ahead(id_task)}
    from modules.runtime import context
    ctx = context.find(id_task)
    state = ctx.state if ctx is not None else shared.state
    fraction = state.progress()
    preview, preview_id = None, id_live_preview
    if live_preview:
        new_id, url = live_preview_data_url(state)
        if url is not None and new_id != id_live_preview:
            preview, preview_id = url, new_id
    textinfo = "Interrupting..." if state.interrupted else state.textinfo
    return {"active": True, "queued": False, "completed": False, "progress": fraction,
            "eta": eta_seconds(state, fraction), "live_preview": preview, "id_live_preview": preview_id,
            "textinfo": textinfo, "queue_ahead": None}
