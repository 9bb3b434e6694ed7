"""The browser UI's progress and cancellation: the progress line of a job (queue position while it
waits, then `shared.state`), Interrupt and Skip, and the wiring of a tab's Generate button to its
job, its progress timer and its gallery.
"""
from __future__ import annotations

import html
import re
import time
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from modules import call_queue, shared

if TYPE_CHECKING:
    from modules.ui import GenerationTab

PROGRESS_INTERVAL_S = 0.5
GENERATION_CONCURRENCY = 16  # jobs then wait in call_queue's FIFO, where the progress line sees them


def _bar(fraction: float, text: str) -> str:
    percent = max(0.0, min(fraction, 1.0)) * 100
    return (f"<div class='serena-progress'><div class='serena-progress-bar' style='width:{percent:.0f}%'></div>"
            f"<span class='serena-progress-text'>{html.escape(text)}</span></div>")


def _running_text(state: Any) -> tuple[float, str]:
    """Fraction done and a one-line description of the running job, from `shared.state`."""
    fraction = state.progress()
    parts = [f"{fraction * 100:.0f}%"]
    if state.sampling_steps:
        parts.append(f"step {state.sampling_step}/{state.sampling_steps}")
    if state.job_count > 1:
        parts.append(f"batch {min(state.job_no + 1, state.job_count)}/{state.job_count}")
    if state.time_start and fraction > 0.02:
        elapsed = time.time() - state.time_start
        parts.append(f"ETA {max(elapsed / fraction - elapsed, 0):.0f} s")
    if state.interrupted:
        parts.append("interrupting…")
    return fraction, ", ".join(parts)


def _preview_html(kind: str) -> str:
    """The live preview of the running job (A1111's `livePreview` element), or nothing."""
    from modules import progress
    _preview_id, url = progress.live_preview_data_url(shared.state)
    if not url:
        return ""
    return (f"<div class='livePreview' id='{html.escape(kind)}_live_preview'>"
            f"<img src='{url}' alt='live preview' style='width:min(256px,100%);height:auto'></div>")


def progress_html(task_id: str | None, kind: str = "") -> str:
    """The progress line for `task_id`: how many jobs run before it while it waits, then
    `shared.state` (percent, step, ETA, "interrupting…") and the live preview."""
    from modules import progress
    if not task_id:
        return ""
    active, queued, _completed = call_queue.task_status(task_id)
    if queued:
        ahead = progress.jobs_ahead(task_id) or 0
        return _bar(0.0, f"Waiting in queue ({ahead} job(s) ahead)")
    if active:
        preview = _preview_html(kind or task_id_kind(task_id)) if getattr(shared.opts, "live_previews_enable", True) else ""
        return _bar(*_running_text(shared.state)) + preview
    return ""  # not started, finished or failed: a late tick must not leave a stale line behind


def task_id_kind(task_id: str) -> str:
    """`txt2img` from `task(txt2img-XXXXXXX)`."""
    inner = task_id[5:-1] if task_id.startswith("task(") and task_id.endswith(")") else task_id
    return inner.split("-", 1)[0]


_TASK_ID = re.compile(r"^task\((txt2img|img2img)-[A-Z0-9]{7}\)$")


def valid_task_id(task_id: str | None, kind: str) -> bool:
    """Whether `task_id` is a task id the page may have made for tab `kind`."""
    match = _TASK_ID.match(task_id or "")
    return bool(match) and match.group(1) == kind


def restore_begin(saved_task_id: str | None, kind: str) -> tuple[str | None, bool]:
    """After a page reload: (task id to follow, whether to start the progress timer) for the id the
    page remembered; None when that task is unknown or long gone."""
    from modules import progress
    if not valid_task_id(saved_task_id, kind):
        return None, False
    if progress.is_waiting_or_running(saved_task_id):
        return saved_task_id, True
    if progress.recorded_result(saved_task_id) is not None:
        return saved_task_id, False
    return None, False


def interrupt() -> None:
    """Stop the running job after the current step; what was made so far is kept."""
    shared.state.interrupt()


def skip() -> None:
    """Skip the rest of the current batch."""
    shared.state.skip()


# --- wiring ----------------------------------------------------------------------------------------------
def _storage_key(kind: str) -> str:
    return f"{kind}_task_id"  # A1111's localStorage key for the running task of a tab


def _new_task_id_js(kind: str) -> str:
    """Generate click, in the page: make the task id (A1111's `task(...)` shape), remember it in
    localStorage for a reload, and hand it to the server."""
    return (f"(x) => {{ const c = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'; let s = '';"
            f" for (let i = 0; i < 7; i++) s += c[Math.floor(Math.random() * c.length)];"
            f" const id = 'task({kind}-' + s + ')';"
            f" try {{ localStorage.setItem('{_storage_key(kind)}', id); }} catch (e) {{}} return [id]; }}")


def _forget_task_js(kind: str) -> str:
    """Forget the remembered task id — only if it is still `id` (the task that just ended): a job
    started meanwhile (Generate clicked while the page was still restoring) keeps its own."""
    key = _storage_key(kind)
    return (f"(id) => {{ try {{ if (id && localStorage.getItem('{key}') === id) localStorage.removeItem('{key}'); }}"
            f" catch (e) {{}} return []; }}")


def _saved_task_js(kind: str) -> str:
    return f"(x) => {{ let v = ''; try {{ v = localStorage.getItem('{_storage_key(kind)}') || ''; }} catch (e) {{}} return [v]; }}"


def recording(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` (first argument: the task id) that also keeps its outputs for a reloaded page."""
    from modules import progress

    def run(task_id: str | None, *values: Any) -> Any:
        result = handler(task_id, *values)
        progress.record_results(task_id, result)
        return result

    run.__name__ = getattr(handler, "__name__", "generate")
    run.__doc__ = handler.__doc__
    return run


def wire_generation(tab: "GenerationTab", handler: Callable[..., Any], field_order: tuple[str, ...]) -> None:
    """Generate: new task id (kept in localStorage) + start the progress timer → run the job (its
    results kept for restore) → stop the timer. On page load, a task the page remembers is followed
    again: its progress, then its result images (A1111's restore after a reload).

    The job event may run several at once; they then wait in call_queue's FIFO, so the progress
    line can show their position. Interrupt and Skip bypass Gradio's queue.
    """
    kind = tab.kind
    task_id = gr.State(None)
    sent_id = gr.Textbox("", visible=False, elem_id=f"{kind}_task_id_box")
    infotexts = gr.State([])
    timer = gr.Timer(PROGRESS_INTERVAL_S, active=False)
    inputs = [task_id, *(tab.fields[name] for name in field_order), *tab.script_inputs]
    outputs = [tab.gallery, tab.infotext, infotexts, tab.status, tab.results.generation_info]

    def begin(page_id: str | None) -> tuple[str, gr.Timer, str]:
        chosen = page_id if valid_task_id(page_id, kind) else call_queue.create_task_id(kind)
        return chosen, gr.Timer(active=True), ""

    def finish() -> tuple[gr.Timer, str]:
        return gr.Timer(active=False), ""

    started = tab.generate.click(begin, inputs=sent_id, outputs=[task_id, timer, tab.progress], queue=False,
                                 show_progress="hidden", js=_new_task_id_js(kind))
    job = started.then(recording(handler), inputs=inputs, outputs=outputs, concurrency_id="generate",
                       concurrency_limit=GENERATION_CONCURRENCY, show_progress="minimal", api_name=kind)
    job.then(finish, outputs=[timer, tab.progress], queue=False, show_progress="hidden") \
       .then(None, inputs=task_id, js=_forget_task_js(kind))
    timer.tick(lambda t: progress_html(t, kind), inputs=task_id, outputs=tab.progress, queue=False,
               show_progress="hidden")
    tab.interrupt.click(interrupt, queue=False, show_progress="hidden")
    tab.skip.click(skip, queue=False, show_progress="hidden")
    from modules.ui_handlers import select_infotext
    tab.gallery.select(select_infotext, inputs=infotexts, outputs=tab.infotext, queue=False,
                       show_progress="hidden")
    tab.results.infotexts = infotexts
    _wire_restore(kind, sent_id, task_id, timer, tab, outputs)


def _wire_restore(kind: str, sent_id: Any, task_id: Any, timer: Any, tab: "GenerationTab", outputs: list) -> None:
    """Page load: follow the task the page remembered, show its results when it ends."""
    from modules import progress
    root = gr.context.Context.root_block
    if root is None:
        return
    restored = gr.State(None)  # the remembered task being followed (None: nothing to restore)

    # Nothing to restore → every step leaves the tab alone: a job the user starts while the page
    # is still loading must keep its task id, progress timer and remembered id.
    def found(saved: str | None) -> tuple[Any, Any, str | None]:
        chosen, running = restore_begin(saved, kind)
        if chosen is None:
            return gr.skip(), gr.skip(), None
        return chosen, gr.Timer(active=running), chosen

    def results(chosen: str | None) -> Any:
        result = progress.restore_progress(chosen) if chosen else None
        if not result:
            return tuple(gr.skip() for _ in outputs)
        return tuple(result)

    def done(chosen: str | None, saved: str | None) -> tuple[Any, Any]:
        if not chosen or chosen != saved:  # not following a restored task (or a new job took over)
            return gr.skip(), gr.skip()
        return gr.Timer(active=False), ""

    root.load(found, inputs=sent_id, outputs=[task_id, timer, restored], queue=False, show_progress="hidden",
              js=_saved_task_js(kind)) \
        .then(results, inputs=restored, outputs=outputs, concurrency_limit=None, show_progress="hidden") \
        .then(done, inputs=[restored, task_id], outputs=[timer, tab.progress], queue=False, show_progress="hidden") \
        .then(None, inputs=restored, js=_forget_task_js(kind))
