"""The buttons under a generation tab's gallery (modules/ui_results.py): which image and infotext a
send-to carries, 📂 open folder (hidden with --hide-ui-dir-config), 💾 / 🗃️ save."""
from __future__ import annotations

import json
import os

import gradio as gr
import pytest
from PIL import Image

from modules import shared, ui_results

INFO = json.dumps({"index_of_first_image": 1, "infotexts": ["grid", "first", "second"], "prompt": "p", "seed": 1,
                   "all_seeds": [1, 2], "all_prompts": ["p", "p"], "width": 8, "height": 8})


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(n)]


def test_send_to_carries_the_selected_image_else_the_first_after_the_grid():
    gallery = [(img, None) for img in images(3)]
    texts = ["grid", "first", "second"]
    assert ui_results.chosen_image(gallery, -1, INFO).getpixel((0, 0)) == (40, 0, 0)  # grid skipped
    assert ui_results.chosen_infotext(texts, -1, INFO) == "first"
    assert ui_results.chosen_image(gallery, 2, INFO).getpixel((0, 0)) == (80, 0, 0)
    assert ui_results.chosen_infotext(texts, 2, INFO) == "second"
    assert ui_results.chosen_image([], -1, INFO) is None and ui_results.chosen_infotext([], 0, "") == ""


def test_send_values_switch_tab_and_img2img_sub_tab():
    target = ui_results.SendTarget("inpaint", "img2img", {"prompt": None, "width": None}, image=object(), mode=2,
                                   mode_state=object(), mode_tabs=object(), mode_tab_id="img2img_inpaint_tab",
                                   inpaint_controls=object())
    image = Image.new("RGB", (8, 8))
    values = ui_results.send_values(target, "a dog\nSteps: 3, Sampler: Euler, Size: 64x96", image, keep_size=False)
    prompt, width, sent, mode, sub_tabs, controls, tabs = values
    assert prompt == "a dog" and width == gr.update()  # option send_size off: the size stays
    assert sent is image and mode == 2 and sub_tabs.selected == "img2img_inpaint_tab"
    assert controls["visible"] is True and tabs.selected == "img2img"


def test_open_folder_runs_the_file_manager_on_the_output_folder(serena, monkeypatch, tmp_path):
    monkeypatch.setitem(shared.opts.data, "outdir_samples", str(tmp_path))
    monkeypatch.setattr(ui_results, "opener_command", lambda folder: ["xdg-open", folder])
    ran = []
    assert "Opened" in ui_results.open_folder("txt2img", run=ran.append)
    assert ran == [["xdg-open", str(tmp_path)]]
    monkeypatch.setitem(shared.opts.data, "outdir_samples", str(tmp_path / "missing"))
    assert "does not exist yet" in ui_results.open_folder("txt2img", run=ran.append) and len(ran) == 1
    monkeypatch.setattr(shared.cmd_opts, "hide_ui_dir_config", True, raising=False)
    with pytest.raises(gr.Error, match="hide-ui-dir-config"):
        ui_results.open_folder("txt2img", run=ran.append)


def test_open_folder_button_is_hidden_with_hide_ui_dir_config(serena, monkeypatch):
    monkeypatch.setattr(shared.cmd_opts, "hide_ui_dir_config", True, raising=False)
    with gr.Blocks():
        panel = ui_results.create_buttons("txt2img")
    assert panel.open_folder.visible is False and panel.save.visible is not False


def test_save_writes_the_selected_image_with_its_infotext_and_a_log_line(serena, monkeypatch, tmp_path):
    monkeypatch.setitem(shared.opts.data, "outdir_save", str(tmp_path))
    gallery = [(img, None) for img in images(3)]
    files, log_line = ui_results._save(INFO, gallery, False, 2)
    saved = [f for f in files["value"] if f.endswith(".png")]
    assert len(saved) == 1 and "Saved:" in log_line
    with Image.open(saved[0]) as image:
        assert image.info.get("parameters") == "second" and image.getpixel((0, 0)) == (80, 0, 0)
    assert os.path.isfile(tmp_path / "log.csv")
    files, log_line = ui_results._save(INFO, gallery, True, -1)  # 🗃️: all images, zipped
    assert files["value"][0].endswith(".zip")
    assert "generate images first" in ui_results._save("", [], False, -1)[1]
