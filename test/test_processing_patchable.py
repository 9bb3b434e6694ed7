"""Extensions replace A1111's functions on `modules.processing` (issue item 13), and the pipeline obeys.

`modules.processing.create_infotext = my_fn` is a common A1111 idiom. Each A1111 function the
pipeline calls is replaced here by a wrapper that records the call and delegates to the original;
a real tiny generation on the demo checkpoint must go through the wrapper. A static check keeps
the stage modules from binding those names at import again.
"""
from __future__ import annotations

import ast
import pathlib

import pytest
from PIL import Image

from modules import processing
from test_processing_helpers import env, fresh_state, test_image  # noqa: F401  (fixtures)

MODULES = pathlib.Path(processing.__file__).parent


def square_mask(size=(64, 64), box=(16, 16, 40, 40)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# --- the jobs ---------------------------------------------------------------------------------------
COMMON = dict(prompt="a red cube", seed=3, steps=2, width=64, height=64, sampler_name="Euler",
              do_not_save_samples=True, do_not_save_grid=True)


def txt2img(**kwargs) -> processing.Processed:
    return processing.process_images(processing.StableDiffusionProcessingTxt2Img(**{**COMMON, **kwargs}))


def img2img(**kwargs) -> processing.Processed:
    base = dict(init_images=[test_image()], denoising_strength=0.8, inpaint_full_res=False)
    return processing.process_images(processing.StableDiffusionProcessingImg2Img(**{**COMMON, **base, **kwargs}))


JOBS = {
    "txt2img": lambda: txt2img(),
    "inpaint": lambda: img2img(mask=square_mask(), inpainting_fill=2,
                               override_settings={"img2img_color_correction": True}),
    "inpaint only masked": lambda: img2img(mask=square_mask(), inpaint_full_res=True),
    "hires image upscaler": lambda: txt2img(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos",
                                            denoising_strength=0.5),
    "old hires fix": lambda: txt2img(enable_hr=True, width=128, height=128, denoising_strength=0.5,
                                     override_settings={"use_old_hires_fix_width_height": True}),
}

# Which job exercises each A1111 function the pipeline calls.
CALLED_BY = {
    "create_infotext": "txt2img",
    "decode_latent_batch": "txt2img",
    "decode_first_stage": "txt2img",
    "get_fixed_seed": "txt2img",
    "program_version": "txt2img",
    "txt2img_image_conditioning": "txt2img",
    "process_images_inner": "txt2img",
    "images_tensor_to_samples": "inpaint",
    "create_binary_mask": "inpaint",
    "create_random_tensors": "inpaint",
    "setup_color_correction": "inpaint",
    "apply_color_correction": "inpaint",
    "apply_overlay": "inpaint",
    "uncrop": "inpaint only masked",
    "old_hires_fix_first_pass_dimensions": "old hires fix",
}
# A1111 exposes these too, but nothing in a generation calls them through `modules.processing`:
# scripts call fix_seed; slerp is the variation-noise helper inside modules/rng.py; process_images
# is the entry point the callers themselves look up.
NOT_CALLED_BY_THE_PIPELINE = {"fix_seed", "slerp", "process_images"}


@pytest.fixture()
def spy(monkeypatch):
    """`spy(name)` replaces `modules.processing.<name>` by a recording wrapper; returns the call list."""
    def install(name: str, owner=processing, transform=None) -> list:
        calls = []
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls.append((args, kwargs))
            result = original(*args, **kwargs)
            return transform(result) if transform else result

        monkeypatch.setattr(owner, name, wrapper)
        return calls
    return install


def test_every_a1111_function_is_covered():
    assert set(CALLED_BY) | NOT_CALLED_BY_THE_PIPELINE == set(processing.A1111_FUNCTIONS)
    for name in processing.A1111_FUNCTIONS:
        assert callable(getattr(processing, name)) and name in processing.__all__


@pytest.mark.parametrize("name", sorted(CALLED_BY))
def test_replacing_a_function_on_processing_changes_what_the_pipeline_calls(spy, name):
    calls = spy(name)
    JOBS[CALLED_BY[name]]()
    assert calls, f"modules.processing.{name} was replaced but the pipeline did not call the replacement"


def test_hires_image_upscaler_encodes_through_processing(spy):
    calls = spy("images_tensor_to_samples")
    decodes = spy("decode_latent_batch")
    JOBS["hires image upscaler"]()
    assert calls and len(decodes) >= 2  # the first pass for the upscaler, the second pass for the result


def test_replaced_create_infotext_text_reaches_every_result(spy):
    calls = spy("create_infotext", transform=lambda text: text + ", Patched by: extension")
    res = txt2img(batch_size=2, do_not_save_grid=False, override_settings={"return_grid": True})
    assert calls
    assert len(res.infotexts) == 3  # the grid and both images
    assert all(text.endswith("Patched by: extension") for text in res.infotexts)
    assert res.info.endswith("Patched by: extension")
    assert res.images[1].info["parameters"].endswith("Patched by: extension")


def test_replaced_program_version_is_the_infotext_version(spy):
    spy("program_version", transform=lambda _: "v9.9.9-ext")
    res = txt2img()
    assert "Version: v9.9.9-ext" in res.infotexts[0] and res.version == "v9.9.9-ext"


@pytest.mark.parametrize("method,job", [("txt2img_image_conditioning", "txt2img"),
                                        ("img2img_image_conditioning", "inpaint"),
                                        ("img2img_image_conditioning", "hires image upscaler")])
def test_replacing_an_image_conditioning_method_on_the_class(spy, method, job):
    calls = spy(method, owner=processing.StableDiffusionProcessing)
    JOBS[job]()
    assert calls


@pytest.mark.parametrize("path", sorted(p.name for p in MODULES.glob("processing_*.py")))
def test_no_stage_module_calls_an_a1111_function_by_its_bare_name(path):
    """A bare `create_infotext(...)` in a stage module is bound at import; `processing.create_infotext`
    is looked up when called. Definitions are fine, references are not."""
    tree = ast.parse((MODULES / path).read_text())
    names = set(processing.A1111_FUNCTIONS)
    bare = sorted({f"{node.id} (line {node.lineno})" for node in ast.walk(tree)
                   if isinstance(node, ast.Name) and node.id in names})
    imported = sorted({alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                       for alias in node.names if alias.name in names})
    assert not bare and not imported, f"{path} binds A1111 names at import: {bare or imported}"
