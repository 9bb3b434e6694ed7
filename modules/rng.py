"""Seeds and noise (spec §5): the one place that turns seeds into latent noise.

Every image owns a generator seeded with its own seed, so image *i* of a batch equals the same
image made alone. The option `randn_source` picks where noise is drawn: "GPU" (the compute
device; the default), "CPU" (drawn on CPU, then moved) or "NV" (drawn on CPU here: Serena has
no Philox port, see :func:`create_generator`).
"""
from __future__ import annotations

import random
from typing import Sequence

import torch

from modules import errors

MAX_SEED = 4294967294


def _opts():
    from modules import shared
    return shared.opts


def compute_device() -> torch.device:
    """The device the model runs on (`modules.devices.device` once that module exists)."""
    try:
        from modules import devices
    except ImportError:
        return torch.device("cpu")
    return torch.device(getattr(devices, "device", "cpu"))


def noise_device() -> torch.device:
    """Where generators live for the current `randn_source` option."""
    source = _opts().randn_source
    if source == "GPU":
        device = compute_device()
        return device if device.type != "mps" else torch.device("cpu")
    return torch.device("cpu")


def create_generator(seed: int) -> torch.Generator:
    """A generator seeded with `seed` on the device `randn_source` selects."""
    generator = torch.Generator(device=noise_device())
    generator.manual_seed(int(seed))
    return generator


def randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit normal noise of `shape` drawn from `generator`, reseeded with `seed` (a fresh one if None)."""
    if generator is None:
        generator = create_generator(seed)
    else:
        generator.manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(compute_device())


def randn_from(generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """The next unit normal noise of `shape` from an already seeded generator."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(compute_device())


def get_fixed_seed(seed: int | str | float | None) -> int:
    """A concrete seed: -1, "", None or a non-numeric string become a random one (spec §5)."""
    if seed in ("", None):
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    seed = int(seed)
    if seed == -1:
        return int(random.randrange(MAX_SEED))
    return seed


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (val=0) to `high` (val=1), normalised along axis 1.

    When the two are almost parallel (mean dot > 0.9995) A1111 mixes linearly with the weights
    reversed (`low*val + high*(1-val)`); that quirk is kept so variation seeds match.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    w_low = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    w_high = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return w_low * low + w_high * high


def paste_centred(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Copy the overlap of `source` into the centre of `target` (both C×H×W); offset (T−S)//2.

    A larger source is cropped by the offset on both sides (A1111's size `S + 2·offset`), so when
    it is larger by an odd amount the last row/column of `target` keeps its own values.
    """
    _, th, tw = target.shape
    _, sh, sw = source.shape
    dy, dx = (th - sh) // 2, (tw - sw) // 2
    ty, tx = max(dy, 0), max(dx, 0)
    sy, sx = max(-dy, 0), max(-dx, 0)
    h, w = sh - 2 * sy, sw - 2 * sx
    target[:, ty:ty + h, tx:tx + w] = source[:, sy:sy + h, sx:sx + w]
    return target


class ImageRNG:
    """Per-image noise for one batch: `first()` is the initial noise, `next()` every later draw.

    Args:
        shape: the latent shape of one image, (C, H/8, W/8).
        seeds: one seed per image of the batch.
        subseeds: variation seeds, one per image (used when `subseed_strength` ≠ 0).
        subseed_strength: slerp weight of the variation noise.
        seed_resize_from_h, seed_resize_from_w: pixel size the noise is made at (≤ 0: off).
    """

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0):
        if len(shape) != 3:
            raise errors.InvalidParameter(f"noise shape must be (C, H, W), got {tuple(shape)}", field="shape")
        self.shape = tuple(int(v) for v in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = list(subseeds) if subseeds is not None else None
        self.subseed_strength = float(subseed_strength or 0.0)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.generators = [create_generator(seed) for seed in self.seeds]
        self.is_first = True

    def _noise_shape(self) -> tuple[int, int, int]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def _subnoise(self, index: int, noise_shape: Sequence[int]) -> torch.Tensor | None:
        if self.subseeds is None or self.subseed_strength == 0:
            return None
        subseed = int(self.subseeds[index]) if index < len(self.subseeds) else 0
        return randn(subseed, noise_shape)

    def _first_for(self, index: int, seed: int, generator: torch.Generator) -> torch.Tensor:
        noise_shape = self._noise_shape()
        subnoise = self._subnoise(index, noise_shape)
        resized = noise_shape != self.shape
        noise = randn(seed, noise_shape) if resized else randn(seed, self.shape, generator)
        if subnoise is not None:
            noise = slerp(self.subseed_strength, noise, subnoise)
        if resized:
            noise = paste_centred(randn(seed, self.shape, generator), noise)
        return noise

    def first(self) -> torch.Tensor:
        """The initial noise of the batch, B×C×H×W; reseeds with seed+ENSD afterwards if set."""
        noise = [self._first_for(i, seed, gen) for i, (seed, gen) in enumerate(zip(self.seeds, self.generators))]
        delta = int(_opts().eta_noise_seed_delta or 0)
        if delta:
            self.generators = [create_generator(seed + delta) for seed in self.seeds]
        self.is_first = False
        return torch.stack(noise)

    def next(self) -> torch.Tensor:
        """The next noise of the batch from each image's own generator (the first call is `first()`)."""
        if self.is_first:
            return self.first()
        return torch.stack([randn_from(gen, self.shape) for gen in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Noise shaped like `x` (B×C×H×W) drawn from the per-image generators (k-diffusion's randn_like)."""
        if x.dim() != 4 or x.shape[0] != len(self.generators):
            return torch.randn_like(x)
        noise = torch.stack([randn_from(gen, x.shape[1:]) for gen in self.generators])
        return noise.to(device=x.device, dtype=x.dtype)


def create_random_tensors(shape: Sequence[int], seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                          subseed_strength: float = 0.0, seed_resize_from_h: int = 0,
                          seed_resize_from_w: int = 0, p=None) -> torch.Tensor:
    """A1111's helper: the first noise of an `ImageRNG` built from these arguments."""
    generator = ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=subseed_strength,
                         seed_resize_from_h=seed_resize_from_h, seed_resize_from_w=seed_resize_from_w)
    return generator.next()
