"""Idioms of real, public A1111 extensions that broke on Serena (issue 10, verification).

Each test installs a tiny extension written here that reproduces one idiom seen in a popular
extension (not that extension's code), the way a user copies an extension into `extensions/`:

- a script's `ui()` wires buttons to the tab's own Width/Height sliders, which it kept from
  `after_component(elem_id="txt2img_width")` (aspect-ratio helpers do this). Scripts' UIs are also
  built for the API's argument layout, where the tab has no such controls: they must find stand-ins
  there, and an event wired to None must fail inside that `ui()` only (as in Gradio 3), not break
  every script's UI when the Blocks closes; its slider is the legacy `gr.inputs.Slider(default=…)`
  and one button a subclass of `ui_components.ToolButton` (sd-webui-ar's ARButton idiom);
- a script reads A1111's folder flags as paths at import (`Path(shared.cmd_opts.embeddings_dir)`)
  and imports its siblings as `scripts.<module>` (tag-autocomplete does both);
- a script registers a wrapped sampler in `sd_samplers.all_samplers_map` whose constructor puts its
  own `CFGDenoiserKDiffusion` subclass, built A1111's way from the sampler alone, in
  `model_wrap_cfg`, overriding `combine_denoised` (dynamic-thresholding does this); it also
  subclasses `sd_samplers_compvis.VanillaStableDiffusionSampler` at import;
- a selectable img2img script upscales the input with the chosen entry of `shared.sd_upscalers`
  through `upscaler.scaler.upscale(image, scale, upscaler.data_path)` before redrawing it
  (Ultimate SD upscale does this);
- an extension adds a tab with `on_ui_tabs`, using `modules.ui.create_refresh_button` (the model
  converter does this).
"""
from __future__ import annotations

import logging
import os
import sys
import textwrap

import pytest

from modules import cmd_args, extensions, options, paths, script_callbacks, scripts, shared
from test_processing_helpers import env  # noqa: F401  (module-scoped model, for the job test)

CAPTURE_SCRIPT = """
    import gradio as gr
    from modules import scripts
    from modules.ui_components import ToolButton

    class ScaleButton(ToolButton):
        def __init__(self, factor=2, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

    class SizeButtons(scripts.Script):
        def __init__(self):
            self.width = self.height = None

        def title(self):
            return "Size buttons"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            with gr.Accordion("Size buttons", open=False):
                factor = gr.inputs.Slider(minimum=0.5, maximum=2, step=0.5, default=2, label="Factor")
                self.scale_button = ScaleButton(factor=3, value="x3")
                self.scale_button.click(
                    fn=lambda w, h: (w * self.scale_button.factor, h * self.scale_button.factor),
                    inputs=[self.width, self.height],
                    outputs=[self.width, self.height],
                )
                gr.Button(value="Scale").click(
                    fn=lambda w, h, f: (int(w * f), int(h * f)),
                    inputs=[self.width, self.height, factor],
                    outputs=[self.width, self.height],
                )
            return [factor]

        def after_component(self, component, **kwargs):
            tab = "img2img" if self.is_img2img else "txt2img"
            if kwargs.get("elem_id") == f"{tab}_width" and isinstance(component, gr.components.Slider):
                self.width = component
            elif kwargs.get("elem_id") == f"{tab}_height" and isinstance(component, gr.components.Slider):
                self.height = component
"""

NONE_EVENT_SCRIPT = """
    import gradio as gr
    from modules import scripts

    class NoneWired(scripts.Script):
        def title(self):
            return "None wired"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            box = gr.Textbox(label="Never wired")
            gr.Button(value="Broken").click(fn=lambda x: x, inputs=[box], outputs=[None])
            return [box]
"""

GUIDANCE_SCRIPT = """
    import gradio as gr
    from modules import scripts, sd_samplers, sd_samplers_common, sd_samplers_compvis
    from modules.sd_samplers_kdiffusion import CFGDenoiserKDiffusion

    CALLS = []

    class LegacySampler(sd_samplers_compvis.VanillaStableDiffusionSampler):
        pass

    class HalfGuidance(CFGDenoiserKDiffusion):
        def __init__(self, sampler):
            super().__init__(sampler)

        def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
            CALLS.append(self.step)
            return super().combine_denoised(x_out, conds_list, uncond, cond_scale * 0.5)

    class GuidanceSwap(scripts.Script):
        def title(self):
            return "Guidance swap"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            return [gr.Checkbox(value=False, label="Halve guidance")]

        def process_batch(self, p, enabled, **kwargs):
            if not enabled:
                return
            original = sd_samplers.all_samplers_map[p.sampler_name]

            def constructor(model):
                sampler = original.constructor(model)
                sampler.model_wrap_cfg = HalfGuidance(sampler)
                return sampler

            name = p.sampler_name + "_half"
            sd_samplers.all_samplers_map[name] = sd_samplers_common.SamplerData(
                name, constructor, original.aliases, original.options)
            p.orig_sampler_name, p.sampler_name = p.sampler_name, name
            p.extra_generation_params["Halved guidance"] = True

        def postprocess_batch(self, p, enabled, **kwargs):
            if enabled:
                del sd_samplers.all_samplers_map[p.sampler_name]
                p.sampler_name = p.orig_sampler_name
"""

UPSCALE_SCRIPT = """
    import gradio as gr
    from modules import processing, scripts, shared

    class UpscaleFirst(scripts.Script):
        def title(self):
            return "Upscale first"

        def show(self, is_img2img):
            return is_img2img

        def ui(self, is_img2img):
            names = [x.name for x in shared.sd_upscalers]
            return [gr.Radio(label="Upscaler", choices=names, value=names[0], type="index")]

        def run(self, p, upscaler_index):
            upscaler = shared.sd_upscalers[upscaler_index]
            image = upscaler.scaler.upscale(p.init_images[0], 2, upscaler.data_path)
            p.init_images = [image]
            p.width, p.height = image.size
            p.extra_generation_params["Upscaled with"] = upscaler.scaler.name
            return processing.process_images(p)
"""

TAB_SCRIPT = """
    import gradio as gr
    from modules import script_callbacks, sd_models
    from modules.ui import create_refresh_button

    def add_tab():
        with gr.Blocks(analytics_enabled=False) as tab:
            with gr.Row().style(equal_height=False):
                model = gr.Dropdown(sd_models.checkpoint_tiles(), elem_id="converter_tab_model", label="Model")
                create_refresh_button(model, sd_models.list_models,
                                      lambda: {"choices": sd_models.checkpoint_tiles()}, "converter_tab_refresh")
        return [(tab, "Converter", "converter_tab")]

    script_callbacks.on_ui_tabs(add_tab)
"""

SIBLING_HELPER = """
    from pathlib import Path

    from modules import scripts, shared

    TAGS = Path(scripts.basedir()).joinpath("tags")
    EMBEDDINGS = Path(shared.cmd_opts.embeddings_dir).absolute()
    HYPERNETWORKS = Path(shared.cmd_opts.hypernetwork_dir).absolute()
    LORAS = Path(shared.cmd_opts.lora_dir).absolute()
"""

SIBLING_SCRIPT = """
    from modules import script_callbacks, shared

    from scripts.folder_paths import EMBEDDINGS, HYPERNETWORKS, LORAS, TAGS

    FOUND = {"embeddings": str(EMBEDDINGS), "hypernetworks": str(HYPERNETWORKS), "loras": str(LORAS),
             "tags": str(TAGS)}

    def on_ui_settings():
        shared.opts.add_option("folder_probe_tags", shared.OptionInfo(str(TAGS), "Tags folder",
                                                                      section=("probe", "Probe")))

    script_callbacks.on_ui_settings(on_ui_settings)
"""

HELPERS = ("converter_tab.py", "upscale_first.py", "guidance_swap.py", "size_buttons.py", "none_wired.py", "folder_probe.py", "folder_paths.py", "scripts.folder_paths")


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf8") as f:
        f.write(textwrap.dedent(text).lstrip())


@pytest.fixture()
def ext_data(tmp_path, monkeypatch):
    """A data folder with the idiom extensions; shared paths/options/flags pointed at it, and the
    scripts, modules and callbacks they register dropped afterwards."""
    data = str(tmp_path / "data")
    ext = os.path.join(data, "extensions")
    write(os.path.join(ext, "size-buttons", "scripts", "size_buttons.py"), CAPTURE_SCRIPT)
    write(os.path.join(ext, "none-wired", "scripts", "none_wired.py"), NONE_EVENT_SCRIPT)
    write(os.path.join(ext, "folder-probe", "scripts", "folder_paths.py"), SIBLING_HELPER)
    write(os.path.join(ext, "guidance-swap", "scripts", "guidance_swap.py"), GUIDANCE_SCRIPT)
    write(os.path.join(ext, "upscale-first", "scripts", "upscale_first.py"), UPSCALE_SCRIPT)
    write(os.path.join(ext, "converter-tab", "scripts", "converter_tab.py"), TAB_SCRIPT)
    write(os.path.join(ext, "folder-probe", "scripts", "folder_probe.py"), SIBLING_SCRIPT)
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(data))
    monkeypatch.setattr(shared, "opts", options.Options())
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", data, "--skip-install"], environ={}))
    saved = (list(scripts.scripts_data), scripts.scripts_txt2img, scripts.scripts_img2img)
    yield data
    for name in HELPERS:
        sys.modules.pop(name, None)
    scripts.scripts_data[:] = saved[0]
    scripts.scripts_txt2img, scripts.scripts_img2img = saved[1], saved[2]
    monkeypatch.undo()
    extensions.list_extensions()
    for callbacks in script_callbacks.callback_map.values():
        callbacks[:] = [c for c in callbacks if not c.script.startswith(data)]


def load():
    import webui
    webui.load_extensions()


def _script(runner, title):
    return next(s for s in runner.scripts if s.title() == title)


def test_script_wiring_the_tabs_size_sliders_gets_its_controls_in_the_api_layout(ext_data):
    load()
    for runner, tab in ((scripts.scripts_txt2img, "txt2img"), (scripts.scripts_img2img, "img2img")):
        script = _script(runner, "Size buttons")
        assert script.width is not None and script.width.elem_id == f"{tab}_width"
        assert script.height is not None and script.height.elem_id == f"{tab}_height"
        assert script.args_to - script.args_from == 1  # its Factor slider is an argument
        assert runner.default_script_args()[script.args_from] == 2  # gr.inputs' `default=` is the value
        # a subclass of A1111's ToolButton keeps its own argument and renders as Gradio's button
        assert script.scale_button.factor == 3
        assert script.scale_button.get_block_name() == "button"


def test_event_wired_to_none_fails_in_that_ui_only(ext_data, caplog):
    with caplog.at_level(logging.ERROR):
        load()
    assert "Error creating UI for none wired" in caplog.text
    broken = _script(scripts.scripts_txt2img, "None wired")
    assert broken.args_to == broken.args_from  # its controls are left out
    sized = _script(scripts.scripts_txt2img, "Size buttons")
    assert sized.args_to - sized.args_from == 1  # the other scripts' UIs are intact


def test_folder_flags_have_a1111_defaults_and_scripts_package_imports_work(ext_data):
    load()
    module = sys.modules["folder_probe.py"]  # a script module is named after its file
    data = shared.data_paths
    assert module.FOUND == {
        "embeddings": os.path.join(data.data_path, "embeddings"),
        "hypernetworks": os.path.join(data.models_path, "hypernetworks"),
        "loras": os.path.join(data.models_path, "Lora"),
        "tags": os.path.join(ext_data, "extensions", "folder-probe", "tags"),
    }
    assert shared.opts.folder_probe_tags == module.FOUND["tags"]


def test_folder_flags_given_on_the_command_line_are_kept(tmp_path):
    given = str(tmp_path / "emb")
    ns = cmd_args.parse(["--data-dir", str(tmp_path), "--embeddings-dir", given], environ={})
    assert ns.embeddings_dir == given
    assert ns.lora_dir == os.path.join(str(tmp_path), "models", "Lora")


def _run(runner, enabled: bool):
    from modules import processing
    script = _script(runner, "Guidance swap")
    args = runner.default_script_args()
    args[script.args_from] = enabled
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="a red cube", seed=3, steps=3, width=64, height=64, cfg_scale=9, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True)
    p.scripts, p.script_args = runner, args
    shared.state.begin("test")
    try:
        return processing.process_images(p)
    finally:
        shared.state.end()
        shared.state.reset()


def test_script_sampler_with_its_own_cfg_denoiser_changes_the_image(env, ext_data):  # noqa: F811
    import numpy as np
    load()
    calls = sys.modules["guidance_swap.py"].CALLS
    plain = _run(scripts.scripts_txt2img, False)
    assert calls == []
    halved = _run(scripts.scripts_txt2img, True)
    assert calls == [0, 1, 2]  # the subclass guided every step, with the sampler's step counter
    assert "Halved guidance: True" in halved.infotexts[0]
    assert "Sampler: Euler," in halved.infotexts[0]  # the wrapped sampler is put back afterwards
    difference = np.abs(np.asarray(plain.images[0], dtype=np.int16) - np.asarray(halved.images[0], dtype=np.int16))
    assert difference.max() > 0
    from modules import sd_samplers
    assert "Euler_half" not in sd_samplers.all_samplers_map


def test_script_upscales_through_the_upscaler_entrys_scaler(env, ext_data):  # noqa: F811
    from PIL import Image

    from modules import processing
    load()
    runner = scripts.scripts_img2img
    script = _script(runner, "Upscale first")
    args = runner.default_script_args()
    args[0] = runner.selectable_scripts.index(script) + 1
    args[script.args_from] = [u.name for u in shared.sd_upscalers].index("Lanczos")
    p = processing.StableDiffusionProcessingImg2Img(
        init_images=[Image.new("RGB", (64, 64), (200, 40, 40))], prompt="a red cube", seed=3, steps=2,
        width=64, height=64, denoising_strength=0.3, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True)
    p.scripts, p.script_args = runner, args
    shared.state.begin("test")
    try:
        processed = runner.run(p, *args)  # a selectable script's run() is the job (A1111's img2img())
    finally:
        shared.state.end()
        shared.state.reset()
    assert processed.images[0].size == (128, 128)
    assert "Upscaled with: Lanczos" in processed.infotexts[0]


def test_extension_tab_with_a_refresh_button_is_in_the_page(env, ext_data, caplog):  # noqa: F811
    from modules import ui
    load()
    assert "Error loading script" not in caplog.text, caplog.text
    blocks = ui.create_ui()
    ids = {c.get("props", {}).get("elem_id") for c in blocks.get_config_file()["components"]}
    assert {"tab_converter_tab", "converter_tab_model", "converter_tab_refresh"} <= ids
