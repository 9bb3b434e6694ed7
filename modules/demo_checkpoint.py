"""Tiny checkpoints with random weights, for tests, demos and CI: SD1 (the default demo file), and
SD2.x / SDXL kinds (`DEMO_KINDS`, `write_demo_checkpoint`) described at the end of this module.

The SD1 file has the real A1111/LDM key layout (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.text_model.*`, the DDPM schedule buffers, position ids), so it
goes through exactly the loading code a real SD1.5 file does. Its sizes are small enough that a
512×512, 20-step image takes seconds on two CPU cores: UNet levels of 32 and 64 channels (cross
attention on the second), a 4-level VAE (latent factor 8, like SD), and a 3-layer CLIP text
model of width 64 with the real 49408-token vocabulary and 77 positions.

The file is a pure function of this module: every tensor is drawn from a generator seeded by its
own name, and safetensors writes tensors in a fixed order, so each run writes the same bytes.
The weights are random: the images it makes are patterns, not pictures.
"""
from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from modules import sd_models_config, sd_models_convert
from modules.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

FILENAME = "serena-demo-tiny.safetensors"
VAE_FILENAME = "serena-demo-tiny-vae.safetensors"
VAE_SALT = "serena-demo-vae"
SEED = 20240229

UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": sd_models_config.SD1_HEADS,
    "norm_num_groups": sd_models_config.NORM_GROUPS,
    "use_linear_projection": False,
    "transformer_layers_per_block": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": sd_models_config.NORM_GROUPS,
    "sample_size": 512,
    "scaling_factor": sd_models_config.SCALE_FACTOR,
    "mid_block_add_attention": True,
}
CLIP_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 64,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEED ^ zlib.crc32(name.encode("utf8")))


def _init_tensor(name: str, shape: torch.Size) -> torch.Tensor:
    """A deterministic initial value for one parameter, from its name and shape alone."""
    is_norm = len(shape) == 1 and "norm" in name
    if is_norm:  # near the identity, but not exactly: trained norms have non-zero biases
        noise = torch.randn(shape, generator=_generator(name))
        return 1.0 + 0.1 * noise if name.endswith("weight") else 0.05 * noise
    if name.endswith("bias") or len(shape) == 1:
        return torch.randn(shape, generator=_generator(name)) * 0.02
    if "token_embedding" in name:
        return torch.randn(shape, generator=_generator(name)) * 0.02
    if "position_embedding" in name:
        return torch.randn(shape, generator=_generator(name)) * 0.01
    fan_in = 1
    for size in shape[1:]:
        fan_in *= int(size)
    return torch.randn(shape, generator=_generator(name)) * (1.0 / fan_in) ** 0.5


def _random_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: _init_tensor(k, v.shape) for k, v in module.state_dict().items()}


def _schedule_buffers() -> dict[str, torch.Tensor]:
    """The DDPM buffers LDM checkpoints carry (SD1 scaled-linear schedule, 1000 steps, float32)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
    }
    return {k: v.to(torch.float32) for k, v in buffers.items()}


def ldm_state_dict(unet_config: dict, vae_config: dict, clip_config: dict,
                   fill: Callable[[torch.nn.Module], dict[str, torch.Tensor]],
                   dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """An SD1 checkpoint's tensors in the A1111/LDM key layout, from diffusers/transformers configs.

    The modules are built on the meta device (no memory); `fill(module)` gives each one's weights by
    diffusers name; the DDPM buffers are added in float32. Used for the demo file and by the
    full-size load benchmark.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        clip = CLIPTextModel(CLIPTextConfig(**clip_config))
    state: dict[str, torch.Tensor] = {}
    state.update(sd_models_convert.part_to_ldm(fill(unet), sd_models_config.UNET_PREFIX,
                                               sd_models_convert.unet_table(unet_config)))
    state.update(sd_models_convert.part_to_ldm(fill(vae), sd_models_config.VAE_PREFIX,
                                               sd_models_convert.vae_table(vae_config)))
    clip_prefix = sd_models_config.CLIP_PREFIXES[0]
    state.update({clip_prefix + k: v for k, v in fill(clip).items()})
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    state[clip_prefix + "embeddings.position_ids"] = torch.arange(clip_config["max_position_embeddings"])[None]
    state.update(_schedule_buffers())
    return state


def build_demo_state_dict(dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The demo checkpoint's tensors in the A1111/LDM key layout (weights in `dtype`)."""
    return ldm_state_dict(UNET_CONFIG, VAE_CONFIG, CLIP_CONFIG, _random_state, dtype)


def demo_checkpoint_bytes() -> bytes:
    """The demo file's bytes (a .safetensors image of `build_demo_state_dict()`)."""
    import safetensors.torch
    return safetensors.torch.save(build_demo_state_dict(), metadata={"format": "pt"})


def build_demo_vae_state_dict(salt: str = VAE_SALT, vae_config: dict | None = None,
                              dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A standalone VAE file's tensors, keyed as A1111/LDM VAE files are (`encoder.*`, `decoder.*`,
    `quant_conv.*`, `post_quant_conv.*`: the checkpoint's `first_stage_model.*` keys without that
    prefix, as in `vae-ft-mse-840000-ema-pruned.safetensors`).

    The weights are random and differ from the demo checkpoint's own VAE: each tensor is drawn from
    a generator seeded by `salt` and its name, so the same arguments always give the same tensors.
    `vae_config` (default `VAE_CONFIG`) sets the shapes; another config makes a VAE that does not fit.
    """
    from diffusers import AutoencoderKL

    config = vae_config or VAE_CONFIG
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    weights = {k: _init_tensor(f"{salt}/{k}", v.shape) for k, v in vae.state_dict().items()}
    state = sd_models_convert.part_to_ldm(weights, "", sd_models_convert.vae_table(config))
    return {k: v.to(dtype).contiguous() for k, v in state.items()}


def demo_vae_bytes(salt: str = VAE_SALT, vae_config: dict | None = None) -> bytes:
    """A .safetensors image of `build_demo_vae_state_dict(salt, vae_config)` (same bytes on every run)."""
    import safetensors.torch
    return safetensors.torch.save(build_demo_vae_state_dict(salt, vae_config), metadata={"format": "pt"})


def write_demo_vae(path: str, salt: str = VAE_SALT, vae_config: dict | None = None) -> str:
    """Write a tiny demo VAE file (see `build_demo_vae_state_dict`) to `path`; return `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, demo_vae_bytes(salt, vae_config))
    return path


def ensure_demo_checkpoint(folder: str, kind: str = "sd1") -> str:
    """Write demo checkpoint `kind` (default the SD1 `serena-demo-tiny.safetensors`; see
    `demo_filename`) into `folder` unless it is there; return its path."""
    path = os.path.join(folder, demo_filename(kind))
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(path, demo_checkpoint_bytes() if kind == "sd1" else demo_bytes(kind))
    log.warning("Wrote the demo checkpoint %s: its weights are RANDOM, so it makes patterns, not pictures. "
                "Put a real SD1.x .safetensors file in %s to make images.", path, folder)
    return path


EMBEDDING_SALT = "serena-demo-embedding"


def demo_embedding_vectors(vectors: int = 1, width: int | None = None, salt: str = EMBEDDING_SALT) -> torch.Tensor:
    """`[vectors, width]` float32 vectors (width: the demo text encoder's), the same for the same arguments."""
    width = CLIP_CONFIG["hidden_size"] if width is None else width
    return torch.randn((vectors, width), generator=_generator(f"{salt}/{vectors}x{width}")) * 0.02


def write_demo_embedding(path: str, vectors: int = 1, width: int | None = None, salt: str = EMBEDDING_SALT,
                         layout: str | None = None) -> str:
    """Write a tiny textual-inversion embedding to `path` (format from its extension); return `path`.

    `.safetensors`: `{"emb_params": vectors}` (same bytes on every run). `.pt`: A1111's layout
    (`string_to_token`, `string_to_param`, `name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`).
    `.bin`: diffusers' `{"<name>": vector}` (one vector). Pickled files hold the same tensors each run,
    but torch writes a random serialization id, so their bytes differ. `layout` overrides the
    extension's ("safetensors", "a1111", "diffusers").
    """
    import io
    import safetensors.torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    vec = demo_embedding_vectors(vectors, width, salt)
    name = os.path.splitext(os.path.basename(path))[0]
    ext = os.path.splitext(path)[1].lower()
    layout = layout or {".safetensors": "safetensors", ".bin": "diffusers"}.get(ext, "a1111")
    if layout == "safetensors":
        data = safetensors.torch.save({"emb_params": vec.contiguous()})
    else:
        if layout == "diffusers":
            obj: dict = {f"<{name}>": vec[0].clone()}
        else:
            obj = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec.clone()}, "name": name,
                   "step": 100, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "serena-demo-tiny"}
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return path


LORA_SALT = "serena-demo-lora"
LORA_RANK = 4
LORA_ALPHA = 2.0
# diffusers / transformers module names the demo LoRA touches: Linear, 1x1 and 3x3 Conv2d
LORA_UNET_MODULES = (
    "down_blocks.0.resnets.0.conv1",                                    # Conv2d 3x3
    "down_blocks.1.attentions.0.proj_in",                               # Conv2d 1x1
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",       # Linear
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",       # Linear (cross attention)
    "up_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",           # Linear
)
LORA_TE_MODULES = (
    "text_model.encoder.layers.0.self_attn.q_proj",
    "text_model.encoder.layers.1.mlp.fc1",
    "text_model.encoder.layers.2.self_attn.out_proj",
)


def build_demo_lora_state_dict(rank: int = LORA_RANK, alpha: float = LORA_ALPHA,
                               salt: str = LORA_SALT) -> dict[str, torch.Tensor]:
    """A tiny kohya/A1111-layout LoRA for the demo checkpoint (float32, a pure function of the arguments).

    Keys: `lora_unet_<diffusers module path, dots as _>.{lora_down.weight, lora_up.weight, alpha}` and
    `lora_te_text_model_encoder_layers_N_…`. A Conv2d gets a `[rank, in, kh, kw]` down and a
    `[out, rank, 1, 1]` up weight, as kohya's sd-scripts write them.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_CONFIG)
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG))
    state: dict[str, torch.Tensor] = {}
    for prefix, model, names in (("lora_unet_", unet, LORA_UNET_MODULES), ("lora_te_", clip, LORA_TE_MODULES)):
        modules = dict(model.named_modules())
        for name in names:  # transformers 5 has no `text_model.` level in CLIPTextModel
            weight = (modules.get(name) or modules[name.removeprefix("text_model.")]).weight
            key = prefix + name.replace(".", "_")
            out_dim, in_dim = int(weight.shape[0]), int(weight.shape[1])
            kernel = tuple(int(s) for s in weight.shape[2:])
            down_shape = (rank, in_dim, *kernel)
            up_shape = (out_dim, rank) + ((1, 1) if kernel else ())
            fan_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
            down = torch.randn(down_shape, generator=_generator(f"{salt}/{key}/down")) * (1.0 / fan_in) ** 0.5
            up = torch.randn(up_shape, generator=_generator(f"{salt}/{key}/up")) * (1.0 / rank) ** 0.5
            state[key + ".lora_down.weight"] = down.contiguous()
            state[key + ".lora_up.weight"] = up.contiguous()
            state[key + ".alpha"] = torch.tensor(float(alpha))
    return state


def write_demo_lora(path: str, rank: int = LORA_RANK, alpha: float = LORA_ALPHA, salt: str = LORA_SALT) -> str:
    """Write the demo LoRA to `path` (.safetensors, the same bytes on every run); return `path`."""
    import safetensors.torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # no metadata: safetensors writes a multi-key metadata map in no fixed order
    data = safetensors.torch.save(build_demo_lora_state_dict(rank, alpha, salt))
    atomic_write_bytes(path, data)
    return path


# --- demo files of the other families (SD2.x, SDXL) -------------------------------------------------
#
# Same idea as the SD1 demo: tiny random weights in the real key layouts (SD2: `cond_stage_model.model.*`
# OpenCLIP; SDXL: sgm's `conditioner.embedders.*` and `label_emb`), so they go through the loading code
# real files do. Every tensor is drawn from a generator seeded by the family's salt, the part and the
# tensor's name, so each kind's file has the same bytes on every run.
#
# Sizes: UNets with 64 channels per head where they attend (SD2: 64/128 channels, attention on the first
# level only, like SD2's "all but the last"; SDXL: 32/64/128, no attention on the first level, depths 1
# and 2 — the refiner 32/64/64/64 with depth 2 on its two middle levels), the SD1 demo's 4-level VAE, and
# text towers with the real 49408-token vocabulary and 77 positions: OpenCLIP ViT-H stand-in of width 64
# (3 layers), CLIP-L stand-in of width 64, bigG stand-in of width 128 (2 layers). A 64×64 image at 4 steps
# takes well under two seconds on a CPU. Files: 15 MB (SD2), 34 MB (SDXL), 22 MB (refiner), in float16.

OPEN_CLIP_DEMO_CONFIG: dict = {**CLIP_CONFIG, "hidden_act": "gelu"}  # width 64: one head of 64, like OpenCLIP
# SDXL's bigG is wider than its CLIP-L (1280 vs 768), and loaders (diffusers') tell the two apart by
# width, so the demo's bigG is wider too: 128 channels, 2 heads of 64, 2 layers.
BIGG_DEMO_CONFIG: dict = {**OPEN_CLIP_DEMO_CONFIG, "hidden_size": 128, "intermediate_size": 512,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 128}
ADM_TIME_EMBED = 256          # SDXL embeds each size / crop / aesthetic number in 256 channels
SDXL_BASE_ADM_NUMBERS = 6     # original size (2), crop top-left (2), target size (2)
SDXL_REFINER_ADM_NUMBERS = 5  # original size (2), crop top-left (2), aesthetic score (1)
LOGIT_SCALE = 4.6052          # ln(100): what trained OpenCLIP towers carry as `logit_scale`
# Shifts of the SD2 demo UNet's `out.2.bias`: A1111's probe reads mean(out - x) of about -0.45 on the
# unshifted weights, so the eps file reads about +0.05 and the v file about -1.95 (threshold: -1).
# Constants, not fitted to a probe run, so the bytes cannot depend on the machine's arithmetic.
V_PROBE_SHIFTS = {"eps": 0.5, "v": -1.5}

SD2_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),   # like SD2: no attention on the last level
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (64, 128),
    "layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": (1, 2),            # heads per level: channels / 64
    "norm_num_groups": sd_models_config.NORM_GROUPS,
    "use_linear_projection": True,
    "transformer_layers_per_block": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
SDXL_UNET_CONFIG: dict = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 1,
    "cross_attention_dim": CLIP_CONFIG["hidden_size"] + BIGG_DEMO_CONFIG["hidden_size"],  # CLIP-L ‖ bigG states
    "attention_head_dim": (1, 1, 2),
    "norm_num_groups": sd_models_config.NORM_GROUPS,
    "use_linear_projection": True,
    "transformer_layers_per_block": (0, 1, 2),                   # per-level depth, like SDXL's 0, 2, 10
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "class_embed_type": "projection",
    "projection_class_embeddings_input_dim":  # pooled bigG output, then the size / crop numbers' embeddings
        BIGG_DEMO_CONFIG["projection_dim"] + SDXL_BASE_ADM_NUMBERS * ADM_TIME_EMBED,
}
SDXL_REFINER_UNET_CONFIG: dict = {
    **SDXL_UNET_CONFIG,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 64, 64),
    "cross_attention_dim": BIGG_DEMO_CONFIG["hidden_size"],      # bigG alone
    "attention_head_dim": (1, 1, 1, 1),      # heads per level: channels / 64 (at least 1)
    "transformer_layers_per_block": 2,                           # one depth everywhere, like the refiner's 4
    "projection_class_embeddings_input_dim":
        BIGG_DEMO_CONFIG["projection_dim"] + SDXL_REFINER_ADM_NUMBERS * ADM_TIME_EMBED,
}
SDXL_VAE_CONFIG: dict = {**VAE_CONFIG, "scaling_factor": sd_models_config.SDXL_SCALE_FACTOR}


@dataclass(frozen=True)
class DemoSpec:
    """One demo kind: its configs, text encoders (where, CLIPTextConfig kwargs), salt and extras."""

    unet: dict
    vae: dict
    encoders: tuple[tuple[sd_models_config.EncoderSource, dict], ...]
    salt: str
    prediction: str = "eps"
    depth_model: bool = False


def _spec(unet: dict, vae: dict, encoders: tuple, salt: str, in_channels: int = 4, **extra) -> DemoSpec:
    return DemoSpec({**unet, "in_channels": in_channels}, vae, encoders, salt, **extra)


_C = sd_models_config
_SD2_TE = ((_C.EncoderSource("text_encoder", _C.OPEN_CLIP_PREFIX, _C.OPEN_CLIP), OPEN_CLIP_DEMO_CONFIG),)
_SDXL_TE = ((_C.EncoderSource("text_encoder", _C.SDXL_CLIP_PREFIX, _C.HF_CLIP), CLIP_CONFIG),
            (_C.EncoderSource("text_encoder_2", _C.SDXL_OPEN_CLIP_PREFIX, _C.OPEN_CLIP, projection=True),
             BIGG_DEMO_CONFIG))
_REFINER_TE = ((_C.EncoderSource("text_encoder_2", _C.REFINER_OPEN_CLIP_PREFIX, _C.OPEN_CLIP, projection=True),
                BIGG_DEMO_CONFIG),)

DEMO_SPECS: dict[str, DemoSpec] = {
    "sd2": _spec(SD2_UNET_CONFIG, VAE_CONFIG, _SD2_TE, "sd2"),
    "sd2-v": _spec(SD2_UNET_CONFIG, VAE_CONFIG, _SD2_TE, "sd2", prediction="v"),
    "sd2-inpainting": _spec(SD2_UNET_CONFIG, VAE_CONFIG, _SD2_TE, "sd2", in_channels=9),
    "sd2-depth": _spec(SD2_UNET_CONFIG, VAE_CONFIG, _SD2_TE, "sd2", in_channels=5, depth_model=True),
    "sdxl": _spec(SDXL_UNET_CONFIG, SDXL_VAE_CONFIG, _SDXL_TE, "sdxl"),
    "sdxl-refiner": _spec(SDXL_REFINER_UNET_CONFIG, SDXL_VAE_CONFIG, _REFINER_TE, "sdxl-refiner"),
    "sdxl-inpainting": _spec(SDXL_UNET_CONFIG, SDXL_VAE_CONFIG, _SDXL_TE, "sdxl", in_channels=9),
}
DEMO_KINDS = ("sd1", "sd1-inpainting") + tuple(DEMO_SPECS)


def demo_filename(kind: str) -> str:
    """The demo file name of `kind`: `serena-demo-tiny.safetensors` for "sd1", else
    `serena-demo-tiny-<kind>.safetensors`."""
    _check_kind(kind)
    return FILENAME if kind == "sd1" else f"serena-demo-tiny-{kind}.safetensors"


def _check_kind(kind: str) -> None:
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo checkpoint kind {kind!r}; known: {', '.join(DEMO_KINDS)}")


def _salted_state(module: torch.nn.Module, salt: str) -> dict[str, torch.Tensor]:
    return {k: _init_tensor(f"{salt}/{k}", v.shape) for k, v in module.state_dict().items()}


def _text_encoder_ldm(source: sd_models_config.EncoderSource, config: dict, salt: str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One text encoder's tensors under its prefix, in its file layout (HF CLIP or OpenCLIP)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if source.projection else CLIPTextModel
    with torch.device("meta"):
        module = cls(CLIPTextConfig(**config))
    weights = _salted_state(module, f"{salt}/{source.slot}")
    if source.layout == sd_models_config.HF_CLIP:
        state = {source.prefix + k: v.to(dtype).contiguous() for k, v in weights.items()}
        state[source.prefix + "embeddings.position_ids"] = torch.arange(config["max_position_embeddings"])[None]
        return state
    table = sd_models_convert.open_clip_table(config, source.projection, "text_model." if source.projection else "")
    state = sd_models_convert.part_to_ldm(weights, source.prefix, table)
    if not source.projection:  # SD2 files carry the projection though its conditioning never uses it
        width = config["hidden_size"]
        state[source.prefix + "text_projection"] = _init_tensor(f"{salt}/text_projection", torch.Size((width, width)))
    state[source.prefix + "logit_scale"] = torch.tensor(LOGIT_SCALE)
    return {k: v.to(dtype).contiguous() for k, v in state.items()}


def _shift_output_bias(weights: dict[str, torch.Tensor], shift: float, dtype: torch.dtype) -> None:
    """Add `shift` to every output channel's `conv_out.bias` (after rounding it to `dtype`, as the
    file stores it): A1111's v-prediction probe reads mean(out - x), which moves by exactly `shift`."""
    weights["conv_out.bias"] = (weights["conv_out.bias"].to(dtype).float() + shift).to(dtype)


def demo_state_dict(kind: str, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The tensors of demo checkpoint `kind` (see `DEMO_KINDS`) in its real key layout.

    "sd1" is `build_demo_state_dict()`; "sd1-inpainting" the SD1 demo with a 9-channel UNet. The SD2
    kinds share their weights; "sd2" and "sd2-v" differ only in the UNet's `out.2.bias`, shifted
    (`V_PROBE_SHIFTS`) so that A1111's probe (`sd_models_config.is_v_prediction`) reads mean(out - x)
    of about +0.05 for "sd2" (eps) and -1.95 for "sd2-v" (v; the threshold is -1). "sd2-depth" (5
    input channels and a `depth_model.*` tensor) exists to be refused. "sdxl-inpainting" is "sdxl"
    with a 9-channel UNet.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    _check_kind(kind)
    if kind == "sd1":
        return build_demo_state_dict(dtype)
    if kind == "sd1-inpainting":
        return ldm_state_dict({**UNET_CONFIG, "in_channels": 9}, VAE_CONFIG, CLIP_CONFIG, _random_state, dtype)
    spec = DEMO_SPECS[kind]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
    unet_weights = _salted_state(unet, f"{spec.salt}/unet")
    if kind in ("sd2", "sd2-v"):
        _shift_output_bias(unet_weights, V_PROBE_SHIFTS[spec.prediction], dtype)
    state: dict[str, torch.Tensor] = {}
    state.update(sd_models_convert.part_to_ldm(unet_weights, sd_models_config.UNET_PREFIX,
                                               sd_models_convert.unet_table(spec.unet)))
    state.update(sd_models_convert.part_to_ldm(_salted_state(vae, f"{spec.salt}/vae"), sd_models_config.VAE_PREFIX,
                                               sd_models_convert.vae_table(spec.vae)))
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    for source, config in spec.encoders:
        state.update(_text_encoder_ldm(source, config, spec.salt, dtype))
    if spec.depth_model:
        state["depth_model.model.scratch.output_conv.0.weight"] = _init_tensor(
            f"{spec.salt}/depth", torch.Size((8, 8, 3, 3))).to(dtype)
    state.update(_schedule_buffers())
    return state


def demo_bytes(kind: str) -> bytes:
    """A .safetensors image of `demo_state_dict(kind)` (the same bytes on every run)."""
    import safetensors.torch
    return safetensors.torch.save(demo_state_dict(kind), metadata={"format": "pt"})


def write_demo_checkpoint(path: str, kind: str = "sd1") -> str:
    """Write demo checkpoint `kind` (see `DEMO_KINDS`, `demo_filename`) to `path`; return `path`."""
    data = demo_checkpoint_bytes() if kind == "sd1" else demo_bytes(kind)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, data)
    return path
