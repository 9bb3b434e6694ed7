"""Model upscalers over HTTP: /upscalers, /realesrgan-models, extras single and batch, hires fix in
txt2img, and a broken model file that fails its request while the server stays healthy."""
from __future__ import annotations

import os
import shutil

import pytest
from api_helpers import API, TXT2IMG_BASE, decode, png_b64
from PIL import Image

from modules import demo_upscalers, upscaler_spandrel, upscaling

DEMOS = {d.filename: d for d in demo_upscalers.DEMO_FILES}
USED = ("demo-esrgan-old-2x.pth", "demo-realesrgan-compact-4x.pth", "demo-swinir-2x.pth")


@pytest.fixture(scope="module")
def models(api_runtime):
    """Three demo upscalers in the session's models folder, removed after this module."""
    root = api_runtime.data_paths.models_path
    made = {DEMOS[n].folder for n in USED if not os.path.isdir(os.path.join(root, DEMOS[n].folder))}
    for name in USED:
        demo_upscalers.write_demo_file(root, DEMOS[name])
    yield root
    for name in USED:
        os.remove(os.path.join(root, DEMOS[name].folder, name))
    for folder in made:
        shutil.rmtree(os.path.join(root, folder), ignore_errors=True)
    upscaler_spandrel.clear_cache()
    upscaling.refresh_model_upscalers(force=True)


def _image() -> Image.Image:
    return Image.radial_gradient("L").resize((64, 64)).convert("RGB")


def test_upscalers_lists_model_files(client, models):
    listed = client.get(f"{API}/upscalers").json()
    names = [u["name"] for u in listed]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert {"demo-esrgan-old-2x", "demo-realesrgan-compact-4x", "demo-swinir-2x"} <= set(names[3:])
    assert names[3:] == sorted(names[3:], key=str.lower)
    item = next(u for u in listed if u["name"] == "demo-esrgan-old-2x")
    assert item == {"name": "demo-esrgan-old-2x", "model_name": "ESRGAN_4x", "model_url": None, "scale": 4,
                    "model_path": os.path.join(models, "ESRGAN", "demo-esrgan-old-2x.pth")}
    assert "demo-esrgan-old-2x" not in [m["name"] for m in client.get(f"{API}/latent-upscale-modes").json()]


def test_extras_single_image_with_a_model_is_sized_and_deterministic(client, models):
    payload = {"image": png_b64(_image()), "upscaler_1": "demo-esrgan-old-2x", "upscaling_resize": 2}
    first = client.post(f"{API}/extra-single-image", json=payload)
    assert first.status_code == 200, first.text
    image = decode(first.json()["image"])
    assert image.size == (128, 128)
    assert "Postprocess upscaler: demo-esrgan-old-2x" in first.json()["html_info"]
    upscaler_spandrel.clear_cache()
    second = client.post(f"{API}/extra-single-image", json=payload).json()
    assert decode(second["image"]).tobytes() == image.tobytes()


def test_extras_batch_with_a_second_model_upscaler(client, models):
    images = [{"data": png_b64(_image()), "name": "a"}, {"data": png_b64(_image().rotate(90)), "name": "b"}]
    r = client.post(f"{API}/extra-batch-images", json={
        "imageList": images, "resize_mode": 1, "upscaling_resize_w": 96, "upscaling_resize_h": 80,
        "upscaler_1": "demo-realesrgan-compact-4x", "upscaler_2": "demo-swinir-2x",
        "extras_upscaler_2_visibility": 0.4})
    assert r.status_code == 200, r.text
    assert [decode(x).size for x in r.json()["images"]] == [(96, 80), (96, 80)]
    assert "Postprocess upscaler 2: demo-swinir-2x" in r.json()["html_info"]


def test_unknown_upscaler_is_404_listing_the_models(client, models):
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "upscaler_1": "4x-Ultra"})
    assert r.status_code == 404
    assert "'4x-Ultra'" in r.json()["detail"] and "demo-swinir-2x" in r.json()["detail"]


def test_known_real_esrgan_file(client, models):
    path = os.path.join(models, "RealESRGAN", "RealESRGAN_x4plus.pth")
    shutil.copy(os.path.join(models, "RealESRGAN", "demo-realesrgan-compact-4x.pth"), path)
    try:
        assert client.get(f"{API}/realesrgan-models").json() == [{"name": "R-ESRGAN 4x+", "path": path, "scale": 4}]
        assert "R-ESRGAN 4x+" in [u["name"] for u in client.get(f"{API}/upscalers").json()]
    finally:
        os.remove(path)
    assert client.get(f"{API}/realesrgan-models").json() == []


def test_txt2img_hires_fix_with_a_model_upscaler(client, models):
    payload = {**TXT2IMG_BASE, "seed": 3, "enable_hr": True, "hr_upscaler": "demo-esrgan-old-2x", "hr_scale": 2,
               "hr_second_pass_steps": 1, "denoising_strength": 0.5}
    r = client.post(f"{API}/txt2img", json=payload)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (128, 128)
    assert "Hires upscaler: demo-esrgan-old-2x" in r.json()["info"]


def test_broken_model_fails_its_request_and_the_server_stays_healthy(client, models):
    path = os.path.join(models, "ESRGAN", "truncated.pth")
    with open(os.path.join(models, "ESRGAN", "demo-esrgan-old-2x.pth"), "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    try:
        r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "upscaler_1": "truncated"})
        assert r.status_code == 422 and "truncated.pth" in r.json()["detail"]
        r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "enable_hr": True, "hr_upscaler": "truncated",
                                               "denoising_strength": 0.5, "hr_second_pass_steps": 1})
        assert r.status_code == 422 and "truncated.pth" in r.json()["detail"]
    finally:
        os.remove(path)
    assert client.get(f"{API}/upscalers").status_code == 200
    ok = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "upscaler_1": "demo-swinir-2x"})
    assert ok.status_code == 200 and decode(ok.json()["image"]).size == (128, 128)
