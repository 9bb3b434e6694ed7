"""Small helpers shared by the samplers: derivative, ancestral split, noise samplers."""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """Append a final 0 to a 1-D sigma schedule."""
    return torch.cat([x, x.new_zeros([1])])


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append singleton dimensions to `x` until it has `target_dims` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
    return x[(...,) + (None,) * missing]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative dx/dsigma from a denoiser output."""
    return (x - denoised) / append_dims(sigma, x.ndim) if torch.is_tensor(sigma) else (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """Split a step into (sigma_down, sigma_up) for ancestral sampling with strength `eta`."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """Fresh Gaussian noise shaped like `x` at every call (ignores the sigmas)."""
    return lambda sigma, sigma_next: torch.randn_like(x)


class BrownianTreeNoiseSampler:
    """Noise from a Brownian tree over sigma, so the same seed gives the same path at any step count.

    One tree per seed when `seed` is a sequence of length batch (each image then depends only on
    its own seed), else one tree for the whole batch. Uses torchsde's `BrownianTree` (Li et al.,
    "Scalable Gradients for Stochastic Differential Equations", 2020), as k-diffusion does, so
    images match A1111 for the same seeds.
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int | Sequence[int] | None = None):
        import torchsde  # deferred: only SDE samplers need it

        # The end points and every query time stay tensors of the sigmas' own dtype (float64 sigmas
        # are not rounded to float32), as in k-diffusion: torchsde reads them with float().
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.sign = 1 if t0 < t1 else -1
        if self.sign < 0:
            t0, t1 = t1, t0
        self.t0, self.t1 = t0, t1
        if seed is None:
            seed = int(torch.randint(0, 2 ** 63 - 1, []).item())
        self.batched = not isinstance(seed, int)
        seeds = [int(s) for s in seed] if self.batched else [seed]
        if self.batched and len(seeds) != x.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {x.shape[0]}")
        w0 = torch.zeros_like(x[0] if self.batched else x)
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        start, end = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        ascending = bool(start < end)
        lo, hi = (start, end) if ascending else (end, start)
        with warnings.catch_warnings():  # torchsde warns when an end point rounds past the range
            warnings.filterwarnings("ignore", message="Should have")
            w = torch.stack([tree(lo, hi) for tree in self.trees])
        w = w * (self.sign * (1 if ascending else -1))
        w = w if self.batched else w[0]
        # normalised by sqrt|dt| computed on the tensors too (in their dtype, not in Python floats)
        return w / (end - start).abs().sqrt()
