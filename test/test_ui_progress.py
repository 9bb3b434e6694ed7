"""Progress as the page sees it: live previews every N steps with A1111's preview methods, the
`/internal/progress` payload, the queue position while another job runs, and the results kept so
that a reloaded page finds its job again (demo checkpoint, 64×64, few steps)."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any, Iterator

import torch

from modules import call_queue, progress, sd_samplers_common, ui_handlers as h, ui_progress
from job_helpers import options_set


@contextlib.contextmanager
def running(task_id: str, state: Any) -> Iterator[None]:
    """`task_id` registered as the running job (no generation), `state` describing it."""
    call_queue.add_task_to_queue(task_id)
    call_queue.start_task(task_id)
    state.begin("txt2img", task_id)
    try:
        yield
    finally:
        state.end()
        call_queue.finish_task(task_id)


def small_txt2img_values(steps: int) -> list[Any]:
    values = {"prompt": "a red apple", "negative_prompt": "", "styles": [], "sampler_name": "Euler",
              "scheduler": "Automatic", "steps": steps, "width": 64, "height": 64, "n_iter": 1, "batch_size": 1,
              "cfg_scale": 7.0, "seed": 1234, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
              "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7}
    merged = {**values, **h.FIELD_DEFAULTS, **{k: v for k, v in values.items() if k in ("steps", "width", "height")}}
    return [merged[name] for name in h.TXT2IMG_FIELDS]


# --- live previews ---------------------------------------------------------------------------------------
def test_cheap_approximation_maps_four_latent_channels_to_rgb():
    latent = torch.randn(2, 4, 8, 8)
    assert sd_samplers_common.cheap_approximation(latent).shape == (2, 3, 8, 8)
    assert len(sd_samplers_common.CHEAP_APPROX_SD1) == 4 and all(len(r) == 3 for r in sd_samplers_common.CHEAP_APPROX_SD1)
    image = sd_samplers_common.sample_to_image(latent, approximation=sd_samplers_common.approximation_indexes["Approx cheap"])
    assert image.size == (8, 8) and image.mode == "RGB"


def test_preview_every_n_steps_makes_an_image(clean_state):
    state = clean_state
    with options_set(live_previews_enable=True, show_progress_every_n_steps=2,
                 show_progress_type="Approx cheap", show_progress_grid=False):
        state.current_latent = torch.randn(1, 4, 8, 8)
        state.sampling_step = 1
        state.set_current_image()
        assert state.current_image is None  # only 1 step so far
        state.sampling_step = 2
        state.set_current_image()
        assert state.current_image is not None and state.current_image.size == (8, 8)
        first_id = state.id_live_preview
        state.sampling_step = 3
        state.set_current_image()
        assert state.id_live_preview == first_id  # not yet 2 more steps
        state.sampling_step = 4
        state.set_current_image()
        assert state.id_live_preview == first_id + 1


def test_full_preview_decodes_with_the_vae_and_disabled_previews_make_none(clean_state):
    from modules import sd_models
    sd_models.model_data.get_sd_model()  # loaded (a test before may have unloaded it)
    state = clean_state
    with options_set(live_previews_enable=True, show_progress_every_n_steps=1, show_progress_type="Full"):
        state.current_latent = torch.randn(1, 4, 8, 8)
        state.sampling_step = 1
        state.set_current_image()
        assert state.current_image.size == (64, 64)  # the VAE's 8× upscale
    state.reset()
    with options_set(live_previews_enable=False, show_progress_every_n_steps=1):
        state.current_latent = torch.randn(1, 4, 8, 8)
        state.sampling_step = 5
        state.set_current_image()
        assert state.current_image is None


def test_taesd_only_with_its_weight_file(serena):
    with options_set(show_progress_type="TAESD"):
        path = sd_samplers_common.taesd_decoder_path()
        assert not os.path.exists(path)
        assert sd_samplers_common.preview_method() == "Approx cheap"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(sd_samplers_common.taesd_decoder_network().state_dict(), path)
        try:
            assert sd_samplers_common.preview_method() == "TAESD"
            image = sd_samplers_common.sample_to_image(torch.randn(1, 4, 8, 8))
            assert image.size == (64, 64)
        finally:
            os.remove(path)
            sd_samplers_common._taesd_cache.clear()


# --- progress payload and queue -----------------------------------------------------------------------------
def test_progress_payload_of_a_running_job_has_a1111_fields_and_preview(clean_state):
    from modules.api import models
    task_id = call_queue.create_task_id("txt2img")
    with options_set(live_previews_enable=True, show_progress_every_n_steps=1,
                 show_progress_type="Approx cheap"), running(task_id, clean_state):
        clean_state.job_count, clean_state.sampling_steps, clean_state.sampling_step = 1, 10, 5
        clean_state.current_latent = torch.randn(1, 4, 8, 8)
        payload = models.InternalProgressResponse(**progress.progress_payload(task_id)).model_dump()
        assert payload["active"] and not payload["queued"] and not payload["completed"]
        assert 0.5 <= payload["progress"] <= 0.52 and payload["eta"] is not None
        assert payload["live_preview"].startswith("data:image/png;base64,")
        assert payload["id_live_preview"] == clean_state.id_live_preview
        again = progress.progress_payload(task_id, id_live_preview=payload["id_live_preview"])
        assert again["live_preview"] is None  # nothing newer than what the page has
        clean_state.interrupt()
        assert progress.progress_payload(task_id)["textinfo"] == "Interrupting..."
        assert "interrupting…" in ui_progress.progress_html(task_id)
    done = progress.progress_payload(task_id)
    assert done["completed"] and not done["active"]


def test_queue_position_counts_the_running_job(clean_state):
    first, second, third = (call_queue.create_task_id("txt2img") for _ in range(3))
    with running(first, clean_state):
        call_queue.add_task_to_queue(second)
        time.sleep(0.01)
        call_queue.add_task_to_queue(third)
        try:
            assert progress.jobs_ahead(second) == 1 and progress.jobs_ahead(third) == 2
            assert progress.progress_payload(second)["textinfo"] == "In queue: 1 ahead"
            assert "(2 job(s) ahead)" in ui_progress.progress_html(third)
        finally:
            call_queue.finish_task(second)
            call_queue.finish_task(third)


# --- restore after a reload ------------------------------------------------------------------------------------
def test_results_are_kept_and_restored_for_a_reloaded_page(serena):
    task_id = call_queue.create_task_id("txt2img")
    handler = ui_progress.recording(h.txt2img)
    worker = threading.Thread(target=handler, args=(task_id, *small_txt2img_values(3)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not progress.is_waiting_or_running(task_id) and progress.recorded_result(task_id) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        restored = progress.restore_progress(task_id, timeout_s=60)  # waits for the job, as the page does
    finally:
        worker.join(60)
    images, infotext, infotexts, _status, generation_info = restored
    assert len(images) == 1 and images[0].size == (64, 64)
    assert json.loads(generation_info)["infotexts"] == [infotext]  # what the save buttons read
    assert "Steps: 3" in infotext and infotexts == [infotext]
    assert ui_progress.restore_begin(task_id, "txt2img") == (task_id, False)  # finished: results only
    assert ui_progress.restore_begin(task_id, "img2img") == (None, False)
    assert ui_progress.restore_begin("task(txt2img-NOTKNWN)", "txt2img") == (None, False)
    assert ui_progress.restore_begin("<script>", "txt2img") == (None, False)
