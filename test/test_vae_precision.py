"""A half-precision VAE that overflows is converted to float32 and decodes again (A1111's
`auto_vae_precision`); with the option off the job fails with a clear NaN error."""
from __future__ import annotations

import pytest
import torch

from modules import errors, processing, sd_models, shared
from test_processing_helpers import env, fresh_state  # noqa: F401  (fixtures)


@pytest.fixture
def half_vae_model():
    model = sd_models.load_model(sd_models.get_checkpoint_info("demo"), dtype_vae=torch.float16)
    yield model
    sd_models.load_model(sd_models.get_checkpoint_info("demo"))


def test_nan_from_half_vae_is_retried_in_float32(half_vae_model):
    latents = torch.full((1, 4, 8, 8), 3.0e4)
    assert torch.isnan(half_vae_model.decode_first_stage(latents)).any()  # fp16 overflows
    decoded = processing.decode_latent_batch(half_vae_model, latents, check_for_nans=True)
    assert half_vae_model.dtype_vae == torch.float32 and not torch.isnan(decoded[0]).any()


def test_nan_is_an_error_without_auto_vae_precision(half_vae_model):
    shared.opts.data["auto_vae_precision"] = False
    try:
        with pytest.raises(errors.NansDetected, match="VAE produced NaNs"):
            processing.decode_latent_batch(half_vae_model, torch.full((1, 4, 8, 8), 3.0e4), check_for_nans=True)
        assert half_vae_model.dtype_vae == torch.float16
    finally:
        shared.opts.data["auto_vae_precision"] = True
