"""Tiny LyCORIS-format network files for the demo checkpoint (`modules.demo_checkpoint`), for tests and demos.

One kind per LyCORIS module type A1111 reads — `locon` (LoRA with a Tucker `lora_mid` on a 3×3 conv),
`loha` (plain and Tucker), `lokr` (full `w1`, factored and Tucker `w2`), `ia3`, `full` (`diff`, `diff_b`),
`norm` (GroupNorm and LayerNorm), `dora` (LoRA with `dora_scale`) — on a few UNet and text-encoder modules
of the demo model, keyed as the real files are: kohya names (`lora_unet_<diffusers path>`,
`lora_te_text_model_…`), or with `layout="ldm"` the UNet keys in LDM names (`lora_unet_input_blocks_…`, as
SDXL files use), or with `layout="peft"` (LoRA only) diffusers/peft names (`unet.<path>.lora_A.weight`).

Every tensor comes from a generator seeded by the kind, key and role, so each call gives the same
tensors and `write_demo_lycoris` the same bytes.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from modules import demo_checkpoint, lora_keys, sd_models_convert
from modules.fileio import atomic_write_bytes

SALT = "serena-demo-lycoris"
RANK = 4
ALPHA = 2.0

CONV3 = "down_blocks.0.resnets.0.conv1"                                # Conv2d 32→32, 3×3
CONV1 = "down_blocks.1.attentions.0.proj_in"                           # Conv2d 64→64, 1×1 (bias)
TO_Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"    # Linear 64→64, no bias
TO_K2 = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"   # Linear 64→64 (cross attention)
FF_OUT = "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"      # Linear 256→64 (bias)
UP_CONV = "up_blocks.1.resnets.0.conv2"                                # Conv2d 32→32, 3×3
GROUP_NORM = "down_blocks.0.resnets.0.norm1"                           # GroupNorm 32
LAYER_NORM = "down_blocks.1.attentions.0.transformer_blocks.0.norm1"   # LayerNorm 64
TE_Q = "text_model.encoder.layers.0.self_attn.q_proj"                  # Linear 64→64 (bias)
TE_FC1 = "text_model.encoder.layers.1.mlp.fc1"                         # Linear 64→256
TE_K = "text_model.encoder.layers.2.self_attn.k_proj"
TE_NORM = "text_model.encoder.layers.0.layer_norm1"                    # LayerNorm 64

# kind → the module paths it touches (UNet paths, then text-encoder paths starting with `text_model.`)
MODULES: dict[str, tuple[str, ...]] = {
    "locon": (CONV3, TO_Q, TE_Q),
    "loha": (CONV3, UP_CONV, TO_Q, TE_FC1),
    "lokr": (CONV3, TO_Q, FF_OUT, TE_FC1),
    "ia3": (TO_K2, FF_OUT, TE_K),
    "full": (TO_Q, CONV1, TE_Q),
    "norm": (GROUP_NORM, LAYER_NORM, TE_NORM),
    "dora": (CONV3, TO_Q, TE_Q),
}
TUCKER = {"loha": UP_CONV, "lokr": CONV3}  # the module whose factors are Tucker in that kind


def _rand(kind: str, key: str, role: str, shape: tuple, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(hash_seed(f"{SALT}/{kind}/{key}/{role}"))
    return (torch.randn(shape, generator=generator) * std).contiguous()


def hash_seed(text: str) -> int:
    """A stable 31-bit seed from a text (crc32: the same on every run and platform)."""
    import zlib
    return zlib.crc32(text.encode("utf8")) & 0x7FFFFFFF


def _kernel(shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(s) for s in shape[2:])


def _locon(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    out_dim, in_dim, kernel = int(shape[0]), int(shape[1]), _kernel(shape)
    r = lambda role, s, std: _rand(kind, key, role, s, std)  # noqa: E731
    if kernel and kernel != (1, 1):  # Tucker: 1×1 down and up around a k×k mid
        return {"lora_down.weight": r("down", (RANK, in_dim, 1, 1), in_dim ** -0.5),
                "lora_mid.weight": r("mid", (RANK, RANK, *kernel), (RANK * kernel[0] * kernel[1]) ** -0.5),
                "lora_up.weight": r("up", (out_dim, RANK, 1, 1), RANK ** -0.5),
                "alpha": torch.tensor(ALPHA)}
    ones = (1, 1) if kernel else ()
    return {"lora_down.weight": r("down", (RANK, in_dim, *ones), in_dim ** -0.5),
            "lora_up.weight": r("up", (out_dim, RANK, *ones), RANK ** -0.5), "alpha": torch.tensor(ALPHA)}


def _loha(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    out_dim, in_dim, kernel = int(shape[0]), int(shape[1]), _kernel(shape)
    fan_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
    r = lambda role, s, std: _rand(kind, key, role, s, std)  # noqa: E731
    w: dict[str, torch.Tensor] = {"alpha": torch.tensor(ALPHA)}
    for n in (1, 2):
        if path == TUCKER.get(kind):
            w[f"hada_t{n}"] = r(f"t{n}", (RANK, RANK, *kernel), 1.0)
            w[f"hada_w{n}_a"] = r(f"w{n}a", (RANK, out_dim), 0.5)
            w[f"hada_w{n}_b"] = r(f"w{n}b", (RANK, in_dim), in_dim ** -0.5)
        else:
            w[f"hada_w{n}_a"] = r(f"w{n}a", (out_dim, RANK), 1.0)
            w[f"hada_w{n}_b"] = r(f"w{n}b", (RANK, fan_in), fan_in ** -0.5)
    return w


def _lokr(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    out_dim, in_dim, kernel = int(shape[0]), int(shape[1]), _kernel(shape)
    r = lambda role, s, std: _rand(kind, key, role, s, std)  # noqa: E731
    f_out, f_in = 4, 4  # w1 [4, 4] full; w2 [out/4, in/4 (, k, k)] factored
    o2, i2 = out_dim // f_out, in_dim // f_in
    w: dict[str, torch.Tensor] = {"lokr_w1": r("w1", (f_out, f_in), 1.0), "alpha": torch.tensor(ALPHA)}
    if path == TUCKER.get(kind):
        w.update({"lokr_t2": r("t2", (RANK, RANK, *kernel), 1.0), "lokr_w2_a": r("w2a", (RANK, o2), 0.5),
                  "lokr_w2_b": r("w2b", (RANK, i2), i2 ** -0.5)})
    else:
        fan_in = i2 * (kernel[0] * kernel[1] if kernel else 1)
        w.update({"lokr_w2_a": r("w2a", (o2, RANK), 0.5), "lokr_w2_b": r("w2b", (RANK, fan_in), fan_in ** -0.5)})
    return w


def _ia3(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    on_input = path == FF_OUT  # LyCORIS puts the FF output's vector on its input
    size = int(shape[1] if on_input else shape[0])
    return {"weight": _rand(kind, key, "w", (size,), 0.5), "on_input": torch.tensor(on_input)}


def _full(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    fan_in = 1
    for s in shape[1:]:
        fan_in *= int(s)
    w = {"diff": _rand(kind, key, "diff", tuple(shape), 0.5 * fan_in ** -0.5)}
    if path != TO_Q:  # proj_in and q_proj have biases
        w["diff_b"] = _rand(kind, key, "diff_b", (int(shape[0]),), 0.05)
    return w


def _norm(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    return {"w_norm": _rand(kind, key, "w", tuple(shape), 0.2), "b_norm": _rand(kind, key, "b", tuple(shape), 0.1)}


def _dora(kind: str, key: str, path: str, shape: torch.Size) -> dict[str, torch.Tensor]:
    w = _locon(kind, key, path, shape) if not _kernel(shape) or _kernel(shape) == (1, 1) else None
    if w is None:  # a plain (non-Tucker) conv LoRA under DoRA
        in_dim, kernel = int(shape[1]), _kernel(shape)
        w = {"lora_down.weight": _rand(kind, key, "down", (RANK, in_dim, *kernel), (in_dim * 9) ** -0.5),
             "lora_up.weight": _rand(kind, key, "up", (int(shape[0]), RANK, 1, 1), RANK ** -0.5),
             "alpha": torch.tensor(ALPHA)}
    dora_shape = (1, int(shape[1])) + (1,) * len(_kernel(shape))  # A1111: one magnitude per input channel
    w["dora_scale"] = 1.0 + _rand(kind, key, "dora", dora_shape, 0.3).abs()
    return w


BUILDERS: dict[str, Callable[[str, str, str, torch.Size], dict[str, torch.Tensor]]] = {
    "locon": _locon, "loha": _loha, "lokr": _lokr, "ia3": _ia3, "full": _full, "norm": _norm, "dora": _dora}
KINDS = tuple(BUILDERS)
LAYOUTS = ("kohya", "ldm", "peft")


def _demo_modules() -> dict[str, torch.nn.Module]:
    """The demo UNet's and text encoder's modules (on the meta device) by path (text ones as `text_model.…`)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**demo_checkpoint.UNET_CONFIG)
        clip = CLIPTextModel(CLIPTextConfig(**demo_checkpoint.CLIP_CONFIG))
    modules = dict(unet.named_modules())
    for name, module in clip.named_modules():
        modules[name if name.startswith("text_model.") else "text_model." + name] = module
    return modules


def network_key(path: str, layout: str = "kohya") -> str:
    """The file prefix of a demo module path in `layout` (without the `.suffix`)."""
    is_te = path.startswith("text_model.")
    if layout == "peft":
        return ("text_encoder." if is_te else "unet.") + path
    if is_te:
        return "lora_te_" + path.replace(".", "_")
    if layout == "ldm":
        table = sd_models_convert.unet_table(demo_checkpoint.UNET_CONFIG)
        path = lora_keys.ldm_name(path, table) or path
    return "lora_unet_" + path.replace(".", "_")


def _peft_names(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft's names for a plain LoRA (`lora_A` = down, `lora_B` = up; peft files carry no alpha)."""
    return {"lora_A.weight": w["lora_down.weight"], "lora_B.weight": w["lora_up.weight"]}


def build_lycoris_state_dict(kind: str, layout: str = "kohya") -> dict[str, torch.Tensor]:
    """The tensors of the demo network of `kind` (see `KINDS`) in `layout` (see `LAYOUTS`), float32."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown demo network kind {kind!r} (known: {', '.join(KINDS)})")
    if layout not in LAYOUTS or (layout == "peft" and kind != "locon"):
        raise ValueError(f"layout {layout!r} is not available for {kind!r} (peft: locon's plain LoRA modules only)")
    modules = _demo_modules()
    state: dict[str, torch.Tensor] = {}
    for path in MODULES[kind]:
        shape = modules[path].weight.shape
        w = BUILDERS[kind](kind, network_key(path), path, shape)
        if layout == "peft":
            if "lora_mid.weight" in w:
                continue
            w = _peft_names(w)
        prefix = network_key(path, layout)
        state.update({f"{prefix}.{suffix}": tensor for suffix, tensor in w.items()})
    return state


def write_demo_lycoris(path: str, kind: str, layout: str = "kohya") -> str:
    """Write the demo network of `kind` to `path` (.safetensors, the same bytes on every run); return `path`."""
    import safetensors.torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, safetensors.torch.save(build_lycoris_state_dict(kind, layout)))
    return path


# --- an SDXL LoRA in kohya's SDXL naming (LDM UNet names, lora_te1_ / lora_te2_) ----------------------

SDXL_UNET_MODULES = (
    "down_blocks.0.resnets.0.conv1",                                   # Conv2d 3×3 (input_blocks.1.0.in_layers.2)
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",      # Linear
    "down_blocks.2.attentions.0.transformer_blocks.1.attn2.to_k",      # cross attention, second depth level
    "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",          # Linear
)
SDXL_TE1_MODULES = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.2.mlp.fc1")
SDXL_TE2_MODULES = ("encoder.layers.1.self_attn.v_proj", "encoder.layers.0.mlp.fc2")


def _sdxl_demo_modules() -> tuple[dict, dict, dict]:
    """The SDXL demo's UNet, CLIP-L and bigG modules by path (meta device)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**demo_checkpoint.SDXL_UNET_CONFIG)
        te1 = CLIPTextModel(CLIPTextConfig(**demo_checkpoint.CLIP_CONFIG))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**demo_checkpoint.BIGG_DEMO_CONFIG))

    def by_path(model: torch.nn.Module) -> dict:
        return {name.removeprefix("text_model."): module for name, module in model.named_modules()}
    return dict(unet.named_modules()), by_path(te1), by_path(te2)


def build_sdxl_lora_state_dict(rank: int = RANK, alpha: float = ALPHA) -> dict[str, torch.Tensor]:
    """A plain LoRA for the SDXL demo checkpoint as kohya's sd-scripts name SDXL files: UNet modules
    by their LDM path (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), the two text
    encoders as `lora_te1_text_model_…` and `lora_te2_text_model_…`. Float32, a pure function."""
    unet, te1, te2 = _sdxl_demo_modules()
    table = sd_models_convert.unet_table(demo_checkpoint.SDXL_UNET_CONFIG)
    targets = [("lora_unet_" + (lora_keys.ldm_name(p, table) or p).replace(".", "_"), unet[p]) for p in SDXL_UNET_MODULES]
    targets += [("lora_te1_text_model_" + p.replace(".", "_"), te1[p]) for p in SDXL_TE1_MODULES]
    targets += [("lora_te2_text_model_" + p.replace(".", "_"), te2[p]) for p in SDXL_TE2_MODULES]
    state: dict[str, torch.Tensor] = {}
    for key, module in targets:
        shape = module.weight.shape
        out_dim, in_dim, kernel = int(shape[0]), int(shape[1]), _kernel(shape)
        fan_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
        state[f"{key}.lora_down.weight"] = _rand("sdxl", key, "down", (rank, in_dim, *kernel), fan_in ** -0.5)
        state[f"{key}.lora_up.weight"] = _rand("sdxl", key, "up", (out_dim, rank) + ((1, 1) if kernel else ()),
                                               rank ** -0.5)
        state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def write_demo_sdxl_lora(path: str) -> str:
    """Write `build_sdxl_lora_state_dict()` to `path` (.safetensors, the same bytes on every run)."""
    import safetensors.torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, safetensors.torch.save(build_sdxl_lora_state_dict()))
    return path
