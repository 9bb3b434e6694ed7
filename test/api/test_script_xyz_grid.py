"""Built-in script "X/Y/Z plot" (scripts/xyz_grid.py, issue 10 item 5).

The value parsers are tested alone; the script itself through the API with positional
`script_args` exactly as A1111 clients send them: 64x64, 1–3 steps on the demo checkpoint, the
grid's size and pixels, every cell's image and infotext, the grid's infotext, saving, errors.
"""
from __future__ import annotations

import glob
import json
import os

import pytest
from PIL import Image

from api_helpers import API, TXT2IMG_BASE, decode, png_b64, same_pixels
from modules import errors, scripts
from modules.runtime.runner import ProcessingRunner

pytestmark = pytest.mark.timeout(180)

# A1111 v1.10's txt2img axis labels, in the order whose indexes API clients send.
A1111_TXT2IMG_AXES = [
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma",
    "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma",
    "Schedule max sigma", "Schedule rho", "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip",
    "Denoising", "Initial noise multiplier", "Extra noise", "Hires upscaler", "VAE", "Styles", "UniPC Order",
    "Face restore", "Token merging ratio", "Token merging ratio high-res", "Always discard next-to-last sigma",
    "SGM noise multiplier", "Refiner checkpoint", "Refiner switch at", "RNG source", "FP8 mode", "Size",
]
AXIS = {label: i for i, label in enumerate(A1111_TXT2IMG_AXES)}


@pytest.fixture(scope="module")
def xyz(api_runtime):
    """The loaded script module, found the way extensions find it (`scripts_data`)."""
    found = [d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"]
    assert found, "scripts/xyz_grid.py was not loaded by webui.initialize()"
    return found[0]


def args(x=(0, "", []), y=(0, "", []), z=(0, "", []), draw_legend=True, include_lone_images=True,
         include_sub_grids=False, no_fixed_seeds=False, vary=(False, False, False), margin=0, csv_mode=False) -> list:
    """The 18 positional arguments of A1111's X/Y/Z plot."""
    return [*x, *y, *z, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary, margin, csv_mode]


def plot(client, script_args: list, status: int = 200, **changes) -> dict:
    body = {**TXT2IMG_BASE, "seed": 11, "steps": 2, "sampler_name": "Euler", **changes,
            "script_name": "X/Y/Z plot", "script_args": script_args}
    r = client.post(f"{API}/txt2img", json=body)
    assert r.status_code == status, r.text
    return r.json()


def infotexts(response: dict) -> list[str]:
    """The `parameters` text of every returned image."""
    return [decode(b64).info.get("parameters", "") for b64 in response["images"]]


# --- parsing ---------------------------------------------------------------------------------------
def test_int_range_syntax(xyz):
    expand = xyz.expand_int_values
    assert expand(["1-5"]) == [1, 2, 3, 4, 5]
    assert expand(["1-5 (+2)"]) == [1, 3, 5]
    assert expand(["10-5 (-3)"]) == [10, 7]
    assert expand(["5-1 (-1)"]) == [5, 4, 3, 2, 1]
    assert expand(["1-10 [5]"]) == [1, 3, 5, 7, 10]
    assert expand(["-2-2"]) == [-2, -1, 0, 1, 2]
    assert expand(["7", "", " 1-2 "]) == ["7", 1, 2]
    steps = xyz.axis_options[4]
    assert steps.label == "Steps"
    assert xyz.parse_axis_values(steps, xyz.csv_string_to_list_strip("3, 1-3 (+2), 8")) == [3, 1, 3, 8]


def test_float_range_syntax(xyz):
    assert xyz.expand_float_values(["0.5-1.5 (+0.5)"]) == [0.5, 1.0, 1.5]
    assert xyz.expand_float_values(["1-2 [3]"]) == [1.0, 1.5, 2.0]
    assert xyz.expand_float_values(["1-3"]) == [1.0, 2.0, 3.0]
    assert xyz.expand_float_values(["2.5-1.5 (-0.5)", "7.25"]) == [2.5, 2.0, 1.5, "7.25"]
    assert xyz.expand_float_values(["0-1 (+0.1)"])[-1] == 1.0


def test_csv_values_keep_quoted_commas(xyz):
    values = xyz.csv_string_to_list_strip('a cat,  "dog, brown" , fox')
    assert values == ["a cat", "dog, brown", "fox"]
    assert xyz.csv_string_to_list_strip(xyz.list_to_csv_string(values)) == values


@pytest.mark.parametrize("text, message", [
    ("2, abc", "'abc' is not a valid int"),
    ("5-1", "has no values"),
    ("1-5 (+0)", "step of 0"),
    ("1-100000000", "more than"),
    ("", "values are empty"),
])
def test_bad_values_are_refused(xyz, text, message):
    steps = xyz.axis_options[4]
    with pytest.raises(errors.InvalidParameter, match=message):
        xyz.parse_axis_values(steps, xyz.csv_string_to_list_strip(text))


def test_axis_lists_and_names_match_a1111(xyz):
    assert [o.label for o in xyz.current_axis_options(False)] == A1111_TXT2IMG_AXES
    img2img = [o.label for o in xyz.current_axis_options(True)]
    assert "Hires steps" not in img2img and "Hires upscaler" not in img2img
    assert img2img[:9] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale",
                           "Prompt S/R", "Prompt order"]
    assert "Cond. Image Mask Weight" in img2img
    options = xyz.current_axis_options(False)
    assert xyz.resolve_axis(options, 9).label == "Sampler"
    assert xyz.resolve_axis(options, "steps").label == "Steps"
    assert xyz.resolve_axis(options, None).label == "Nothing"
    with pytest.raises(errors.InvalidParameter, match="axis index"):
        xyz.resolve_axis(options, 99)
    for name in ("AxisOption", "AxisOptionImg2Img", "AxisOptionTxt2Img", "axis_options", "apply_field", "apply_prompt",
                 "apply_order", "format_value", "format_value_add_label", "format_value_join_list", "format_nothing",
                 "str_permutations", "list_to_csv_string", "csv_string_to_list_strip", "boolean_choice",
                 "confirm_samplers", "apply_override", "draw_xyz_grid", "SharedSettingsStackHelper", "Script",
                 "re_range", "re_range_float", "re_range_count", "re_range_count_float"):
        assert hasattr(xyz, name), name


def test_extension_axis_is_offered_and_applied(xyz, client):
    """An extension appends an AxisOption (as ControlNet does); clients pick it by its index."""
    seen = []
    extra = xyz.AxisOption("Test knob", float, lambda p, x, xs: seen.append(x))
    xyz.axis_options.append(extra)
    try:
        index = [o.label for o in xyz.current_axis_options(False)].index("Test knob")
        out = plot(client, args(x=(index, "0.5, 1.5", [])), steps=1)
    finally:
        xyz.axis_options.remove(extra)
    assert seen == [0.5, 1.5]
    assert "X Type: Test knob" in infotexts(out)[0]


def test_loop_order_puts_the_costliest_axis_outside(xyz):
    opt = xyz.AxisOption
    cheap, costly = opt("a", str, None), opt("b", str, None, cost=1.0)
    assert xyz.processing_order(cheap, cheap, cheap) == ("z", "y")
    assert xyz.processing_order(costly, cheap, cheap) == ("x", "z")
    assert list(xyz.cell_order(2, 1, 2, "x", "z")) == [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 0, 1)]


def test_prompt_order_permutes_tokens_in_place(xyz, api_runtime):
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat, on a sofa, at night")
    xyz.apply_order(p, ("at night", "a cat", "on a sofa"), [])
    assert p.prompt == "at night, a cat, on a sofa"


# --- through the API ---------------------------------------------------------------------------------
def test_steps_by_sampler_grid_and_cells(client):
    """Steps 2,3 × Sampler Euler, Euler a: the grid, then one image per cell, X fastest."""
    out = plot(client, args(x=(AXIS["Steps"], "2,3", []), y=(AXIS["Sampler"], "", ["Euler", "Euler a"])))
    assert len(out["images"]) == 5
    grid, *cells = [decode(b) for b in out["images"]]
    texts = infotexts(out)
    expected = [("2", "Euler"), ("3", "Euler"), ("2", "Euler a"), ("3", "Euler a")]
    for text, (steps, sampler) in zip(texts[1:], expected):
        assert f"Steps: {steps}, Sampler: {sampler}," in text
        assert "X Type" not in text
    assert all(c.size == (64, 64) for c in cells)
    assert not same_pixels(cells[0], cells[1])  # the steps changed the image
    # the legend adds a band left (row labels) and on top (column labels); the cells sit below/right of it
    assert grid.width > 128 and grid.height > 128
    left, top = grid.width - 128, grid.height - 128
    for i, cell in enumerate(cells):
        x, y = left + 64 * (i % 2), top + 64 * (i // 2)
        assert same_pixels(grid.crop((x, y, x + 64, y + 64)), cell), i
    assert 'Script: X/Y/Z plot, X Type: Steps, X Values: "2,3", Y Type: Sampler, Y Values: "Euler,Euler a"' in texts[0]
    info = json.loads(out["info"])
    assert info["index_of_first_image"] == 1
    assert info["infotexts"][1:5] == texts[1:]


def test_defaults_return_the_grid_only_and_margins_widen_it(client):
    out = plot(client, args(x=(AXIS["Steps"], "1, 2", []), draw_legend=False, include_lone_images=False), steps=1)
    assert [decode(b).size for b in out["images"]] == [(128, 64)]
    out = plot(client, args(x=(AXIS["Steps"], "1, 2", []), y=(AXIS["CFG Scale"], "5, 7", []), draw_legend=True,
                            include_lone_images=False, margin=10), steps=1)
    grid = decode(out["images"][0])
    plain = plot(client, args(x=(AXIS["Steps"], "1, 2", []), y=(AXIS["CFG Scale"], "5, 7", []), draw_legend=True,
                              include_lone_images=False), steps=1)
    assert grid.size == (decode(plain["images"][0]).width + 10, decode(plain["images"][0]).height + 10)


def test_z_axis_makes_a_grid_per_value(client):
    out = plot(client, args(x=(AXIS["Steps"], "1-2", []), z=(AXIS["CFG Scale"], "5, 9", []), draw_legend=False,
                            include_sub_grids=True), steps=1)
    main, sub0, sub1, *cells = [decode(b) for b in out["images"]]
    assert len(cells) == 4 and main.size == (256, 64) and sub0.size == sub1.size == (128, 64)
    assert same_pixels(main.crop((128, 0, 256, 64)), sub1)
    assert same_pixels(sub1.crop((64, 0, 128, 64)), cells[3])
    texts = infotexts(out)
    assert "Z Type: CFG Scale" in texts[0] and "Z Values: \"5, 9\"" in texts[0]
    assert "X Type: Steps" in texts[1] and "Z Type" not in texts[1]
    assert "CFG scale: 9.0" in texts[2] and "CFG scale: 9.0" in texts[6] and "CFG scale: 5.0" in texts[3]
    # without sub grids, the main grid is followed directly by the cells
    out = plot(client, args(x=(AXIS["Steps"], "1-2", []), z=(AXIS["CFG Scale"], "5, 9", []), draw_legend=False),
               steps=1)
    assert [decode(b).size for b in out["images"]] == [(256, 64)] + [(64, 64)] * 4


def test_prompt_sr_and_range_values(client):
    out = plot(client, args(x=(AXIS["Prompt S/R"], "cat, dog", []), y=(AXIS["Steps"], "1-3 (+2)", [])),
               prompt="a cat", negative_prompt="no cat")
    texts = infotexts(out)[1:]
    assert [t.split("\n")[0] for t in texts] == ["a cat", "a dog", "a cat", "a dog"]
    assert "Negative prompt: no dog" in texts[1]
    assert ["Steps: 1," in t for t in texts] == [True, True, False, False]
    assert json.loads(out["info"])["all_prompts"] == ["a cat", "a dog", "a cat", "a dog"]


def test_seed_axis_and_vary_seeds(client):
    out = plot(client, args(x=(AXIS["Seed"], "-1, 42", [])), steps=1)
    texts = infotexts(out)
    fixed = texts[0].split("Fixed X Values: ")[1].split(",")[0].strip('"')
    assert int(fixed) >= 0 and f"Seed: {fixed}," in texts[1] and "Seed: 42," in texts[2]
    out = plot(client, args(x=(AXIS["Steps"], "1, 1", []), y=(AXIS["CFG Scale"], "5, 6", []),
                            vary=(True, True, False)), steps=1, seed=100)
    assert [t.split("Seed: ")[1].split(",")[0] for t in infotexts(out)[1:]] == ["100", "101", "102", "103"]


def test_each_cell_runs_through_the_runner(client, monkeypatch):
    calls = []
    original = ProcessingRunner.run
    monkeypatch.setattr(ProcessingRunner, "run", lambda self, request: calls.append(request) or original(self, request))
    # a choice axis given as text with an empty dropdown list reads the text (A1111 would make no cells)
    plot(client, args(x=(AXIS["Steps"], "1, 2", []), y=(AXIS["Sampler"], "Euler, Euler a", [])), steps=1)
    assert sorted((c.processing.steps, c.processing.sampler_name) for c in calls) == [
        (1, "Euler"), (1, "Euler a"), (2, "Euler"), (2, "Euler a")]


def test_img2img_axes(client, xyz):
    """img2img has its own axis list (Denoising is index 24 there, as in A1111)."""
    labels = [o.label for o in xyz.current_axis_options(True)]
    assert labels.index("Denoising") == 24
    init = png_b64(Image.new("RGB", (64, 64), (200, 40, 40)))
    r = client.post(f"{API}/img2img", json={**TXT2IMG_BASE, "init_images": [init], "seed": 3, "steps": 2,
                                            "script_name": "x/y/z plot",
                                            "script_args": args(x=(24, "0.3, 0.9", []), draw_legend=False)})
    assert r.status_code == 200, r.text
    texts = infotexts(r.json())
    assert "Denoising strength: 0.3" in texts[1] and "Denoising strength: 0.9" in texts[2]
    assert "X Type: Denoising" in texts[0]


def test_checkpoint_axis(client):
    out = plot(client, args(x=(AXIS["Checkpoint name"], "", ["serena-demo-tiny"])), steps=1)
    assert "Model: serena-demo-tiny" in infotexts(out)[1]
    assert "X Type: Checkpoint name, X Values: serena-demo-tiny" in infotexts(out)[0]
    assert plot(client, args(x=(AXIS["Checkpoint name"], "", ["no-such-model"])), status=404)["detail"].endswith(
        "unknown checkpoint 'no-such-model'")


@pytest.mark.parametrize("script_args, message", [
    (args(x=(AXIS["Steps"], "2, abc", [])), "'abc' is not a valid int for axis 'Steps'"),
    (args(x=(AXIS["Sampler"], "Euler, Nope", []), csv_mode=True), "unknown sampler 'Nope'"),
    (args(x=(AXIS["Prompt S/R"], "horse, cow", [])), "Prompt S/R did not find 'horse'"),
    (args(x=(AXIS["Token merging ratio"], "0.1, 0.2", [])), "not supported"),
    (args(x=(AXIS["Schedule type"], "Karras, Sideways", []), csv_mode=True), "unknown scheduler 'Sideways'"),
    (args(x=(AXIS["Size"], "64x64, big", [])), "'big' is not of the form WIDTHxHEIGHT"),
    (args(x=(99, "1", [])), "axis index 0..41"),
    (args(x=(AXIS["Steps"], "1-10", []), y=(AXIS["Seed"], "1-10", []), z=(AXIS["CFG Scale"], "1-9", [])),
     "too large"),
])
def test_invalid_values_are_a_422_naming_the_problem(client, clean_opts, script_args, message):
    clean_opts.data["img_max_size_mp"] = 2
    detail = plot(client, script_args, status=422)["detail"]
    assert message in detail


def test_grid_is_saved_when_the_job_saves_images(client, api_runtime):
    folder = api_runtime.opts.outdir_txt2img_grids
    before = set(glob.glob(os.path.join(folder, "**", "xyz_grid-*.png"), recursive=True))
    plot(client, args(x=(AXIS["Steps"], "1, 2", [])), steps=1)  # save_images false: nothing written
    assert set(glob.glob(os.path.join(folder, "**", "xyz_grid-*.png"), recursive=True)) == before
    plot(client, args(x=(AXIS["Steps"], "1, 2", [])), steps=1, save_images=True)
    new = set(glob.glob(os.path.join(folder, "**", "xyz_grid-*.png"), recursive=True)) - before
    assert len(new) == 1
    with Image.open(new.pop()) as saved:
        assert saved.width == 128 and saved.height > 64 and "X Type: Steps" in saved.info["parameters"]


def test_interrupt_leaves_the_remaining_cells_blank(client, monkeypatch, clean_state):
    from modules import processing, shared
    original = processing.process_images

    def first_then_interrupt(p):
        result = original(p)
        shared.state.interrupt()
        return result

    monkeypatch.setattr(processing, "process_images", first_then_interrupt)
    out = plot(client, args(x=(AXIS["Steps"], "1, 2, 3", []), draw_legend=False), steps=1)
    grid, *cells = [decode(b) for b in out["images"]]
    assert grid.size == (192, 64) and len(cells) == 3
    assert cells[0].getextrema() != ((0, 0), (0, 0), (0, 0))
    assert grid.crop((64, 0, 192, 64)).convert("RGB").getbbox() is None  # black: never generated


def test_ui_builds_with_a1111_defaults(api_runtime):
    import gradio as gr
    script_class = next(d.script_class for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")
    script = script_class()
    script.is_img2img = False
    with gr.Blocks():
        controls = script.ui(False)
    assert len(controls) == 18
    values = [c.value for c in controls]
    assert values == ["Seed", "", [], "Nothing", "", [], "Nothing", "", [], True, False, False, False, False, False,
                      False, 0, False]
    assert controls[0].type == "index" and controls[16].maximum == 500
    assert [label for _, label in script.infotext_fields if isinstance(label, str)] == [
        "X Type", "X Values", "Y Type", "Y Values", "Z Type", "Z Values"]
