"""Unmodified-style A1111 extensions, end to end (issue 10, "What it must show").

Two small extensions written here in A1111's layout are installed into the session data folder's
`extensions/`, the way a user copies them in:

- `sd-webui-serena-test`: a `preload.py` flag (`--wildcards-dir`), an `install.py`, a sibling module
  imported by bare name, a setting added in `on_ui_settings`, an `on_cfg_denoiser` hook driven by
  that setting, a route added in `on_app_started`, and an AlwaysVisible script whose `ui()` is
  written with Gradio 3 idioms (`gr.Box`, `.style()`, `gr.Button.update`, `_js=`) and which has
  infotext fields;
- `sd-webui-broken`: a script that raises on import.

They are driven through the API, the UI handlers and the CLI, and their effect is asserted on the
images and infotexts.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import sys
import textwrap

import pytest
from PIL import Image, ImageChops, ImageOps

from modules import cmd_args, extensions, scripts, shared

EXT_NAME = "sd-webui-serena-test"
BROKEN_NAME = "sd-webui-broken"
TITLE = "Serena test"

PRELOAD = """
    def preload(parser):
        parser.add_argument("--wildcards-dir", type=str, default=None, help="folder of wildcard files")
"""

INSTALL = """
    import os
    import launch

    if not launch.is_installed("pip"):
        launch.run_pip("install pip", "pip")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "install-runs.txt"), "a") as f:
        f.write("ran\\n")
"""

HELPERS = """
    NOTE_LABEL = "Serena test note"
"""

SCRIPT = """
    import gradio as gr
    from PIL import ImageOps

    import serena_test_helpers  # a sibling module in the extension's root, imported by bare name
    from modules import script_callbacks, scripts, shared
    from modules.processing import StableDiffusionProcessing  # noqa: F401  (as extensions import it)


    def on_ui_settings():
        section = ("serena_test", "Serena test")
        shared.opts.add_option("serena_test_latent_scale", shared.OptionInfo(
            1.0, "Scale the latent before each denoiser call", gr.Slider,
            {"minimum": 0.0, "maximum": 2.0, "step": 0.05}, section=section).info("1 = off"))


    def on_cfg_denoiser(params):
        scale = shared.opts.serena_test_latent_scale
        if scale != 1.0:
            params.x = params.x * scale


    def on_app_started(demo, app):
        @app.get("/serena-test/info")
        def info():
            return {"wildcards_dir": shared.cmd_opts.wildcards_dir, "with_ui": demo is not None}


    def on_ui_tabs():
        with gr.Blocks(analytics_enabled=False) as tab:
            with gr.Row().style(equal_height=True):
                gr.Textbox("hello from the extension's tab", elem_id="serena_test_tab_text")
        return [(tab, "Serena test", "serena_test_tab")]


    script_callbacks.on_ui_settings(on_ui_settings)
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
    script_callbacks.on_app_started(on_app_started)


    class SerenaTestScript(scripts.Script):
        def title(self):
            return "Serena test"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            with gr.Box():
                with gr.Row().style(equal_height=True):
                    enabled = gr.Checkbox(False, label="Enable", elem_id=self.elem_id("enabled"))
                    note = gr.Textbox("", label="Note", elem_id=self.elem_id("note")).style(container=False)
                hide = gr.Button("Hide").style(full_width=False)
                hide.click(fn=lambda: gr.Button.update(visible=False), outputs=[hide], _js="() => {}")
            self.infotext_fields = [(enabled, lambda d: serena_test_helpers.NOTE_LABEL in d),
                                    (note, serena_test_helpers.NOTE_LABEL)]
            return [enabled, note]

        def process(self, p, enabled, note):
            if enabled:
                p.extra_generation_params[serena_test_helpers.NOTE_LABEL] = note

        def postprocess_image(self, p, pp, enabled, note):
            if enabled:
                pp.image = ImageOps.invert(pp.image.convert("RGB"))
"""

BROKEN = """
    import a_module_serena_does_not_have  # noqa: F401
"""

from serena_flags import TEST_FLAGS  # noqa: E402  (as test/conftest.py's session runtime)

BASE = {"prompt": "a red cube", "seed": 7, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler",
        "override_settings": {"add_version_to_infotext": False}}


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf8") as f:
        f.write(textwrap.dedent(text).lstrip())


def install_extensions(root: str) -> None:
    ext = os.path.join(root, EXT_NAME)
    write(os.path.join(ext, "preload.py"), PRELOAD)
    write(os.path.join(ext, "install.py"), INSTALL)
    write(os.path.join(ext, "serena_test_helpers.py"), HELPERS)
    write(os.path.join(ext, "scripts", "serena_test.py"), SCRIPT)
    write(os.path.join(root, BROKEN_NAME, "scripts", "broken.py"), BROKEN)


@pytest.fixture(scope="module")
def installed(api_runtime, serena_data_dir):
    """The two extensions copied into `<data>/extensions/`, then Serena's extension start-up:
    flags parsed with the extensions' preload, install.py run, scripts loaded. Undone afterwards."""
    import webui
    root = os.path.join(serena_data_dir, "extensions")
    install_extensions(root)
    saved_opts = shared.cmd_opts
    shared.cmd_opts = cmd_args.parse(["--data-dir", serena_data_dir, *TEST_FLAGS, "--wildcards-dir", "/srv/wildcards"],
                                     environ={})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        webui.load_extensions()
        webui.load_extensions()  # a second start: install.py does not run again, nothing is doubled
    finally:
        logging.getLogger().removeHandler(handler)
    yield {"root": root, "log": "\n".join(r.getMessage() for r in records)}
    for name in (EXT_NAME, BROKEN_NAME):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    sys.modules.pop("serena_test_helpers", None)
    shared.cmd_opts = saved_opts
    extensions.list_extensions()
    scripts.load_scripts()
    shared.opts.data_labels.pop("serena_test_latent_scale", None)
    shared.opts.data.pop("serena_test_latent_scale", None)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def txt2img(client, **fields) -> dict:
    response = client.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_install_preload_and_a_broken_extension(installed):
    ext = os.path.join(installed["root"], EXT_NAME)
    with open(os.path.join(ext, "install-runs.txt"), encoding="utf8") as f:
        assert f.read() == "ran\n"  # once, although the extensions were loaded twice
    assert shared.cmd_opts.wildcards_dir == "/srv/wildcards"  # the preload.py flag parsed
    assert "broken.py" in installed["log"] and "a_module_serena_does_not_have" in installed["log"]
    assert "Traceback" in installed["log"]
    titles = [s.title() for s in scripts.scripts_txt2img.alwayson_scripts]
    assert titles.count(TITLE) == 1


def test_api_alwayson_script_changes_image_and_infotext(installed, client):
    plain = txt2img(client)
    on = txt2img(client, alwayson_scripts={"serena test": {"args": [True, "hello"]}})
    info = json.loads(on["info"])
    assert "Serena test note: hello" in info["infotexts"][0]
    assert "Serena test note" not in json.loads(plain["info"])["infotexts"][0]
    expected = ImageOps.invert(decode(plain["images"][0]).convert("RGB"))
    assert ImageChops.difference(decode(on["images"][0]).convert("RGB"), expected).getbbox() is None
    # Not named in the request: the script still runs, with its defaults (disabled)
    assert decode(txt2img(client)["images"][0]).tobytes() == decode(plain["images"][0]).tobytes()


def test_setting_from_on_ui_settings_drives_the_cfg_denoiser_hook(installed, client):
    options = client.get("/sdapi/v1/options").json()
    assert options["serena_test_latent_scale"] == 1.0
    plain = decode(txt2img(client)["images"][0])
    scaled = decode(txt2img(client, override_settings={**BASE["override_settings"],
                                                       "serena_test_latent_scale": 0.5})["images"][0])
    assert ImageChops.difference(plain.convert("RGB"), scaled.convert("RGB")).getbbox() is not None
    again = decode(txt2img(client)["images"][0])  # the override was this job's only
    assert again.tobytes() == plain.tobytes()


def test_script_listing_and_info(installed, client):
    listed = client.get("/sdapi/v1/scripts").json()
    assert "serena test" in listed["txt2img"] and "serena test" in listed["img2img"]
    info = next(x for x in client.get("/sdapi/v1/script-info").json()
                if x["name"] == "serena test" and not x["is_img2img"])
    assert info["is_alwayson"] is True
    assert [(a["label"], a["value"]) for a in info["args"]] == [("Enable", False), ("Note", "")]


def test_ui_handler_passes_the_script_controls(installed):
    from modules import ui_handlers
    runner = scripts.scripts_txt2img
    script = next(s for s in runner.alwayson_scripts if s.title() == TITLE)
    script_values = runner.default_script_args()
    script_values[script.args_from:script.args_to] = [True, "from the ui"]
    values = {"prompt": BASE["prompt"], "negative_prompt": "", "styles": [], "sampler_name": "Euler",
              "scheduler": "Automatic", "steps": 2, "width": 64, "height": 64, "n_iter": 1, "batch_size": 1,
              "cfg_scale": 7.0, "seed": 7, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
              "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7,
              **ui_handlers.FIELD_DEFAULTS}
    images, infotext, *_ = ui_handlers.txt2img(None, *(values[k] for k in ui_handlers.TXT2IMG_FIELDS),
                                                 *script_values)
    assert "Serena test note: from the ui" in infotext
    assert len(images) == 1


def test_cli_runs_the_extension_script(installed, tmp_path, monkeypatch, capsys):
    import webui
    from modules import cli
    monkeypatch.setattr(webui, "initialize", lambda *a, **k: None)
    out = tmp_path / "out"
    code = cli.main(["--prompt", "a red cube", "--seed", "7", "--steps", "2", "--width", "64", "--height", "64",
                     "--alwayson-scripts", json.dumps({"Serena test": {"args": [True, "from the cli"]}}),
                     "--outdir", str(out)])
    assert code == 0, capsys.readouterr().err
    saved = [p for p in os.listdir(out) if p.endswith(".png")]
    assert len(saved) == 1
    with Image.open(out / saved[0]) as image:
        assert "Serena test note: from the cli" in image.info["parameters"]


def test_route_from_on_app_started_is_served_behind_the_api_auth(installed, serena_data_dir):
    from fastapi.testclient import TestClient

    import webui
    saved = shared.cmd_opts
    shared.cmd_opts = cmd_args.parse(["--data-dir", serena_data_dir, *TEST_FLAGS, "--nowebui",
                                      "--api-auth", "alice:secret", "--wildcards-dir", "/srv/wildcards"], environ={})
    try:
        with TestClient(webui.create_app()) as c:
            assert c.get("/serena-test/info").status_code == 401
            assert c.get("/serena-test/info", auth=("alice", "wrong")).status_code == 401
            ok = c.get("/serena-test/info", auth=("alice", "secret"))
            assert ok.status_code == 200 and ok.json() == {"wildcards_dir": "/srv/wildcards", "with_ui": False}
    finally:
        shared.cmd_opts = saved


def test_route_from_on_app_started_is_not_shadowed_by_the_ui(installed, serena_data_dir):
    from fastapi.testclient import TestClient

    import webui
    saved = shared.cmd_opts
    shared.cmd_opts = cmd_args.parse(["--data-dir", serena_data_dir, *TEST_FLAGS,
                                      "--wildcards-dir", "/srv/wildcards"], environ={})
    try:
        with TestClient(webui.create_app()) as c:
            ok = c.get("/serena-test/info")
            assert ok.status_code == 200 and ok.json()["with_ui"] is True
            assert c.get("/").status_code == 200  # the UI (with the script's Gradio 3 controls) is served
            config = c.get("/config").json()
            elem_ids = {comp.get("props", {}).get("elem_id") for comp in config["components"]}
            assert "serena_test_tab_text" in elem_ids  # the on_ui_tabs tab
            assert "script_txt2img_serena_test_note" in elem_ids  # the AlwaysVisible script's control
    finally:
        shared.cmd_opts = saved


def test_pasting_an_infotext_fills_the_scripts_infotext_fields(installed):
    from modules import ui_handlers
    runner = scripts.scripts_txt2img
    fields = [(c, key) for c, key in runner.infotext_fields
              if getattr(c, "elem_id", "") and "serena_test" in c.elem_id]
    assert len(fields) == 2
    text = "a red cube\nSteps: 2, Sampler: Euler, Seed: 7, Size: 64x64, Serena test note: pasted"
    assert ui_handlers.paste_script_fields(text, fields) == [True, "pasted"]
    unchanged = ui_handlers.paste_script_fields("a red cube\nSteps: 2, Seed: 7", fields)
    assert unchanged[0] is False  # the function says the note is absent
    assert unchanged[1] == {"__type__": "update"}  # no note in the infotext: the control keeps its value
