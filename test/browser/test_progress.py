"""Progress in the page (issue 11): live preview images appear while a job runs, Interrupt stops it
early, and a page reloaded mid-job finds the job again — its progress bar, then its images.

The demo checkpoint samples a 64×64 step in a few milliseconds; each step is slowed down (the real
sampler still runs every step) so that there is time to look, interrupt and reload."""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator

import pytest
from conftest import shot, small_txt2img
from job_helpers import options_set

from modules.runtime.context import ProgressSink

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 30
HOLD_AT = 10
STEP_DELAY_S = 0.05


class SlowSteps:
    """Steps reported so far; sampling waits after step HOLD_AT until `release()` (the sampler
    really runs every step; the hold only gives the page time to look, interrupt or reload)."""

    def __init__(self) -> None:
        self.done: list[int] = []
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def wait_until_held(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while (not self.done or max(self.done) < HOLD_AT) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.done and max(self.done) == HOLD_AT


@pytest.fixture()
def slow_steps(monkeypatch) -> Iterator[SlowSteps]:
    slow = SlowSteps()
    original = ProgressSink.step

    def slowed(self: ProgressSink, step: int, total: int, latent=None) -> None:
        original(self, step, total, latent)
        slow.done.append(step + 1)
        time.sleep(STEP_DELAY_S)
        if step + 1 == HOLD_AT:
            slow.gate.wait(60)

    monkeypatch.setattr(ProgressSink, "step", slowed)
    yield slow
    slow.release()


def start_job(page) -> None:
    small_txt2img(page, "a red cube", STEPS)
    page.locator("#txt2img_generate").click()


def test_live_preview_appears_and_interrupt_stops_the_job(page, slow_steps):
    with options_set(live_previews_enable=True, show_progress_every_n_steps=1, show_progress_type="Approx cheap"):
        start_job(page)
        page.wait_for_selector("#txt2img_progress .serena-progress", timeout=30000)
        slow_steps.wait_until_held()
        preview = page.locator("#txt2img_live_preview img")
        preview.wait_for(state="visible", timeout=30000)
        assert preview.get_attribute("src").startswith("data:image/png;base64,")
        shot(page, "progress-live-preview")
        # A1111's requestProgress (javascript/progressbar.js), as extensions call it, sees the job too
        page.add_script_tag(path=os.path.join(ROOT, "javascript", "progressbar.js"))
        answer = page.evaluate("""() => new Promise((resolve) => {
            const box = document.createElement('div'); document.body.appendChild(box);
            const id = localStorage.getItem('txt2img_task_id');
            requestProgress(id, box, null, () => {}, (res) => { resolve({id: id, res: res, bar: box.textContent}); });
        })""")
        assert answer["id"].startswith("task(txt2img-") and answer["res"]["active"]
        assert answer["res"]["progress"] > 0.3 and "%" in answer["bar"]
        page.locator("#txt2img_interrupt").click()
        page.wait_for_function("() => document.querySelector('#txt2img_progress')"
                               ".textContent.includes('interrupting')", timeout=30000)
        slow_steps.release()
        page.locator("#txt2img_gallery img").first.wait_for(state="visible", timeout=30000)
    assert max(slow_steps.done) == HOLD_AT < STEPS  # stopped early; what was made so far is shown
    assert page.serena_errors == []


def test_reload_mid_job_restores_progress_then_results(page, slow_steps):
    with options_set(live_previews_enable=True, show_progress_every_n_steps=5, show_progress_type="Approx cheap"):
        start_job(page)
        page.wait_for_selector("#txt2img_progress .serena-progress", timeout=30000)
        slow_steps.wait_until_held()
        page.reload(wait_until="load")
        page.serena_errors.clear()  # the left page's streams abort as it unloads: not this page's errors
        page.wait_for_selector("#txt2img_prompt", timeout=60000)
        page.wait_for_selector("#txt2img_progress .serena-progress", timeout=30000)  # found the job again
        page.locator("#txt2img_live_preview img").wait_for(state="visible", timeout=30000)
        shot(page, "progress-restored")
        slow_steps.release()
        page.locator("#txt2img_gallery img").first.wait_for(state="visible", timeout=30000)
    assert max(slow_steps.done) == STEPS  # the reload did not cancel the job
    page.wait_for_function("() => !document.querySelector('#txt2img_progress .serena-progress')", timeout=10000)
    assert page.serena_errors == []
