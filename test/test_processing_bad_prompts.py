"""Prompts a job cannot run as given, end to end on the demo checkpoint: every one either makes an
image or fails with `InvalidParameter` naming the field, never an IndexError, TypeError or NaN.

Empty and ill-fitting prompt lists, text that is not valid Unicode, runaway bracket nesting and
weights that overflow a float, in txt2img (with and without the hires fix) and img2img.
"""
from __future__ import annotations

import numpy as np
import pytest

from modules import errors, processing, prompt_parser, shared
from test_processing_helpers import env, fresh_state, max_diff, pixels, test_image  # noqa: F401  (fixtures)

HIRES = dict(enable_hr=True, hr_scale=1.5, denoising_strength=0.5, hr_second_pass_steps=1)


def txt2img(**kwargs) -> processing.StableDiffusionProcessingTxt2Img:
    base = dict(prompt="a red cube", negative_prompt="blurry", seed=3, steps=2, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.StableDiffusionProcessingTxt2Img(**base)


def img2img(**kwargs) -> processing.StableDiffusionProcessingImg2Img:
    base = dict(prompt="a red cube", seed=3, steps=2, width=64, height=64, sampler_name="Euler",
                init_images=[test_image()], denoising_strength=0.6, do_not_save_samples=True,
                do_not_save_grid=True)
    base.update(kwargs)
    return processing.StableDiffusionProcessingImg2Img(**base)


def refused(p: processing.StableDiffusionProcessing, field: str, *words: str) -> errors.InvalidParameter:
    """Run `p`; it must fail with InvalidParameter naming `field`, its message holding `words`."""
    with pytest.raises(errors.InvalidParameter) as caught:
        processing.process_images(p)
    assert caught.value.field == field, caught.value.message
    assert caught.value.status_code == 422
    for word in words:
        assert word in caught.value.message
    return caught.value


def finite_image(res: processing.Processed, index: int = 0) -> np.ndarray:
    """The pixels of image `index`, checked to be a real picture (not all one colour)."""
    array = pixels(res.images[index])
    assert array.std() > 0
    return array


# ---- item 3: empty lists ------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_empty_list_is_refused_naming_the_field(field):
    refused(txt2img(**{field: []}, **HIRES), field, "empty list")


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_empty_list_in_img2img_is_refused_naming_the_field(field):
    refused(img2img(**{field: []}), field, "empty list")


def test_empty_hires_lists_are_harmless_without_the_hires_fix():
    res = processing.process_images(txt2img(hr_prompt=[], hr_negative_prompt=[]))
    assert len(res.images) == 1


@pytest.mark.parametrize("field, value", [("prompt", None), ("prompt", 5), ("negative_prompt", 5),
                                          ("prompt", ["a", 1]), ("hr_prompt", None), ("hr_negative_prompt", {})])
def test_prompt_that_is_not_text_is_refused_naming_the_field(field, value):
    refused(txt2img(**{field: value}, **HIRES), field, "must be a string or a list of strings")


@pytest.mark.parametrize("value", [[None], ["ok", 3]])
def test_styles_that_are_not_names_are_refused(value):
    refused(txt2img(styles=value), "styles", "list of style names")


# ---- item 3: lists that do not fit the batch (A1111's meaning, or refused) -----------------------

def test_prompt_list_shorter_than_the_batch_makes_one_image_per_prompt():
    res = processing.process_images(txt2img(prompt=["a red cube", "a blue ball", "a tree"], batch_size=2, n_iter=2))
    assert len(res.images) == 3 and res.all_prompts == ["a red cube", "a blue ball", "a tree"]
    assert res.infotexts[2].startswith("a tree\n")
    finite_image(res, 2)


def test_prompt_list_longer_than_the_job_uses_the_first_prompts():
    res = processing.process_images(txt2img(prompt=["a red cube", "a blue ball", "a tree"], batch_size=2))
    assert len(res.images) == 2
    assert [t.split("\n")[0] for t in res.infotexts] == ["a red cube", "a blue ball"]


def test_negative_prompt_list_alone_sets_the_image_count():
    res = processing.process_images(txt2img(negative_prompt=["blurry", "dark"], batch_size=4))
    assert len(res.images) == 2 and res.all_negative_prompts == ["blurry", "dark"]


def test_prompt_and_negative_lists_of_different_lengths_are_refused():
    refused(txt2img(prompt=["a", "b"], negative_prompt=["c"], batch_size=2), "negative_prompt", "same length")


def test_img2img_prompt_list_that_leaves_a_partial_batch_is_refused():
    refused(img2img(prompt=["a red cube"], batch_size=2), "prompt", "batch_size=2")
    refused(img2img(negative_prompt=["x", "y", "z"], batch_size=2, n_iter=2), "negative_prompt", "whole batches")


def test_img2img_prompt_list_of_whole_batches_runs():
    res = processing.process_images(img2img(prompt=["a red cube", "a blue ball"], batch_size=2, n_iter=2))
    assert len(res.images) == 2 and res.all_prompts == ["a red cube", "a blue ball"]


@pytest.mark.parametrize("field", ["hr_prompt", "hr_negative_prompt"])
def test_hires_list_with_fewer_entries_than_images_is_refused(field):
    refused(txt2img(**{field: ["only one"]}, batch_size=2, **HIRES), field, "1 entries for 2 images")


def test_hires_lists_of_different_lengths_are_refused():
    refused(txt2img(hr_prompt=["a", "b"], hr_negative_prompt=["c"], batch_size=2, **HIRES),
            "hr_negative_prompt", "same length")
    refused(txt2img(prompt=["a", "b"], hr_negative_prompt=["c", "d", "e"], batch_size=2, **HIRES),
            "hr_negative_prompt", "same length")


def test_hires_list_longer_than_a_short_last_batch_runs_with_one_hires_prompt_per_image():
    res = processing.process_images(txt2img(prompt=["a red cube"], hr_prompt=["a tree", "unused"], batch_size=2,
                                            **HIRES))
    assert len(res.images) == 1 and res.images[0].size == (96, 96)
    assert "Hires prompt: a tree," in res.infotexts[0]


def test_hires_list_per_image_is_used():
    res = processing.process_images(txt2img(hr_prompt=["a tree", "a house"], batch_size=2, **HIRES))
    assert "Hires prompt: a tree," in res.infotexts[0] and "Hires prompt: a house," in res.infotexts[1]


# ---- item 5: text that is not valid Unicode -----------------------------------------------------

@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
@pytest.mark.parametrize("as_list", [False, True])
def test_unpaired_surrogate_is_refused_naming_the_field(field, as_list):
    text = "a \ud800x"
    error = refused(txt2img(**{field: [text] if as_list else text}, **HIRES), field, "not valid Unicode", "'\\ud800'")
    assert error.message.startswith(f"{field}[0]" if as_list else field)


def test_unpaired_surrogate_in_an_unused_hires_prompt_is_still_refused():
    refused(txt2img(hr_prompt="\udfff"), "hr_prompt", "not valid Unicode")


def test_unpaired_surrogate_in_img2img_and_in_styles_is_refused():
    refused(img2img(negative_prompt="x\udc00"), "negative_prompt", "not valid Unicode")
    refused(txt2img(styles=["ok", "\ud83d"]), "styles", "styles[1]", "not valid Unicode")


def test_a_valid_surrogate_pair_character_is_fine():
    res = processing.process_images(txt2img(prompt="a cat \U0001F431"))
    assert res.infotexts[0].startswith("a cat \U0001F431\n")


# ---- item 6: runaway emphasis -------------------------------------------------------------------

def nested(depth: int, inner: str = "x") -> str:
    return "(" * depth + inner + ")" * depth


def test_runaway_nesting_is_refused_naming_the_field():
    refused(txt2img(prompt=nested(9999)), "prompt", "9999 levels deep", "at most 100")


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_nesting_just_past_the_limit_is_refused(field):
    refused(txt2img(**{field: "[" * 101 + "x"}, **HIRES), field, "101 levels deep")


def test_nesting_inside_a_comment_does_not_count():
    res = processing.process_images(txt2img(prompt="a red cube\n# " + "(" * 500))
    assert len(res.images) == 1


def test_deepest_allowed_nesting_gives_a_finite_image_at_the_weight_bound():
    """1.1**100 would be 13780; the weight stops at 100, the same image as an explicit (x:100)."""
    deep = processing.process_images(txt2img(prompt=nested(100, "cube")))
    explicit = processing.process_images(txt2img(prompt="(cube:100)"))
    finite_image(deep)
    assert max_diff(deep.images[0], explicit.images[0]) == 0


@pytest.mark.parametrize("emphasis", ["Original", "No norm"])
def test_weight_beyond_the_float_range_gives_the_bounded_image(emphasis):
    huge = processing.process_images(txt2img(prompt="a (cube:" + "9" * 400 + ")",
                                             override_settings={"emphasis": emphasis}))
    bounded = processing.process_images(txt2img(prompt="a (cube:100)", override_settings={"emphasis": emphasis}))
    negative = processing.process_images(txt2img(prompt="a (cube:-" + "9" * 400 + ")",
                                                 override_settings={"emphasis": emphasis}))
    finite_image(huge), finite_image(negative)
    assert max_diff(huge.images[0], bounded.images[0]) == 0


def test_weight_below_the_bound_is_not_clamped():
    """A weight inside the bound is used as given: 99 and 100 give different images."""
    assert max_diff(processing.process_images(txt2img(prompt="a (cube:99)")).images[0],
                    processing.process_images(txt2img(prompt="a (cube:100)")).images[0]) > 0


@pytest.mark.parametrize("prompt", ["(x:1e308)", "(x:inf)", "(x:nan)"])
def test_non_numeric_looking_weights_are_text_as_in_a1111(prompt):
    assert prompt_parser.parse_prompt_attention(prompt) == [[prompt[1:-1], 1.1]]
    finite_image(processing.process_images(txt2img(prompt=prompt)))


def test_and_weight_beyond_the_float_range_gives_the_bounded_image():
    huge = processing.process_images(txt2img(prompt="a red cube AND a tree :" + "9" * 400))
    bounded = processing.process_images(txt2img(prompt="a red cube AND a tree :100"))
    finite_image(huge)
    assert max_diff(huge.images[0], bounded.images[0]) == 0


def test_schedule_step_beyond_the_float_range_never_switches():
    never = processing.process_images(txt2img(prompt="a [red:blue:1e999] cube"))
    red = processing.process_images(txt2img(prompt="a red cube"))
    assert max_diff(never.images[0], red.images[0]) == 0


def test_non_finite_conditioning_fails_the_job_naming_the_prompt(monkeypatch):
    """If the text encoder overflows anyway (a fake encoder here, behind the model interface), the
    job stops before sampling with NansDetected naming the field, not a NaN image."""
    model = shared.sd_model
    real = model.get_learned_conditioning

    def fake_overflowing_encoder(texts):
        conds = real(texts)
        return conds * float("inf") if any("overflow" in t for t in texts) else conds

    monkeypatch.setattr(model, "get_learned_conditioning", fake_overflowing_encoder)
    with pytest.raises(errors.NansDetected) as caught:
        processing.process_images(txt2img(negative_prompt="overflow"))
    assert caught.value.field == "negative_prompt" and caught.value.status_code == 422
    assert "'overflow'" in caught.value.message
