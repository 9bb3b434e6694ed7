"""The Gradio UI: mounting beside `/sdapi/v1`, and the handlers behind its buttons.

Handlers are called directly with the values the page would send; generation runs on the demo
checkpoint (64×64, 2 steps) through the API's path (`modules.runtime.jobs`).
"""
from __future__ import annotations

import io
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules import call_queue, ui_handlers as h

SMALL = {"width": 64, "height": 64, "steps": 2}


def txt2img_values(**changes: Any) -> dict[str, Any]:
    """The txt2img tab's default values (as the page sends them), made small."""
    values = {
        "prompt": "a red apple", "negative_prompt": "", "styles": [], "sampler_name": "Euler",
        "scheduler": "Automatic", "steps": 20, "width": 512, "height": 512, "n_iter": 1, "batch_size": 1,
        "cfg_scale": 7.0, "seed": 1234, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
        "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7,
    }
    values.update(h.FIELD_DEFAULTS)  # the optional controls as the page leaves them
    values.update(SMALL)
    values.update(changes)
    return values


def img2img_values(**changes: Any) -> dict[str, Any]:
    """The img2img tab's values with a 64×64 init image and no mask."""
    values = {key: value for key, value in txt2img_values().items() if key in h.IMG2IMG_FIELDS}
    values.update(init_image=Image.new("RGB", (64, 64), (200, 40, 40)), mask=None, resize_mode=0,
                  denoising_strength=0.75, mask_blur=4, inpainting_mask_invert=0, inpainting_fill=1,
                  inpaint_full_res=0, inpaint_full_res_padding=32)
    values.update(changes)
    return values


def gallery_png(image: Image.Image) -> Image.Image:
    """What the browser receives for `image`: the UI gallery's own postprocessing (PNG file)."""
    data = gr.Gallery(format="png").postprocess([image])
    path = data.root[0].image.path
    with open(path, "rb") as f:
        return Image.open(io.BytesIO(f.read()))


# --- mounting -------------------------------------------------------------------------------------------
def test_mount_serves_page_and_keeps_api_routes(serena):
    from fastapi.testclient import TestClient

    from modules import ui
    from modules.api.app import build_app

    app = ui.mount(build_app(serena.cmd_opts))
    with TestClient(app) as client:
        page = client.get("/")
        samplers = client.get("/sdapi/v1/samplers")
        config = client.get("/config")
    assert page.status_code == 200 and "gradio" in page.text.lower()
    assert samplers.status_code == 200
    assert "Euler" in [s["name"] for s in samplers.json()]
    assert config.status_code == 200
    labels = {c.get("props", {}).get("label") for c in config.json()["components"]}
    assert {"Prompt", "Stable Diffusion checkpoint", "Sampling method", "Schedule type", "Output"} <= labels


def test_create_ui_defaults_follow_a1111(serena):
    from modules import ui
    blocks = ui.create_ui()
    by_id = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    assert by_id["txt2img_steps"].value == 20
    assert by_id["txt2img_sampling"].value == "DPM++ 2M"
    assert by_id["txt2img_scheduler"].value == "Automatic"
    assert (by_id["txt2img_width"].value, by_id["txt2img_height"].value) == (512, 512)
    assert by_id["txt2img_cfg_scale"].value == 7.0
    assert by_id["img2img_inpaint_full_res"].value == "Whole picture"
    assert by_id["txt2img_gallery"].format == "png"
    assert "Latent" in by_id["txt2img_hr_upscaler"].choices[0]


# --- generation -----------------------------------------------------------------------------------------
def test_txt2img_handler_returns_png_images_with_infotext(serena):
    values = txt2img_values()
    images, infotext, infotexts, status, _info = h.txt2img(None, *(values[name] for name in h.TXT2IMG_FIELDS))
    assert len(images) == 1 and images[0].size == (64, 64)
    assert infotext.startswith("a red apple\n") and "Steps: 2" in infotext and "Seed: 1234" in infotext
    assert infotexts == [infotext]
    assert "1 image(s)" in status
    sent = gallery_png(images[0])
    assert sent.format == "PNG"
    assert sent.info["parameters"] == infotext


def test_txt2img_batch_shows_first_real_image_infotext(serena):
    out = h.generate_txt2img(txt2img_values(batch_size=2, seed=77))
    seeds = [h.seed_from_infotext(text) for text in out.infotexts]
    assert 77 in seeds and 78 in seeds
    assert out.infotext in out.infotexts


def test_img2img_handler_inpaints_with_mask(serena):
    """The Inpaint upload sub-tab: base image + mask; only the masked square is repainted."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    base = Image.new("RGB", (64, 64), (30, 160, 90))
    out = h.generate_img2img(img2img_values(img2img_mode=4, init_image=None, init_img_inpaint=base,
                                            init_mask_inpaint=mask, mask_blur=0))
    assert len(out.images) == 1 and out.images[0].size == (64, 64)
    assert "Denoising strength: 0.75" in out.infotext
    result = np.asarray(out.images[0]).astype(int)
    outside = np.ones((64, 64), bool)
    outside[16:48, 16:48] = False
    assert (result[outside] == (30, 160, 90)).all()  # untouched outside the mask
    assert np.abs(result[20:44, 20:44] - (30, 160, 90)).max() > 0  # repainted inside


def test_img2img_resize_by_scales_the_image_size(serena):
    req = h.img2img_request(img2img_values(init_image=Image.new("RGB", (40, 24)), selected_scale_tab=1, scale_by=2.0))
    assert (req.width, req.height) == (80, 48)
    with pytest.raises(gr.Error, match="Inpaint upload: upload the mask"):
        h.img2img_request(img2img_values(img2img_mode=4, init_img_inpaint=Image.new("RGB", (8, 8))))


def test_domain_error_becomes_gr_error(serena):
    with pytest.raises(gr.Error, match="unknown sampler"):
        h.generate_txt2img(txt2img_values(sampler_name="No Such Sampler"))


def test_invalid_values_become_gr_error_before_queueing():
    with pytest.raises(gr.Error, match="batch_size"):
        h.txt2img_request(txt2img_values(batch_size=0))
    with pytest.raises(gr.Error, match="init image"):
        h.img2img_request(img2img_values(init_image=None))


def test_user_errors_log_one_line_and_no_traceback(serena, caplog):
    """Gradio prints a traceback for a gr.Error unless print_exception is off: a user's mistake
    (img2img without an image, an unknown sampler) is one console line, the message in the toast."""
    caplog.set_level("WARNING", logger="serena.ui")
    for call in (lambda: h.img2img_request(img2img_values(init_image=None)),
                 lambda: h.generate_txt2img(txt2img_values(sampler_name="No Such Sampler"))):
        caplog.clear()
        with pytest.raises(gr.Error) as info:
            call()
        assert info.value.print_exception is False
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "\n" not in lines[0] and info.value.message in lines[0]


def test_requests_match_the_api_fields():
    req = h.txt2img_request(txt2img_values(), task_id="task(txt2img-TEST000)")
    assert req.save_images is True and req.force_task_id == "task(txt2img-TEST000)"
    assert req.enable_hr is False and req.denoising_strength is None
    assert h.txt2img_request(txt2img_values(enable_hr=True)).denoising_strength == 0.7
    req = h.img2img_request(img2img_values(inpaint_full_res=1, inpainting_mask_invert=1))
    assert req.inpaint_full_res is True and req.inpainting_mask_invert == 1 and req.mask is None
    assert req.init_images and Image.open(io.BytesIO(__import__("base64").b64decode(req.init_images[0]))).size == (64, 64)


# --- progress and cancellation ---------------------------------------------------------------------------
def test_interrupt_and_skip_set_state(clean_state):
    h.interrupt()
    h.skip()
    assert clean_state.interrupted and clean_state.skipped


def test_progress_shows_queue_position_then_state(clean_state):
    task_id = h.new_task_id("txt2img")
    assert h.progress_html(None) == ""
    call_queue.add_task_to_queue(task_id)
    try:
        assert "Waiting in queue" in h.progress_html(task_id)
        call_queue.start_task(task_id)
        clean_state.begin("txt2img", task_id)
        clean_state.job_count, clean_state.sampling_steps, clean_state.sampling_step = 1, 4, 2
        assert "step 2/4" in h.progress_html(task_id)
    finally:
        call_queue.finish_task(task_id)
    assert h.progress_html(task_id) == ""  # a late tick after the job clears the line


# --- PNG Info and checkpoint -----------------------------------------------------------------------------
def test_png_info_reads_and_parses_parameters():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    text, parsed = h.png_info(Image.open(io.BytesIO(buffer.getvalue())))
    assert text.startswith("a cat")
    assert parsed["Prompt"] == "a cat" and parsed["Negative prompt"] == "dog" and parsed["Steps"] == "3"
    assert h.png_info(None) == ("", {})


def test_unknown_checkpoint_warns_and_keeps_current(serena):
    before = h.current_checkpoint()
    assert before in h.checkpoint_titles()
    with pytest.warns(UserWarning, match="not found"):
        update = h.change_checkpoint("no-such-model.safetensors")
    assert update["value"] == before
    assert serena.sd_model.sd_checkpoint_info.title == before


def test_changing_to_current_checkpoint_is_a_no_op(serena):
    title = h.current_checkpoint()
    assert h.change_checkpoint(title)["value"] == title


def test_paste_infotext_fills_tab_fields(serena):
    text = ("a cat\nNegative prompt: dog\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 42, "
            "Size: 96x64, Denoising strength: 0.4, Hires upscale: 1.5, Hires upscaler: Latent")
    values = h.fields_from_infotext(text)
    assert values["prompt"] == "a cat" and values["negative_prompt"] == "dog"
    assert (values["steps"], values["cfg_scale"], values["seed"]) == (3, 5.5, 42)
    assert (values["width"], values["height"]) == (96, 64)
    assert (values["sampler_name"], values["scheduler"]) == ("DPM++ 2M", "Automatic")
    assert values["enable_hr"] is True and values["hr_scale"] == 1.5 and values["denoising_strength"] == 0.4
    pasted = h.paste_infotext("a dog\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.3",
                              h.TXT2IMG_FIELDS)
    by_name = dict(zip(h.TXT2IMG_FIELDS, pasted))
    assert by_name["prompt"] == "a dog" and by_name["enable_hr"] is False
    assert by_name["denoising_strength"] == gr.update()  # txt2img's slider is the hires one


def test_img2img_handler_without_mask(serena):
    out = h.generate_img2img(img2img_values(denoising_strength=0.5))
    assert len(out.images) == 1 and out.images[0].size == (64, 64)
    assert "Denoising strength: 0.5" in out.infotext


def test_refresh_lists_checkpoints_and_keeps_current(serena):
    update = h.refresh_checkpoints()
    assert update["value"] == h.current_checkpoint() and update["value"] in update["choices"]


def test_gallery_selection_and_seed_reuse():
    infotexts = ["a\nSteps: 2, Seed: 10, Size: 64x64", "a\nSteps: 2, Seed: 11, Size: 64x64"]
    chosen = h.select_infotext(infotexts, gr.SelectData(None, {"index": 1, "value": None}))
    assert h.seed_from_infotext(chosen) == 11
    assert h.select_infotext([], gr.SelectData(None, {"index": 0, "value": None})) == ""
    assert h.seed_from_infotext("") == -1


def test_gradio_credentials_and_theme(tmp_path):
    import argparse

    from modules import errors, ui
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("carol:c:3\n")
    opts = argparse.Namespace(gradio_auth="alice:a1, bob:b2", gradio_auth_path=str(auth_file), theme="dark")
    assert ui.gradio_credentials(opts) == [("alice", "a1"), ("bob", "b2"), ("carol", "c:3")]
    assert "__theme" in ui._theme_js(opts)
    assert ui.gradio_credentials(argparse.Namespace()) is None and ui._theme_js(argparse.Namespace()) is None
    with pytest.raises(errors.ConfigError, match="#1"):
        ui.gradio_credentials(argparse.Namespace(gradio_auth="secretwithoutcolon"))


def test_xyz_plot_from_the_ui_shows_the_grids_infotext(serena):
    """The X/Y/Z plot without sub images returns only the grid but every infotext (as A1111): the
    page shows the grid's own infotext, with the axes."""
    from modules import scripts
    runner = scripts.scripts_txt2img
    xyz = next(s for s in runner.selectable_scripts if s.title() == "X/Y/Z plot")
    script_values = runner.default_script_args()
    script_values[0] = runner.selectable_scripts.index(xyz) + 1
    script_values[xyz.args_from:xyz.args_to] = [4, "1,2", [], 0, "", [], 0, "", [], True, False, False, False,
                                                False, False, False, 0, False]
    values = txt2img_values()
    images, infotext, infotexts, status, _info = h.txt2img(None, *(values[name] for name in h.TXT2IMG_FIELDS),
                                                    *script_values)
    assert len(images) == 1 and images[0].size[0] > 64  # the grid of two 64x64 cells
    assert "X Type: Steps" in infotext and infotexts == [infotext]


def test_malformed_extension_tabs_are_reported_and_left_out(caplog):
    import gradio as gr

    from modules import ui
    with gr.Blocks() as good:
        gr.Textbox("x")
    with caplog.at_level("ERROR"):
        tabs = ui._extension_tabs([(good, "Good", "good"), ("not blocks", "Bad", "bad"), ("too short",)])
    assert tabs == [(good, "Good", "good")]
    assert "'Bad'" in caplog.text and "too short" in caplog.text


def test_optional_controls_reach_the_request_only_when_switched_on():
    plain = h.txt2img_request(txt2img_values())
    assert plain.subseed_strength == 0 and plain.refiner_checkpoint is None and plain.hr_sampler_name is None
    extra = h.txt2img_request(txt2img_values(seed_extras=True, subseed=55, subseed_strength=0.3,
                                             seed_resize_from_w=64, seed_resize_from_h=48))
    assert (extra.subseed, extra.subseed_strength, extra.seed_resize_from_w, extra.seed_resize_from_h) == (55, 0.3, 64, 48)
    hidden = h.txt2img_request(txt2img_values(seed_extras=False, subseed=55, subseed_strength=0.3))
    assert hidden.subseed_strength == 0  # A1111: the extra seed section counts only while shown
    hires = h.txt2img_request(txt2img_values(enable_hr=True, hr_sampler_name="Euler a", hr_scheduler="Karras",
                                             hr_prompt="sharper", hr_checkpoint_name="Use same checkpoint"))
    assert (hires.hr_sampler_name, hires.hr_scheduler, hires.hr_prompt, hires.hr_checkpoint_name) == \
        ("Euler a", "Karras", "sharper", None)
    refiner = h.txt2img_request(txt2img_values(enable_refiner=True, refiner_checkpoint="x.safetensors",
                                               refiner_switch_at=0.6))
    assert (refiner.refiner_checkpoint, refiner.refiner_switch_at) == ("x.safetensors", 0.6)


def test_variation_seed_from_the_ui_changes_the_image_and_infotext(serena):
    base = h.generate_txt2img(txt2img_values(steps=2))
    varied = h.generate_txt2img(txt2img_values(steps=2, seed_extras=True, subseed=99, subseed_strength=0.5))
    assert "Variation seed: 99, Variation seed strength: 0.5" in varied.infotext
    assert base.images[0].tobytes() != varied.images[0].tobytes()


def test_paste_fills_the_extra_seed_hires_and_refiner_controls():
    text = ("a cat\nSteps: 3, Sampler: Euler, Seed: 5, Size: 64x64, Variation seed: 9, Variation seed strength: 0.25, "
            "Hires upscale: 2, Hires sampler: Euler a, Hires prompt: sharp, Refiner: r.safetensors, Refiner switch at: 0.7")
    values = h.fields_from_infotext(text)
    assert values["seed_extras"] and values["subseed"] == 9 and values["subseed_strength"] == 0.25
    assert values["enable_hr"] and values["hr_sampler_name"] == "Euler a" and values["hr_prompt"] == "sharp"
    assert values["enable_refiner"] and values["refiner_checkpoint"] == "r.safetensors" and values["refiner_switch_at"] == 0.7
