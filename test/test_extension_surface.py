"""The module surface A1111 v1.10 extensions import (issue 10, item 2).

First a table: every module/name imported the way extensions write it, each must exist. Then one
test per name whose behaviour a user (an extension author) would notice. Model-dependent checks
use the demo checkpoint (`env` from test_processing_helpers).
"""
from __future__ import annotations

import importlib
import logging

import pytest
from PIL import Image

from test_processing_helpers import env, fresh_state  # noqa: F401  (fixtures)

# (module, names) as extensions import them: `from <module> import <name>`
SURFACE = [
    ("modules.sd_hijack", ["model_hijack", "StableDiffusionModelHijack"]),
    ("modules.sd_samplers_compvis", ["CompVisSampler", "samplers_data_timesteps"]),
    ("modules.sd_samplers_kdiffusion", ["CFGDenoiserKDiffusion", "KDiffusionSampler", "samplers_k_diffusion"]),
    ("modules.sd_samplers_timesteps", ["CFGDenoiserTimesteps", "CompVisSampler"]),
    ("modules.sd_samplers_common", ["SamplerData", "InterruptedException", "sample_to_image", "single_sample_to_image",
                                    "samples_to_image_grid", "images_tensor_to_samples", "store_latent",
                                    "approximation_indexes"]),
    ("modules.sd_samplers", ["all_samplers", "all_samplers_map", "samplers", "samplers_for_img2img",
                             "find_sampler_config", "create_sampler", "set_samplers", "visible_sampler_names"]),
    ("modules.sd_vae", []),
    ("modules.extra_networks", []),
    ("modules.ui_components", ["ToolButton", "ResizeHandleRow", "FormRow", "FormColumn", "FormGroup", "FormHTML",
                               "FormColorPicker", "DropdownMulti", "DropdownEditable", "InputAccordion", "FormComponent"]),
    ("modules.ui_common", ["create_refresh_button", "plaintext_to_html"]),
    ("modules.errors", ["report", "display", "display_once", "print_error_explanation", "run", "exception_records"]),
    ("modules.images", ["image_grid", "draw_grid_annotations", "GridAnnotation", "draw_prompt_matrix", "save_image",
                        "resize_image", "get_font", "Grid", "split_grid", "combine_grid"]),
    ("modules.processing", ["fix_seed", "create_infotext", "process_images", "Processed",
                            "StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img"]),
    ("modules.shared", ["opts", "state", "cmd_opts", "total_tqdm", "OptionInfo", "OptionHTML", "options_section",
                        "config_filename"]),
    ("modules.options", ["OptionInfo", "OptionHTML", "options_section"]),
    ("modules.generation_parameters_copypaste", ["paste_fields", "registered_param_bindings",
                                                 "register_paste_params_button", "ParamBinding", "PasteField",
                                                 "add_paste_fields", "parse_generation_parameters",
                                                 "create_override_settings_dict", "quote", "unquote"]),
    ("modules.infotext_utils", ["paste_fields", "parse_generation_parameters", "create_override_settings_dict"]),
    ("modules.scripts", ["basedir", "scripts_data", "ScriptFile", "ScriptClassData", "PostprocessImageArgs",
                         "PostprocessBatchListArgs", "PostProcessMaskOverlayArgs", "PostSampleArgs", "MaskBlendArgs",
                         "AlwaysVisible", "Script"]),
    ("modules.script_callbacks", [
        "on_app_started", "on_before_reload", "on_model_loaded", "on_ui_tabs", "on_ui_train_tabs", "on_ui_settings",
        "on_before_image_saved", "on_image_saved", "on_extra_noise", "on_cfg_denoiser", "on_cfg_denoised",
        "on_cfg_after_cfg", "on_before_component", "on_after_component", "on_image_grid", "on_infotext_pasted",
        "on_script_unloaded", "on_before_ui", "on_list_optimizers", "on_list_unets", "on_before_token_counter",
        "remove_current_script_callbacks", "remove_callbacks_for_function", "ImageSaveParams", "CFGDenoiserParams",
        "CFGDenoisedParams", "AfterCFGCallbackParams", "ImageGridLoopParams", "ExtraNoiseParams",
        "BeforeTokenCounterParams", "UiTrainTabParams"]),
    ("modules.textual_inversion.textual_inversion", ["embedding_db", "Embedding", "EmbeddingDatabase"]),
    ("modules.paths", ["script_path", "models_path", "data_path"]),
    ("modules.paths_internal", ["script_path", "models_path", "data_path", "extensions_dir", "extensions_builtin_dir",
                                "default_output_dir", "modules_path"]),
    ("modules.sd_hijack_utils", ["CondFunc"]),
    ("modules.lowvram", ["is_enabled", "is_needed", "send_everything_to_cpu", "setup_for_low_vram"]),
    ("modules.shared", ["device", "batch_cond_uncond", "natural_sort_key", "listfiles", "walk_files",
                        "list_checkpoint_tiles", "refresh_checkpoints", "styles_filename", "latent_upscale_modes",
                        "demo", "xformers_available", "hf_endpoint", "log"]),
]


@pytest.mark.parametrize("module_name,names", SURFACE, ids=[m for m, _ in SURFACE])
def test_extension_imports_exist(module_name, names):
    module = importlib.import_module(module_name)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name} lacks {missing}"


def test_callbacks_register_with_a1111_signature():
    from modules import script_callbacks
    for name in [n for _, ns in SURFACE if _ == "modules.script_callbacks" for n in ns if n.startswith("on_")]:
        def cb(*args, **kwargs):
            pass
        getattr(script_callbacks, name)(cb, name=f"test-{name}")
        script_callbacks.remove_callbacks_for_function(cb)


# --- sd_hijack --------------------------------------------------------------------------------------------
def test_model_hijack_embedding_db_is_textual_inversion_db():
    from modules.sd_hijack import model_hijack
    from modules.textual_inversion import textual_inversion
    assert model_hijack.embedding_db is textual_inversion.embedding_db


def test_hijack_and_undo_are_accepted_and_comments_clear():
    from modules import shared
    from modules.sd_hijack import model_hijack
    model_hijack.hijack(shared.sd_model)
    model_hijack.undo_hijack(shared.sd_model)
    model_hijack.comments.append("note")
    model_hijack.extra_generation_params["X"] = 1
    model_hijack.clear_comments()
    assert model_hijack.comments == [] and model_hijack.extra_generation_params == {}
    assert model_hijack.layers is None and model_hijack.optimization_method is None


def test_get_prompt_lengths_matches_the_token_counter():
    from modules import shared
    from modules.sd_hijack import model_hijack
    conditioner = shared.sd_model.cond_stage_model
    assert model_hijack.get_prompt_lengths("a cat") == conditioner.get_prompt_token_count("a cat") == (2, 75)
    long_prompt = ", ".join(["a red cube"] * 30)
    count, target = model_hijack.get_prompt_lengths(long_prompt)
    assert count > 75 and target == 150
    assert (count, target) == conditioner.get_prompt_token_count(long_prompt)


def test_list_optimizers_asks_the_callbacks():
    from modules import script_callbacks, sd_hijack

    class Optimizer:
        def __init__(self, name, priority):
            self.name, self.priority = name, priority

    def add(found):
        found += [Optimizer("low", 1), Optimizer("high", 10)]
    script_callbacks.on_list_optimizers(add, name="test-optimizers")
    try:
        assert [o.name for o in sd_hijack.list_optimizers()] == ["high", "low"]
    finally:
        script_callbacks.remove_callbacks_for_function(add)
    assert sd_hijack.list_optimizers() == [] and sd_hijack.apply_optimizations() == ""


def test_apply_circular_switches_padding_and_back():
    from modules import shared
    from modules.sd_hijack import model_hijack
    conv = next(m for m in shared.sd_model.unet.modules() if m.__class__.__name__ == "Conv2d")
    model_hijack.apply_circular(True)
    try:
        assert model_hijack.circular_enabled and conv.padding_mode == "circular"
    finally:
        model_hijack.apply_circular(False)
    assert not model_hijack.circular_enabled and conv.padding_mode == "zeros"


# --- samplers ---------------------------------------------------------------------------------------------
def test_sampler_aliases_and_registry():
    import modules.sd_samplers_compvis
    import modules.sd_samplers_timesteps
    from modules import sd_samplers, sd_samplers_cfg_denoiser
    from modules.sd_samplers_common import SamplerData
    from modules.sd_samplers_kdiffusion import CFGDenoiserKDiffusion
    from modules.sd_samplers_timesteps import CFGDenoiserTimesteps
    assert modules.sd_samplers_compvis is modules.sd_samplers_timesteps
    assert CFGDenoiserKDiffusion is CFGDenoiserTimesteps is sd_samplers_cfg_denoiser.CFGDenoiser
    euler = sd_samplers.all_samplers_map["Euler"]
    assert euler in sd_samplers.all_samplers and euler in sd_samplers.samplers_for_img2img
    assert sd_samplers.find_sampler_config("Euler") is euler and euler.name == "Euler"
    assert "DDIM" in sd_samplers.all_samplers_map

    data = SamplerData("Test sampler", euler.constructor, ["test_alias"], {})  # positional, as extensions do
    sd_samplers.all_samplers.append(data)
    try:
        sd_samplers.set_samplers()
        assert sd_samplers.all_samplers_map["Test sampler"] is data
        assert sd_samplers.find_sampler_config("test_alias") is data
    finally:
        sd_samplers.all_samplers.remove(data)
        sd_samplers.set_samplers()
    assert "Test sampler" not in sd_samplers.all_samplers_map


# --- UI components ----------------------------------------------------------------------------------------
def test_ui_components_build_inside_blocks():
    import gradio as gr
    from modules import ui_components as uc
    with gr.Blocks() as demo:
        with uc.ResizeHandleRow():
            with uc.FormColumn():
                with uc.FormRow():
                    button = uc.ToolButton("\U0001f504", elem_id="refresh", tooltip="Refresh")
                    multi = uc.DropdownMulti(["a", "b"], ["a"], label="Multi")  # positional, Gradio 3 style
                    editable = uc.DropdownEditable(choices=["a", "b"], value="a", label="Editable")
                with uc.FormGroup():
                    uc.FormHTML("<b>hi</b>")
        with uc.InputAccordion(True, label="My feature") as enabled:
            strength = gr.Slider(0, 1, value=0.5, label="Strength")
            with enabled.extra():
                gr.Button("x")
    assert button.get_block_name() == "button" and "tool" in button.elem_classes
    assert multi.multiselect and multi.get_block_name() == "dropdown" and multi.value == ["a"]
    assert [c[0] for c in multi.choices] == ["a", "b"]
    assert editable.allow_custom_value
    assert isinstance(enabled, gr.Checkbox) and enabled.value is True
    assert enabled.get_block_name() == "checkbox"
    assert isinstance(enabled.accordion, gr.Accordion) and enabled.accordion.open is True
    assert enabled.accordion.label == "My feature"
    assert strength in _descendants(enabled.accordion)
    config = demo.get_config_file()
    assert {"button", "dropdown", "checkbox", "accordion", "row", "column", "group", "html"} <= {
        c["type"] for c in config["components"]}


def _descendants(block):
    for child in getattr(block, "children", []):
        yield child
        yield from _descendants(child)


def test_input_accordion_closed_is_false():
    import gradio as gr
    from modules.ui_components import InputAccordion
    with gr.Blocks():
        acc = InputAccordion(False, label="Off")
    assert acc.value is False and acc.accordion.open is False


def test_ui_common_helpers():
    import gradio as gr
    from modules import ui_common
    assert ui_common.plaintext_to_html("a < b\nc") == "<p>a &lt; b<br>\nc</p>"
    calls = []
    with gr.Blocks():
        dropdown = gr.Dropdown(choices=["a"], label="d")
        button = ui_common.create_refresh_button(dropdown, lambda: calls.append(1), lambda: {"choices": ["a", "b"]},
                                                 "refresh_d")
    assert button.elem_id == "refresh_d"


# --- errors -----------------------------------------------------------------------------------------------
def test_errors_report_logs_the_traceback(caplog):
    from modules import errors
    with caplog.at_level(logging.ERROR, logger="modules.errors"):
        try:
            raise ValueError("boom in extension")
        except ValueError:
            errors.report("Error running extension", exc_info=True)
    text = caplog.text
    assert "*** Error running extension" in text
    assert "Traceback (most recent call last)" in text and "ValueError: boom in extension" in text
    assert errors.get_exceptions()[0]["exception"] == "boom in extension"


def test_errors_run_display_and_explanation(caplog):
    from modules import errors
    with caplog.at_level(logging.ERROR, logger="modules.errors"):
        errors.run(lambda: int("x"), "loading my script")
        errors.display_once(RuntimeError("once"), "only-once-task")
        errors.display_once(RuntimeError("once"), "only-once-task")
        errors.print_error_explanation("line one\nline two")
    assert "loading my script: ValueError" in caplog.text
    assert caplog.text.count("only-once-task: RuntimeError") == 1
    assert "========\nline one\nline two\n========" in caplog.text
    assert issubclass(errors.UnknownSampler, errors.SerenaError)  # Serena's own classes are still there


# --- images -----------------------------------------------------------------------------------------------
def _cells(n, size=64):
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    return [Image.new("RGB", (size, size), colors[i % len(colors)]) for i in range(n)]


def test_image_grid_of_four_is_two_by_two():
    from modules import images
    grid = images.image_grid(_cells(4), rows=2)
    assert grid.size == (128, 128)
    assert grid.getpixel((96, 96)) == (255, 255, 0)


def test_draw_grid_annotations_adds_label_bands():
    from modules.images import GridAnnotation, draw_grid_annotations, image_grid
    grid = image_grid(_cells(4), rows=2)
    hor = [[GridAnnotation("Steps: 2")], [GridAnnotation("Steps: 3")]]
    ver = [[GridAnnotation("Euler")], [GridAnnotation("Euler a", is_active=False)]]
    out = draw_grid_annotations(grid, 64, 64, hor, ver, margin=4)
    assert out.width == 128 + 64 * 3 // 4 + 4 and out.height > 128 + 4
    assert [a.text for a in hor[0]] == ["Steps: 2"]  # inputs untouched
    no_rows = draw_grid_annotations(grid, 64, 64, hor, [[GridAnnotation()], [GridAnnotation()]])
    assert no_rows.width == 128
    with pytest.raises(Exception):
        draw_grid_annotations(grid, 64, 64, hor[:1], ver)


def test_draw_prompt_matrix_labels_every_combination():
    from modules import images
    grid = images.image_grid(_cells(4), rows=2)  # 2 parts → 2 columns × 2 rows
    out = images.draw_prompt_matrix(grid, 64, 64, ["a house", "at night", "in snow"])
    assert out.width == 128 + 48 and out.height > 128
    font = images.get_font(20)
    assert font is not None


def test_save_image_keeps_a1111_signature(tmp_path):
    from modules import images
    path, _ = images.save_image(_cells(1)[0], str(tmp_path), "", seed=1, prompt="p", extension="png",
                                info="p\nSteps: 1", p=None)
    assert path.endswith(".png") and Image.open(path).info["parameters"] == "p\nSteps: 1"


# --- processing, shared ------------------------------------------------------------------------------------
def test_fix_seed_and_create_infotext():
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x", seed=-1, subseed=-1, steps=2, width=64, height=64)
    processing.fix_seed(p)
    assert p.seed != -1 and p.subseed != -1
    assert callable(processing.create_infotext)


def test_shared_state_fields_and_total_tqdm():
    from modules import shared
    state = shared.state
    state.begin(job="ext job")
    state.job_count = 2
    state.nextjob()
    assert state.job == "ext job" and state.job_no == 1 and state.time_start is not None
    for field in ("stopping_generation", "job_no", "job_count", "textinfo", "sampling_step", "skipped",
                  "interrupted", "server_start"):
        assert hasattr(state, field), field
    assert state.dict()["job_count"] == 2
    state.end()
    for method in ("update", "updateTotal", "clear"):
        assert callable(getattr(shared.total_tqdm, method))
    shared.total_tqdm.updateTotal(4)
    shared.total_tqdm.update()
    shared.total_tqdm.clear()


def test_opts_surface_for_extensions():
    import gradio as gr
    from modules import shared
    opts = shared.opts
    assert opts.get_default("nonexistent_option_xyz") is None
    assert opts.get_default("samples_save") is True
    assert opts.cast_value("CLIP_stop_at_last_layers", "2") == 2 and opts.cast_value("samples_save", "False") is False
    assert '"samples_save": true' in opts.dumpjson()
    info = shared.OptionInfo(2, "My slider", gr.Slider, {"minimum": 0, "maximum": 4},
                             section=("my_ext", "My extension"))
    assert info.component is gr.Slider and info.component_args == {"minimum": 0, "maximum": 4}
    chained = info.info("what it does").needs_reload_ui().link("wiki", "https://example.com").html("<b>x</b>")
    assert chained is info and "what it does" in info.comment_after and "wiki" in info.comment_before
    key = "test_extension_surface_option"
    opts.add_option(key, info)
    try:
        assert getattr(opts, key) == 2 and opts.get_default(key) == 2
        assert opts.section_of(key) == "my_ext"
        seen = []
        opts.onchange(key, lambda: seen.append(getattr(opts, key)))
        opts.set(key, 3)
        assert seen == [3]
    finally:
        del opts.data_labels[key]
        opts.data.pop(key, None)
    section = shared.options_section(("my_ext", "My extension", "cat"), {"k": shared.OptionInfo(1, "k")})
    assert section["k"].section == ("my_ext", "My extension") and section["k"].category_id == "cat"


def test_sd_model_attributes_extensions_read():
    import torch
    from modules import shared
    model = shared.sd_model
    assert model.is_sd1 and not model.is_sdxl and not model.is_sd2
    assert model.latent_channels == 4
    assert model.sd_checkpoint_info is not None and model.sd_model_checkpoint
    device = model.device
    assert model.cond_stage_model.to(device) is model.cond_stage_model
    assert model.first_stage_model.to(device) is model.first_stage_model
    image = torch.zeros(1, 3, 64, 64)
    latent = model.get_first_stage_encoding(model.encode_first_stage(image))
    assert latent.shape == (1, 4, 8, 8)
    posterior = model.vae.encode(image.to(device, model.dtype_vae))
    assert torch.allclose(model.get_first_stage_encoding(posterior).float(), latent.float(), atol=1e-4)
    assert model.decode_first_stage(latent).shape == (1, 3, 64, 64)


# --- infotext / paste ---------------------------------------------------------------------------------------
def test_generation_parameters_copypaste_is_infotext_utils():
    from modules import generation_parameters_copypaste as parameters_copypaste
    from modules import infotext_utils
    assert parameters_copypaste is infotext_utils
    params = parameters_copypaste.parse_generation_parameters("a cat\nSteps: 3, Sampler: Euler, Clip skip: 2")
    assert params["Steps"] == "3" or params["Steps"] == 3
    assert parameters_copypaste.create_override_settings_dict(["Clip skip: 2", "Unknown: 1"]) == {
        "CLIP_stop_at_last_layers": 2}
    binding = parameters_copypaste.ParamBinding(paste_button=None, tabname="txt2img", source_text_component=None)
    before = len(parameters_copypaste.registered_param_bindings)
    parameters_copypaste.register_paste_params_button(binding)
    try:
        assert parameters_copypaste.registered_param_bindings[-1] is binding
    finally:
        parameters_copypaste.registered_param_bindings.pop()
    assert len(parameters_copypaste.registered_param_bindings) == before
    field = parameters_copypaste.PasteField("comp", "Steps", api="steps")
    component, target = field
    assert (component, target, field.api) == ("comp", "Steps", "steps")


# --- scripts ----------------------------------------------------------------------------------------------
def test_scripts_basedir_and_scripts_data_naming(tmp_path):
    from modules import paths, scripts
    ext = tmp_path / "sd-webui-myext"
    (ext / "scripts").mkdir(parents=True)
    (ext / "scripts" / "my_script.py").write_text(
        "from modules import scripts\n"
        "HERE = scripts.basedir()\n"
        "class MyScript(scripts.Script):\n"
        "    def title(self):\n"
        "        return 'My script'\n"
        "    def show(self, is_img2img):\n"
        "        return scripts.AlwaysVisible\n")
    previous = list(scripts.scripts_data)
    try:
        found = scripts.load_scripts([str(ext)])
        assert len(found) == 1
        data = found[0]
        assert data.script_class.__module__ == "my_script.py"
        assert data.basedir == str(ext) and data.path == str(ext / "scripts" / "my_script.py")
        assert data.module.HERE == str(ext)
        assert scripts.scripts_data[-1] is data
    finally:
        scripts.scripts_data[:] = previous
        scripts._rebuild_runners()
    assert scripts.basedir() == paths.script_path
    pp = scripts.PostprocessImageArgs(Image.new("RGB", (8, 8)))
    assert pp.image.size == (8, 8)
    assert scripts.PostprocessBatchListArgs([1, 2]).images == [1, 2]


# --- paths, helpers -----------------------------------------------------------------------------------------
def test_paths_follow_the_data_folder(env):
    from modules import paths, paths_internal, shared
    assert paths.models_path == shared.data_paths.models_path == paths_internal.models_path
    assert paths.data_path == env == paths_internal.data_path


def test_cond_func_patches_by_dotted_path():
    import types
    from modules.sd_hijack_utils import CondFunc
    import sys
    holder = types.ModuleType("ext_surface_tmp_module")
    holder.f = lambda x: x + 1
    sys.modules["ext_surface_tmp_module"] = holder
    try:
        CondFunc("ext_surface_tmp_module.f", lambda orig, x: orig(x) * 10, lambda orig, x: x > 5)
        assert holder.f(1) == 2 and holder.f(6) == 70
    finally:
        del sys.modules["ext_surface_tmp_module"]


def test_lowvram_is_never_enabled():
    from modules import lowvram, shared
    assert lowvram.is_enabled(shared.sd_model) is False
    lowvram.send_everything_to_cpu()


def test_shared_helpers(tmp_path):
    from modules import shared
    for name in ("img10.png", "img2.png", ".hidden"):
        (tmp_path / name).write_text("x")
    assert [p.rsplit("/", 1)[-1] for p in shared.listfiles(str(tmp_path))] == ["img2.png", "img10.png"]
    assert len(list(shared.walk_files(str(tmp_path), allowed_extensions=[".png"]))) == 2
    assert shared.list_samplers()[0].name == "DPM++ 2M"
    assert "demo" in " ".join(shared.list_checkpoint_tiles())


def test_sample_to_image_decodes_with_the_model():
    import torch
    from modules import sd_samplers, sd_samplers_common
    latents = torch.zeros(2, 4, 8, 8)
    image = sd_samplers.sample_to_image(latents, index=1)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert sd_samplers_common.samples_to_image_grid(latents).size == (128, 64)
    back = sd_samplers_common.images_tensor_to_samples(torch.zeros(1, 3, 64, 64))
    assert back.shape == (1, 4, 8, 8)
