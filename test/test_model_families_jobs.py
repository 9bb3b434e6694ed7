"""Jobs on the SD2 and SDXL demo checkpoints through the normal path: what each family's user
would notice (v-prediction, the SDXL size conditioning, a kohya SDXL LoRA with every module
applied and the next job untouched, an SDXL embedding, switching families in one server)."""
from __future__ import annotations

import os

import pytest

from modules import demo_checkpoint, demo_embeddings, demo_lycoris, sd_models, shared
from job_helpers import image_bytes, job
from test_processing_helpers import env, fresh_state  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def families(env):
    """The SD2-v, SDXL and SDXL refiner demo files beside `demo`, with an SDXL LoRA and embedding."""
    folder = os.path.join(env, "models", "Stable-diffusion")
    for kind in ("sd2-v", "sdxl", "sdxl-refiner"):
        demo_checkpoint.write_demo_checkpoint(os.path.join(folder, demo_checkpoint.demo_filename(kind)), kind)
    demo_lycoris.write_demo_sdxl_lora(os.path.join(env, "models", "Lora", "xl-pattern.safetensors"))
    widths = (demo_checkpoint.CLIP_CONFIG["hidden_size"], demo_checkpoint.BIGG_DEMO_CONFIG["hidden_size"])
    demo_embeddings.write_demo_sdxl_embedding(os.path.join(env, "embeddings", "xl-word.safetensors"), widths=widths)
    sd_models.list_models()
    yield
    sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))


def use(kind: str) -> sd_models.StableDiffusionModel:
    return sd_models.reload_model_weights(info=sd_models.get_checkpoint_info(demo_checkpoint.demo_filename(kind)))


def test_switching_families_back_and_forth_in_one_server(families):
    sd1 = image_bytes(job(seed=11))
    for kind, flag in (("sdxl", "is_sdxl"), ("sd2-v", "is_sd2"), ("sdxl", "is_sdxl")):
        model = use(kind)
        assert getattr(model, flag) and not model.is_sd1
        assert job(seed=11).images[0].size == (64, 64)
    sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))
    assert image_bytes(job(seed=11)) == sd1


def test_sd2_v_is_sampled_as_v_prediction_and_the_option_overrides_it(families):
    model = use("sd2-v")
    assert model.parameterization == "v"
    as_v = image_bytes(job(seed=12))
    shared.opts.data["sd_prediction_type"] = "eps"
    try:
        assert model.parameterization == "eps"
        as_eps = image_bytes(job(seed=12))
    finally:
        shared.opts.data.pop("sd_prediction_type")
    assert as_v != as_eps


def test_sdxl_size_conditioning_follows_the_image_size(families):
    model = use("sdxl")
    small = model.get_learned_conditioning(_texts(["a cat"], 64, 64))
    large = model.get_learned_conditioning(_texts(["a cat"], 1024, 768))
    assert small["vector"].shape == large["vector"].shape and not (small["vector"] == large["vector"]).all()
    assert (small["crossattn"] == large["crossattn"]).all()


def _texts(prompts, width, height):
    from modules import prompt_parser
    return prompt_parser.SdConditioning(prompts, width=width, height=height)


def test_sdxl_lora_applies_every_module_and_the_next_job_is_untouched(families):
    use("sdxl")
    before = image_bytes(job(seed=13))
    with_lora = job(seed=13, prompt="a red cube <lora:xl-pattern:1>")
    assert image_bytes(with_lora) != before
    assert not with_lora.comments  # no module left out, nothing not understood
    assert 'Lora hashes: "xl-pattern: ' in with_lora.infotexts[0]
    assert image_bytes(job(seed=13)) == before


def test_sdxl_lora_on_an_sd1_model_goes_on_with_a_note(families):
    sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))
    before = image_bytes(job(seed=14))
    res = job(seed=14, prompt="a red cube <lora:xl-pattern:1>")
    assert image_bytes(res) == before and "xl-pattern" in res.comments
    assert "Lora hashes" not in res.infotexts[0]


def test_sdxl_embedding_is_used_on_sdxl_and_skipped_on_sd1(families):
    from modules.textual_inversion import textual_inversion
    use("sdxl")
    plain = image_bytes(job(seed=15, prompt="a photo of a cat"))
    res = job(seed=15, prompt="a photo of xl-word")
    assert 'TI hashes: "xl-word: ' in res.infotexts[0] and image_bytes(res) != plain
    assert "xl-word" in textual_inversion.embedding_db.word_embeddings
    sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))
    job(seed=15, prompt="a photo of xl-word")
    assert "xl-word" in textual_inversion.embedding_db.skipped_embeddings


def test_a_failed_load_keeps_the_sdxl_model_and_the_next_job_is_unchanged(families, tmp_path):
    from modules import errors
    use("sdxl")
    before = image_bytes(job(seed=16))
    data = open(sd_models.get_checkpoint_info(demo_checkpoint.demo_filename("sd2-v")).filename, "rb").read()
    broken = tmp_path / "half-sd2.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.CheckpointLoadError, match="half-sd2"):
        sd_models.reload_model_weights(info=sd_models.CheckpointInfo(str(broken)))
    assert shared.sd_model.is_sdxl and image_bytes(job(seed=16)) == before
