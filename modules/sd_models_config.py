"""What a checkpoint is, read from its tensors alone: architecture and the configs of its parts.

The same code reads the tiny demo file and a full SD1.5 file: every size (channels, levels,
layers, heads, context width, vocabulary, positions) comes from tensor shapes in the LDM key
layout A1111 files use. SD2.x and SDXL are recognised so that they can be refused clearly.
Nothing here builds a module; `sd_models` does that from the returned configs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from modules import errors

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")

SD1_HEADS = 8            # SD1 UNets use 8 attention heads at every level
CLIP_HEAD_DIM = 64       # CLIP ViT text towers use 64 channels per head
NORM_GROUPS = 32         # every GroupNorm of the SD UNet and VAE
SCALE_FACTOR = 0.18215   # SD1 latent scale

SD1, SD2, SDXL = "SD1", "SD2", "SDXL"


@dataclass
class ModelConfig:
    """Everything needed to build the parts of one checkpoint."""

    architecture: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    clip: dict[str, Any]
    is_inpainting: bool = False
    notes: list[str] = field(default_factory=list)


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise errors.CheckpointLoadError(f"the checkpoint lacks the tensor {key!r} that fixes the model's shape")
    return tuple(sd[key].shape)


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def detect_architecture(sd: Mapping[str, torch.Tensor]) -> str:
    """SD1, SD2 or SDXL from key names and the cross-attention width.

    Raises:
        errors.CheckpointLoadError: the keys are not those of a Stable Diffusion checkpoint.
    """
    keys = list(sd.keys())
    if any(k.startswith("conditioner.embedders.") for k in keys) or f"{UNET_PREFIX}label_emb.0.0.weight" in sd:
        return SDXL
    context = context_dim(sd)
    if context == 2048:
        return SDXL
    if any(k.startswith("cond_stage_model.model.") for k in keys) or context == 1024:
        return SD2
    has_unet = f"{UNET_PREFIX}input_blocks.0.0.weight" in sd
    has_clip = any(k.startswith(CLIP_PREFIXES[1]) for k in keys)
    has_vae = f"{VAE_PREFIX}decoder.conv_out.weight" in sd
    if has_unet and has_clip and has_vae:
        return SD1
    sample = ", ".join(repr(k) for k in keys[:5])
    missing = [n for n, ok in (("UNet", has_unet), ("CLIP text encoder", has_clip), ("VAE", has_vae)) if not ok]
    raise errors.CheckpointLoadError(
        f"not a Stable Diffusion checkpoint in the A1111/LDM key layout: no {', '.join(missing)} "
        f"weights found (first keys: {sample})")


def context_dim(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Width of the text context the UNet cross-attends to, or None if no cross-attention."""
    for key, tensor in sd.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(tensor.shape[1])
    return None


def infer_unet_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of diffusers' UNet2DConditionModel for an SD1-family UNet."""
    p = UNET_PREFIX
    keys = [k[len(p):] for k in sd if k.startswith(p)]
    conv_in = _shape(sd, p + "input_blocks.0.0.weight")
    n_input = len(_indices(keys, r"input_blocks\.(\d+)\."))
    downsamples = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")
    levels = len(downsamples) + 1
    if n_input % levels:
        raise errors.CheckpointLoadError(
            f"UNet layout not understood: {n_input} input blocks for {levels} levels")
    per_level = n_input // levels - 1
    channels, attention, depth = [], [], []
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        channels.append(_shape(sd, f"{p}input_blocks.{first}.0.out_layers.3.weight")[0])
        blocks = _indices(keys, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")
        attention.append(bool(blocks))
        depth.append(len(blocks))
    proj_in = [sd[k] for k in sd if k.startswith(p) and k.endswith(".proj_in.weight")]
    linear_projection = bool(proj_in) and proj_in[0].ndim == 2
    mid_depth = len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    attn_depths = {d for d in depth if d} | ({mid_depth} if mid_depth else set())
    if len(attn_depths) > 1:
        raise errors.CheckpointLoadError(f"UNet with differing transformer depths {sorted(attn_depths)} is not SD1")
    config: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": conv_in[1],
        "out_channels": _shape(sd, p + "out.2.weight")[0],
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        "block_out_channels": tuple(channels),
        "layers_per_block": per_level,
        "cross_attention_dim": context_dim(sd) or 768,
        "attention_head_dim": SD1_HEADS,
        "norm_num_groups": NORM_GROUPS,
        "use_linear_projection": linear_projection,
        "transformer_layers_per_block": max(attn_depths) if attn_depths else 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if not mid_depth:
        config["mid_block_type"] = None
    return config


def infer_vae_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of diffusers' AutoencoderKL for an LDM KL autoencoder."""
    p = VAE_PREFIX
    keys = [k[len(p):] for k in sd if k.startswith(p)]
    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    if not levels:
        raise errors.CheckpointLoadError("the checkpoint has no VAE encoder blocks (first_stage_model.encoder.down.*)")
    if levels != list(range(len(levels))):
        raise errors.CheckpointLoadError(f"VAE encoder levels are not numbered 0..n-1: found {levels}")
    channels = [_shape(sd, f"{p}encoder.down.{i}.block.0.conv2.weight")[0] for i in levels]
    per_level = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    return {
        "in_channels": _shape(sd, p + "encoder.conv_in.weight")[1],
        "out_channels": _shape(sd, p + "decoder.conv_out.weight")[0],
        "down_block_types": ("DownEncoderBlock2D",) * len(levels),
        "up_block_types": ("UpDecoderBlock2D",) * len(levels),
        "block_out_channels": tuple(channels),
        "layers_per_block": per_level,
        "latent_channels": _shape(sd, p + "post_quant_conv.weight")[0],
        "norm_num_groups": NORM_GROUPS,
        "sample_size": 512,
        "scaling_factor": SCALE_FACTOR,
        "mid_block_add_attention": f"{p}encoder.mid.attn_1.q.weight" in sd,
    }


def clip_prefix(sd: Mapping[str, torch.Tensor]) -> str:
    """The prefix of the CLIP text model's keys in this file (with or without `text_model.`)."""
    if any(k.startswith(CLIP_PREFIXES[0]) for k in sd):
        return CLIP_PREFIXES[0]
    return CLIP_PREFIXES[1]


def infer_clip_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of transformers' CLIPTextConfig for the SD1 text encoder."""
    p = clip_prefix(sd)
    keys = [k[len(p):] for k in sd if k.startswith(p)]
    vocab, hidden = _shape(sd, p + "embeddings.token_embedding.weight")
    layers = _indices(keys, r"encoder\.layers\.(\d+)\.")
    if not layers:
        raise errors.CheckpointLoadError(f"the CLIP text encoder has no layers ({p}encoder.layers.*)")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": _shape(sd, p + "encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": max(1, hidden // CLIP_HEAD_DIM),
        "max_position_embeddings": _shape(sd, p + "embeddings.position_embedding.weight")[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def infer_config(sd: Mapping[str, torch.Tensor], filename: str = "") -> ModelConfig:
    """Architecture and part configs of a checkpoint.

    Raises:
        errors.UnsupportedModel: SD2.x or SDXL (recognised, loaded by a later release).
        errors.CheckpointLoadError: not an SD checkpoint, or a layout that is not understood.
    """
    arch = detect_architecture(sd)
    where = f" {filename!r}" if filename else ""
    if arch == SDXL:
        raise errors.UnsupportedModel(
            f"checkpoint{where} is an SDXL model (conditioner.embedders / label_emb / context 2048); "
            "this release of Serena loads SD1.x checkpoints only — a later release loads SDXL")
    if arch == SD2:
        raise errors.UnsupportedModel(
            f"checkpoint{where} is an SD2.x model (OpenCLIP text encoder, context dim 1024, often "
            "v-prediction); this release of Serena loads SD1.x checkpoints only — a later release loads SD2.x")
    try:
        unet = infer_unet_config(sd)
        vae = infer_vae_config(sd)
        clip = infer_clip_config(sd)
    except errors.UnsupportedModel:
        raise
    except errors.CheckpointLoadError as e:
        raise errors.CheckpointLoadError(f"cannot read the model shape of checkpoint{where}: {e.message}") from e
    if unet["use_linear_projection"]:
        raise errors.UnsupportedModel(
            f"checkpoint{where} has linear attention projections (an SD2.x-style UNet); "
            "this release loads SD1.x checkpoints only — a later release loads SD2.x")
    if unet["in_channels"] not in (4, 9):
        raise errors.UnsupportedModel(
            f"checkpoint{where} has a UNet with {unet['in_channels']} input channels; "
            "SD1 text-to-image (4) and inpainting (9) UNets are supported")
    return ModelConfig(architecture=SD1, unet=unet, vae=vae, clip=clip,
                       is_inpainting=unet["in_channels"] == 9)


def find_checkpoint_config_near_filename(info: Any) -> str | None:
    """A1111: the `<name>.yaml` beside a checkpoint, if present (reported by `/sdapi/v1/sd-models`)."""
    if info is None:
        return None
    config = os.path.splitext(info.filename)[0] + ".yaml"
    return config if os.path.exists(config) else None
