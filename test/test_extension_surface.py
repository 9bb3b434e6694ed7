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
    ("modules.sd_vae", ["base_vae", "loaded_vae_file", "checkpoint_info", "vae_dict", "get_filename",
                        "refresh_vae_list", "find_vae_near_checkpoint", "resolve_vae", "reload_vae_weights",
                        "unspecified", "load_vae", "clear_loaded_vae", "get_base_vae", "restore_base_vae"]),
    ("modules.sd_models", ["send_model_to_cpu", "send_model_to_device", "send_model_to_trash",
                           "get_checkpoint_state_dict", "read_state_dict", "model_data", "checkpoint_aliases",
                           "checkpoints_list", "checkpoint_tiles", "select_checkpoint", "get_closet_checkpoint_match",
                           "reload_model_weights", "unload_model_weights", "apply_token_merging", "CheckpointInfo",
                           "list_models", "model_target_device", "model_path"]),
    ("modules.devices", ["autocast", "without_autocast", "cond_cast_unet", "cond_cast_float", "has_mps",
                         "NansException", "test_for_nans", "randn", "randn_like", "randn_without_seed",
                         "randn_local", "manual_seed", "device", "device_interrogate", "device_gfpgan",
                         "device_esrgan", "device_codeformer", "dtype", "dtype_vae", "dtype_unet", "dtype_inference",
                         "unet_needs_upcast", "first_time_calculation", "torch_gc", "get_optimal_device",
                         "get_optimal_device_name", "get_device_for", "cpu"]),
    ("modules.ui_common", ["create_output_panel", "OutputPanel", "update_generation_info", "save_files",
                           "folder_symbol", "refresh_symbol"]),
    ("modules.script_loading", ["load_module", "preload_extensions", "loaded_scripts"]),
    ("modules.shared_items", ["list_checkpoint_tiles", "refresh_checkpoints", "sd_vae_items", "refresh_vae_list",
                              "postprocessing_scripts", "sd_unet_items", "refresh_unet_list", "list_samplers",
                              "cross_attention_optimizations", "realesrgan_models_names", "reload_hypernetworks",
                              "ui_reorder_categories"]),
    ("modules.util", ["natural_sort_key", "listfiles", "html_path", "html", "walk_files", "ldm_print",
                      "truncate_path", "MassFileLister", "topological_sort", "load_file_from_url"]),
    ("modules.launch_utils", ["is_installed", "run", "run_pip", "run_git", "git_clone", "git_tag", "commit_hash",
                              "python", "git", "index_url", "repo_dir", "requirements_met", "args",
                              "prepare_environment"]),
    ("launch", ["is_installed", "run", "run_pip", "git_tag", "commit_hash", "python", "index_url", "repo_dir",
                "args", "main"]),
    ("modules.ui_extra_networks", ["ExtraNetworksPage", "register_page", "extra_pages", "quote_js",
                                   "allowed_dirs", "initialize", "register_default_pages", "ExtraNetworksItem"]),
    ("modules.extra_networks", []),
    ("modules.ui_components", ["ToolButton", "ResizeHandleRow", "FormRow", "FormColumn", "FormGroup", "FormHTML",
                               "FormColorPicker", "DropdownMulti", "DropdownEditable", "InputAccordion", "FormComponent"]),
    ("modules.ui_common", ["create_refresh_button", "plaintext_to_html"]),
    ("modules.processing", ["merge_hijack_notes"]),
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
    assert model_hijack.layers is None and model_hijack.optimization_method == "sdp"  # the loaded model's


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
    assert sd_hijack.list_optimizers() == []
    assert sd_hijack.apply_optimizations() == sd_hijack.model_hijack.optimization_method == "sdp"  # the default


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
    try:
        found = scripts.load_scripts([str(ext)])
        assert len(found) == 1
        data = found[0]
        assert data.script_class.__module__ == "my_script.py"
        assert data.basedir == str(ext) and data.path == str(ext / "scripts" / "my_script.py")
        assert data.module.HERE == str(ext)
        assert scripts.scripts_data[-1] is data
    finally:
        scripts.load_scripts()  # back to the install's own scripts (built-ins, postprocessing ones)
    assert not any(d.path.endswith("my_script.py") for d in scripts.scripts_data)
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


# --- cmd_args: A1111 flags extensions read from shared.cmd_opts ----------------------------------------------
STORE_TRUE_FLAGS = ["--disable-safe-unpickle", "--gradio-debug", "--ui-debug-mode", "--disable-console-progressbars",
                    "--enable-console-prompts", "--opt-channelslast", "--always-batch-cond-uncond", "--administrator",
                    "--log-startup", "--use-textbox-seed", "--force-enable-xformers", "--no-progressbar-hiding",
                    "--xformers", "--opt-sdp-attention", "--medvram", "--lowvram", "--no-half", "--no-half-vae",
                    "--upcast-sampling", "--api-log"]
MODEL_FOLDERS = {"esrgan_models_path": "ESRGAN", "gfpgan_models_path": "GFPGAN", "codeformer_models_path": "Codeformer",
                 "realesrgan_models_path": "RealESRGAN", "scunet_models_path": "ScuNET", "swinir_models_path": "SwinIR",
                 "ldsr_models_path": "LDSR"}


def test_a1111_flags_have_a1111_defaults(tmp_path):
    import os
    from modules import cmd_args, paths
    ns = cmd_args.parse(["--data-dir", str(tmp_path)], environ={})
    for dest, folder in MODEL_FOLDERS.items():
        assert getattr(ns, dest) == os.path.join(str(tmp_path), "models", folder), dest
    assert ns.gradio_allowed_path == []  # Serena does not let the UI serve the data folder unless told
    assert ns.textual_inversion_templates_dir == os.path.join(paths.script_path, "textual_inversion_templates")
    assert ns.localizations_dir == os.path.join(paths.script_path, "localizations")
    assert (ns.vae_path, ns.clip_models_path, ns.loglevel, ns.precision) == (None, None, None, "autocast")
    assert not any(getattr(ns, f[2:].replace("-", "_")) for f in STORE_TRUE_FLAGS)
    models = cmd_args.parse(["--models-dir", str(tmp_path / "m")], environ={})
    assert models.esrgan_models_path == os.path.join(str(tmp_path / "m"), "ESRGAN")


def test_a1111_flags_parse_and_say_whether_serena_honours_them(tmp_path):
    from modules import cmd_args
    given = cmd_args.parse([*STORE_TRUE_FLAGS, "--loglevel", "DEBUG", "--vae-path", "v.safetensors",
                            "--gradio-allowed-path", "/srv/a", "--gradio-allowed-path", "/srv/b",
                            "--esrgan-models-path", "/m/esr", "--clip-models-path", "/m/clip", "--precision", "full",
                            "--data-dir", str(tmp_path)], environ={})
    assert all(getattr(given, f[2:].replace("-", "_")) for f in STORE_TRUE_FLAGS)
    assert (given.loglevel, given.vae_path, given.esrgan_models_path, given.clip_models_path, given.precision) == (
        "DEBUG", "v.safetensors", "/m/esr", "/m/clip", "full")
    assert given.gradio_allowed_path == ["/srv/a", "/srv/b"]
    helps = {a.dest: a.help or "" for a in cmd_args.build_parser()._actions}
    for honoured in ("vae_path", "loglevel", "no_half", "no_half_vae", "precision", "api_log", "disable_nan_check",
                     "gradio_allowed_path", "ui_debug_mode", "upcast_sampling", "opt_channelslast", "opt_sdp_attention",
                     "opt_sdp_no_mem_attention", "opt_split_attention", "opt_sub_quad_attention", "no_cpu_bf16"):
        assert "Serena" in helps[honoured] and "compatibility" not in helps[honoured], honoured
    for compat in ("xformers", "medvram", "lowvram", "gradio_debug", "esrgan_models_path",
                   "disable_safe_unpickle", "use_textbox_seed", "always_batch_cond_uncond"):
        assert "accepted for A1111 compatibility" in helps[compat], compat


def test_loglevel_sets_the_log_level(monkeypatch):
    from modules import launch_utils
    monkeypatch.delenv("SD_WEBUI_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    level = root.level
    try:
        assert launch_utils.setup_logging(None) is False and root.level == level
        assert launch_utils.setup_logging("debug") is True and root.level == logging.DEBUG
        monkeypatch.setenv("SD_WEBUI_LOG_LEVEL", "ERROR")
        assert launch_utils.setup_logging(None) is True and root.level == logging.ERROR
    finally:
        root.setLevel(level)
    with pytest.raises(ValueError, match="LOUD"):
        launch_utils.setup_logging("LOUD")


# --- devices -------------------------------------------------------------------------------------------------
def test_devices_autocast_casts_and_noise():
    import torch
    from modules import devices, rng
    assert devices.device.type == "cpu" and devices.dtype == torch.float32  # the test machine's choice
    with devices.autocast(), devices.without_autocast(), devices.autocast(disable=True):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == torch.float32
    t = torch.ones(2, dtype=torch.float16)
    assert devices.cond_cast_unet(t) is t and devices.cond_cast_float(t) is t and devices.unet_needs_upcast is False
    noise = devices.randn(1234, (1, 4, 8, 8))
    assert torch.equal(noise, rng.randn(1234, (1, 4, 8, 8)))  # the noise the pipeline draws for that seed
    assert not torch.equal(noise, devices.randn(1235, (1, 4, 8, 8)))
    devices.manual_seed(5)
    first = devices.randn_without_seed((3,))
    devices.manual_seed(5)
    assert torch.equal(first, devices.randn_without_seed((3,)))
    like = devices.randn_like(torch.zeros(2, 3, dtype=torch.float64))
    assert like.shape == (2, 3) and like.dtype == torch.float64
    assert torch.equal(devices.randn_local(7, (2,)), devices.randn(7, (2,)))
    devices.first_time_calculation()
    assert devices.has_mps() in (True, False)


def test_devices_nan_check_is_serenas_nan_error(monkeypatch):
    import torch
    from modules import cmd_args, devices, errors, shared
    assert devices.NansException is errors.NansDetected
    nans = torch.full((2, 2), float("nan"))
    with pytest.raises(devices.NansException, match="--no-half-vae"):
        devices.test_for_nans(nans, "vae")
    with pytest.raises(errors.NansDetected, match="UNet"):
        devices.test_for_nans(nans, "unet")
    devices.test_for_nans(torch.tensor([float("nan"), 1.0]), "unet")  # A1111 checks for all-NaN only
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--disable-nan-check"], environ={}))
    devices.test_for_nans(nans, "unet")


def test_devices_setup_fills_the_per_task_devices(monkeypatch):
    import torch
    from modules import cmd_args, devices
    for name in ("device", "dtype", "dtype_vae", "dtype_unet", "dtype_inference", "config", "unet_needs_upcast",
                 *devices.TASK_DEVICES):
        monkeypatch.setattr(devices, name, getattr(devices, name))
    devices.setup(cmd_args.parse(["--use-cpu", "interrogate", "--no-half"], environ={}))
    assert devices.device_interrogate == torch.device("cpu")
    assert devices.device_esrgan == devices.device_gfpgan == devices.device_codeformer == devices.device
    assert devices.dtype_inference == devices.dtype == torch.float32


# --- sd_models helpers ---------------------------------------------------------------------------------------
class _PickledObject:
    """Not a tensor: a pickled file holding one must be refused (unpickling it would run code)."""


def test_read_state_dict_is_safe_and_renames_old_keys(env, tmp_path):
    import torch
    from modules import errors, sd_models, shared
    info = shared.sd_model.sd_checkpoint_info
    state = sd_models.read_state_dict(info.filename)
    assert state and all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"cond_stage_model.transformer.encoder.layers.0.w": torch.ones(1)}, "global_step": 7},
               str(old))
    assert list(sd_models.read_state_dict(str(old), print_global_state=True)) == [
        "cond_stage_model.transformer.text_model.encoder.layers.0.w"]
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _PickledObject()}, str(evil))
    with pytest.raises(errors.CheckpointLoadError, match="pickled"):
        sd_models.read_state_dict(str(evil))

    class Timer:
        def __init__(self):
            self.records = []

        def record(self, what):
            self.records.append(what)
    timer = Timer()
    assert sd_models.get_checkpoint_state_dict(info, timer).keys() == state.keys()
    assert timer.records == ["calculate hash", "load weights from disk"]


def test_model_path_is_a1111s_string_and_still_callable(env):
    import os
    from modules import sd_models, shared
    folder = shared.data_paths.sd_model_dir
    assert os.path.join(sd_models.model_path, "x.safetensors") == os.path.join(folder, "x.safetensors")
    assert sd_models.model_path == folder and sd_models.model_path() == folder


def test_send_model_helpers(env):
    from modules import sd_models, shared
    model = shared.sd_model
    assert sd_models.model_target_device(model) == model.home_device
    sd_models.send_model_to_cpu(model)
    assert model.device.type == "cpu"
    sd_models.send_model_to_device(model)
    assert model.device == model.home_device
    sd_models.apply_token_merging(model, 0.5)  # accepted, nothing changes
    spare = sd_models.load_checkpoint(model.sd_checkpoint_info)
    sd_models.send_model_to_trash(spare)
    assert next(spare.unet.parameters()).is_meta
    assert shared.sd_model is model and spare not in sd_models.model_data.loaded_sd_models


# --- sd_vae ----------------------------------------------------------------------------------------------------
def test_vae_path_flag_wins_over_the_vae_options(env, monkeypatch):
    import os
    from job_helpers import image_bytes, job
    from modules import demo_checkpoint, infotext_utils, sd_vae, shared
    model = shared.sd_model
    own = model.vae
    vae_file = demo_checkpoint.write_demo_vae(os.path.join(env, "elsewhere", "forced-vae.safetensors"))
    before = job(steps=1)
    monkeypatch.setattr(shared.cmd_opts, "vae_path", vae_file)
    shared.opts.data["sd_vae"] = "None"
    try:
        assert sd_vae.resolve_vae(model.sd_checkpoint_info.filename).tuple() == (vae_file, "from commandline argument")
        sd_vae.reload_vae_weights()
        assert sd_vae.loaded_vae_file == vae_file and sd_vae.checkpoint_info is model.sd_checkpoint_info
        assert sd_vae.get_filename(vae_file) == "forced-vae.safetensors"
        assert set(sd_vae.base_vae) == set(own.state_dict())
        forced = job(steps=1)
        assert infotext_utils.parse_generation_parameters(forced.infotexts[0])["VAE"] == "forced-vae.safetensors"
        assert image_bytes(forced) != image_bytes(before)
    finally:
        monkeypatch.undo()
        shared.opts.data.pop("sd_vae", None)
        sd_vae.restore_base_vae(model)
    assert model.vae is own and sd_vae.base_vae is None and sd_vae.loaded_vae_file is None


# --- processing: model_hijack notes ------------------------------------------------------------------------------
def test_model_hijack_notes_reach_the_infotext_and_are_cleared(env):
    from modules import infotext_utils, processing, scripts
    from modules.sd_hijack import model_hijack

    class Note(scripts.Script):
        def title(self):
            return "Hijack note"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_batch(self, p, *args, **kwargs):
            model_hijack.comments.append("Note from an extension")
            model_hijack.extra_generation_params["Hijack param"] = "on"

    def make(with_script):
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt="a red cube", seed=1, steps=1, width=64, height=64, sampler_name="Euler",
            do_not_save_samples=True, do_not_save_grid=True)
        if with_script:
            runner = scripts.ScriptRunner()
            runner.add_script(Note())
            p.scripts, p.script_args = runner, []
        return p

    model_hijack.comments.append("stale note from an earlier job")
    noted = processing.process_images(make(True))
    assert "Note from an extension" in noted.comments and "stale" not in noted.comments
    assert infotext_utils.parse_generation_parameters(noted.infotexts[0])["Hijack param"] == "on"
    plain = processing.process_images(make(False))
    assert "Hijack param" not in plain.infotexts[0] and "Note from an extension" not in plain.comments


# --- ui_common.create_output_panel -------------------------------------------------------------------------------
def test_create_output_panel_has_a1111_fields_and_saves(env, tmp_path):
    import json
    import os
    import gradio as gr
    from job_helpers import job
    from modules import infotext_utils, shared, ui_common
    before = len(infotext_utils.registered_param_bindings)
    with gr.Blocks():
        panel = ui_common.create_output_panel("txt2img", str(tmp_path))
        extras = ui_common.create_output_panel("extras", str(tmp_path))
    try:
        assert isinstance(panel.gallery, gr.Gallery) and isinstance(panel.infotext, gr.HTML)
        assert isinstance(panel.html_log, gr.HTML) and isinstance(panel.generation_info, gr.Textbox)
        assert panel.generation_info.visible is False and panel.button_upscale is not None
        assert extras.button_upscale is None and isinstance(extras.generation_info, gr.HTML)
        bindings = infotext_utils.registered_param_bindings[before:]
        assert [b.tabname for b in bindings] == ["img2img", "inpaint", "extras"] * 2
        assert bindings[0].source_image_component is panel.gallery and bindings[0].source_tabname == "txt2img"
    finally:
        del infotext_utils.registered_param_bindings[before:]

    res = job(steps=1, batch_size=2)
    info = res.js()
    assert ui_common.update_generation_info(info, "<p>old</p>", 1)[0] == ui_common.plaintext_to_html(res.infotexts[1])
    assert ui_common.update_generation_info("not json", "<p>old</p>", 0)[0] == "<p>old</p>"
    shared.opts.data["outdir_save"] = str(tmp_path / "saved")
    try:
        files, log = ui_common.save_files(info, [(image, None) for image in res.images], False, 1)
        saved = [f for f in files["value"] if f.endswith(".png")]
        assert len(saved) == 1 and Image.open(saved[0]).info["parameters"] == res.infotexts[1]  # save_selected_only
        assert "Saved: " in log and os.path.isfile(tmp_path / "saved" / "log.csv")
        shared.opts.data["save_selected_only"] = False
        files, _ = ui_common.save_files(info, [(image, None) for image in res.images], True, -1)
        assert files["value"][0].endswith(".zip") and len([f for f in files["value"] if f.endswith(".png")]) == 2
    finally:
        shared.opts.data.pop("outdir_save", None)
        shared.opts.data.pop("save_selected_only", None)


# --- script_loading, util, shared_items, launch_utils, ui_extra_networks ---------------------------------------------
def test_script_loading_runs_preloads_and_loads_modules(tmp_path):
    import argparse
    from modules import script_loading
    root = tmp_path / "extensions"
    for name, body in (("ext-a", "def preload(parser):\n    parser.add_argument('--ext-a-dir', default='x')\n"),
                       ("ext-broken", "raise RuntimeError('broken preload')\n"),
                       ("ext-b", "def preload(parser):\n    parser.add_argument('--ext-b-flag', "
                                 "action='store_true')\n")):
        (root / name).mkdir(parents=True)
        (root / name / "preload.py").write_text(body)
    parser = argparse.ArgumentParser()
    script_loading.preload_extensions(str(root), parser)  # the broken one is reported, the others run
    ns = parser.parse_args(["--ext-b-flag"])
    assert ns.ext_a_dir == "x" and ns.ext_b_flag is True
    only_b = argparse.ArgumentParser()
    script_loading.preload_extensions(str(root), only_b, extension_list=["ext-b"])
    assert not hasattr(only_b.parse_args([]), "ext_a_dir")
    helper = tmp_path / "helper.py"
    helper.write_text("VALUE = 41 + 1\n")
    module = script_loading.load_module(str(helper))
    assert module.VALUE == 42 and module.__name__ == "helper.py"
    assert script_loading.loaded_scripts[str(helper)] is module


def test_util_helpers(tmp_path, capsys):
    import os
    from modules import shared, util
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for name in ("img10.png", "img2.png", "a/x.txt", "a/.hidden/y.png"):
        (tmp_path / name).write_text("x")
    assert [os.path.basename(p) for p in util.listfiles(str(tmp_path))] == ["img2.png", "img10.png"]
    assert [os.path.basename(p) for p in util.walk_files(str(tmp_path), [".png"])] == ["img2.png", "img10.png", "y.png"]
    shared.opts.data["list_hidden_files"] = False
    try:
        assert [os.path.basename(p) for p in util.walk_files(str(tmp_path), [".png"])] == ["img2.png", "img10.png"]
    finally:
        shared.opts.data.pop("list_hidden_files")
    assert util.truncate_path(str(tmp_path / "a" / "x.txt"), str(tmp_path)) == os.path.join("a", "x.txt")
    assert util.truncate_path("/elsewhere/f", str(tmp_path)) == "/elsewhere/f"
    lister = util.MassFileLister()
    assert lister.exists(str(tmp_path / "img2.png")) and lister.mctime(str(tmp_path / "img2.png"))[0] > 0
    assert not lister.exists(str(tmp_path / "nope.png")) and lister.mctime(str(tmp_path / "nope.png")) == (0, 0)
    assert util.html("no-such-snippet.html") == ""
    assert util.topological_sort({"b": ["a"], "a": []}) == ["a", "b"]
    util.ldm_print("ldm noise")  # silenced by hide_ldm_prints (default on)
    assert "ldm noise" not in capsys.readouterr().out
    (tmp_path / "model.pth").write_text("weights")
    assert util.load_file_from_url("https://example.invalid/model.pth", model_dir=str(tmp_path)) == str(
        tmp_path / "model.pth")


def test_shared_items_lists(env):
    from modules import script_callbacks, sd_models, shared_items
    assert shared_items.list_checkpoint_tiles() == sd_models.checkpoint_tiles() and shared_items.list_checkpoint_tiles()
    assert shared_items.sd_vae_items()[:2] == ["Automatic", "None"]
    assert shared_items.list_samplers()[0].name == "DPM++ 2M"

    class Unet:
        label = "My UNet"

    def add(found):
        found.append(Unet())
    script_callbacks.on_list_unets(add, name="test-unets")
    try:
        assert shared_items.sd_unet_items() == ["Automatic", "My UNet", "None"]
    finally:
        script_callbacks.remove_callbacks_for_function(add)
    assert shared_items.sd_unet_items() == ["Automatic", "None"]
    from modules import sd_attention
    assert shared_items.cross_attention_optimizations() == ["Automatic", *sd_attention.names(), "None"]
    assert isinstance(shared_items.postprocessing_scripts(), list)


def test_launch_utils_are_what_launch_exports(tmp_path):
    import os
    import launch
    from modules import launch_utils, paths, shared
    assert launch.run_pip is launch_utils.run_pip
    assert launch.is_installed("pip") and not launch.is_installed("no-such-pkg-x")
    assert launch.args is shared.cmd_opts
    assert launch.run(f'"{launch.python}" -c "print(6 * 7)"').strip() == "42"
    with pytest.raises(RuntimeError, match="Error code: 3"):
        launch.run(f'"{launch.python}" -c "import sys; sys.exit(3)"', errdesc="failing step")
    assert launch.repo_dir("x") == os.path.join(paths.script_path, "repositories", "x")
    assert launch.git_tag() and launch.commit_hash()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"pytest=={pytest.__version__}\n# a comment\nsomething>=1\n")
    assert launch_utils.requirements_met(str(requirements))
    requirements.write_text("pytest==0.0.1\n")
    assert not launch_utils.requirements_met(str(requirements))


def test_extra_networks_page_subclass_registers(tmp_path):
    import json
    import os
    from modules import ui_extra_networks as uen
    nets = tmp_path / "nets"
    nets.mkdir()
    (nets / "mynet.safetensors").write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(nets / "mynet.preview.png")
    (nets / "mynet.txt").write_text("what it does")
    (nets / "mynet.json").write_text(json.dumps({"activation text": "trigger"}))

    class Page(uen.ExtraNetworksPage):
        def __init__(self):
            super().__init__("My Nets")

        def list_items(self):
            yield self.create_item("mynet", 0)

        def create_item(self, name, index=None):
            path = str(nets / name)
            item = {"name": name, "filename": path + ".safetensors", "prompt": uen.quote_js(f"<mynet:{name}:1>"),
                    "preview": self.find_preview(path), "description": self.find_description(path),
                    "search_terms": [self.search_terms_from_path(path + ".safetensors")],
                    "sort_keys": self.get_sort_keys(path + ".safetensors")}
            self.read_user_metadata(item)
            return item

        def allowed_directories_for_previews(self):
            return [str(nets)]

    before = list(uen.extra_pages)
    page = Page()
    try:
        uen.register_page(page)
        assert uen.extra_pages[-1] is page and str(nets) in uen.allowed_dirs
        assert (page.name, page.extra_networks_tabname) == ("my nets", "my_nets")
        item = page.create_item("mynet")
        assert item["preview"].startswith("./sd_extra_networks/thumb?filename=")
        assert "mynet.preview.png" in item["preview"]
        assert item["description"] == "what it does" and item["user_metadata"] == {"activation text": "trigger"}
        assert item["search_terms"] == [os.path.join("nets", "mynet.safetensors")]
        assert item["sort_keys"]["name"] == "mynet.safetensors"
        assert "mynet" in page.create_html("txt2img") and page.items["mynet"]["prompt"] == '"<mynet:mynet:1>"'
    finally:
        uen.extra_pages[:] = before
        uen.allowed_dirs.clear()
    assert uen.quote_js('a "b" \\') == '"a \\"b\\" \\\\"'
