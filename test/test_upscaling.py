"""Built-in upscalers, latent upscale modes and the extras operation (spec §1.2, §1.7)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from modules import errors, upscaling


def _checker(w: int, h: int) -> Image.Image:
    im = Image.new("RGB", (w, h))
    for x in range(w):
        for y in range(h):
            im.putpixel((x, y), (255, 255, 255) if (x + y) % 2 else (0, 0, 0))
    return im


def test_upscaler_list_shape():
    assert upscaling.list_upscalers()[:3] == [
        {"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
        for n in ("None", "Lanczos", "Nearest")]


def test_find_upscaler_lists_valid_names():
    assert upscaling.find_upscaler("Lanczos").name == "Lanczos"
    with pytest.raises(errors.InvalidParameter, match=r"'ESRGAN_4x'.*None, Lanczos, Nearest"):
        upscaling.find_upscaler("ESRGAN_4x")


def test_register_upscaler_keeps_builtins_first():
    saved = list(upscaling.sd_upscalers)
    try:
        upscaling.register_upscaler(upscaling.UpscalerData("b model", upscaling._step_nearest, model_path="/m/b"))
        upscaling.register_upscaler(upscaling.UpscalerData("A model", upscaling._step_nearest))
        assert [u["name"] for u in upscaling.list_upscalers()] == ["None", "Lanczos", "Nearest", "A model", "b model"]
        with pytest.raises(errors.InvalidParameter):
            upscaling.register_upscaler(upscaling.UpscalerData("Lanczos", upscaling._step_none))
    finally:
        upscaling.sd_upscalers[:] = saved


@pytest.mark.parametrize("name", ["None", "Lanczos", "Nearest"])
def test_scale_rounds_to_multiple_of_8(name):
    assert upscaling.upscale_image(Image.new("RGB", (50, 30)), name, scale=2).size == (96, 56)
    assert upscaling.upscale_image(Image.new("RGB", (64, 32)), name, scale=0.5).size == (32, 16)


def test_nearest_keeps_pixel_values():
    out = upscaling.upscale_image(_checker(8, 8), "Nearest", scale=2)
    assert set(out.getdata()) == {(0, 0, 0), (255, 255, 255)}
    assert out.getpixel((0, 0)) == out.getpixel((1, 1)) == (0, 0, 0)


def test_size_is_exact():
    im = Image.new("RGB", (30, 20))
    assert upscaling.upscale_image(im, "Lanczos", size=(100, 50)).size == (100, 50)
    assert upscaling.upscale_image(im, None, size=(10, 10)).size == (10, 10)
    assert upscaling.upscale_image(im, "Nearest", size=(12, 8)).size == (12, 8)


@pytest.mark.parametrize("kwargs", [{}, {"scale": 2, "size": (8, 8)}, {"scale": 0}, {"size": (0, 5)}])
def test_upscale_image_bad_arguments(kwargs):
    with pytest.raises(errors.InvalidParameter):
        upscaling.upscale_image(Image.new("RGB", (8, 8)), "Lanczos", **kwargs)


def test_latent_modes():
    assert [m["name"] for m in upscaling.list_latent_upscale_modes()] == [
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
        "Latent (nearest)", "Latent (nearest-exact)"]
    assert upscaling.latent_upscale_modes["Latent (bicubic antialiased)"]["mode"] == "bicubic"
    assert upscaling.latent_upscale_modes["Latent (antialiased)"].antialias is True
    assert upscaling.latent_upscale_default_mode == "Latent"


@pytest.mark.parametrize("name", list(upscaling.latent_upscale_modes))
def test_upscale_latent_matches_interpolate(name):
    latent = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    out = upscaling.upscale_latent(latent, name, 16, 12)
    mode = upscaling.latent_upscale_modes[name]
    ref = torch.nn.functional.interpolate(latent, size=(16, 12), mode=mode.mode, antialias=mode.antialias)
    assert out.shape == (2, 4, 16, 12) and torch.equal(out, ref)


def test_upscale_latent_errors():
    latent = torch.zeros(1, 4, 8, 8)
    with pytest.raises(errors.InvalidParameter, match=r"'Latent \(fancy\)'.*Latent \(nearest-exact\)"):
        upscaling.upscale_latent(latent, "Latent (fancy)", 16, 16)
    with pytest.raises(errors.InvalidParameter):
        upscaling.upscale_latent(latent, "Latent", 0, 16)
    with pytest.raises(errors.InvalidParameter):
        upscaling.upscale_latent(torch.zeros(4, 8, 8), "Latent", 16, 16)


# --- extras -----------------------------------------------------------------------------------------
def test_extras_scale_by():
    out, html = upscaling.run_extras(Image.new("RGBA", (40, 24)), upscaler_1="Lanczos", upscaling_resize=2.0)
    assert out.size == (80, 48) and out.mode == "RGB"
    assert html == "<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>"


def test_extras_scale_to_with_and_without_crop():
    im = Image.new("RGB", (40, 20))
    out, html = upscaling.run_extras(im, resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64,
                                     upscaler_1="Nearest")
    assert out.size == (64, 64)
    assert html == ("<p>Postprocess upscale to: 64x64, Postprocess crop to: 64x64, "
                    "Postprocess upscaler: Nearest</p>")
    out, _ = upscaling.run_extras(im, resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64,
                                  upscaling_crop=False, upscaler_1="Nearest")
    assert out.size == (128, 64)


def test_extras_none_upscaler_does_nothing():
    im = Image.new("RGB", (40, 20), "red")
    out, html = upscaling.run_extras(im)
    assert out.size == (40, 20) and html == "<p></p>"


def test_extras_second_upscaler_blends():
    im = _checker(16, 16)
    a, _ = upscaling.run_extras(im, upscaler_1="Nearest")
    b, _ = upscaling.run_extras(im, upscaler_1="Lanczos")
    mixed, html = upscaling.run_extras(im, upscaler_1="Nearest", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)
    assert html.endswith("Postprocess upscaler: Nearest, Postprocess upscaler 2: Lanczos</p>")
    assert mixed.tobytes() == Image.blend(a, b, 0.5).tobytes()
    same, html = upscaling.run_extras(im, upscaler_1="Nearest", upscaler_2="Lanczos")
    assert same.tobytes() == a.tobytes() and "upscaler 2" not in html


def test_extras_max_side_length():
    out, html = upscaling.run_extras(Image.new("RGB", (100, 50)), upscaler_1="Lanczos", upscaling_resize=4,
                                     max_side_length=200)
    assert out.size == (200, 96)
    assert "Max side length: 200" in html


@pytest.mark.parametrize("kwargs,error,match", [
    ({"gfpgan_visibility": 0.5}, errors.NotFound, "GFPGAN"),
    ({"codeformer_visibility": 1.0}, errors.NotFound, "CodeFormer"),
    ({"upscaler_1": "R-ESRGAN 4x+"}, errors.InvalidParameter, "R-ESRGAN 4x\\+"),
    ({"upscaler_1": "Lanczos", "upscaler_2": "SwinIR"}, errors.InvalidParameter, "SwinIR"),
    ({"resize_mode": 2}, errors.InvalidParameter, "resize_mode"),
    ({"upscaling_resize": 0}, errors.InvalidParameter, "upscaling_resize"),
    ({"resize_mode": 1, "upscaling_resize_w": 0}, errors.InvalidParameter, "upscaling_resize_w"),
])
def test_extras_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        upscaling.run_extras(Image.new("RGB", (8, 8)), **kwargs)


def test_html_escaping():
    assert upscaling.plaintext_to_html("a<b\nc") == "<p>a&lt;b<br>\nc</p>"
