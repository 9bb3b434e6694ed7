"""txt2img / img2img through the API on the demo checkpoint (64x64, 1–3 steps).

Ports A1111's test_txt2img.py and test_img2img.py payloads (spec §9) and checks the bodies,
which A1111's own tests never do: info JSON, infotext in the PNG, seeds, defaults, errors.
"""
from __future__ import annotations

import json

import pytest
from PIL import Image

from api_helpers import API, TXT2IMG_BASE, decode, png_b64

pytestmark = pytest.mark.timeout(120)


def txt2img(client, **changes):
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, **changes})
    assert r.status_code == 200, r.text
    return r.json()


def test_txt2img_basic_response_shape(client):
    body = txt2img(client, seed=1234)
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 1
    image = decode(body["images"][0])
    assert image.size == (64, 64) and image.format == "PNG"
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234]
    assert info["sampler_name"] == "Euler a" and info["steps"] == 2
    assert image.info["parameters"] == info["infotexts"][0]
    assert "Seed: 1234" in image.info["parameters"] and "Size: 64x64" in image.info["parameters"]
    assert body["parameters"]["prompt"] == "example prompt" and body["parameters"]["seed"] == 1234


@pytest.mark.parametrize("changes", [
    {"negative_prompt": "example negative prompt"},
    {"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"},
    {"height": 128},
    {"tiling": True},
    {"sampler_index": "DDIM"},
    {"sampler_index": "PLMS"},
    {"sampler_index": "UniPC"},
    {"restore_faces": True},
    {"sampler_name": "DPM++ 2M", "scheduler": "Karras"},
    {"n_iter": 2, "steps": 1},
    {"batch_size": 2, "steps": 1},
])
def test_txt2img_a1111_variants(client, changes):
    body = txt2img(client, **changes)
    expected = changes.get("n_iter", 1) * changes.get("batch_size", 1)
    assert len(body["images"]) == expected
    assert decode(body["images"][0]).size == (64, changes.get("height", 64))


def test_txt2img_hires_fix(client):
    body = txt2img(client, enable_hr=True, denoising_strength=0.5, hr_scale=2, hr_second_pass_steps=1, steps=1)
    assert decode(body["images"][0]).size == (128, 128)


@pytest.mark.parametrize("upscaler", ["Latent (nearest-exact)", "Latent (bicubic antialiased)", "Lanczos", "Nearest"])
def test_txt2img_hires_upscalers(client, upscaler):
    body = txt2img(client, enable_hr=True, denoising_strength=0.5, hr_scale=1.5, hr_second_pass_steps=1, steps=1,
                   hr_upscaler=upscaler)
    assert decode(body["images"][0]).size == (96, 96)
    assert f"Hires upscaler: {upscaler}" in json.loads(body["info"])["infotexts"][0]


def test_txt2img_legacy_firstphase_size(client):
    body = txt2img(client, enable_hr=True, denoising_strength=0.5, firstphase_width=64, firstphase_height=64,
                   width=128, height=128, steps=1, hr_second_pass_steps=1)
    assert decode(body["images"][0]).size == (128, 128)


def test_defaults_steps_50_and_euler(client, monkeypatch):
    """Without steps/sampler the API runs A1111's class defaults: 50 steps, Euler."""
    from modules import processing
    seen = {}
    real = processing.process_images

    def spy(p):
        seen.update(steps=p.steps, sampler=p.sampler_name, denoising=p.denoising_strength)
        p.steps = 1
        return real(p)

    monkeypatch.setattr(processing, "process_images", spy)
    r = client.post(f"{API}/txt2img", json={"prompt": "x", "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    assert seen["steps"] == 50 and seen["sampler"] == "Euler"


def test_same_seed_same_image_and_send_images_false(client):
    a = txt2img(client, seed=7)["images"][0]
    b = txt2img(client, seed=7)["images"][0]
    assert a == b
    assert txt2img(client, seed=7, send_images=False)["images"] == []


def test_nulls_mean_defaults(client):
    body = txt2img(client, seed=5, styles=None, restore_faces=None, eta=None, steps=1, cfg_scale=None,
                   override_settings=None, script_args=None, alwayson_scripts=None)
    assert json.loads(body["info"])["cfg_scale"] == 7.0


@pytest.mark.parametrize("changes, word", [
    ({"sampler_name": "No Such Sampler"}, "No Such Sampler"),
    ({"scheduler": "no-such-schedule"}, "no-such-schedule"),
    ({"width": 65}, "width"),
    ({"width": 4096, "height": 4096}, "api_max_pixels"),
    ({"steps": 1000}, "api_max_steps"),
    ({"batch_size": 16, "n_iter": 16}, "api_max_batch_images"),
    ({"script_name": "sd upscale"}, "sd upscale"),
    ({"alwayson_scripts": {"ControlNet": {"args": []}}}, "ControlNet"),
    ({"override_settings": {"no_such_option": 1}}, "no_such_option"),
    ({"enable_hr": True, "denoising_strength": 0.5, "hr_upscaler": "R-ESRGAN 4x+"}, "R-ESRGAN 4x+"),
    ({"prompt": 5}, "prompt"),
    ({"seed": 2 ** 70}, "seed"),
    ({"subseed": -(2 ** 64)}, "subseed"),
    ({"override_settings": {"CLIP_stop_at_last_layers": "x"}}, "CLIP_stop_at_last_layers"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 99}}, "CLIP_stop_at_last_layers"),
    ({"prompt": "[a:" * 8000 + "b" + ":0.5]" * 8000}, "api_max_prompt_chars"),
    ({"negative_prompt": "x" * 20001}, "negative_prompt"),
    ({"override_settings": {"directories_filename_pattern": "../../../escaped"}, "save_images": True},
     "directories_filename_pattern"),
])
def test_bad_requests_are_4xx_naming_the_problem(client, changes, word):
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, **changes})
    assert 400 <= r.status_code < 500, r.text
    assert word in json.dumps(r.json())


def test_valid_request_after_bad_ones_is_correct(client):
    reference = txt2img(client, seed=99)["images"][0]
    for bad in ({"steps": "x"}, {"sampler_name": "nope"}, {"width": 63}):
        assert client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, **bad}).status_code in (400, 404, 422)
    assert client.post(f"{API}/img2img", json={"init_images": ["!!!"]}).status_code == 422
    assert txt2img(client, seed=99)["images"][0] == reference


def test_failed_job_releases_the_queue_and_resets_progress(client, api_runtime):
    """A job that fails inside the queue (validation in process_images) leaves nothing behind, and
    an interrupt or skip sent while idle does not reach the next job."""
    from modules import call_queue
    reference = txt2img(client, seed=7)["images"][0]
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "width": 4096, "force_task_id": "task(txt2img-FAIL000)"})
    assert r.status_code == 422 and "width" in r.json()["detail"]
    assert not call_queue.queue_lock.locked() and call_queue.current_task is None
    assert call_queue.task_status("task(txt2img-FAIL000)") == (False, False, True)
    progress = client.get(f"{API}/progress").json()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0 and progress["state"]["job"] == ""
    client.post(f"{API}/interrupt")
    client.post(f"{API}/skip")
    body = txt2img(client, seed=7)
    assert body["images"][0] == reference
    assert client.get(f"{API}/progress").json()["state"]["interrupted"] is False


def test_override_settings_apply_to_one_request_only(client, api_runtime):
    plain = txt2img(client, seed=3)
    with_override = txt2img(client, seed=3, override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in json.loads(with_override["info"])["infotexts"][0]
    assert api_runtime.opts.CLIP_stop_at_last_layers == 1
    assert client.get(f"{API}/options").json()["CLIP_stop_at_last_layers"] == 1
    assert txt2img(client, seed=3)["images"] == plain["images"]


def test_override_settings_cannot_change_restricted_options(client, api_runtime):
    """A1111 applies overrides with `opts.set(is_api=True)`: restrict_api options are ignored, so a
    request cannot switch on URL fetching (or drop the local-address guard) for its own job."""
    from modules import processing
    from modules.api import models
    from modules.runtime import jobs as generation
    restricted = {"api_enable_requests": True, "api_forbid_local_requests": False, "api_useragent": "x"}
    req = models.StableDiffusionTxt2ImgProcessingAPI(override_settings={**restricted, "CLIP_stop_at_last_layers": 2})
    args = generation.processing_args(req, processing.StableDiffusionProcessingTxt2Img)
    assert args["override_settings"] == {"CLIP_stop_at_last_layers": 2}
    body = txt2img(client, seed=3, override_settings=restricted)
    assert json.loads(body["info"])["seed"] == 3


def test_infotext_fills_unset_fields(client):
    infotext = "example prompt\nSteps: 1, Sampler: Euler, CFG scale: 5.0, Seed: 42, Size: 64x64"
    body = txt2img(client, infotext=infotext, prompt=None, negative_prompt=None, steps=None, seed=None,
                   sampler_index=None, sampler_name=None, cfg_scale=None)
    info = json.loads(body["info"])
    assert info["prompt"] == "example prompt" and info["negative_prompt"] == ""
    assert info["seed"] == 42 and info["steps"] == 1 and info["cfg_scale"] == 5.0
    # Fields set in the request win over the infotext.
    info = json.loads(txt2img(client, infotext=infotext, seed=43)["info"])
    assert info["seed"] == 43


def test_jpeg_output_carries_infotext(client, clean_opts):
    clean_opts.data["samples_format"] = "jpg"
    body = txt2img(client, seed=11, steps=1)
    image = decode(body["images"][0])
    assert image.format == "JPEG"
    from modules import infotext_utils
    text, _ = infotext_utils.read_info_from_image(image)
    assert "Seed: 11" in text


# --- img2img --------------------------------------------------------------------------------------------
@pytest.fixture()
def init_image():
    return png_b64(Image.new("RGB", (64, 64), (200, 80, 40)))


@pytest.fixture()
def mask_image():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return png_b64(mask, prefix=False)


def img2img_payload(init_image, **changes):
    base = {"init_images": [init_image], "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4,
            "inpaint_full_res": False, "sampler_index": "Euler a", "steps": 3, "width": 64, "height": 64,
            "seed": 5, "cfg_scale": 7, "prompt": "example prompt"}
    return {**base, **changes}


def test_img2img_basic(client, init_image):
    r = client.post(f"{API}/img2img", json=img2img_payload(init_image))
    assert r.status_code == 200, r.text
    body = r.json()
    assert decode(body["images"][0]).size == (64, 64)
    assert body["parameters"]["init_images"] is None
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.75


@pytest.mark.parametrize("invert", [0, 1, True])
def test_img2img_with_mask(client, init_image, mask_image, invert):
    r = client.post(f"{API}/img2img", json=img2img_payload(init_image, mask=mask_image, inpainting_mask_invert=invert))
    assert r.status_code == 200, r.text
    assert "Mask blur: 4" in json.loads(r.json()["info"])["infotexts"][0]


def test_img2img_include_init_images_echo(client, init_image):
    body = client.post(f"{API}/img2img", json=img2img_payload(init_image, include_init_images=True, steps=1)).json()
    assert body["parameters"]["init_images"] == [init_image]


def test_img2img_errors(client, init_image):
    r = client.post(f"{API}/img2img", json={"prompt": "x"})
    assert r.status_code == 404 and r.json()["detail"] == "Init image not found"
    r = client.post(f"{API}/img2img", json=img2img_payload(init_image, mask="garbage"))
    assert r.status_code == 422 and "mask" in r.json()["detail"]
    r = client.post(f"{API}/img2img", json=img2img_payload(init_image, init_images=[init_image] * 3, batch_size=2))
    assert r.status_code == 422 and "init_images" in r.json()["detail"]
    r = client.post(f"{API}/img2img", json=img2img_payload(init_image, script_name="no such script",
                                                          script_args=["", 8, "Lanczos", 2.0]))
    assert r.status_code == 422 and r.json()["detail"] == "Script 'no such script' not found"


def test_png_info_of_a_generated_image(client):
    body = txt2img(client, seed=21, steps=1)
    info = client.post(f"{API}/png-info", json={"image": body["images"][0]}).json()
    assert info["parameters"]["Seed"] == "21"
    assert info["parameters"]["Prompt"] == "example prompt"


def test_infotext_options_become_per_request_overrides(client, api_runtime):
    infotext = "example prompt\nSteps: 1, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 64x64, Clip skip: 2"
    body = txt2img(client, infotext=infotext, prompt=None, steps=None, seed=None)
    assert json.loads(body["info"])["clip_skip"] == 2
    assert body["parameters"]["override_settings"] == {"CLIP_stop_at_last_layers": 2}
    assert api_runtime.opts.CLIP_stop_at_last_layers == 1
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "infotext": "x\nSteps: many, Sampler: Euler, Seed: 1",
                                            "steps": None})
    assert r.status_code == 422 and "Steps" in r.json()["detail"]


def test_unload_and_reload_checkpoint(client):
    reference = txt2img(client, seed=77, steps=1)["images"][0]
    assert client.post(f"{API}/unload-checkpoint").json() == {}
    assert txt2img(client, seed=77, steps=1)["images"][0] == reference  # loads again on demand
    assert client.post(f"{API}/reload-checkpoint").json() == {}
    assert txt2img(client, seed=77, steps=1)["images"][0] == reference


def test_output_folders_per_front_end(api_runtime, clean_opts):
    """API: the per-tab folders; UI: the general folders win when set (A1111); CLI --outdir: both."""
    from modules.runtime import jobs as generation
    clean_opts.data.update(outdir_samples="all-samples", outdir_grids="all-grids")
    per_tab = (clean_opts.outdir_txt2img_samples, clean_opts.outdir_txt2img_grids)
    assert generation.output_folders("txt2img", None, ui=False) == per_tab
    assert generation.output_folders("txt2img", None, ui=True) == ("all-samples", "all-grids")
    assert generation.output_folders("img2img", "out", ui=True) == ("out", "out")
    clean_opts.data.update(outdir_samples="", outdir_grids="")
    assert generation.output_folders("txt2img", None, ui=True) == per_tab
