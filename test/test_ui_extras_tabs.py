"""The Extras, Checkpoint Merger and PNG Info tabs' handlers, without a browser: what the page's
buttons return (images, saved files, messages) and where "Send to …" puts the image."""
from __future__ import annotations

import os

import gradio as gr
import pytest
from PIL import Image

from modules import errors


def checker(size: int = 64) -> Image.Image:
    """A 64x64 black/white checkerboard with a red corner (so resizes are visible)."""
    image = Image.new("RGB", (size, size), "white")
    for y in range(0, size, 8):
        for x in range(0, size, 8):
            if (x + y) // 8 % 2:
                image.paste((0, 0, 0), (x, y, x + 8, y + 8))
    image.paste((255, 0, 0), (0, 0, 8, 8))
    return image


def upscale_args(by: float = 2.0, upscaler: str = "Lanczos") -> list:
    """The Extras scripts' flat arguments for "Upscale by `by` with `upscaler`" (others left off)."""
    from modules import scripts_postprocessing, upscaling
    runner = scripts_postprocessing.current_runner()
    request = upscaling.extras_scripts_args(upscaling_resize=by, upscaler_1=upscaler)
    return runner.create_args_for_run({"Upscale": request["Upscale"]})


def extras_png_info(path: str) -> str:
    with Image.open(path) as image:
        return image.info.get("extras", "")


# --- Extras ------------------------------------------------------------------------------------------------
def test_single_image_is_upscaled_saved_and_described(serena):
    from modules import ui_postprocessing as ui
    folder = ui.default_output_folder()
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    images, html_info, html_log = ui.run_postprocessing(0, checker(), None, "", "", True, *upscale_args())
    assert [im.size for im in images] == [(128, 128)]
    assert "Postprocess upscale by: 2.0" in html_info and "Lanczos" in html_info
    new = sorted(set(os.listdir(folder)) - before)
    assert len(new) == 1 and new[0] in html_log
    saved = os.path.join(folder, new[0])
    assert Image.open(saved).size == (128, 128)
    assert "Postprocess upscale by: 2.0" in extras_png_info(saved)
    assert os.path.commonpath([serena.data_paths.data_path, saved]) == serena.data_paths.data_path


def test_batch_process_runs_every_uploaded_file(serena, tmp_path):
    from modules import ui_postprocessing as ui
    paths = []
    for n, size in enumerate((64, 32)):
        path = tmp_path / f"in{n}.png"
        checker(size).save(path)
        paths.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(1, str(tmp_path / "broken.png"))
    images, _, html_log = ui.run_postprocessing(1, None, paths, "", "", True, *upscale_args(2.0, "Nearest"))
    assert sorted(im.size for im in images) == [(64, 64), (128, 128)]
    assert "Saved 2 images" in html_log
    with pytest.raises(gr.Error, match="none of the files"):
        ui.run_from_page(1, None, [str(tmp_path / "broken.png")], "", "", True, *upscale_args())


def test_batch_from_directory_keeps_names_and_hides_results(serena):
    from modules import ui_postprocessing as ui
    data = serena.data_paths.data_path
    src, dst = os.path.join(data, "extras-in"), os.path.join(data, "extras-out")
    os.makedirs(src, exist_ok=True)
    checker().save(os.path.join(src, "cat.png"))
    with open(os.path.join(src, "notes.txt"), "w") as f:
        f.write("not an image")
    images, _, _ = ui.run_postprocessing(2, None, None, "extras-in", "extras-out", False, *upscale_args())
    assert images == []
    written = [n for n in os.listdir(dst) if n.endswith(".png")]
    assert written == ["cat.png"] and Image.open(os.path.join(dst, "cat.png")).size == (128, 128)
    shown, _, _ = ui.run_postprocessing(2, None, None, src, "extras-out", True, *upscale_args())
    assert [im.size for im in shown] == [(128, 128)]


def test_folders_outside_the_data_folder_are_refused_unless_allowed(serena, tmp_path, monkeypatch, caplog):
    from modules import ui_postprocessing as ui
    checker().save(tmp_path / "a.png")
    with pytest.raises(gr.Error, match="outside the data folder"):
        ui.run_from_page(2, None, None, str(tmp_path), "", True, *upscale_args())
    with pytest.raises(gr.Error, match="outside the data folder"):
        ui.run_from_page(2, None, None, "extras-in", str(tmp_path / "out"), True, *upscale_args())
    with pytest.raises(gr.Error, match="outside the data folder"):
        ui.run_from_page(2, None, None, "../" + os.path.basename(str(tmp_path)), "", True, *upscale_args())
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(serena.cmd_opts, "allow_outside_data_dir", True)
    images, _, _ = ui.run_postprocessing(2, None, None, str(tmp_path), str(tmp_path / "out"), True, *upscale_args())
    assert [im.size for im in images] == [(128, 128)]
    assert os.listdir(tmp_path / "out") == ["a.png"]
    monkeypatch.setattr(serena.cmd_opts, "hide_ui_dir_config", True)
    with pytest.raises(gr.Error, match="hide-ui-dir-config"):
        ui.run_from_page(2, None, None, "extras-in", "", True, *upscale_args())


def test_missing_inputs_are_short_messages(serena):
    from modules import ui_postprocessing as ui
    with pytest.raises(gr.Error, match="choose an image"):
        ui.run_from_page(0, None, None, "", "", True, *upscale_args())
    with pytest.raises(gr.Error, match="upload one or more images"):
        ui.run_from_page(1, None, [], "", "", True, *upscale_args())
    with pytest.raises(gr.Error, match="enter an input directory"):
        ui.run_from_page(2, None, None, "  ", "", True, *upscale_args())
    with pytest.raises(gr.Error, match="does not exist"):
        ui.run_from_page(2, None, None, "no-such-folder", "", True, *upscale_args())


# --- Checkpoint Merger --------------------------------------------------------------------------------------
@pytest.fixture()
def merge_env(serena, tmp_path, monkeypatch):
    """A data folder of its own with checkpoints a and b (the demo weights, b halved); the session's
    checkpoint lists come back afterwards."""
    import safetensors.torch

    from modules import cmd_args, demo_checkpoint, options, paths, sd_models, sd_vae, shared
    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    a = demo_checkpoint.build_demo_state_dict()
    b = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in a.items()}
    safetensors.torch.save_file(a, str(models / "a.safetensors"), metadata={"format": "pt", "ss_note": "from a"})
    safetensors.torch.save_file(b, str(models / "b.safetensors"), metadata={"format": "pt"})
    saved = [dict(r) for r in (sd_models.checkpoints_list, sd_models.checkpoint_aliases, sd_vae.vae_dict)]
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(str(tmp_path)))
    monkeypatch.setattr(shared, "opts", options.Options())
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", str(tmp_path), "--use-cpu", "all"],
                                                           environ={}))
    sd_models.checkpoints_list.clear()
    sd_models.checkpoint_aliases.clear()
    sd_models.list_models()
    yield models
    for registry, content in zip((sd_models.checkpoints_list, sd_models.checkpoint_aliases, sd_vae.vae_dict), saved):
        registry.clear()
        registry.update(content)


def test_merger_writes_the_checkpoint_and_lists_it(merge_env):
    import safetensors.torch

    from modules import ui_checkpoint_merger as merger
    titles = merger.checkpoint_choices()
    a = next(t for t in titles if t.startswith("a.safetensors"))
    b = next(t for t in titles if t.startswith("b.safetensors"))
    out = merger.merge(a, b, None, "Weighted sum", 0.5, False, "mixed", "safetensors", 0, "None", "", True, True,
                       True, "{}")
    path = merge_env / "mixed.safetensors"
    assert path.exists() and "Checkpoint saved to" in out[3] and "mixed.safetensors" in out[3]
    assert all(any(c.startswith("mixed.safetensors") for c in update["choices"]) for update in out[:3])
    key = "model.diffusion_model.input_blocks.0.0.weight"
    merged = safetensors.torch.load_file(str(path))
    first = safetensors.torch.load_file(str(merge_env / "a.safetensors"))
    assert merged[key].allclose(first[key] * 0.75)
    assert '"ss_note": "from a"' in merger.read_metadata(a, None, None)


def test_merger_mistakes_are_short_messages(merge_env):
    from modules import ui_checkpoint_merger as merger
    a = next(t for t in merger.checkpoint_choices() if t.startswith("a.safetensors"))
    with pytest.raises(gr.Error, match="primary model"):
        merger.merge(None, None, None, "Weighted sum", 0.3, False, "", "safetensors", 0, "None", "", True, True,
                     True, "{}")
    with pytest.raises(gr.Error):  # weighted sum needs B
        merger.merge(a, None, None, "Weighted sum", 0.3, False, "", "safetensors", 0, "None", "", True, True,
                     True, "{}")
    with pytest.raises(gr.Error, match="JSON|json"):
        merger.merge(a, None, None, "No interpolation", 0.3, False, "x", "safetensors", 0, "None", "", True, True,
                     True, "{not json")


# --- PNG Info: "Send to …" carries the image ---------------------------------------------------------------
def test_png_info_send_to_buttons_carry_the_image(serena):
    from modules import ui, ui_results
    image = checker()
    infotext = "a cat\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 7, Size: 64x64"
    target = ui_results.SendTarget("img2img", "img2img", {"prompt": None, "steps": None, "seed": None},
                                   image=object())
    values = ui_results.send_values(target, infotext, image)
    assert values[:3] == ["a cat", 3, 7] and values[3] is image
    values = ui_results.send_values(target, infotext, image, keep_seed=False)  # option send_seed off
    assert values[2] == gr.update()
    blocks = ui.create_ui()
    config = blocks.get_config_file()
    by_elem = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    outputs_of = {}
    for dep in config["dependencies"]:
        for target, event in dep["targets"]:
            if event == "click":
                outputs_of.setdefault(target, set()).update(dep["outputs"])
    assert by_elem["img2img_image"] in outputs_of[by_elem["img2img_tab"]]
    assert by_elem["img2maskimg"] in outputs_of[by_elem["inpaint_tab"]]  # the Inpaint sub-tab's editor
    assert by_elem["mode_img2img"] in outputs_of[by_elem["inpaint_tab"]]
    assert by_elem["extras_image"] in outputs_of[by_elem["extras_tab"]]
    assert by_elem["img2img_image"] not in outputs_of[by_elem["txt2img_tab"]]
    assert by_elem["tabs"] in outputs_of[by_elem["extras_tab"]]


def test_outside_folder_check_names_the_flag(serena):
    from modules import ui_postprocessing as ui
    with pytest.raises(errors.InvalidParameter, match="--allow-outside-data-dir"):
        ui.confined_folder("/", "output directory")
    assert ui.confined_folder("outputs/x", "output directory").startswith(serena.data_paths.data_path)
