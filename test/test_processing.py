"""txt2img end to end on the demo checkpoint: seeds, batches, infotext, saving, overrides, hooks."""
from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from modules import errors, processing, scripts, sd_models, sd_tiling, shared
from test_processing_helpers import env, files_under, fresh_state, max_diff, pixels  # noqa: F401  (fixtures)


def txt2img(**kwargs) -> processing.StableDiffusionProcessingTxt2Img:
    base = dict(prompt="a red cube", negative_prompt="blurry", seed=1234, steps=3, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.StableDiffusionProcessingTxt2Img(**base)


def run(**kwargs) -> processing.Processed:
    return processing.process_images(txt2img(**kwargs))


def test_image_in_batch_equals_same_image_alone():
    batch = run(batch_size=3, seed=100)
    alone = run(seed=102)
    assert [im.size for im in batch.images] == [(64, 64)] * 3
    assert max_diff(batch.images[2], alone.images[0]) <= 1
    assert batch.all_seeds == [100, 101, 102]


def test_ancestral_sampler_batch_equals_alone():
    batch = run(batch_size=2, seed=7, sampler_name="Euler a")
    alone = run(seed=8, sampler_name="Euler a")
    assert max_diff(batch.images[1], alone.images[0]) <= 1


def test_same_request_is_deterministic_and_seed_matters():
    a, b, c = run(seed=5), run(seed=5), run(seed=6)
    assert max_diff(a.images[0], b.images[0]) == 0
    assert max_diff(a.images[0], c.images[0]) > 0


def test_counts_seeds_and_grid_for_n_iter_times_batch_size():
    res = processing.process_images(txt2img(n_iter=2, batch_size=2, seed=50, subseed=9, do_not_save_grid=False))
    assert len(res.images) == 5 and res.index_of_first_image == 1
    assert res.images[0].size == (128, 128)
    assert res.all_seeds == [50, 51, 52, 53] and res.all_subseeds == [9, 10, 11, 12]
    assert len(res.infotexts) == 5
    assert [t.split("Seed: ")[1].split(",")[0] for t in res.infotexts] == ["50", "50", "51", "52", "53"]
    assert res.images[3].info["parameters"] == res.infotexts[3]


def test_single_image_has_no_grid():
    res = processing.process_images(txt2img(do_not_save_grid=False))
    assert len(res.images) == 1 and res.index_of_first_image == 0


def test_variation_seed_only_matters_with_strength():
    base = run(seed=11)
    zero = run(seed=11, subseed=99, subseed_strength=0.0)
    varied = run(seed=11, subseed=99, subseed_strength=0.5, batch_size=2)
    assert max_diff(base.images[0], zero.images[0]) == 0
    assert max_diff(base.images[0], varied.images[0]) > 0
    assert varied.all_seeds == [11, 11] and varied.all_subseeds == [99, 100]
    assert "Variation seed: 99, Variation seed strength: 0.5" in varied.infotexts[0]
    assert "Variation seed: 100" in varied.infotexts[1]
    assert "Variation seed" not in zero.infotexts[0]


def test_seed_resize_changes_the_noise_and_is_recorded():
    base = run(seed=21)
    resized = run(seed=21, seed_resize_from_w=32, seed_resize_from_h=48)
    assert max_diff(base.images[0], resized.images[0]) > 0
    assert "Seed resize from: 32x48" in resized.infotexts[0]


def test_seed_minus_one_is_random_and_reported():
    res = run(seed=-1)
    assert res.seed >= 0 and res.all_seeds == [res.seed] and f"Seed: {res.seed}," in res.infotexts[0]


def test_infotext_exact_text_for_canonical_request():
    res = run(prompt="a cat", negative_prompt="", seed=1234, steps=3, cfg_scale=7.0, sampler_name="Euler")
    info = sd_models.model_data.sd_model.sd_checkpoint_info
    expected = (f"a cat\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, "
                f"Size: 64x64, Model hash: {info.shorthash}, Model: demo, Version: {processing.SERENA_VERSION}")
    assert res.infotexts[0] == expected
    assert res.info == expected and res.images[0].info["parameters"] == expected


def test_infotext_optional_keys_in_spec_order():
    res = run(tiling=True, override_settings={"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"})
    text = res.infotexts[0]
    keys = [part.split(":")[0] for part in text.splitlines()[-1].split(", ")]
    assert keys == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                    "Clip skip", "RNG", "Tiling", "Version"]
    assert "Clip skip: 2" in text and "RNG: CPU" in text and "Tiling" in keys


def test_processed_js_has_exactly_the_spec_keys():
    res = run(batch_size=2)
    data = json.loads(res.js())
    assert list(data) == list(processing.Processed.JS_KEYS)
    assert data["all_seeds"] == [1234, 1235] and data["infotexts"] == res.infotexts
    assert data["version"] == processing.SERENA_VERSION and data["sd_model_name"] == "demo"
    assert res.infotext(txt2img(), 0) is not None


def test_override_settings_do_not_leak_and_other_threads_see_globals():
    seen = {}

    class Probe(scripts.Script):
        def title(self):
            return "probe"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, *args):
            seen["inside"] = shared.opts.CLIP_stop_at_last_layers
            thread = threading.Thread(target=lambda: seen.__setitem__("thread", shared.opts.CLIP_stop_at_last_layers))
            thread.start()
            thread.join()

    runner = scripts.ScriptRunner()
    runner.add_script(Probe())
    p = txt2img(override_settings={"CLIP_stop_at_last_layers": 3})
    p.scripts = runner
    res = processing.process_images(p)
    assert seen == {"inside": 3, "thread": 1}
    assert "Clip skip: 3" in res.infotexts[0]
    assert shared.opts.CLIP_stop_at_last_layers == 1 and "CLIP_stop_at_last_layers" not in shared.opts.data


def test_unknown_override_is_rejected_before_anything_runs():
    with pytest.raises(errors.UnknownOption, match="no_such_option"):
        run(override_settings={"no_such_option": 1})


def test_checkpoint_override_loads_for_the_job_then_restores():
    res = run(override_settings={"sd_model_checkpoint": "demo2"})
    assert "Model: demo2" in res.infotexts[0]
    assert sd_models.model_data.sd_model.sd_checkpoint_info.name_for_extra == "demo"
    unknown = run(override_settings={"sd_model_checkpoint": "nope"})
    assert "Model: demo," in unknown.infotexts[0]


@pytest.mark.parametrize("field,value,rule", [
    ("width", 65, "multiple of 8"), ("height", 32, "between 64 and 2048"), ("width", 4096, "between 64 and 2048"),
    ("steps", 0, "between 1 and 150"), ("batch_size", 0, "at least 1"), ("n_iter", -1, "at least 1"),
    ("cfg_scale", "x", "number"), ("subseed_strength", 2.0, "between 0.0 and 1.0"),
])
def test_bad_values_are_rejected_with_field_rule_and_value(field, value, rule):
    with pytest.raises(errors.InvalidParameter) as info:
        run(**{field: value})
    assert info.value.field == field and rule in str(info.value) and str(value) in str(info.value)


def test_unknown_sampler_and_scheduler():
    with pytest.raises(errors.UnknownSampler, match="Euler"):
        run(sampler_name="Nope Sampler")
    with pytest.raises(errors.UnknownScheduler):
        run(scheduler="nope-scheduler")


def test_sampler_with_scheduler_suffix_is_split():
    p = txt2img(sampler_name="DPM++ 2M Karras")
    res = processing.process_images(p)
    assert p.sampler_name == "DPM++ 2M" and "Sampler: DPM++ 2M," in res.infotexts[0]


def test_saving_files_grid_params_and_no_temp_files(env):
    outputs = os.path.join(env, "outputs")
    shutil_before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    res = run(batch_size=2, seed=300, do_not_save_samples=False, do_not_save_grid=False)
    new = [f for f in files_under(outputs) if f not in shutil_before]
    samples = [f for f in new if f.startswith("txt2img-images")]
    grids = [f for f in new if f.startswith("txt2img-grids")]
    assert len(samples) == 2 and len(grids) == 1
    assert samples[0].endswith("-300.png") and samples[1].endswith("-301.png")
    assert not [f for f in new if f.endswith(".tmp")]
    with open(os.path.join(env, "params.txt"), encoding="utf8") as f:
        assert f.read() == res.infotexts[1]


def test_interrupt_returns_partial_result_and_next_job_is_correct(env):
    class Interrupter(scripts.Script):
        def title(self):
            return "interrupter"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def before_process_batch(self, p, *args, **kwargs):
            if kwargs["batch_number"] == 1:
                shared.state.interrupt()

    outputs = os.path.join(env, "outputs")
    before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    runner = scripts.ScriptRunner()
    runner.add_script(Interrupter())
    p = txt2img(n_iter=3, seed=400, do_not_save_samples=False)
    p.scripts = runner
    res = processing.process_images(p)
    assert len(res.images) == 2, "batch 0 complete, batch 1 cut short, batch 2 never started"
    saved = [f for f in files_under(outputs) if f not in before]
    assert len(saved) == 1 and saved[0].endswith("-400.png"), "the interrupted batch is not saved"
    shared.state.begin("next")
    again = run(seed=400)
    assert max_diff(again.images[0], res.images[0]) <= 1


def test_script_hooks_fire_in_order():
    calls = []
    hooks = ["before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
             "process_before_every_sampling", "post_sample", "postprocess_batch", "postprocess_batch_list",
             "postprocess_image", "postprocess_maskoverlay", "postprocess_image_after_composite", "postprocess"]

    class Recorder(scripts.Script):
        def title(self):
            return "recorder"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

    for hook in hooks:
        setattr(Recorder, hook, lambda self, p, *a, _h=hook, **k: calls.append(_h))
    runner = scripts.ScriptRunner()
    runner.add_script(Recorder())
    p = txt2img()
    p.scripts = runner
    processing.process_images(p)
    assert calls == hooks


def test_extra_network_tags_are_removed_from_prompts():
    p = txt2img(prompt="a cat <lora:thing:0.5>")
    processing.process_images(p)
    assert p.prompts == ["a cat "] and p.extra_network_data == {"lora": [["thing", "0.5"]]}


def test_cached_conditioning_is_reused_between_jobs():
    first = txt2img(prompt="cache me")
    processing.process_images(first)
    second = txt2img(prompt="cache me")
    processing.process_images(second)
    assert second.c is None and processing.StableDiffusionProcessing.cached_c[1] is not None
    assert processing.StableDiffusionProcessing.cached_c[0][0] == ("cache me",)


def test_tiling_option_applies_for_the_job_only():
    model = sd_models.model_data.sd_model
    res = run(tiling=True)
    assert "Tiling" in res.infotexts[0]
    assert all(m.padding_mode == "zeros" for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))


def test_tiling_makes_the_unet_wrap_around():
    model = sd_models.model_data.sd_model
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0])
    with sd_tiling.tiled(model, True):
        out = model.apply_model(x, t, cond)
        shifted = model.apply_model(torch.roll(x, 4, dims=3), t, cond)
    plain = model.apply_model(torch.roll(x, 4, dims=3), t, cond)
    assert torch.allclose(torch.roll(out, 4, dims=3), shifted, atol=1e-4), "circular: shifting commutes"
    assert not torch.allclose(torch.roll(model.apply_model(x, t, cond), 4, dims=3), plain, atol=1e-4)


def test_tiled_image_edges_match_better_than_untiled():
    def edge_gap(image):
        arr = pixels(image).astype(float)
        return abs(arr[:, 0] - arr[:, -1]).mean() + abs(arr[0] - arr[-1]).mean()
    tiled = [edge_gap(run(seed=s, tiling=True).images[0]) for s in (1, 2)]
    plain = [edge_gap(run(seed=s).images[0]) for s in (1, 2)]
    assert sum(tiled) < sum(plain)


def test_refiner_switches_model_mid_job_and_the_next_job_starts_on_the_base():
    with pytest.raises(errors.InvalidParameter, match="refiner checkpoint 'nope' not found") as info:
        run(refiner_checkpoint="nope")
    assert info.value.field == "refiner_checkpoint"
    with pytest.raises(errors.InvalidParameter) as info:
        run(refiner_checkpoint="demo2", refiner_switch_at=1.5)
    assert info.value.field == "refiner_switch_at"
    plain = run(seed=5, steps=4)
    refined = run(seed=5, steps=4, refiner_checkpoint="demo2", refiner_switch_at=0.5)
    title = sd_models.get_checkpoint_info("demo2").short_title
    assert f"Refiner: {title}, Refiner switch at: 0.5" in refined.infotexts[0]
    assert max_diff(plain.images[0], refined.images[0]) == 0  # demo2 holds the same weights as demo
    assert shared.sd_model.sd_checkpoint_info.name_for_extra == "demo"  # back on the job's own model
    late = run(seed=5, steps=4, refiner_checkpoint="demo2", refiner_switch_at=1.0)
    assert "Refiner" not in late.infotexts[0]  # sampling never got that far


@pytest.mark.parametrize("which", ["first pass", "second pass", "both passes"])
def test_refiner_with_hires_fix_follows_the_pass_option(which):
    shared.opts.data["hires_fix_refiner_pass"] = which
    try:
        res = run(seed=5, steps=3, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5,
                  refiner_checkpoint="demo2", refiner_switch_at=0.3)
    finally:
        shared.opts.data.pop("hires_fix_refiner_pass")
    assert "Refiner: demo2" in res.infotexts[0]
    assert ("Hires refiner: " + which in res.infotexts[0]) == (which != "second pass")
    assert shared.sd_model.sd_checkpoint_info.name_for_extra == "demo"


def test_restore_faces_without_weight_files_is_skipped_and_says_which_file():
    res = run(restore_faces=True)
    assert "Face restoration" not in res.infotexts[0] and "codeformer-v0.1.0.pth" in res.comments


def test_prompt_lists_give_one_prompt_per_image():
    res = run(prompt=["one", "two"], negative_prompt=["n1", "n2"], batch_size=2)
    assert res.all_prompts == ["one", "two"] and res.all_negative_prompts == ["n1", "n2"]
    assert res.infotexts[1].startswith("two\nNegative prompt: n2\n")


def test_comments_are_stripped_from_prompts():
    res = run(prompt="a cat # not this\nand a hat")
    assert res.all_prompts == ["a cat \nand a hat"]


def test_params_txt_respects_no_prompt_history(env, monkeypatch):
    path = os.path.join(env, "params.txt")
    run(seed=808)
    assert "Seed: 808," in open(path, encoding="utf8").read()
    monkeypatch.setattr(shared.cmd_opts, "no_prompt_history", True)
    run(seed=809)
    assert "Seed: 808," in open(path, encoding="utf8").read()


def test_restore_afterwards_false_keeps_the_override_globally():
    try:
        run(override_settings={"CLIP_stop_at_last_layers": 2}, override_settings_restore_afterwards=False)
        assert shared.opts.CLIP_stop_at_last_layers == 2
    finally:
        shared.opts.data.pop("CLIP_stop_at_last_layers", None)


def test_skip_cuts_one_batch_short_and_the_job_goes_on(env):
    class Skipper(scripts.Script):
        def title(self):
            return "skipper"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def before_process_batch(self, p, *args, **kwargs):
            if kwargs["batch_number"] == 0:
                shared.state.skip()

    runner = scripts.ScriptRunner()
    runner.add_script(Skipper())
    p = txt2img(n_iter=2, seed=500)
    p.scripts = runner
    res = processing.process_images(p)
    assert len(res.images) == 2 and not shared.state.skipped
    assert max_diff(res.images[1], run(seed=501).images[0]) <= 1


def test_styles_are_applied_from_the_style_database(tmp_path, monkeypatch):
    from modules import styles
    csv = tmp_path / "styles.csv"
    csv.write_text("name,prompt,negative_prompt\nshiny,\"{prompt}, shiny\",dull\n", encoding="utf8")
    monkeypatch.setattr(shared, "prompt_styles", styles.StyleDatabase([str(csv)]), raising=False)
    res = run(prompt="a cube", negative_prompt="", styles=["shiny"])
    assert res.all_prompts == ["a cube, shiny"] and res.all_negative_prompts == ["dull"]
    assert res.js() and json.loads(res.js())["styles"] == ["shiny"]


def test_processed_has_every_spec_attribute():
    names = ("images prompt negative_prompt seed subseed subseed_strength info comments width height sampler_name "
             "cfg_scale image_cfg_scale steps batch_size restore_faces face_restoration_model sd_model_name "
             "sd_model_hash sd_vae_name sd_vae_hash seed_resize_from_w seed_resize_from_h denoising_strength "
             "extra_generation_params index_of_first_image styles job_timestamp clip_skip token_merging_ratio "
             "token_merging_ratio_hr eta ddim_discretize s_churn s_tmin s_tmax s_noise s_min_uncond "
             "sampler_noise_scheduler_override is_using_inpainting_conditioning all_prompts all_negative_prompts "
             "all_seeds all_subseeds infotexts version").split()
    res = run(override_settings={"CLIP_stop_at_last_layers": 2})
    assert [n for n in names if not hasattr(res, n)] == []
    assert res.clip_skip == 2 and res.get_token_merging_ratio() == 0


def test_non_persistent_cond_cache_is_cleared_after_the_job():
    run(override_settings={"persistent_cond_cache": False})
    assert processing.StableDiffusionProcessing.cached_c == [None, None]
    assert processing.StableDiffusionProcessingTxt2Img.cached_hr_c == [None, None]


def test_disabled_extra_networks_still_strip_tags_and_skip_the_activate_hook():
    calls = []

    class Recorder(scripts.Script):
        def title(self):
            return "recorder"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def after_extra_networks_activate(self, p, *args, **kwargs):
            calls.append(kwargs["batch_number"])

    runner = scripts.ScriptRunner()
    runner.add_script(Recorder())
    p = txt2img(prompt="a cat <lora:thing:0.5>", disable_extra_networks=True)
    p.scripts = runner
    res = processing.process_images(p)
    assert p.extra_network_data == {"lora": [["thing", "0.5"]]}
    assert calls == [], "A1111 fires after_extra_networks_activate from the activation it skips"
    assert res.infotexts[0].startswith("a cat <lora:thing:0.5>\n")


def test_job_stopped_before_the_first_batch_still_reports_its_infotext():
    class Stopper(scripts.Script):
        def title(self):
            return "stopper"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, *args):
            shared.state.interrupt()

    runner = scripts.ScriptRunner()
    runner.add_script(Stopper())
    p = txt2img(seed=77)
    p.scripts = runner
    try:
        res = processing.process_images(p)
    finally:
        shared.state.begin("next")
    assert res.images == [] and len(res.infotexts) == 1
    assert res.info == res.infotexts[0] and "Seed: 77," in res.info
    assert json.loads(res.js())["infotexts"] == [res.info]


def test_processed_js_prompts_are_the_first_styled_prompts(tmp_path, monkeypatch):
    from modules import styles
    csv = tmp_path / "styles.csv"
    csv.write_text("name,prompt,negative_prompt\nshiny,\"{prompt}, shiny\",dull\n", encoding="utf8")
    monkeypatch.setattr(shared, "prompt_styles", styles.StyleDatabase([str(csv)]), raising=False)
    res = run(prompt="a cube", negative_prompt="", styles=["shiny"])
    data = json.loads(res.js())
    assert data["prompt"] == "a cube, shiny" and data["negative_prompt"] == "dull"
    assert res.prompt == "a cube", "the attribute keeps the request's prompt (A1111)"


def test_failure_mid_job_restores_tiling_options_and_model(monkeypatch):
    def explode(self, *args, **kwargs):
        raise RuntimeError("sampler blew up")

    monkeypatch.setattr(processing.StableDiffusionProcessingTxt2Img, "sample", explode)
    p = txt2img(tiling=True, override_settings={"sd_model_checkpoint": "demo2", "CLIP_stop_at_last_layers": 2})
    with pytest.raises(RuntimeError, match="sampler blew up"):
        processing.process_images(p)
    model = sd_models.model_data.sd_model
    assert model.sd_checkpoint_info.name_for_extra == "demo"
    assert all(m.padding_mode == "zeros" for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert shared.opts.CLIP_stop_at_last_layers == 1
