"""Soft inpainting (A1111's built-in `extensions-builtin/soft-inpainting`): its math, and real inpainting
jobs on the demo checkpoint through `/sdapi/v1/img2img`.

The jobs are 128×128 (a 16×16 latent: the composite filters reach two latent pixels, so a smaller
picture has no pixel "far from the mask") with 3 Euler steps. The script is loaded the way every built-in extension is,
by `webui.initialize()` (the session's `serena` fixture).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "api"))
from api_helpers import API, decode, infotext_param, png_b64, post_json, same_pixels  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_PATH = os.path.join(ROOT, "extensions-builtin", "soft-inpainting", "scripts", "soft_inpainting.py")
NAME = "soft inpainting"
SIZE = 128
DEFAULT_ARGS = [True, 1, 0.5, 4, 0, 0.5, 2]
INFOTEXT_KEYS = {
    "Soft inpainting schedule bias": "1", "Soft inpainting preservation strength": "0.5",
    "Soft inpainting transition contrast boost": "4", "Soft inpainting mask influence": "0",
    "Soft inpainting difference threshold": "0.5", "Soft inpainting difference contrast": "2",
}


@pytest.fixture(scope="module")
def si():
    """The script module, imported from its file (the pure functions need no runtime)."""
    spec = importlib.util.spec_from_file_location("soft_inpainting_under_test", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


# --- the math -------------------------------------------------------------------------------------------
def test_softened_mask_follows_sigma(si):
    settings = si.SoftInpaintingSettings(mask_blend_power=1, mask_blend_scale=0.5)
    nmask = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # exponent = sigma ** power * scale
    assert torch.allclose(si.softened_nmask(nmask, torch.tensor(2.0), settings), nmask ** 1.0)
    assert torch.allclose(si.softened_nmask(nmask, torch.tensor(8.0), settings), nmask ** 4.0)
    low = si.softened_nmask(nmask, torch.tensor(0.5), settings)
    assert torch.allclose(low, nmask ** 0.25)
    assert low[0] == 0 and low[-1] == 1  # kept stays kept, repainted stays repainted
    biased = si.SoftInpaintingSettings(mask_blend_power=2, mask_blend_scale=0.5)
    assert torch.allclose(si.softened_nmask(nmask, torch.tensor(2.0), biased), nmask ** 2.0)


def test_first_sigma_of_a_batch(si):
    assert si.first_sigma(torch.tensor([3.5, 3.5])).item() == 3.5
    assert si.first_sigma(torch.tensor(2.0)).item() == 2.0


def test_magnitude_preserving_blend_ends_and_middle(si):
    a = torch.tensor([3.0, 0.0, 0.0, 4.0]).view(1, 4, 1, 1).repeat(2, 1, 2, 2)  # |a| = 5
    b = torch.tensor([0.0, 0.0, -1.0, 0.0]).view(1, 4, 1, 1).repeat(2, 1, 2, 2)  # |b| = 1
    zeros, ones = torch.zeros(4, 2, 2), torch.ones(4, 2, 2)
    assert torch.allclose(si.magnitude_preserving_blend(a, b, zeros, 4.0), a, atol=1e-4)
    assert torch.allclose(si.magnitude_preserving_blend(a, b, ones, 4.0), b, atol=1e-4)
    half = si.magnitude_preserving_blend(a, b, torch.full((4, 2, 2), 0.5), 4.0)
    direction = (a + b) / 2
    direction = direction / direction.norm(dim=1, keepdim=True)
    length = ((5.0 ** 4 + 1.0 ** 4) / 2) ** 0.25  # the power mean of the lengths, not the mix's length
    assert torch.allclose(half.norm(dim=1), torch.full((2, 2, 2), length), atol=1e-4)
    assert torch.allclose(half / half.norm(dim=1, keepdim=True), direction, atol=1e-5)
    linear = si.magnitude_preserving_blend(a, b, torch.full((4, 2, 2), 0.5), 1.0)
    assert torch.allclose(linear.norm(dim=1), torch.full((2, 2, 2), 3.0), atol=1e-4)  # d=1: lengths mix linearly
    assert half.dtype == a.dtype


def test_smootherstep_and_kernel(si):
    assert si.smootherstep(0.0) == 0 and si.smootherstep(1.0) == 1 and si.smootherstep(0.5) == 0.5
    kernel, center = si.gaussian_kernel(stddev_radius=1.5, max_radius=2)
    assert kernel.shape == (5, 5) and center == 2 and kernel[2, 2] == 1.0
    zero = math.exp(-9 / 2.25)
    assert kernel[2, 4] == pytest.approx((math.exp(-4 / 2.25) - zero) / (1 - zero))
    assert np.array_equal(kernel, kernel.T) and np.array_equal(kernel, kernel[::-1]) and (kernel > 0).all()


def test_histogram_filter_hand_computed(si):
    img = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    kernel = np.ones((1, 3))
    center = (0, 1)
    mean = si.weighted_histogram_filter(img, kernel, center, 0.0, 1.0)
    assert mean.tolist() == [[1.5, 2.0, 2.5]] and mean.dtype == np.float32  # border windows are clipped
    # Median with a 1-wide slice: the middle of the stack; at the border it straddles two values
    assert si.weighted_histogram_filter(img, kernel, center, 0.5, 0.5).tolist() == [[1.5, 2.0, 2.5]]
    assert si.weighted_histogram_filter(img, kernel, center, 1.0, 1.0).tolist() == [[2.0, 3.0, 3.0]]  # maximum
    assert si.weighted_histogram_filter(img, kernel, center, 0.0, 0.0).tolist() == [[1.0, 1.0, 2.0]]  # minimum
    # Weights: [1, 2, 3] under a (1, 3, 1) kernel at the middle: stack 1|2,2,2|3 (height 5), slice [0, 2.5]
    weighted = si.weighted_histogram_filter(img, np.array([[1.0, 3.0, 1.0]]), center, 0.0, 0.5)
    assert weighted[0, 1] == pytest.approx((1 * 1 + 2 * 1.5) / 2.5)


def _reference_filter(img, kernel, center, pmin, pmax, min_width):
    """A per-pixel loop written from the definition, to check the vectorised filter against."""
    out = np.zeros(img.shape, dtype=img.dtype)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            items = []
            for ky in range(kernel.shape[0]):
                for kx in range(kernel.shape[1]):
                    iy, ix = y + ky - center, x + kx - center
                    if 0 <= iy < img.shape[0] and 0 <= ix < img.shape[1]:
                        items.append((img[iy, ix], kernel[ky, kx]))
            items.sort(key=lambda item: item[0])
            total = 0.0
            stack = []
            for value, weight in items:
                stack.append((value, total, total + weight))
                total += weight
            low, high = total * pmin, total * pmax
            if high - low < min_width:
                mid = (low + high) / 2
                low, high = mid - min_width / 2, mid + min_width / 2
                if high > total:
                    low, high = total - min_width, total
                if low < 0:
                    low, high = 0, min_width
            acc = cover = 0.0
            for value, bottom, top in stack:
                if low < top and high > bottom:
                    w = min(high, top) - max(low, bottom)
                    acc += value * w
                    cover += w
            out[y, x] = acc / cover if cover else 0
    return out


@pytest.mark.parametrize("pmin,pmax", [(0.9, 1.0), (0.25, 0.75), (0.0, 1.0)])
def test_histogram_filter_matches_the_per_pixel_definition(si, pmin, pmax):
    rng = np.random.default_rng(3)
    img = rng.random((6, 7)).astype(np.float32)
    img[2, 3] = img[2, 4]  # a tie
    kernel, center = si.gaussian_kernel(1.5, 2)
    got = si.weighted_histogram_filter(img, kernel, center, pmin, pmax, min_width=1)
    assert np.array_equal(got, _reference_filter(img, kernel, center, pmin, pmax, 1))


def test_difference_mask_keeps_unchanged_and_replaces_changed(si):
    settings = si.SoftInpaintingSettings()
    kernel, center = si.gaussian_kernel(1.5, 2)
    distance = np.zeros((16, 16), dtype=np.float32)
    distance[6:10, 6:10] = 3.0  # far beyond the threshold (0.5)
    scalar = si.mask_scalars(torch.ones(4, 16, 16), settings)
    mask = si.difference_mask(distance, scalar, settings, kernel, center)
    assert mask.dtype == np.uint8 and mask[0, 0] == 0 and mask[15, 15] == 0 and mask[7, 7] >= 250
    assert mask[4, 8] > 0  # the near-maximum pass widens the changed area by the kernel's radius


def test_final_blend_keeps_the_sampler_output(si):
    from modules import scripts
    script = si.Script()
    current, init = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    nmask = torch.full((4, 2, 2), 0.5)
    p = type("P", (), {"nmask": nmask, "mask": 1 - nmask, "image_mask": None})()
    final = scripts.MaskBlendArgs(current, nmask, init, 1 - nmask, current * 0.5)
    script.on_mask_blend(p, final, *DEFAULT_ARGS)
    assert final.blended_latent is current
    step = scripts.MaskBlendArgs(current, nmask, init, 1 - nmask, current * 0.5, denoiser=object(),
                                 sigma=torch.tensor([1.0]))
    script.on_mask_blend(p, step, *DEFAULT_ARGS)
    expected = si.magnitude_preserving_blend(init, current, nmask ** 0.5, 4.0)
    assert torch.allclose(step.blended_latent, expected)
    off = scripts.MaskBlendArgs(current, nmask, init, 1 - nmask, "untouched", denoiser=object(),
                                sigma=torch.tensor([1.0]))
    script.on_mask_blend(p, off, False, *DEFAULT_ARGS[1:])
    assert off.blended_latent == "untouched"


# --- real jobs ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def hooks_do_not_fail(caplog):
    """A failing script hook is only logged by the runner (A1111 behaviour): make it fail the test."""
    yield
    failures = [r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase)
                if r.name == "modules.scripts" and r.levelname == "ERROR"]
    assert not failures, failures


@pytest.fixture(scope="module")
def client(serena):
    from fastapi.testclient import TestClient

    from modules import sd_models
    from modules.api.app import build_app
    if not sd_models.checkpoints_list:  # a module before this one may have emptied the registry
        sd_models.list_models()
    with TestClient(build_app(serena.cmd_opts), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def init_image():
    """A gradient, so that every pixel kept from the original is recognisable."""
    x = np.linspace(0, 255, SIZE, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(x[None, :], x[:, None], 255 - x[None, :]), axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def _payload(init_image, soft_args=None, **changes):
    """An inpainting request (a 16×16 square in the middle); `soft_args` names the script's arguments."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (56, 56, 72, 72))
    base = {"init_images": [png_b64(init_image)], "mask": png_b64(mask, prefix=False), "mask_blur": 4,
            "inpainting_fill": 1, "inpaint_full_res": False, "resize_mode": 0, "denoising_strength": 0.75,
            "sampler_name": "Euler", "steps": 3, "width": SIZE, "height": SIZE, "seed": 5, "cfg_scale": 7,
            "prompt": "a red cube"}
    if soft_args is not None:
        base["alwayson_scripts"] = {NAME: {"args": list(soft_args)}}
    return {**base, **changes}


@pytest.fixture(scope="module")
def plain(client, init_image):
    return post_json(client, "img2img", _payload(init_image))


@pytest.fixture(scope="module")
def soft(client, init_image):
    return post_json(client, "img2img", _payload(init_image, soft_args=DEFAULT_ARGS))


def test_script_is_listed_for_img2img_only(client):
    listed = client.get(f"{API}/scripts").json()
    assert NAME in listed["img2img"] and NAME not in listed["txt2img"]
    info = {(x["name"], x["is_img2img"]): x for x in client.get(f"{API}/script-info").json()}
    entry = info[(NAME, True)]
    assert entry["is_alwayson"] is True
    assert [a["label"] for a in entry["args"]] == [
        "Soft inpainting", "Schedule bias", "Preservation strength", "Transition contrast boost",
        "Mask influence", "Difference threshold", "Difference contrast"]
    assert [a["value"] for a in entry["args"]] == [False, 1, 0.5, 4, 0, 0.5, 2]
    assert [(a["minimum"], a["maximum"], a["step"]) for a in entry["args"][1:]] == [
        (0, 8, 0.1), (0, 8, 0.05), (1, 32, 0.5), (0, 1, 0.05), (0, 8, 0.25), (0, 8, 0.25)]


def test_disabled_is_plain_inpainting(client, init_image, plain):
    off = post_json(client, "img2img", _payload(init_image, soft_args=[False, 2, 3, 8, 1, 2, 4]))
    assert decode(off["images"][0]).tobytes() == decode(plain["images"][0]).tobytes()
    assert "Soft inpainting" not in json.loads(off["info"])["infotexts"][0]


def test_enabled_blends_and_writes_its_infotext(init_image, plain, soft):
    text = json.loads(soft["info"])["infotexts"][0]
    assert "Soft inpainting enabled: True" in text
    for key, value in INFOTEXT_KEYS.items():
        assert infotext_param(text, key) == value
    image, before = decode(soft["images"][0]).convert("RGB"), decode(plain["images"][0]).convert("RGB")
    assert image.size == (SIZE, SIZE) and not same_pixels(image, before)
    # Far from the mask the overlay keeps the original pixels exactly
    original = np.asarray(init_image)
    for box in ((0, 0, 16, 16), (112, 0, 128, 16), (0, 112, 16, 128), (112, 112, 128, 128)):
        x1, y1, x2, y2 = box
        assert np.array_equal(np.asarray(image)[y1:y2, x1:x2], original[y1:y2, x1:x2]), box
    # In the middle of the mask the new content is there
    assert not np.array_equal(np.asarray(image)[60:68, 60:68], original[60:68, 60:68])


def test_parameters_change_the_result(client, init_image, soft):
    other = post_json(client, "img2img", _payload(init_image, soft_args=[True, 1, 0.5, 4, 1, 0.5, 2]))
    assert infotext_param(json.loads(other["info"])["infotexts"][0], "Soft inpainting mask influence") == "1"
    assert not same_pixels(decode(other["images"][0]), decode(soft["images"][0]))


def test_pasting_the_infotext_restores_the_controls(serena, soft):
    from modules import scripts, ui_handlers
    script = next(s for s in scripts.scripts_img2img.alwayson_scripts if s.title() == "Soft Inpainting")
    text = json.loads(soft["info"])["infotexts"][0].replace("mask influence: 0", "mask influence: 0.35")
    assert ui_handlers.paste_script_fields(text, script.infotext_fields) == [True, 1.0, 0.5, 4.0, 0.35, 0.5, 2.0]
    assert script.paste_field_names == ["Soft inpainting enabled", *INFOTEXT_KEYS]


def test_api_infotext_restores_the_script(client, init_image, soft):
    text = json.loads(soft["info"])["infotexts"][0]
    again = post_json(client, "img2img", _payload(init_image, infotext=text))
    assert "Soft inpainting enabled: True" in json.loads(again["info"])["infotexts"][0]


def test_img2img_page_has_the_accordion_and_sliders(serena):
    from modules import ui
    blocks = ui.create_ui()
    by_id = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    assert by_id["soft_inpainting_enabled"].label == "Soft inpainting"  # the accordion, closed = off
    assert by_id["soft_inpainting_enabled-checkbox"].value is False
    sliders = [by_id[name] for name in ("mask_blend_power", "mask_blend_scale", "inpaint_detail_preservation",
                                        "composite_mask_influence", "composite_difference_threshold",
                                        "composite_difference_contrast")]
    assert [s.label for s in sliders] == ["Schedule bias", "Preservation strength", "Transition contrast boost",
                                          "Mask influence", "Difference threshold", "Difference contrast"]
    assert [s.value for s in sliders] == [1, 0.5, 4, 0, 0.5, 2]


def test_only_masked_area_and_batches(client, init_image):
    """With "Only masked" the composite masks are placed back into the whole picture, one per image."""
    body = post_json(client, "img2img", _payload(init_image, inpaint_full_res=True, inpaint_full_res_padding=8,
                                                 batch_size=2, n_iter=2, soft_args=DEFAULT_ARGS))
    images = [np.asarray(decode(b64).convert("RGB")) for b64 in body["images"]]
    original = np.asarray(init_image)
    assert len(images) == 4
    for image in images:
        assert image.shape == original.shape
        assert np.array_equal(image[:24], original[:24]) and np.array_equal(image[:, 104:], original[:, 104:])
    assert not np.array_equal(images[0][60:68, 60:68], original[60:68, 60:68])
    assert all("Soft inpainting enabled: True" in t for t in json.loads(body["info"])["infotexts"])
