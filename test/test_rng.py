"""Seeds and noise (spec §5): per-image generators, variation seeds, seed resize, ENSD."""
from __future__ import annotations

import pytest
import torch

from modules import errors, options, rng, shared

SHAPE = (4, 8, 8)


@pytest.fixture(autouse=True)
def fresh_opts(monkeypatch):
    monkeypatch.setattr(shared, "opts", options.Options())


def test_first_noise_is_the_seeded_normal_draw():
    noise = rng.ImageRNG(SHAPE, [123]).first()
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(123))
    assert noise.shape == (1, *SHAPE)
    assert torch.equal(noise[0], expected)


def test_image_in_batch_equals_image_made_alone():
    batch = rng.ImageRNG(SHAPE, [5, 6, 7])
    alone = rng.ImageRNG(SHAPE, [6])
    assert torch.equal(batch.next()[1], alone.next()[0])
    assert torch.equal(batch.next()[1], alone.next()[0]), "later draws come from the same per-image generator"


def test_next_continues_each_generator():
    generator = torch.Generator().manual_seed(9)
    first, second = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    noise = rng.ImageRNG(SHAPE, [9])
    assert torch.equal(noise.next()[0], first)
    assert torch.equal(noise.next()[0], second)


def test_randn_like_uses_per_image_generators():
    a = rng.ImageRNG(SHAPE, [1, 2])
    b = rng.ImageRNG(SHAPE, [2])
    a.first(), b.first()
    assert torch.equal(a.randn_like(torch.zeros(2, *SHAPE))[1], b.randn_like(torch.zeros(1, *SHAPE))[0])


def test_variation_strength_zero_ignores_subseed():
    plain = rng.ImageRNG(SHAPE, [3]).first()
    varied = rng.ImageRNG(SHAPE, [3], subseeds=[77], subseed_strength=0.0).first()
    assert torch.equal(plain, varied)


def test_variation_is_slerp_of_seed_and_subseed_noise():
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    sub = torch.randn(SHAPE, generator=torch.Generator().manual_seed(77))
    got = rng.ImageRNG(SHAPE, [3], subseeds=[77], subseed_strength=0.3).first()[0]
    assert torch.allclose(got, rng.slerp(0.3, noise, sub))
    assert not torch.allclose(got, noise)
    full = rng.ImageRNG(SHAPE, [3], subseeds=[77], subseed_strength=1.0).first()[0]
    assert torch.allclose(full, sub, atol=1e-5)


def test_slerp_formula_and_linear_quirk():
    low = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    high = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    t = 0.25
    ln = low / low.norm(dim=1, keepdim=True)
    hn = high / high.norm(dim=1, keepdim=True)
    omega = torch.acos((ln * hn).sum(1))
    expected = (torch.sin((1 - t) * omega) / torch.sin(omega)).unsqueeze(1) * low \
        + (torch.sin(t * omega) / torch.sin(omega)).unsqueeze(1) * high
    assert torch.allclose(rng.slerp(t, low, high), expected)
    # Nearly parallel: A1111 mixes linearly with reversed weights.
    assert torch.allclose(rng.slerp(t, low, low * 1.0), low * t + low * (1 - t))
    assert torch.allclose(rng.slerp(0.2, low, low * 2.0), low * 0.2 + low * 2.0 * 0.8)


def test_seed_resize_copies_small_noise_into_the_centre():
    small = torch.randn((4, 4, 4), generator=torch.Generator().manual_seed(11))
    got = rng.ImageRNG(SHAPE, [11], seed_resize_from_h=32, seed_resize_from_w=32).first()[0]
    assert torch.equal(got[:, 2:6, 2:6], small)
    background = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11))
    assert torch.equal(got[:, 0, :], background[:, 0, :])


def test_seed_resize_from_larger_crops_the_centre():
    big = torch.randn((4, 12, 16), generator=torch.Generator().manual_seed(4))
    got = rng.ImageRNG(SHAPE, [4], seed_resize_from_h=96, seed_resize_from_w=128).first()[0]
    assert torch.equal(got, big[:, 2:10, 4:12])


def test_ensd_reseeds_after_first_draw(monkeypatch):
    shared.opts.data["eta_noise_seed_delta"] = 31337
    noise = rng.ImageRNG(SHAPE, [10])
    first = noise.next()[0]
    assert torch.equal(first, torch.randn(SHAPE, generator=torch.Generator().manual_seed(10)))
    assert torch.equal(noise.next()[0], torch.randn(SHAPE, generator=torch.Generator().manual_seed(10 + 31337)))


def test_cpu_source_matches_on_cpu():
    shared.opts.data["randn_source"] = "CPU"
    expected = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(8))
    assert torch.equal(rng.ImageRNG(SHAPE, [8]).first(), expected)


@pytest.mark.parametrize("value", [-1, "", None, "abc"])
def test_random_seeds(value):
    seed = rng.get_fixed_seed(value)
    assert isinstance(seed, int) and 0 <= seed < rng.MAX_SEED


def test_fixed_seeds_kept():
    assert rng.get_fixed_seed(42) == 42
    assert rng.get_fixed_seed("42") == 42


def test_bad_shape_rejected():
    with pytest.raises(errors.InvalidParameter, match=r"\(4, 8\)"):
        rng.ImageRNG((4, 8), [1])


def test_seed_resize_from_larger_by_an_odd_amount_copies_as_a1111():
    """Source 3 latent columns wider: offset (8-11)//2 = -2, so A1111 copies 11+2*(-2) = 7 columns
    from column 2; the last column stays the full-size draw."""
    small = torch.randn((4, 8, 11), generator=torch.Generator().manual_seed(9))
    background = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    got = rng.ImageRNG(SHAPE, [9], seed_resize_from_h=64, seed_resize_from_w=88).first()[0]
    assert torch.equal(got[:, :, 0:7], small[:, :, 2:9])
    assert torch.equal(got[:, :, 7], background[:, :, 7])
