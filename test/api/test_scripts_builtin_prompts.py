"""Built-in scripts "Prompt matrix", "Prompts from file or textbox" and "Custom code" through the
API, with positional `script_args` exactly as A1111 clients send them (issue 10, item 5).

64x64, 1–2 steps on the demo checkpoint. The images, their infotexts and the `info` JSON are
what is checked; a runner recorder proves each script job reaches `ProcessingRunner.run`.
"""
from __future__ import annotations

import json

import pytest

from api_helpers import API, TXT2IMG_BASE, decode, same_pixels
from job_helpers import record_runner_calls
from modules import scripts

pytestmark = pytest.mark.timeout(180)

MATRIX_DEFAULTS = [False, False, "positive", "comma", 0]  # put_at_start, different_seeds, prompt_type, delimiter, margin


def post(client, route: str = "txt2img", status: int = 200, **changes) -> dict:
    r = client.post(f"{API}/{route}", json={**TXT2IMG_BASE, **changes})
    assert r.status_code == status, r.text
    return r.json()


def infotext_prompt(infotext: str) -> str:
    """The prompt lines of an infotext (everything before the negative prompt / parameter line)."""
    lines = infotext.split("\n")
    return "\n".join(line for line in lines[:-1] if not line.startswith("Negative prompt: ")) if len(lines) > 1 else ""


@pytest.fixture()
def runner_calls(monkeypatch) -> list:
    """Each `ProcessingRunner.run` call (the real method still runs)."""
    return record_runner_calls(monkeypatch)


# --- Prompt matrix ------------------------------------------------------------------------------------
def defaults(runner, title: str) -> list:
    """The values of the components a script's `ui()` returned: the args API clients get by default."""
    script = runner.script(title)
    return [getattr(c, "value", None) for c in runner.inputs[script.args_from:script.args_to]]


def test_builtin_scripts_are_listed_with_their_a1111_args(client):
    listed = client.get(f"{API}/scripts").json()
    for name in ("prompt matrix", "prompts from file or textbox"):
        assert name in listed["txt2img"] and name in listed["img2img"]
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        assert defaults(runner, "Prompt matrix") == MATRIX_DEFAULTS
        assert defaults(runner, "Prompts from file or textbox") == [False, False, "start", ""]


def test_prompt_matrix_two_parts_gives_a_labelled_grid_then_four_images(client, runner_calls):
    body = post(client, prompt="a cat|red|blue", seed=7, steps=1, script_name="Prompt matrix",
                script_args=MATRIX_DEFAULTS)
    info = json.loads(body["info"])
    assert len(runner_calls) == 1  # one job for the whole matrix
    assert len(body["images"]) == 5 and info["index_of_first_image"] == 1
    assert info["all_prompts"] == ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert info["all_seeds"] == [7, 7, 7, 7]
    texts = info["infotexts"]
    assert [infotext_prompt(t) for t in texts[1:]] == info["all_prompts"]
    assert texts[0] == texts[1] and all("Seed: 7," in t and "Steps: 1," in t for t in texts)

    grid, cells = decode(body["images"][0]), [decode(b) for b in body["images"][1:]]
    assert grid.info["parameters"] == texts[0]
    assert not same_pixels(cells[0], cells[1])  # the prompt part changes the picture
    pad_left = 64 * 3 // 4  # the row labels' band
    pad_top = grid.height - 2 * 64
    assert grid.width == pad_left + 2 * 64 and pad_top > 0
    for i, cell in enumerate(cells):  # "red" across the columns, "blue" down the rows
        x, y = pad_left + 64 * (i % 2), pad_top + 64 * (i // 2)
        assert same_pixels(grid.crop((x, y, x + 64, y + 64)), cell), f"cell {i}"
    band = grid.convert("L")
    left, right = band.crop((pad_left, 0, pad_left + 64, pad_top)), band.crop((pad_left + 64, 0, pad_left + 128, pad_top))
    assert left.getextrema()[0] >= 140 and left.getextrema()[0] < 200  # "red" struck through, in grey
    assert right.getextrema()[0] < 100  # "red" written in black
    assert band.crop((0, pad_top, pad_left, pad_top + 64)).getextrema()[0] >= 140  # no "blue" in row 0
    assert band.crop((0, pad_top + 64, pad_left, pad_top + 128)).getextrema()[0] < 100


def test_prompt_matrix_negative_space_start_different_seeds_and_margin(client):
    body = post(client, prompt="a house", negative_prompt="dark|fog|rain", seed=20, steps=1,
                script_name="prompt matrix", script_args=[True, True, "negative", "space", 4])
    info = json.loads(body["info"])
    assert info["all_negative_prompts"] == ["dark", "fog dark", "rain dark", "fog rain dark"]
    assert info["all_prompts"] == ["a house"] * 4
    assert info["all_seeds"] == [20, 21, 22, 23]
    assert [t.split("\n")[1] for t in info["infotexts"][1:]] == [f"Negative prompt: {n}" for n in
                                                                   info["all_negative_prompts"]]
    grid = decode(body["images"][0])
    assert grid.width == 64 * 3 // 4 + 2 * 64 + 4


@pytest.mark.parametrize("args, problem", [
    (["no", False, "sideways", "comma", 0], "prompt_type"),
    ([False, False, "positive", "tab", 0], "variations_delimiter"),
    ([False, False, "positive", "comma", -2], "margin_size"),
])
def test_prompt_matrix_bad_arguments_are_422_naming_them(client, args, problem):
    body = post(client, status=422, prompt="a|b", steps=1, script_name="Prompt matrix", script_args=args)
    assert problem in body["detail"]


def test_prompt_matrix_too_many_parts_is_422(client):
    body = post(client, status=422, prompt="x" + "|y" * 40, steps=1, script_name="Prompt matrix",
                script_args=MATRIX_DEFAULTS)
    assert "api_max_batch_images" in body["detail"]


# --- Prompts from file or textbox ---------------------------------------------------------------------
def test_prompts_from_file_one_job_per_line_with_options(client, runner_calls):
    lines = "\n".join([
        "a dog",
        "",
        '--prompt "a bird" in the sky --negative_prompt ugly --steps 2 --seed 11 --cfg_scale 3.5',
        "--prompt fish --sampler_name euler --width 72 --restore_faces false --sd_model serena-demo-tiny",
    ])
    body = post(client, prompt="", seed=5, steps=1, sampler_name="Euler a", script_name="Prompts from file or textbox",
                script_args=[False, False, "start", lines])
    info = json.loads(body["info"])
    assert len(runner_calls) == 3 and len(body["images"]) == 3
    dog, bird, fish = info["infotexts"]
    assert dog.startswith("a dog\nSteps: 1, Sampler: Euler a,") and "Seed: 5," in dog and "CFG scale: 7.0" in dog
    assert bird.startswith("a bird in the sky\nNegative prompt: ugly\nSteps: 2,")
    assert "Seed: 11," in bird and "CFG scale: 3.5," in bird
    assert fish.startswith("fish\nSteps: 1, Sampler: Euler,") and "Size: 72x64" in fish
    assert "Model: serena-demo-tiny" in fish
    assert decode(body["images"][2]).size == (72, 64)
    assert info["all_prompts"] == ["a dog", "a bird in the sky", "fish"]


def test_prompts_from_file_iterates_seeds_and_places_prompts(client):
    body = post(client, prompt="oil painting", seed=100, steps=1, batch_size=2, script_name="Prompts from file or textbox",
                script_args=[True, False, "end", "a boat\n--prompt a tree --n_iter 1"])
    texts = json.loads(body["info"])["infotexts"]
    assert [infotext_prompt(t) for t in texts] == ["oil painting a boat"] * 2 + ["oil painting a tree"] * 2
    assert [seed_of(t) for t in texts] == ["Seed: 100", "Seed: 101", "Seed: 102", "Seed: 103"]


def seed_of(infotext: str) -> str:
    return next(part for part in infotext.split("\n")[-1].split(", ") if part.startswith("Seed: "))


def test_prompts_from_file_same_random_seed_for_all_lines(client):
    body = post(client, prompt="", seed=-1, steps=1, script_name="Prompts from file or textbox",
                script_args=[False, True, "start", "one\ntwo"])
    texts = json.loads(body["info"])["infotexts"]
    assert [infotext_prompt(t) for t in texts] == ["one", "two"]
    assert seed_of(texts[0]) == seed_of(texts[1]) != "Seed: -1"


@pytest.mark.parametrize("line, problem", [
    ("--foo 3", "unknown option --foo"),
    ("--steps many", "--steps"),
    ("--seed", "has no value"),
    ("--sampler_name nosuch", "unknown sampler 'nosuch'"),
    ('--prompt "unclosed', "line 1"),
    ("--sd_model nosuch-model", "unknown checkpoint"),
    ("--outpath_samples /etc", "outside the data folder"),
])
def test_prompts_from_file_bad_lines_are_422_naming_the_problem(client, line, problem):
    body = post(client, status=422, steps=1, script_name="Prompts from file or textbox",
                script_args=[False, False, "start", line])
    assert problem in body["detail"] and "Prompts from file" in body["detail"]


def test_prompts_from_file_bad_value_for_the_job_is_422(client):
    body = post(client, status=422, steps=1, script_name="Prompts from file or textbox",
                script_args=[False, False, "start", "--prompt x --width 65"])
    assert "width" in body["detail"]


# --- Custom code --------------------------------------------------------------------------------------
@pytest.fixture()
def allow_code(api_runtime):
    """Scripts reloaded with --allow-code on, then reloaded as they were."""
    cmd_opts = api_runtime.cmd_opts
    previous = cmd_opts.allow_code
    cmd_opts.allow_code = True
    scripts.load_scripts()
    yield
    cmd_opts.allow_code = previous
    scripts.load_scripts()


def test_custom_code_is_absent_without_allow_code(client, api_runtime):
    assert not api_runtime.cmd_opts.allow_code
    listed = client.get(f"{API}/scripts").json()
    assert "custom code" not in listed["txt2img"] and "custom code" not in listed["img2img"]
    body = post(client, status=422, steps=1, script_name="Custom code", script_args=["return 1", 2])
    assert body["detail"] == "Script 'Custom code' not found"


def test_custom_code_runs_with_allow_code(client, allow_code, runner_calls):
    listed = client.get(f"{API}/scripts").json()
    assert "custom code" in listed["txt2img"] and "custom code" in listed["img2img"]
    code = "p.steps = 1\np.seed = 42\nif True:\n    p.prompt = 'from code'\nreturn process_images(p)"
    body = post(client, steps=2, seed=1, script_name="Custom code", script_args=[code, 2])
    assert len(runner_calls) == 1
    text = json.loads(body["info"])["infotexts"][0]
    assert text.startswith("from code\n") and "Steps: 1," in text and "Seed: 42," in text


def test_custom_code_display_and_errors(client, allow_code):
    code = "from PIL import Image\ndisplay([Image.new('RGB', (8, 8), 'red')], 3, 'shown')"
    body = post(client, script_name="Custom code", script_args=[code, 4])
    assert len(body["images"]) == 1 and decode(body["images"][0]).getpixel((0, 0)) == (255, 0, 0)
    assert json.loads(body["info"])["seed"] == 3
    bad = post(client, status=422, script_name="Custom code", script_args=["return (", 2])
    assert "SyntaxError" in bad["detail"]
    raising = post(client, status=422, script_name="Custom code", script_args=["x = 1\nreturn 1 / 0", 2])
    assert "ZeroDivisionError at line 2" in raising["detail"]
