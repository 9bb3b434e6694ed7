"""Network module types: how one module's weight change is computed from the tensors a file holds for it.

The kinds and their rules are those A1111's built-in Lora extension reads (kohya and LyCORIS files):

| type  | keys (per module)                                          | change of the weight `W`                       | scaled by `alpha/dim` |
|-------|------------------------------------------------------------|------------------------------------------------|-----------------------|
| lora  | `lora_down.weight`, `lora_up.weight` [`lora_mid.weight`]   | `up @ down`; with mid (LoCon Tucker conv): the | dim = rank (down's 0) |
|       | (`lora_A.weight`/`lora_B.weight`: the peft names)          | mid kernel contracted with up and down         |                       |
| loha  | `hada_w1_a/b`, `hada_w2_a/b` [`hada_t1`, `hada_t2`]        | `(w1a @ w1b) * (w2a @ w2b)` (Hadamard product) | dim = `hada_w1_b` 0   |
| lokr  | `lokr_w1` or `lokr_w1_a/b`, `lokr_w2` or `lokr_w2_a/b`     | `kron(w1, w2)`                                 | dim = rank of the     |
|       | [`lokr_t2`]                                                |                                                | factored part; none:1 |
| ia3   | `weight` [`on_input`]                                      | `W * w` per output (or input) channel          | no                    |
| full  | `diff` [`diff_b`]                                          | `diff` (and the bias moves by `diff_b`)        | no                    |
| norm  | `w_norm` [`b_norm`] (LayerNorm / GroupNorm)                | `w_norm` (and the bias moves by `b_norm`)      | no                    |

Common to all (A1111's `NetworkModule.finalize_updown`): a `scale` tensor overrides `alpha/dim`; with
`dora_scale` (DoRA) the scaled change is re-normalised: `W' = (W+ΔW) * dora_scale / ‖W+ΔW‖`, the norm
taken per input channel when `dora_scale` is `[1, in, …]` (A1111), or per output channel when it is
`[out, 1, …]` or a 1-D vector of `out` (≠ `in`) values (peft's magnitude layout); the change is `W' - W`.
Last, the change (and a bias change) is multiplied by the network's te or unet multiplier.

Each type is one small function `(w, orig_weight, dyn_dim) -> Updown` over the tensors; `MODULE_TYPES`
is the registry, tried in A1111's order; `module_type_for(w)` picks the first that accepts the keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


class NetworkShapeError(ValueError):
    """A module's tensors do not fit the model's module (another model family, or a broken file)."""


@dataclass
class Updown:
    """One module's change at multiplier 1 before scaling: `weight` (any shape with the target's size),
    `bias` (or None), and `dim`, the rank `alpha` is divided by (None: the type is not scaled)."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    dim: int | None = None


def _f32(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=torch.float32)


def rebuild_conventional(up: torch.Tensor, down: torch.Tensor, shape: Any, dyn_dim: int | None = None) -> torch.Tensor:
    """`up @ down` over the flattened factors (the first `dyn_dim` ranks only, when given), reshaped to `shape`."""
    up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
    if dyn_dim is not None:
        up, down = up[:, :dyn_dim], down[:dyn_dim]
    return (up @ down).reshape(shape)


def rebuild_cp_decomposition(up: torch.Tensor, down: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """LoCon's Tucker conv: `mid[r, s, kh, kw]` contracted with `up[out, r]` and `down[s, in]` → `[out, in, kh, kw]`."""
    up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
    return torch.einsum("rskl,or,si->oikl", mid, up, down)


def make_weight_cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker rebuild: `t[r, s, …]` with `wa[r, out]` and `wb[s, in]` → `[out, in, …]`."""
    return torch.einsum("rs...,ro,si->oi...", t, wa, wb)


def make_kron(shape: Any, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Kronecker product of the LoKr factors (a 2-D `w1` spread over a conv `w2`'s kernel), reshaped to `shape`."""
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()).reshape(shape)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS' split of a LoKr dimension into `(m, n)`, `m <= n`, `m * n == dimension`.

    With a `factor` that divides `dimension`: `factor` and the quotient; otherwise `m` is the largest
    divisor not above `factor` (any, when `factor` <= 0) and not above √dimension.
    """
    if factor > 0 and dimension % factor == 0:
        return tuple(sorted((factor, dimension // factor)))  # type: ignore[return-value]
    limit = factor if factor > 0 else dimension
    m = max(d for d in range(1, int(dimension ** 0.5) + 1) if dimension % d == 0 and d <= limit)
    return m, dimension // m


def lora_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """LoRA / LoCon: `up @ down` (conv: down carries the kernel), or the Tucker form with `lora_mid.weight`."""
    down = _f32(w.get("lora_down.weight", w.get("lora_A.weight")), orig)
    up = _f32(w.get("lora_up.weight", w.get("lora_B.weight")), orig)
    if "lora_mid.weight" in w:
        return Updown(rebuild_cp_decomposition(up, down, _f32(w["lora_mid.weight"], orig)), dim=down.shape[0])
    shape = [up.shape[0], down.shape[1]] + (list(down.shape[2:]) if down.dim() == 4 else [])
    return Updown(rebuild_conventional(up, down, shape, dyn_dim), dim=down.shape[0])


def _hada_half(w: dict, n: int, orig: torch.Tensor) -> torch.Tensor:
    a, b, t = w[f"hada_w{n}_a"], w[f"hada_w{n}_b"], w.get(f"hada_t{n}")
    if t is not None:
        return make_weight_cp(_f32(t, orig), _f32(a, orig), _f32(b, orig))
    a, b = _f32(a, orig), _f32(b, orig)
    return (a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1))


def hada_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """LoHa: the element-wise product of two low-rank products (each optionally Tucker)."""
    first, second = _hada_half(w, 1, orig), _hada_half(w, 2, orig)
    if first.numel() != second.numel():
        raise NetworkShapeError(f"LoHa halves differ in size: {tuple(first.shape)} vs {tuple(second.shape)}")
    return Updown(first * second.reshape(first.shape), dim=int(w["hada_w1_b"].shape[0]))


def _lokr_factor(w: dict, n: int, orig: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """LoKr factor `n` (full, or `a @ b`, or Tucker with `lokr_t2`) and the rank it was factored to."""
    full = w.get(f"lokr_w{n}")
    if full is not None:
        return _f32(full, orig), None
    a, b, t = _f32(w[f"lokr_w{n}_a"], orig), _f32(w[f"lokr_w{n}_b"], orig), w.get(f"lokr_t{n}")
    if t is not None:
        return make_weight_cp(_f32(t, orig), a, b), int(b.shape[0])
    return a @ b.reshape(b.shape[0], -1), int(b.shape[0])


def lokr_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """LoKr: `kron(w1, w2)`; alpha/dim applies only when a factor is itself low-rank (dim: w2's rank wins)."""
    w1, dim1 = _lokr_factor(w, 1, orig)
    w2, dim2 = _lokr_factor(w, 2, orig)
    shape = list(orig.shape) if orig.dim() == 4 else [w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1]]
    if w1.shape[0] * w2.shape[0] != orig.shape[0] or w1.numel() * w2.numel() != orig.numel():
        raise NetworkShapeError(f"LoKr factors {tuple(w1.shape)} ⊗ {tuple(w2.shape)} do not make {tuple(orig.shape)}")
    return Updown(make_kron(shape, w1, w2), dim=dim2 if dim2 is not None else dim1)


def ia3_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """IA3: the weight times a learned vector, per output channel (or per input channel with `on_input`)."""
    vector = _f32(w["weight"], orig).flatten()
    on_input = bool(w["on_input"].item()) if "on_input" in w else False
    axis = 1 if on_input else 0
    if vector.numel() != orig.shape[axis]:
        raise NetworkShapeError(f"IA3 vector of {vector.numel()} does not fit axis {axis} of {tuple(orig.shape)}")
    view = [1] * orig.dim()
    view[axis] = -1
    return Updown(orig.to(torch.float32) * vector.reshape(view))


def full_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """Full / diff: the file holds the weight change itself (and the bias change as `diff_b`)."""
    bias = w.get("diff_b")
    return Updown(_f32(w["diff"], orig), None if bias is None else _f32(bias, orig))


def norm_updown(w: dict, orig: torch.Tensor, dyn_dim: int | None = None) -> Updown:
    """Norm: the change of a LayerNorm/GroupNorm weight (`w_norm`) and bias (`b_norm`)."""
    bias = w.get("b_norm")
    return Updown(_f32(w["w_norm"], orig), None if bias is None else _f32(bias, orig))


def _has_all(*keys: str) -> Callable[[dict], bool]:
    return lambda w: all(k in w for k in keys)


def _has_lora(w: dict) -> bool:
    return _has_all("lora_up.weight", "lora_down.weight")(w) or _has_all("lora_A.weight", "lora_B.weight")(w)


def _has_lokr(w: dict) -> bool:
    return (("lokr_w1" in w or ("lokr_w1_a" in w and "lokr_w1_b" in w))
            and ("lokr_w2" in w or ("lokr_w2_a" in w and "lokr_w2_b" in w)))


class ModuleType:
    """A1111's `ModuleType`: `create_module(net, weights)` gives a `NetworkModule` when the keys are its kind's.

    Each kind is a subclass with A1111's class name (`ModuleTypeLora`, …) holding three things: its
    `name`, `accepts(w)` (are these its keys?) and `compute(w, orig, dyn_dim)` (its `Updown`).
    `MODULE_TYPES` holds one instance of each; an extension may append its own.
    """

    name = ""
    accepts: Callable[[dict], bool] = staticmethod(lambda w: False)
    compute: Callable[..., Updown] = staticmethod(lambda w, orig, dyn_dim=None: Updown(torch.zeros_like(orig)))

    def create_module(self, net: Any, weights: Any) -> Any:
        from modules.lora_network import NetworkModule
        return NetworkModule(net, weights, self) if self.accepts(weights.w) else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ModuleTypeLora(ModuleType):
    name, accepts, compute = "lora", staticmethod(_has_lora), staticmethod(lora_updown)


class ModuleTypeHada(ModuleType):
    name = "loha"
    accepts = staticmethod(_has_all("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
    compute = staticmethod(hada_updown)


class ModuleTypeIa3(ModuleType):
    name, accepts, compute = "ia3", staticmethod(_has_all("weight")), staticmethod(ia3_updown)


class ModuleTypeLokr(ModuleType):
    name, accepts, compute = "lokr", staticmethod(_has_lokr), staticmethod(lokr_updown)


class ModuleTypeFull(ModuleType):
    name, accepts, compute = "full", staticmethod(_has_all("diff")), staticmethod(full_updown)


class ModuleTypeNorm(ModuleType):
    name, accepts, compute = "norm", staticmethod(_has_all("w_norm")), staticmethod(norm_updown)


# A1111's order (its GLoRA and OFT types are not supported: their keys are reported as not understood).
MODULE_TYPES: list[ModuleType] = [ModuleTypeLora(), ModuleTypeHada(), ModuleTypeIa3(), ModuleTypeLokr(),
                                  ModuleTypeFull(), ModuleTypeNorm()]


def module_type_for(w: dict) -> ModuleType | None:
    """The first registered type that accepts these keys (None: no type does)."""
    return next((t for t in MODULE_TYPES if t.accepts(w)), None)


def scale_of(w: dict, dim: int | None) -> float:
    """`scale` when the file has it, else `alpha / dim` when both exist, else 1."""
    if "scale" in w:
        return float(w["scale"].item())
    if dim is not None and "alpha" in w:
        return float(w["alpha"].item()) / dim
    return 1.0


def _spans_outputs(scale: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a `dora_scale` holds one magnitude per output channel (`[out, 1, …]`, or 1-D of out ≠ in)."""
    out_dim, in_dim = weight.shape[0], weight.shape[1] if weight.dim() > 1 else -1
    if scale.dim() >= 2:
        return scale.shape[0] == out_dim and scale[0].numel() == 1
    return scale.numel() == out_dim != in_dim


def weight_decompose(updown: torch.Tensor, orig: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """DoRA: `(W+ΔW) * dora_scale / ‖W+ΔW‖ - W`, the norm over every axis but the one `dora_scale` spans."""
    merged = orig.to(torch.float32) + updown
    scale = dora_scale.to(device=merged.device, dtype=torch.float32)
    axis = 0 if _spans_outputs(scale, merged) else 1
    if scale.numel() != merged.shape[axis]:
        raise NetworkShapeError(f"dora_scale {tuple(scale.shape)} does not fit the weight {tuple(orig.shape)}")
    dims = [d for d in range(merged.dim()) if d != axis]
    norm = torch.linalg.vector_norm(merged, dim=dims, keepdim=True)
    return merged * (scale.reshape(norm.shape) / norm) - orig.to(torch.float32)


def _pad_for_inpainting(updown: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
    """A 4-channel conv_in change on a 9-channel (inpainting) conv_in: zero for the 5 extra channels (A1111)."""
    if orig.dim() == 4 and updown.dim() == 4 and orig.shape[1] == 9 and updown.shape[1] == 4:
        return torch.nn.functional.pad(updown, (0, 0, 0, 0, 0, 5))
    return updown


def owns_storage(tensor: torch.Tensor, *others: Any) -> bool:
    """Whether `tensor` shares no memory with any of the `others` tensors (so it may be changed in place)."""
    ptr = tensor.untyped_storage().data_ptr()
    return not any(isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() == ptr for o in others)


def finalize(module_type: ModuleType, w: dict, orig: torch.Tensor, bias: torch.Tensor | None,
             multiplier: float, dyn_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The float32 weight change (shaped like `orig`) and bias change of one module at `multiplier`.

    Raises:
        NetworkShapeError: the tensors do not fit the module (the message gives both shapes).
    """
    up = module_type.compute(w, orig, dyn_dim)
    weight = _pad_for_inpainting(up.weight, orig)
    if weight.numel() != orig.numel() or weight.shape[0] != orig.shape[0]:
        raise NetworkShapeError(f"{module_type.name} change of shape {tuple(weight.shape)} "
                                f"does not fit the weight {tuple(orig.shape)}")
    weight = weight.reshape(orig.shape)
    # In place when the change is a tensor of its own (e.g. `up @ down`), not one of the file's or the
    # model's: the same bits as `weight * s`, without a fresh full-size allocation per step.
    owned = owns_storage(weight, orig, *w.values())
    weight = weight.mul_(scale_of(w, up.dim)) if owned else weight * scale_of(w, up.dim)
    if "dora_scale" in w:
        weight, owned = weight_decompose(weight, orig, w["dora_scale"]), True
    bias_delta = None
    if up.bias is not None:
        size = bias.numel() if bias is not None else orig.shape[0]
        if up.bias.numel() != size:
            raise NetworkShapeError(f"bias change of {up.bias.numel()} does not fit a bias of {size}")
        bias_delta = up.bias.reshape(-1) * multiplier
    return (weight.mul_(multiplier) if owned else weight * multiplier), bias_delta
