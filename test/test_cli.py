"""`./webui.sh generate`: request files and flags, image paths, saving, exit codes, progress bar."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import webui
from modules import cli, errors, shared

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = os.path.join(ROOT, "test", "golden", "inputs")


@pytest.fixture()
def no_reinit(monkeypatch):
    """cli.main initialises Serena; the session fixture already did, with a private data folder."""
    monkeypatch.setattr(webui, "initialize", lambda *a, **k: None)


def test_flags_override_the_request_file(tmp_path):
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"prompt": "from file", "steps": 5, "styles": ["a"]}))
    ns, rest = cli.build_parser().parse_known_args(
        ["--request", str(req), "--steps", "7", "--styles", '["x", "y"]', "--override-settings",
         '{"CLIP_stop_at_last_layers": 2}', "--use-cpu", "all"])
    request = cli.load_request(ns)
    assert request["prompt"] == "from file"
    assert request["steps"] == "7"  # text: the API model converts it
    assert request["styles"] == ["x", "y"]
    assert request["override_settings"] == {"CLIP_stop_at_last_layers": 2}
    assert rest == ["--use-cpu", "all"]


def test_bad_json_flag_is_a_clear_error():
    ns, _ = cli.build_parser().parse_known_args(["--styles", "[oops"])
    with pytest.raises(errors.InvalidParameter, match="not valid JSON"):
        cli.load_request(ns)


def test_image_paths_become_base64_and_missing_files_are_named(tmp_path):
    out = cli.resolve_image_paths({"init_images": ["init.png"], "mask": "mask.png"}, INPUTS)
    assert out["init_images"][0].startswith("iVBOR") and out["mask"].startswith("iVBOR")
    assert cli.resolve_image_paths({"mask": "data:image/png;base64,AAAA"}, INPUTS)["mask"].startswith("data:")
    with pytest.raises(errors.InvalidImage, match=r"init_images\[0\]: no such file 'nope.png'"):
        cli.resolve_image_paths({"init_images": ["nope.png"]}, str(tmp_path))


def test_main_saves_images_with_infotext_into_outdir(serena, no_reinit, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["--prompt", "a small boat", "--steps", "2", "--width", "64", "--height", "64",
                   "--seed", "21", "--batch-size", "2", "--outdir", str(out)])
    assert rc == 0
    files = sorted(os.listdir(out))
    assert [f for f in files if not f.startswith("grid")] == ["00000-21-a small boat.png", "00001-22-a small boat.png"]
    info = Image.open(out / "00001-22-a small boat.png").info["parameters"]
    assert info.startswith("a small boat\nSteps: 2,") and "Seed: 22," in info
    printed = capsys.readouterr().out.split()
    assert str(out / "00000-21-a small boat.png").split()[-1] in " ".join(printed)


def test_main_img2img_from_request_file(serena, no_reinit, tmp_path):
    req = tmp_path / "req.json"
    Image.open(os.path.join(INPUTS, "init.png")).save(tmp_path / "init.png")
    req.write_text(json.dumps({"prompt": "x", "init_images": ["init.png"], "steps": 2, "width": 64, "height": 64,
                               "denoising_strength": 0.5, "seed": 1}))
    assert cli.main(["--request", str(req), "--outdir", str(tmp_path / "o")]) == 0
    assert os.listdir(tmp_path / "o") == ["00000-1-x.png"]


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "steps"),
    (["--width", "65"], "width must be a multiple of 8"),
    (["--sampler-name", "Nope"], "valid samplers: DPM++ 2M"),
    (["--scheduler", "Nope"], "Nope"),
])
def test_bad_input_exits_2_naming_the_problem(serena, no_reinit, tmp_path, capsys, flags, message):
    assert cli.main([*flags, "--outdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_progress_bar_follows_state(capsys):
    state = shared.state.__class__()
    state.job_count, state.sampling_steps = 1, 4
    with cli.ProgressBar(state):
        import time
        for step in range(4):
            state.sampling_step = step + 1
            time.sleep(0.15)
    assert "4/4" in capsys.readouterr().err


def test_webui_sh_generate_help_runs_without_setup():
    """The flag list is generated from the API request model: every field has a flag."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "generate", "--help"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for flag in ("--request", "--outdir", "--prompt", "--sampler-name", "--init-images", "--hr-scale", "--mask-blur"):
        assert flag in out
