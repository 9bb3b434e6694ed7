"""Built-in script "Loopback" (img2img only) through the API, with positional `script_args` exactly
as A1111 clients send them: [loops, final_denoising_strength, denoising_curve, append_interrogation].

64x64, 2 steps on the demo checkpoint. Each loop must start from the previous loop's output with
the seed one higher and the denoising strength the curve gives; this is checked against a plain
img2img request made from the loop's own input.
"""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from api_helpers import API, decode, infotext_param as param, png_b64, post_json, same_pixels
from modules import scripts
from modules.runtime.runner import ProcessingRunner

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def init_image() -> str:
    image = Image.new("RGB", (64, 64), (200, 80, 40))
    image.paste((30, 90, 220), (16, 16, 48, 48))
    return png_b64(image)


def img2img(client, init_image: str, status: int = 200, **changes) -> dict:
    payload = {"init_images": [init_image], "prompt": "a red square", "denoising_strength": 0.6, "steps": 2,
               "width": 64, "height": 64, "seed": 9, "sampler_name": "Euler", "cfg_scale": 7, **changes}
    return post_json(client, "img2img", payload, status)


def test_loopback_is_img2img_only_with_a1111_defaults(client):
    listed = client.get(f"{API}/scripts").json()
    assert "loopback" in listed["img2img"] and "loopback" not in listed["txt2img"]
    runner = scripts.scripts_img2img
    script = runner.script("Loopback")
    assert [c.value for c in runner.inputs[script.args_from:script.args_to]] == [4, 0.5, "Linear", "None"]
    r = client.post(f"{API}/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                             "script_name": "Loopback", "script_args": [2, 0.5, "Linear", "None"]})
    assert r.status_code == 422 and r.json()["detail"] == "Script 'Loopback' not found"


def test_loopback_feeds_each_output_into_the_next_loop(client, init_image, monkeypatch):
    calls = []
    original = ProcessingRunner.run
    monkeypatch.setattr(ProcessingRunner, "run", lambda self, request: calls.append(1) or original(self, request))
    body = img2img(client, init_image, script_name="Loopback", script_args=[3, 0.2, "Linear", "None"])
    info = json.loads(body["info"])
    assert len(calls) == 3 and len(body["images"]) == 4  # the grid, then one image per loop
    loops = [decode(b) for b in body["images"][1:]]
    texts = info["infotexts"][1:]
    assert [float(param(t, "Denoising strength")) for t in texts] == pytest.approx([0.6, 0.4, 0.2])
    assert [param(t, "Seed") for t in texts] == ["9", "10", "11"]
    assert all(param(t, "Final denoising strength") == "0.2" and param(t, "Denoising curve") == "Linear"
               for t in texts)
    grid = decode(body["images"][0])
    assert grid.size == (3 * 64, 64) and info["infotexts"][0] == texts[0]
    assert all(same_pixels(grid.crop((64 * i, 0, 64 * i + 64, 64)), image) for i, image in enumerate(loops))

    # Loop 2 is exactly an img2img of loop 1's output with the next seed and the curve's strength.
    strength = float(param(texts[1], "Denoising strength"))
    alone = img2img(client, png_b64(loops[0]), seed=10, denoising_strength=strength)
    assert same_pixels(decode(alone["images"][0]), loops[1])
    assert not same_pixels(loops[0], loops[1])


@pytest.mark.parametrize("curve, middle", [
    ("Aggressive", 0.2 + 0.6 * math.sin(math.pi / 4)),      # moves fast first
    ("Lazy", 0.2 + 0.6 * (1 - math.cos(math.pi / 4))),      # moves slowly first
])
def test_loopback_denoising_curves(client, init_image, curve, middle):
    body = img2img(client, init_image, denoising_strength=0.2, script_name="Loopback",
                   script_args=[3, 0.8, curve, "None"])
    texts = json.loads(body["info"])["infotexts"][1:]
    assert [float(param(t, "Denoising strength")) for t in texts] == pytest.approx([0.2, middle, 0.8], abs=1e-6)


def test_loopback_batch_count_restarts_from_the_init_image(client, init_image):
    body = img2img(client, init_image, n_iter=2, script_name="Loopback", script_args=[2, 0.3, "Linear", "None"])
    texts = json.loads(body["info"])["infotexts"]
    assert len(body["images"]) == 3  # grid + the last loop of each batch
    assert [param(t, "Seed") for t in texts[1:]] == ["10", "12"]
    assert [float(param(t, "Denoising strength")) for t in texts[1:]] == pytest.approx([0.3, 0.3])


def test_loopback_color_correction_matches_the_request_init_image(client, init_image):
    from modules import processing
    body = img2img(client, init_image, override_settings={"img2img_color_correction": True},
                   script_name="Loopback", script_args=[2, 0.4, "Linear", "None"])
    first, second = (decode(b) for b in body["images"][1:])
    # Loop 2 = the plain img2img of loop 1's output, colour-corrected towards the *request's* init image.
    plain = decode(img2img(client, png_b64(first), seed=10, denoising_strength=0.4)["images"][0])
    target = processing.setup_color_correction(decode(init_image.split(",", 1)[1]))
    assert same_pixels(second, processing.apply_color_correction(target, plain))
    assert not same_pixels(second, plain)


@pytest.mark.parametrize("args, problem", [
    ([3, 0.5, "Linear", "CLIP"], "interrogation model"),
    ([3, 0.5, "Linear", "DeepBooru"], "interrogation model"),
    ([3, 0.5, "Linear", "BLIP"], "append_interrogation must be one of"),
    ([0, 0.5, "Linear", "None"], "loops"),
    ([3, 1.5, "Linear", "None"], "final_denoising_strength"),
    ([3, 0.5, "Fast", "None"], "denoising_curve"),
])
def test_loopback_bad_arguments_are_422(client, init_image, args, problem):
    body = img2img(client, init_image, status=422, script_name="Loopback", script_args=args)
    assert problem in body["detail"] and body["detail"].startswith("Loopback:")
