"""Tiled VAE (issue 13, part 4): large images decode and encode in overlapping tiles, chosen by the
`vae_tiling` options; with tiling off nothing changes, byte for byte.

The VAE is the demo checkpoint's (random weights, through the real loading code). Its outputs are
compared in 0–255 units, as a saved image would show them."""
from __future__ import annotations

import pytest
import torch

from modules import processing, sd_vae_tiling, shared
from test_processing_helpers import env, fresh_state  # noqa: F401  (fixtures)

TILE_PX = 256  # the option's minimum: 32 latent cells on the demo VAE (×8)


@pytest.fixture
def opts(monkeypatch):
    """Set tiling options for one test; monkeypatch restores them after."""
    def set_options(**values):
        for key, value in values.items():
            monkeypatch.setitem(shared.opts.data, key, value)
    return set_options


@pytest.fixture
def vae():
    return shared.sd_model.vae


def to_255(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(-1, 1) + 1) * 127.5


def seam_spike(result: torch.Tensor, reference: torch.Tensor, margin: int) -> float:
    """How far the worst row or column of the error |result - reference| stands out: its mean over
    the median row's or column's, `margin` rows and columns from the borders excluded (each tile
    sees the image border differently). A seam is a line of larger error along a tile edge."""
    error = (result - reference).abs()
    spikes = []
    for dim in (-2, -1):
        profile = error.mean(dim=[d for d in range(error.dim()) if d != error.dim() + dim])[margin:-margin]
        spikes.append(float(profile.max() / profile.median()))
    return max(spikes)


def noise_image(size: int, seed: int = 3) -> torch.Tensor:
    """An image in [-1, 1] of uniform noise (the same texture everywhere, as the latents below)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_should_tile_follows_the_options(opts):
    opts(vae_tiling="Never", vae_tile_size=512, vae_tiling_threshold=1536 * 1536)
    assert not sd_vae_tiling.should_tile(4096, 4096)
    opts(vae_tiling="Always")
    assert sd_vae_tiling.should_tile(512, 576) and sd_vae_tiling.should_tile(1024, 256)
    assert not sd_vae_tiling.should_tile(512, 512)  # one tile: nothing to tile
    opts(vae_tiling="Automatic")
    assert not sd_vae_tiling.should_tile(1536, 1536) and sd_vae_tiling.should_tile(1536, 1544)
    opts(vae_tiling_threshold=512 * 640)
    assert not sd_vae_tiling.should_tile(512, 640) and sd_vae_tiling.should_tile(576, 640)


@pytest.mark.parametrize("size,tile", [(48, 32), (56, 32), (57, 32), (256, 64), (65, 64), (200, 33)])
def test_tiles_are_whole_overlapping_and_fewest(size, tile):
    overlap = round(tile * sd_vae_tiling.TILE_OVERLAP)
    starts = sd_vae_tiling.tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == size  # full tiles, the last one ends at the border
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    assert (len(starts) - 2) * (tile - overlap) + tile < size  # one tile fewer would not cover it
    assert sd_vae_tiling.tile_starts(32, 32, 8) == [0]


def test_2048_decode_takes_25_tiles_of_512():
    assert len(sd_vae_tiling.tile_starts(2048 // 8, 512 // 8, 16)) == 5


def test_tiling_off_or_one_tile_is_byte_identical(vae, opts):
    latents = torch.randn(1, 4, 36, 40, generator=torch.Generator().manual_seed(0))  # 288×320 px
    images = noise_image(320)
    with torch.no_grad():
        plain_decoded, plain_encoded = vae.decode(latents).sample, vae.encode(images).latent_dist.mean
        opts(vae_tiling="Never", vae_tile_size=TILE_PX)
        assert torch.equal(sd_vae_tiling.decode(vae, latents), plain_decoded)
        assert torch.equal(sd_vae_tiling.encode(vae, images), plain_encoded)
        opts(vae_tiling="Automatic")  # default threshold (1536²): not tiled
        assert torch.equal(sd_vae_tiling.decode(vae, latents), plain_decoded)
        opts(vae_tiling="Always", vae_tile_size=320)  # fits one tile
        assert torch.equal(sd_vae_tiling.decode(vae, latents), plain_decoded)
        assert torch.equal(sd_vae_tiling.encode(vae, images), plain_encoded)


def test_tiled_decode_is_close_seamless_and_deterministic(vae, opts):
    latents = torch.randn(1, 4, 40, 44, generator=torch.Generator().manual_seed(0))  # 320×352 px: 2×2 tiles
    opts(vae_tiling="Always", vae_tile_size=TILE_PX)
    with torch.no_grad():
        plain = to_255(vae.decode(latents).sample)
        tiled = sd_vae_tiling.decode(vae, latents)
        again = sd_vae_tiling.decode(vae, latents)
        # what a seam looks like: two halves decoded apart and put side by side
        halves = to_255(torch.cat([vae.decode(latents[..., :22]).sample, vae.decode(latents[..., 22:]).sample], -1))
    assert torch.equal(tiled, again)
    tiled = to_255(tiled)
    assert tiled.shape == plain.shape == (1, 3, 320, 352)
    assert float((tiled - plain).abs().mean()) < 4.0  # measured 2.5 (0–255 units)
    assert seam_spike(halves, plain, margin=16) > 10.0  # the measure sees a hard seam (measured 17.9)
    assert seam_spike(tiled, plain, margin=16) < 3.0  # and none in the tiled decode (measured 1.8)


def test_tiled_encode_is_close_seamless_and_deterministic(vae, opts):
    images = noise_image(384)
    opts(vae_tiling="Always", vae_tile_size=TILE_PX)
    with torch.no_grad():
        plain = vae.encode(images).latent_dist.mean
        tiled = sd_vae_tiling.encode(vae, images)
        again = sd_vae_tiling.encode(vae, images)
        halves = torch.cat([vae.encode(images[..., :192]).latent_dist.mean,
                            vae.encode(images[..., 192:]).latent_dist.mean], -1)
    assert torch.equal(tiled, again)
    assert tiled.shape == plain.shape == (1, 4, 48, 48)
    assert float((tiled - plain).abs().mean()) < 0.08 * float(plain.abs().mean())  # measured 0.042
    assert seam_spike(halves, plain, margin=2) > 10.0  # measured 19.7
    assert seam_spike(tiled, plain, margin=2) < 3.0  # measured 1.9


def test_txt2img_above_the_threshold_decodes_in_tiles(opts, monkeypatch):
    opts(vae_tiling="Automatic", vae_tile_size=TILE_PX, vae_tiling_threshold=65536)
    calls = []
    real = sd_vae_tiling.tiled_decode

    def spy(vae, latents, tile_px):
        calls.append((tuple(latents.shape), tile_px))
        return real(vae, latents, tile_px)

    monkeypatch.setattr(sd_vae_tiling, "tiled_decode", spy)

    def generate() -> processing.Processed:
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt="a red cube", seed=7, steps=2, width=384, height=256, sampler_name="Euler",
            do_not_save_samples=True, do_not_save_grid=True)
        return processing.process_images(p)

    first, second = generate(), generate()
    assert calls == [((1, 4, 32, 48), TILE_PX)] * 2  # 384×256 = 98,304 px > 65,536: tiled
    assert first.images[0].size == (384, 256)
    assert first.images[0].tobytes() == second.images[0].tobytes()
    opts(vae_tiling_threshold=384 * 256)  # not above the threshold: decoded whole
    whole = generate()
    assert len(calls) == 2
    assert whole.images[0].tobytes() != first.images[0].tobytes()
    assert whole.infotexts == first.infotexts  # the infotext records nothing about tiling


def test_a_batch_is_tiled_as_its_images_alone(vae):
    latents = torch.randn(2, 4, 20, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batch = sd_vae_tiling.tiled_decode(vae, latents, 128)  # tiles of 16 latent cells
        alone = torch.cat([sd_vae_tiling.tiled_decode(vae, latents[i:i + 1], 128) for i in range(2)])
    assert batch.shape == (2, 3, 160, 192)
    assert torch.allclose(batch, alone, atol=1e-4)
