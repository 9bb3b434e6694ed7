"""txt2img hires fix: target size rules, latent and image upscalers, second-pass settings, infotext."""
from __future__ import annotations

import pytest

from modules import errors, processing, shared
from test_processing_helpers import env, fresh_state, max_diff  # noqa: F401  (fixtures)


def hires(**kwargs) -> processing.StableDiffusionProcessingTxt2Img:
    base = dict(prompt="a red cube", seed=5, steps=3, width=64, height=64, sampler_name="Euler", enable_hr=True,
                hr_scale=2.0, denoising_strength=0.5, do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.StableDiffusionProcessingTxt2Img(**base)


def run(**kwargs) -> processing.Processed:
    return processing.process_images(hires(**kwargs))


@pytest.mark.parametrize("size,scale,resize,expected", [
    ((64, 64), 2.0, (0, 0), (128, 128, 0, 0)),
    ((64, 96), 1.5, (0, 0), (96, 144, 0, 0)),
    ((64, 96), 2.0, (128, 0), (128, 192, 0, 0)),
    ((64, 96), 2.0, (0, 144), (96, 144, 0, 0)),
    ((64, 64), 2.0, (128, 96), (128, 128, 0, 4)),
    ((96, 64), 2.0, (128, 128), (192, 128, 8, 0)),
])
def test_target_size_rules(size, scale, resize, expected):
    target = processing.hires_target(size[0], size[1], scale, resize[0], resize[1])
    assert (target.upscale_to_x, target.upscale_to_y, target.truncate_x, target.truncate_y) == expected


def test_latent_hires_doubles_the_size_and_records_keys():
    res = run()
    assert res.images[0].size == (128, 128)
    params = res.infotexts[0].splitlines()[-1]
    assert "Size: 64x64" in params and "Denoising strength: 0.5" in params
    assert params.endswith(f"Hires upscale: 2.0, Version: {processing.SERENA_VERSION}")


def test_both_resize_values_crop_to_the_box():
    res = run(hr_resize_x=128, hr_resize_y=96)
    assert res.images[0].size == (128, 96)
    assert "Hires resize: 128x96" in res.infotexts[0] and "Hires upscale" not in res.infotexts[0]


def test_one_resize_value_keeps_the_aspect_ratio():
    assert run(width=64, height=96, hr_resize_x=96).images[0].size == (96, 144)


@pytest.mark.parametrize("upscaler", ["Lanczos", "Nearest", "None", "Latent (nearest)", "Latent (bicubic antialiased)"])
def test_upscalers(upscaler):
    res = run(hr_upscaler=upscaler, hr_second_pass_steps=2)
    assert res.images[0].size == (128, 128)
    assert f"Hires steps: 2, Hires upscaler: {upscaler}" in res.infotexts[0]


def test_image_and_latent_upscalers_give_different_results():
    assert max_diff(run(hr_upscaler="Latent").images[0], run(hr_upscaler="Lanczos").images[0]) > 0


def test_second_pass_uses_same_seeds_so_batch_matches_alone():
    batch = run(batch_size=2, seed=40)
    alone = run(seed=41)
    assert max_diff(batch.images[1], alone.images[0]) <= 1


def test_hires_sampler_scheduler_and_prompt_are_recorded():
    res = run(hr_sampler_name="Euler a", hr_scheduler="Karras", hr_prompt="a blue cube", hr_negative_prompt="ugly")
    params = res.infotexts[0].splitlines()[-1]
    assert "Hires sampler: Euler a" in params and "Hires schedule type: Karras" in params
    assert 'Hires prompt: a blue cube, Hires negative prompt: ugly' in params
    same = run(hr_sampler_name="Use same sampler", hr_prompt="")
    assert "Hires sampler" not in same.infotexts[0] and "Hires prompt" not in same.infotexts[0]


def test_hires_prompt_changes_the_result():
    assert max_diff(run().images[0], run(hr_prompt="a totally different prompt").images[0]) > 0


def test_hires_needs_denoising_strength():
    with pytest.raises(errors.InvalidParameter, match="denoising_strength") as info:
        run(denoising_strength=None)
    assert info.value.field == "denoising_strength"


def test_unknown_upscaler_and_too_large_target():
    with pytest.raises(errors.InvalidParameter, match="valid upscalers"):
        run(hr_upscaler="SuperResolver 9000")
    with pytest.raises(errors.InvalidParameter, match="hires width must be between 64 and 4096, got 5120"):
        run(width=1024, height=64, hr_scale=5.0)


def test_firstphase_size_makes_width_height_the_target():
    p = hires(firstphase_width=64, firstphase_height=64, width=128, height=128)
    assert (p.width, p.height) == (64, 64)


def test_progress_counts_two_jobs_per_batch():
    from modules.runtime import context
    with context.job_context(job="hires") as ctx:
        run(n_iter=2)
        assert shared.state.job_count == 4 and shared.state.job_no == 4
    assert (ctx.progress.job_count, ctx.progress.job_no) == (4, 4)


def test_hires_checkpoint_is_used_for_the_second_pass_then_restored():
    from modules import sd_models
    loaded = []
    original = sd_models.reload_model_weights

    def tracking(sd_model=None, info=None):
        loaded.append(info.name_for_extra if info is not None else None)
        return original(sd_model, info)

    mp = pytest.MonkeyPatch()
    mp.setattr(sd_models, "reload_model_weights", tracking)
    try:
        res = run(hr_checkpoint_name="demo2")
    finally:
        mp.undo()
    assert loaded == ["demo2", "demo"]
    info = sd_models.get_checkpoint_info("demo2")
    assert f"Hires checkpoint: {info.short_title}" in res.infotexts[0]
    assert sd_models.model_data.sd_model.sd_checkpoint_info.name_for_extra == "demo"
    assert "Hires checkpoint" not in run(hr_checkpoint_name="Use same checkpoint").infotexts[0]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_save_before_highres_fix(env, upscaler):
    import os
    from test_processing_helpers import files_under
    outputs = os.path.join(env, "outputs")
    before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    run(seed=900, hr_upscaler=upscaler, do_not_save_samples=False,
        override_settings={"save_images_before_highres_fix": True})
    new = sorted(os.path.basename(f).split("-", 1)[1] for f in files_under(outputs) if f not in before)
    assert new == ["900-before-highres-fix.png", "900.png"]


def test_hires_keys_are_in_a1111_insertion_order():
    res = run(hr_sampler_name="Euler a", hr_scheduler="Karras", hr_prompt="a blue cube", hr_negative_prompt="ugly",
              hr_second_pass_steps=2, hr_upscaler="Latent", override_settings={"add_version_to_infotext": False})
    keys = [part.split(":")[0] for part in res.infotexts[0].splitlines()[-1].split(", ")]
    hires_keys = [k for k in keys if k.startswith("Hires")]
    assert hires_keys == ["Hires sampler", "Hires prompt", "Hires negative prompt", "Hires schedule type",
                          "Hires upscale", "Hires steps", "Hires upscaler"]


def test_before_highres_infotext_keeps_extra_network_tags(env):
    import os
    from PIL import Image
    from modules import scripts
    from test_processing_helpers import files_under
    outputs = os.path.join(env, "outputs")
    before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    p = hires(prompt="a red cube <lora:thing:0.5>", seed=910, do_not_save_samples=False,
              override_settings={"save_images_before_highres_fix": True})
    p.scripts = scripts.ScriptRunner()
    res = processing.process_images(p)
    saved = [f for f in files_under(outputs) if f not in before and f.endswith("-before-highres-fix.png")]
    assert len(saved) == 1 and res.infotexts[0].startswith("a red cube <lora:thing:0.5>\n")
    text = Image.open(os.path.join(outputs, saved[0])).info["parameters"]
    assert text.startswith("a red cube <lora:thing:0.5>\n"), "A1111 writes the job's prompt, tags included"

def test_before_highres_image_of_a_skipped_batch_is_not_saved(env):
    import os
    from modules import scripts
    from test_processing_helpers import files_under

    class Skipper(scripts.Script):
        def title(self):
            return "skipper"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_before_every_sampling(self, p, *args, **kwargs):
            if not p.is_hr_pass:
                shared.state.skip()

    outputs = os.path.join(env, "outputs")
    before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    runner = scripts.ScriptRunner()
    runner.add_script(Skipper())
    p = hires(seed=920, do_not_save_samples=False, override_settings={"save_images_before_highres_fix": True})
    p.scripts = runner
    processing.process_images(p)
    assert [f for f in files_under(outputs) if f not in before] == [], "a skipped batch saves nothing (A1111)"
