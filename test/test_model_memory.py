"""Model memory options: `sd_checkpoints_limit` keeps several checkpoints loaded, so switching
back and forth (a refiner, a per-job override) does not read the file again."""
from __future__ import annotations

import pytest

from modules import errors, processing, sd_models, shared
from test_processing_helpers import env, fresh_state, max_diff  # noqa: F401  (fixtures)


@pytest.fixture
def loads(monkeypatch):
    """The checkpoints read from disk during the test, by name."""
    seen: list[str] = []
    real = sd_models.load_checkpoint

    def counting(info, **kwargs):
        seen.append(info.name_for_extra)
        return real(info, **kwargs)

    monkeypatch.setattr(sd_models, "load_checkpoint", counting)
    yield seen
    shared.opts.data["sd_checkpoints_limit"] = 1
    sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))
    sd_models.model_data.trim(1)


def switch(name: str) -> sd_models.StableDiffusionModel:
    return sd_models.reload_model_weights(info=sd_models.get_checkpoint_info(name))


def test_limit_one_reads_the_file_on_every_switch(loads):
    first = switch("demo2")
    switch("demo")
    again = switch("demo2")
    assert loads == ["demo2", "demo", "demo2"] and again is not first
    assert sd_models.model_data.loaded_sd_models == [again]


def test_limit_two_keeps_both_models_and_switches_without_reading(loads):
    shared.opts.data["sd_checkpoints_limit"] = 2
    base = switch("demo")
    second = switch("demo2")
    assert switch("demo") is base and switch("demo2") is second
    assert loads == ["demo2"]  # demo was already loaded
    assert sd_models.model_data.loaded_sd_models == [second, base]
    assert shared.opts.sd_model_checkpoint == sd_models.get_checkpoint_info("demo2").title


def test_a_failed_load_keeps_every_loaded_model(loads, tmp_path):
    shared.opts.data["sd_checkpoints_limit"] = 2
    switch("demo2")
    current = switch("demo")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(errors.CheckpointLoadError):
        sd_models.reload_model_weights(info=sd_models.CheckpointInfo(str(bad)))
    assert shared.sd_model is current and len(sd_models.model_data.loaded_sd_models) == 2


def test_refiner_with_two_models_kept_gives_the_same_image(loads):
    shared.opts.data["sd_checkpoints_limit"] = 2
    kwargs = dict(prompt="a red cube", seed=3, steps=4, width=64, height=64, sampler_name="Euler",
                  do_not_save_samples=True, do_not_save_grid=True)
    plain = processing.process_images(processing.StableDiffusionProcessingTxt2Img(**kwargs))
    refined = [processing.process_images(processing.StableDiffusionProcessingTxt2Img(
        **kwargs, refiner_checkpoint="demo2", refiner_switch_at=0.5)) for _ in range(2)]
    assert loads == ["demo2"]  # loaded once, kept for the second job
    assert all(max_diff(plain.images[0], r.images[0]) == 0 for r in refined)
    assert shared.sd_model.sd_checkpoint_info.name_for_extra == "demo"
