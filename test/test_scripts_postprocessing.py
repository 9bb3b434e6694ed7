"""Extras postprocessing scripts (A1111's `scripts_postprocessing`): the runner, the built-in
scripts, an extension's script on `/sdapi/v1/extra-single-image`, and the order options."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from PIL import Image, ImageOps

from modules import scripts, scripts_postprocessing, upscaling

BUILTIN_ORDER = ["Upscale", "GFPGAN", "CodeFormer", "Auto focal point crop", "Auto-sized crop", "Caption",
                 "Create flipped copies", "Split oversized images"]

STAMP_SCRIPT = textwrap.dedent('''
    from PIL import ImageOps
    import gradio as gr
    from modules import scripts_postprocessing


    class StampSize(scripts_postprocessing.ScriptPostprocessing):
        """Inverts the image and writes the size it saw into the infotext (API args arrive as None)."""
        name = "Stamp size"
        order = 5000

        def ui(self):
            return {"note": gr.Textbox(label="Note", value="stamped")}

        def process(self, pp, note=None):
            pp.info["Stamp size"] = f"{pp.image.width}x{pp.image.height}"
            pp.info["Stamp note"] = note
            pp.image = ImageOps.invert(pp.image)
''')


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.broadcast_to((x + y) / 2, (h, w, 1))], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.fixture()
def opts(serena):
    saved = dict(serena.opts.data)
    yield serena.opts
    serena.opts.data.clear()
    serena.opts.data.update(saved)


@pytest.fixture()
def stamp_extension(serena, tmp_path):
    """The webui's scripts plus an extension folder holding the "Stamp size" postprocessing script."""
    from modules import paths
    ext = tmp_path / "sd-webui-stamp"
    (ext / "scripts").mkdir(parents=True)
    (ext / "scripts" / "stamp.py").write_text(STAMP_SCRIPT)
    try:
        scripts.load_scripts([paths.script_path, str(ext)])
        yield ext
    finally:
        scripts.load_scripts()


def _run(image: Image.Image, scripts_args: dict) -> list[scripts_postprocessing.PostprocessedImage]:
    runner = scripts_postprocessing.current_runner()
    return upscaling.postprocess_image(image, runner.create_args_for_run(scripts_args), runner)


def test_runner_lists_the_builtin_scripts_in_preferred_order(serena, opts):
    runner = scripts.scripts_postproc
    assert isinstance(runner, scripts_postprocessing.ScriptPostprocessingRunner)
    assert [s.name for s in runner.scripts_in_preferred_order()] == BUILTIN_ORDER
    assert "Simple Upscale" in [s.name for s in runner.scripts]  # loaded, but main-UI only
    upscale = next(s for s in runner.scripts_in_preferred_order() if s.name == "Upscale")
    runner.create_args_for_run({})
    assert list(upscale.controls) == ["upscale_enabled", "upscale_mode", "upscale_by", "max_side_length",
                                      "upscale_to_width", "upscale_to_height", "upscale_crop", "upscaler_1_name",
                                      "upscaler_2_name", "upscaler_2_visibility"]
    opts.data["postprocessing_disable_in_extras"] = ["Caption", "GFPGAN"]
    assert [s.name for s in runner.scripts_in_preferred_order()] == [
        n for n in BUILTIN_ORDER if n not in ("Caption", "GFPGAN")]


def test_extension_script_runs_on_extra_single_image(stamp_extension):
    from fastapi.testclient import TestClient

    from modules import shared
    from modules.api.app import build_app
    image = _gradient(32, 24)
    with TestClient(build_app(shared.cmd_opts), raise_server_exceptions=False) as client:
        r = client.post("/sdapi/v1/extra-single-image", json={
            "image": _b64(image), "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["html_info"] == ("<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos, "
                                 "Stamp size: 64x48</p>")  # the extension ran after Upscale, note None
    out = Image.open(_bytes(body["image"])).convert("RGB")
    expected = ImageOps.invert(upscaling.upscale_image(image, "Lanczos", scale=2))
    assert out.tobytes() == expected.tobytes()


def test_operation_order_option_changes_processing_order(stamp_extension, opts):
    image = _gradient(32, 24)
    args = {"Upscale": {"upscale_enabled": True, "upscale_mode": 0, "upscale_by": 2.0, "max_side_length": 0,
                        "upscaler_1_name": "Nearest", "upscaler_2_name": "None"},
            "Stamp size": {"note": "x"}}
    (pp,) = _run(image, args)
    assert pp.info["Stamp size"] == "64x48"
    opts.data["postprocessing_operation_order"] = ["Stamp size", "Upscale"]
    runner = scripts.scripts_postproc
    assert [s.name for s in runner.scripts_in_preferred_order()][:2] == ["Stamp size", "Upscale"]
    (pp,) = _run(image, args)
    assert list(pp.info)[:2] == ["Stamp size", "Stamp note"] and pp.info["Stamp size"] == "32x24"
    assert pp.image.tobytes() == upscaling.upscale_image(ImageOps.invert(image), "Nearest", scale=2).tobytes()
    opts.data["postprocessing_disable_in_extras"] = ["Stamp size"]
    out, html = upscaling.run_extras(image, upscaler_1="Nearest")
    assert "Stamp" not in html and out.size == (64, 48)


def test_flipped_copies_are_extra_images(serena):
    image = _gradient(24, 16)
    entries = _run(image, {"Create flipped copies": {"enable": True, "option": ["Both", "Horizontal", "Vertical"]}})
    assert [e.image.tobytes() for e in entries] == [
        image.tobytes(), ImageOps.mirror(image).tobytes(), ImageOps.flip(image).tobytes(),
        image.rotate(180).tobytes()]
    images, html = upscaling.run_extras_images(image)  # the API's request leaves the script off
    assert len(images) == 1 and html == "<p></p>"


def test_split_oversized_cuts_overlapping_tiles_to_the_target(serena):
    image = _gradient(64, 256)
    entries = _run(image, {
        "Upscale": {"upscale_enabled": True, "upscale_mode": 1, "upscale_to_width": 64, "upscale_to_height": 64,
                    "upscaler_1_name": "None"},
        "Split oversized images": {"enable": True, "split_threshold": 0.5, "overlap_ratio": 0.2},
    })
    # ceil((256 - 64·0.2) / (64·0.8)) = 5 tiles, spread evenly: tops 0, 48, 96, 144, 192
    assert [e.image.tobytes() for e in entries] == [image.crop((0, y, 64, y + 64)).tobytes()
                                                    for y in (0, 48, 96, 144, 192)]
    wide = _gradient(200, 50)
    entries = _run(wide, {"Upscale": {"upscale_mode": 1, "upscale_to_width": 100, "upscale_to_height": 100},
                          "Split oversized images": {"enable": True, "split_threshold": 0.5, "overlap_ratio": 0}})
    scaled = wide.resize((400, 100))
    assert [e.image.tobytes() for e in entries] == [scaled.crop((x, 0, x + 100, 100)).tobytes()
                                                    for x in (0, 100, 200, 300)]


def test_focal_crop_follows_edges_and_entropy_without_a_face_model(serena):
    image = Image.new("RGB", (128, 64), (0, 0, 0))
    for x in range(96, 128, 8):  # detail only at the right end
        for y in range(8, 48, 8):
            if (x // 8 + y // 8) % 2:
                image.paste((255, 255, 255), (x, y, x + 8, y + 8))
    entries = _run(image, {
        "Upscale": {"upscale_mode": 1, "upscale_to_width": 64, "upscale_to_height": 64, "upscaler_1_name": "None"},
        "Auto focal point crop": {"enable": True, "face_weight": 0.9, "entropy_weight": 0.15, "edges_weight": 0.5,
                                  "debug": True},
    })
    assert entries[0].image.tobytes() == image.crop((64, 0, 128, 64)).tobytes()
    debug = entries[1]
    assert debug.image.size == (128, 64) and debug.disable_processing and debug.nametags == ["focal-crop-debug"]


def test_caption_is_refused_clearly(serena):
    with pytest.raises(Exception, match="interrogator model"):
        _run(_gradient(8, 8), {"Caption": {"enable": True, "option": ["BLIP"]}})


def test_repeated_upscale_comes_from_the_cache_unchanged(serena):
    image = _gradient(24, 16)
    scripts_postprocessing.current_runner().image_changed()  # Upscale's image_changed empties the cache
    first, html = upscaling.run_extras(image, upscaler_1="Lanczos", upscaling_resize=2)
    expected = first.tobytes()
    first.paste((255, 0, 0), (0, 0, 8, 8))  # a caller changing its result must not reach the cache
    second, html2 = upscaling.run_extras(image, upscaler_1="Lanczos", upscaling_resize=2)
    assert second.tobytes() == expected and html2 == html


def test_postprocessed_image_suffixes_and_copies():
    pp = scripts_postprocessing.PostprocessedImage(Image.new("RGB", (4, 4)))
    pp.info["a"] = 1
    copy = pp.create_copy(Image.new("RGB", (2, 2)), nametags=["flip"], disable_processing=True)
    assert copy.shared is pp.shared and copy.info == {"a": 1} and copy.info is not pp.info
    used: dict = {}
    assert [pp.get_suffix(used), pp.get_suffix(used), copy.get_suffix(used), copy.get_suffix(used)] == [
        "", "-1", "-flip", "-flip-1"]


def _b64(image: Image.Image) -> str:
    import base64
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _bytes(b64: str):
    import base64
    import io
    return io.BytesIO(base64.b64decode(b64))
