"""The Settings tab, quicksettings and ui-config.json (issue 11): handlers called as the page calls them."""
from __future__ import annotations

import json
import os

import gradio as gr
import pytest

from modules import ui_handlers as h, ui_loadsave, ui_settings


@pytest.fixture()
def opts(serena):
    """`shared.opts` with its data and frozen flag restored after the test; config.json kept."""
    saved, frozen = dict(serena.opts.data), serena.opts.frozen
    config = serena.config_filename
    before = open(config, encoding="utf8").read() if os.path.exists(config) else None
    yield serena.opts
    serena.opts.data.clear()
    serena.opts.data.update(saved)
    serena.opts.frozen = frozen
    if before is None:
        if os.path.exists(config):
            os.remove(config)
    else:
        with open(config, "w", encoding="utf8") as f:
            f.write(before)


def saved_config(serena) -> dict:
    with open(serena.config_filename, encoding="utf8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def page(serena):
    from modules import ui
    return ui.create_ui()


def by_elem_id(blocks) -> dict:
    return {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}


# --- the tab --------------------------------------------------------------------------------------------
def test_every_option_has_its_component_in_its_section(serena, page):
    ids = by_elem_id(page)
    pages = ui_settings.shown_options()
    shown = {k for keys in pages.values() for k in keys}
    for key, info in serena.opts.data_labels.items():
        if key in shown:
            assert f"setting_{key}" in ids, key
            assert ids[f"setting_{key}"].label == info.label
    # the A1111 sections and their pages; quicksettings and the checkpoint row not repeated
    assert ui_settings.section_title("saving-images") == "Saving images/grids"
    assert "add_model_name_to_info" in pages["infotext"] and "settings_infotext" in ids
    assert "sd_model_checkpoint" not in shown and "prioritized_callbacks_app_started" in shown
    assert isinstance(ids["setting_samples_save"], gr.Checkbox)
    assert isinstance(ids["setting_jpeg_quality"], gr.Slider)
    assert (ids["setting_jpeg_quality"].minimum, ids["setting_jpeg_quality"].maximum) == (1, 100)
    assert isinstance(ids["setting_samples_format"], gr.Radio)
    assert ids["setting_prioritized_callbacks_app_started"].multiselect
    assert "0 = no tiling" in ids["setting_ESRGAN_tile"].info
    for elem_id in ("settings_submit", "settings_result", "settings_search", "settings_restart_gradio", "quicksettings"):
        assert elem_id in ids


def test_search_shows_only_matching_settings(serena):
    pages = ui_settings.shown_options()
    keys = [k for ks in pages.values() for k in ks]
    updates = ui_settings.page_visibility("Saving images/grids", "model name infotext", pages, keys)
    settings = dict(zip(keys, updates[len(pages) + 1:]))
    assert settings["add_model_name_to_info"]["visible"] is True
    assert settings["samples_save"]["visible"] is False
    sections = dict(zip(pages, updates[:len(pages)]))
    assert sections["infotext"]["visible"] and not sections["saving-images"]["visible"]
    all_pages = ui_settings.page_visibility(ui_settings.ALL_PAGES, "", pages, keys)
    assert all(u["visible"] for u in all_pages[:len(pages)])


# --- applying -------------------------------------------------------------------------------------------
def test_apply_changes_saves_config_and_affects_next_job(serena, opts):
    keys = ["add_model_name_to_info", "jpeg_quality", "samples_format"]
    out = ui_settings.run_settings(keys, False, 90.0, "png")
    assert out[0] == "2 settings changed: add_model_name_to_info, jpeg_quality."
    assert opts.add_model_name_to_info is False and opts.jpeg_quality == 90 and isinstance(opts.jpeg_quality, int)
    assert saved_config(serena)["add_model_name_to_info"] is False
    values = {"prompt": "a red apple", "negative_prompt": "", "styles": [], "sampler_name": "Euler",
              "scheduler": "Automatic", "n_iter": 1, "batch_size": 1, "cfg_scale": 7.0, "seed": 1234,
              "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0, "hr_second_pass_steps": 0,
              "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7, **h.FIELD_DEFAULTS,
              "width": 64, "height": 64, "steps": 2}
    _, infotext, *_ = h.txt2img(None, *(values[name] for name in h.TXT2IMG_FIELDS))
    assert "Model:" not in infotext and "Model hash:" in infotext


def test_invalid_value_is_refused_with_a_message(serena, opts):
    out = ui_settings.run_settings(["jpeg_quality", "samples_format", "outdir_save"], 500, "gif", "/etc")
    assert out[0].startswith("0 settings changed.")
    assert "outside [1, 100]" in out[0] and "not one of" in out[0] and "outside the data folder" in out[0]
    assert out[1]["value"] == 80 and out[2]["value"] == "png"  # the page shows the values kept
    assert opts.jpeg_quality == 80


def test_frozen_settings_change_nothing(serena, opts):
    opts.frozen = True
    out = ui_settings.run_settings(["add_model_name_to_info"], False)
    assert out[0].startswith("0 settings changed.") and "--freeze-settings" in out[0]
    assert opts.add_model_name_to_info is True
    assert ui_settings.read_only_reason("samples_save") == "settings are frozen (--freeze-settings)"
    component = ui_settings.create_setting_component("samples_save")
    assert component.interactive is False and "--freeze-settings" in component.info


def test_hidden_dir_config_options_are_read_only(serena, opts, monkeypatch):
    monkeypatch.setattr(serena.cmd_opts, "hide_ui_dir_config", True, raising=False)
    changed, problems, _ = ui_settings.apply_settings({"outdir_save": "log/other", "samples_save": False})
    assert changed == ["samples_save"] and "hide-ui-dir-config" in problems[0]
    assert ui_settings.create_setting_component("outdir_save").interactive is False


def test_restart_and_reload_notes(serena, opts):
    from modules.options import OptionInfo
    opts.add_option("serena_test_restart", OptionInfo(1, "Test restart option", section=("ext", "Ext")).needs_restart())
    opts.add_option("serena_test_reload", OptionInfo(1, "Test reload option", section=("ext", "Ext")).needs_reload_ui())
    try:
        out = ui_settings.run_settings(["serena_test_restart", "serena_test_reload"], 2, 3)
        assert out[0].startswith("2 settings changed: serena_test_restart, serena_test_reload.")
        assert "Test restart option needs restart" in out[0] and "Test reload option needs Reload UI" in out[0]
        assert ui_settings.section_title("ext", opts.data_labels["serena_test_restart"]) == "Ext"
    finally:
        del opts.data_labels["serena_test_restart"], opts.data_labels["serena_test_reload"]


def test_quicksetting_applies_and_persists(serena, opts):
    update = ui_settings.apply_quicksetting("CLIP_stop_at_last_layers", 2.0)
    assert update["value"] == 2 and opts.CLIP_stop_at_last_layers == 2
    assert saved_config(serena)["CLIP_stop_at_last_layers"] == 2
    update = ui_settings.apply_quicksetting("CLIP_stop_at_last_layers", 40)  # out of range: kept
    assert update["value"] == 2


def test_quicksettings_row_has_listed_options(serena, opts):
    opts.data["quicksettings_list"] = ["sd_model_checkpoint", "CLIP_stop_at_last_layers"]
    with gr.Blocks() as blocks:
        ui_settings.create_quicksettings()
    ids = by_elem_id(blocks)
    assert "quicksettings" in ids and "setting_CLIP_stop_at_last_layers" in ids
    assert "setting_sd_model_checkpoint" not in ids  # the checkpoint row shows it


# --- ui-config.json ---------------------------------------------------------------------------------------
def _small_page():
    with gr.Blocks() as blocks:
        gr.Textbox(label="Outside")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img"):
                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
                sampler = gr.Dropdown(["Euler", "DDIM"], value="Euler", label="Sampling method")
                script = gr.Checkbox(False, label="Keep -1 for seeds")
                script.custom_script_source = "xyz_grid.py"
            with gr.Tab("Settings", id="settings"):
                gr.Checkbox(True, label="Always save all generated images")
    return blocks, steps, sampler


def test_ui_config_written_with_a1111_keys(tmp_path):
    blocks, steps, _ = _small_page()
    path = str(tmp_path / "ui-config.json")
    data = ui_loadsave.apply(blocks, path)
    with open(path, encoding="utf8") as f:
        assert json.load(f) == data
    assert data["txt2img/Sampling steps/value"] == 20 and data["txt2img/Sampling steps/maximum"] == 150
    assert data["txt2img/Sampling steps/visible"] is True and data["txt2img/Sampling method/value"] == "Euler"
    assert data["customscript/xyz_grid.py/txt2img/Keep -1 for seeds/value"] is False
    assert data["webui/Tabs@tabs/selected"] is None
    assert not any(k.startswith(("settings/", "Outside")) or "/Outside/" in k for k in data)


def test_ui_config_applied_and_bad_values_ignored(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 30, "txt2img/Sampling steps/maximum": 200,
                                "txt2img/Sampling method/value": "NoSuchSampler",
                                "txt2img/Sampling method/visible": False}))
    blocks, steps, sampler = _small_page()
    data = ui_loadsave.apply(blocks, str(path))
    assert (steps.value, steps.maximum) == (30, 200)
    assert sampler.value == "Euler" and sampler.visible is False
    assert data["txt2img/Sampling steps/minimum"] == 1  # the missing keys were added
    config = {c["id"]: c for c in blocks.config["components"]}
    assert config[steps._id]["props"]["value"] == 30  # the page served has the saved value


def test_unreadable_ui_config_is_left_alone(tmp_path, caplog):
    path = tmp_path / "ui-config.json"
    path.write_text("{not json")
    blocks, steps, _ = _small_page()
    assert ui_loadsave.apply(blocks, str(path)) == {}
    assert path.read_text() == "{not json" and steps.value == 20
    assert "cannot be read" in caplog.text


def test_ui_config_on_the_whole_page(page, tmp_path):
    path = str(tmp_path / "ui-config.json")
    data = ui_loadsave.apply(page, path)
    assert data["txt2img/Sampling steps/value"] == 20 and data["img2img/Sampling steps/value"] == 20
    assert not any(k.startswith(("settings/", "extensions/")) for k in data)
    with open(path, "w", encoding="utf8") as f:
        json.dump({**data, "txt2img/Sampling steps/value": 12}, f)
    ui_loadsave.apply(page, path)
    assert by_elem_id(page)["txt2img_steps"].value == 12
