"""Built-in img2img scripts SD upscale, Poor man's outpainting, Outpainting mk2 and img2img
alternative test through the API, with positional `script_args` exactly as A1111 clients send them.

64x64 images, 1–2 steps on the demo checkpoint. What is checked is what a user sees: the size of
the result, which parts of it were redrawn (pixel-exact against plain img2img requests where the
script's work can be reproduced that way), the infotext, and 4xx answers to bad arguments. A
runner recorder proves every generation reaches `ProcessingRunner.run`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from api_helpers import API, decode, infotext_param as param, png_b64, post_json, same_pixels
from modules import scripts, upscaling
from modules.runtime.runner import ProcessingRunner

pytestmark = pytest.mark.timeout(180)


def source_image() -> Image.Image:
    """64x64 with structure everywhere: a colour gradient and a square."""
    x = np.linspace(0, 255, 64, dtype=np.float32)
    rgb = np.stack([np.add.outer(x * 0, x), np.add.outer(x, x * 0), np.full((64, 64), 120.0)], axis=-1)
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")
    image.paste((30, 90, 220), (20, 20, 44, 44))
    return image


@pytest.fixture(scope="module")
def init_image() -> str:
    return png_b64(source_image())


@pytest.fixture()
def runner_calls(monkeypatch) -> list:
    """The batch size of every job that reaches `ProcessingRunner.run`, in order."""
    calls = []
    original = ProcessingRunner.run

    def recording(self, request):
        calls.append(request.processing.batch_size)
        return original(self, request)

    monkeypatch.setattr(ProcessingRunner, "run", recording)
    return calls


def img2img(client, init_image: str, status: int = 200, **changes) -> dict:
    payload = {"init_images": [init_image], "prompt": "a landscape", "denoising_strength": 0.5, "steps": 1,
               "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler", "cfg_scale": 5, **changes}
    return post_json(client, "img2img", payload, status)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a.convert("RGB"), np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean())


# --- listing and A1111's argument layout -----------------------------------------------------------------
@pytest.mark.parametrize("title, defaults", [
    ("SD upscale", [64, "None", 2.0]),
    ("Poor man's outpainting", [128, 4, "fill", ["left", "right", "up", "down"]]),
    ("Outpainting mk2", [128, 8, ["left", "right", "up", "down"], 1.0, 0.05]),
    ("img2img alternative test", [True, True, "", "", True, 50, True, 1.0, 0.0, False]),
])
def test_img2img_only_with_a1111_argument_layout(client, title, defaults):
    listed = client.get(f"{API}/scripts").json()
    assert title.lower() in listed["img2img"] and title.lower() not in listed["txt2img"]
    runner = scripts.scripts_img2img
    script = runner.script(title)
    values = [c.value for c in runner.inputs[script.args_from:script.args_to]]
    if title == "Poor man's outpainting":  # the only one without the leading info text
        assert values == defaults
    else:
        assert isinstance(values[0], str) and values[1:] == defaults


# --- SD upscale --------------------------------------------------------------------------------------------
def test_sd_upscale_redraws_each_tile_with_its_seed(client, init_image, runner_calls):
    body = img2img(client, init_image, script_name="SD upscale", script_args=["", 8, "Lanczos", 2.0])
    result = decode(body["images"][0])
    assert result.size == (128, 128) and len(body["images"]) == 1
    assert runner_calls == [1] * 9  # 128 px in 64 px tiles overlapping by >= 8: 3 x 3 tiles, one per call
    info = json.loads(body["info"])
    text = info["infotexts"][0]
    assert param(text, "SD upscale overlap") == "8" and param(text, "SD upscale upscaler") == "Lanczos"
    assert param(text, "Seed") == "7" and param(text, "Size") == "64x64"
    assert result.info["parameters"] == text

    # Tiles start at 0, 32, 64: a tile's own area, outside every cross-fade, is a plain img2img of that
    # tile of the Lanczos-upscaled image, tile i with seed 7 + i (A1111's seeds).
    upscaled = upscaling.upscale_image(source_image(), "Lanczos", scale=2.0)
    for i, x in enumerate((0, 32)):
        tile = upscaled.crop((x, 0, x + 64, 64))
        alone = decode(img2img(client, png_b64(tile), seed=7 + i)["images"][0])
        own = (8, 0, 32, 32) if x else (0, 0, 32, 32)
        assert same_pixels(result.crop((x + own[0], 0, x + own[2], 32)), alone.crop(own))


def test_sd_upscale_batches_tiles_and_takes_an_index(client, init_image, runner_calls):
    body = img2img(client, init_image, batch_size=4, script_name="SD upscale", script_args=["", 8, 1, 2.0])
    assert decode(body["images"][0]).size == (128, 128)
    assert runner_calls == [4, 4, 1]  # 9 tiles, 4 per call; the last call has the one left
    assert param(json.loads(body["info"])["infotexts"][0], "SD upscale upscaler") == "Lanczos"


# --- Poor man's outpainting ------------------------------------------------------------------------------
def test_poor_mans_outpainting_grows_sideways_and_keeps_the_middle(client, init_image, runner_calls):
    body = img2img(client, init_image, denoising_strength=0.9, script_name="Poor man's outpainting",
                   script_args=[32, 4, "fill", ["left", "right"]])
    result = decode(body["images"][0])
    assert result.size == (128, 64)
    assert runner_calls == [1, 1]  # tiles at x 0, 32, 64: the middle one lies inside the original
    text = json.loads(body["info"])["infotexts"][0]
    assert param(text, "Masked content") == "fill" and param(text, "Mask blur") == "8"
    original = source_image()
    assert mean_difference(result.crop((52, 0, 76, 64)), original.crop((20, 0, 44, 64))) < 3
    assert mean_difference(result.crop((0, 0, 24, 64)), original.crop((0, 0, 24, 64))) > 10  # new content


def test_poor_mans_outpainting_rounds_growth_to_64(client, init_image, runner_calls):
    body = img2img(client, init_image, script_name="Poor man's outpainting", script_args=[16, 0, 1, ["up"]])
    result = decode(body["images"][0])
    assert result.size == (64, 128)  # 64 + 16 rounded up to a multiple of 64, all of it above
    assert same_pixels(result.crop((0, 112, 64, 128)), source_image().crop((0, 48, 64, 64)))
    assert runner_calls == [1, 1]  # tiles at y 0, 32, 64: the one at 64 lies inside the original


# --- Outpainting mk2 -------------------------------------------------------------------------------------
def test_outpainting_mk2_grows_each_side_in_turn(client, init_image, runner_calls):
    body = img2img(client, init_image, denoising_strength=0.8, script_name="Outpainting mk2",
                   script_args=["", 32, 2, ["left", "right"], 1.0, 0.05])
    result = decode(body["images"][0])
    assert result.size == (128, 64) and len(body["images"]) == 1
    assert runner_calls == [1, 1]  # one call per side
    text = json.loads(body["info"])["infotexts"][0]
    assert param(text, "Seed") == "7" and param(text, "Size") == "64x64"
    assert "Masked content" not in text  # "original": sampling starts from the matched noise
    original = source_image()
    # the mask is blurred by 4 x mask_blur = 8 px around the kept area, as in A1111; its middle stays
    assert mean_difference(result.crop((56, 0, 72, 64)), original.crop((24, 0, 40, 64))) < 1
    assert mean_difference(result.crop((0, 0, 16, 64)), original.crop((0, 0, 16, 64))) > 10


def test_outpainting_mk2_batch_gives_a_grid_and_a_seed_per_image(client, init_image, runner_calls):
    body = img2img(client, init_image, batch_size=2, script_name="Outpainting mk2",
                   script_args=["", 16, 2, ["up"], 1.0, 0.05])
    grid, *grown = [decode(b) for b in body["images"]]
    assert runner_calls == [2] and [im.size for im in grown] == [(64, 128)] * 2
    assert grid.size == (128, 128) and same_pixels(grid.crop((64, 0, 128, 128)), grown[1])
    texts = json.loads(body["info"])["infotexts"]
    assert [param(t, "Seed") for t in texts] == ["7", "7", "8"]
    assert not same_pixels(grown[0], grown[1])
    assert same_pixels(grown[0].crop((0, 80, 64, 128)), source_image().crop((0, 16, 64, 64)))


def test_matched_noise_fills_only_the_mask_with_the_pictures_colours():
    module = next(d.module for d in scripts.scripts_data if d.path.endswith("outpainting_mk_2.py"))
    image = np.asarray(source_image(), np.float64) / 255.0
    mask = np.zeros((64, 64))
    mask[:, 40:] = 1.0
    filled = module.matched_noise(image, mask, noise_q=1.0, color_variation=0.05)
    assert np.array_equal(filled[:, :40], image[:, :40])
    assert np.array_equal(filled, module.matched_noise(image, mask, 1.0, 0.05))  # deterministic
    new, known = filled[:, 40:].reshape(-1, 3), image[:, :40].reshape(-1, 3)
    assert np.allclose(np.sort(new, axis=0)[[0, -1]], np.sort(known, axis=0)[[0, -1]], atol=0.02)  # same range
    assert new.std(axis=0).min() > 0.01  # noise, not a flat fill


# --- img2img alternative test ----------------------------------------------------------------------------
ALT_ARGS = ["", True, True, "a landscape", "", True, 2, True, 1.0, 0.0, False]


def test_img2img_alternative_test_samples_from_the_found_noise(client, init_image, runner_calls):
    first = img2img(client, init_image, script_name="img2img alternative test", script_args=ALT_ARGS)
    image = decode(first["images"][0])
    assert image.size == (64, 64) and runner_calls == [1]
    text = json.loads(first["info"])["infotexts"][0]
    for key, value in {"Decode prompt": "a landscape", "Decode CFG scale": "1.0", "Decode steps": "2",
                       "Randomness": "0.0", "Sigma Adjustment": "False", "Sampler": "Euler", "Steps": "2",
                       "Denoising strength": "1.0"}.items():
        assert param(text, key) == value
    again = img2img(client, init_image, script_name="img2img alternative test", script_args=ALT_ARGS)
    assert same_pixels(decode(again["images"][0]), image)  # same request (found noise cached): same image
    plain = img2img(client, init_image, denoising_strength=1.0, steps=2)  # fresh noise instead
    assert not same_pixels(decode(plain["images"][0]), image)
    adjusted = img2img(client, init_image, script_name="img2img alternative test",
                       script_args=ALT_ARGS[:-1] + [True])
    assert not same_pixels(decode(adjusted["images"][0]), image)


def test_reverse_euler_climbs_the_probability_flow_of_the_schedule():
    """For unit-Gaussian data the ideal denoiser is x / (1 + sigma^2) and the flow from sigma 0 is
    x(sigma) = x0 * sqrt(1 + sigma^2): the sigma-adjusted reverse pass (divided by the top sigma)
    must land there; the plain one keeps x0's direction at unit deviation."""
    import torch

    from modules.samplers.denoisers import DiscreteSchedule
    from modules.sd_models import sd1_alphas_cumprod
    module = next(d.module for d in scripts.scripts_data if d.path.endswith("img2imgalt.py"))
    sigmas = DiscreteSchedule(sd1_alphas_cumprod()).get_sigmas(400).flip(0)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))

    def ideal(x, sigma_in, _sigma_t):
        return x / (1 + sigma_in.view(-1, 1, 1, 1) ** 2)

    top = float(sigmas[-1])
    adjusted = module.reverse_euler(ideal, x0, sigmas, sigma_adjustment=True)
    assert torch.allclose(adjusted, x0 * (1 + top ** 2) ** 0.5 / top, rtol=0.03)
    plain = module.reverse_euler(ideal, x0, sigmas)
    assert torch.allclose(plain, x0 / x0.std(), rtol=1e-4, atol=1e-5)


# --- bad arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("title, args, fragment", [
    ("SD upscale", ["", 8, "Nope", 2.0], "upscaler"),
    ("SD upscale", ["", 8, 99, 2.0], "upscaler"),
    ("SD upscale", ["", 64, "Lanczos", 2.0], "overlap"),
    ("SD upscale", ["", 8, "Lanczos", "big"], "scale_factor"),
    ("SD upscale", ["", 8, "Lanczos", 100.0], "2048"),
    ("Poor man's outpainting", [64, 4, "fill", ["left"]], "pixels"),
    ("Poor man's outpainting", [32, 4, "blurry", ["left"]], "inpainting_fill"),
    ("Poor man's outpainting", [32, 4, "fill", ["sideways"]], "direction"),
    ("Outpainting mk2", ["", 5000, 4, ["left"], 1.0, 0.05], "2048"),
    ("Outpainting mk2", ["", 32, 4, [], 1.0, 0.05], "direction"),
    ("Outpainting mk2", ["", 32, 4, ["left"], -1.0, 0.05], "noise_q"),
    ("Outpainting mk2", ["", 32, "x", ["left"], 1.0, 0.05], "mask_blur"),
    ("img2img alternative test", ALT_ARGS[:6] + [0] + ALT_ARGS[7:], "st"),
    ("img2img alternative test", ALT_ARGS[:9] + [2.0, False], "randomness"),
    ("img2img alternative test", ALT_ARGS[:1] + ["maybe"] + ALT_ARGS[2:], "override_sampler"),
])
def test_bad_arguments_are_refused_with_4xx(client, init_image, runner_calls, title, args, fragment):
    body = img2img(client, init_image, status=422, script_name=title, script_args=args)
    assert fragment in body["detail"] and title in body["detail"]
    assert runner_calls == []


def test_img2img_alternative_test_refuses_samplers_it_cannot_reverse(client, init_image, runner_calls):
    args = ALT_ARGS[:1] + [False] + ALT_ARGS[2:]
    body = img2img(client, init_image, status=422, sampler_name="DDIM", script_name="img2img alternative test",
                   script_args=args)
    assert "DDIM" in body["detail"] and runner_calls == []
