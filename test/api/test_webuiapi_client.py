"""A1111's real Python client (webuiapi 0.9.17) against a Serena server on 127.0.0.1."""
from __future__ import annotations

import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(120)

webuiapi = pytest.importorskip("webuiapi")


@pytest.fixture(scope="module")
def api(server):
    host, port = server
    return webuiapi.WebUIApi(host=host, port=port, sampler="Euler a", steps=2)


def test_txt2img(api):
    result = api.txt2img(prompt="a lighthouse", seed=17, width=64, height=64, cfg_scale=7)
    assert len(result.images) == 1 and result.image.size == (64, 64)
    assert result.info["seed"] == 17 and result.info["sampler_name"] == "Euler a"
    assert "Seed: 17" in result.image.info["parameters"]
    assert result.parameters["prompt"] == "a lighthouse"


def test_img2img_with_mask(api):
    init = Image.new("RGB", (64, 64), (30, 120, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    result = api.img2img(images=[init], mask_image=mask, prompt="a boat", seed=3, width=64, height=64,
                         denoising_strength=0.6, inpaint_full_res=False)
    assert result.image.size == (64, 64)
    assert result.info["seed"] == 3


def test_png_info(api):
    image = api.txt2img(prompt="png info", seed=8, width=64, height=64).image
    info = api.png_info(image)
    assert info.parameters["Seed"] == "8" and "Seed: 8" in info.info


def test_options_round_trip(api):
    original = api.get_options()["send_seed"]
    api.set_options({"send_seed": not original})
    assert api.get_options()["send_seed"] is (not original)
    api.set_options({"send_seed": original})
    assert api.get_options()["send_seed"] is original


def test_listings(api):
    assert "Euler a" in api.util_get_sampler_names()
    assert any("serena-demo-tiny" in name for name in api.util_get_model_names())
    assert api.get_sd_models()[0]["title"]
    assert "automatic" in api.util_get_scheduler_names()
    assert [u["name"] for u in api.get_upscalers()][:3] == ["None", "Lanczos", "Nearest"]
    assert api.get_progress()["progress"] == 0
    scripts = api.get_scripts()
    assert isinstance(scripts["txt2img"], list) and isinstance(scripts["img2img"], list)


def test_extras(api):
    result = api.extra_single_image(image=Image.new("RGB", (32, 32), "green"), upscaler_1="Lanczos",
                                    upscaling_resize=2)
    assert result.image.size == (64, 64)


def test_auth(api_runtime):
    """webuiapi.set_auth against a server started with --api-auth."""
    from modules import cmd_args
    from modules.api.app import build_app, serve
    from api_helpers import free_port
    flags = cmd_args.parse(["--api-auth", "user:pass"], environ={})
    port = free_port()
    srv = serve(build_app(flags), "127.0.0.1", port, background=True)
    try:
        anonymous = webuiapi.WebUIApi(host="127.0.0.1", port=port)
        with pytest.raises(Exception):
            anonymous.get_options()["send_seed"]
        authed = webuiapi.WebUIApi(host="127.0.0.1", port=port, username="user", password="pass")
        assert "send_seed" in authed.get_options()
    finally:
        srv.should_exit = True
