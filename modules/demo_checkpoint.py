"""A tiny SD1-architecture checkpoint with random weights, for tests, demos and CI.

It has the real A1111/LDM key layout (`model.diffusion_model.*`, `first_stage_model.*`,
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


def ensure_demo_checkpoint(folder: str) -> str:
    """Write `serena-demo-tiny.safetensors` into `folder` unless it is there; return its path."""
    path = os.path.join(folder, FILENAME)
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(path, demo_checkpoint_bytes())
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
