"""What a checkpoint is, read from its tensors alone: architecture and the configs of its parts.

The same code reads the tiny demo files and full SD1.5 / SD2.x / SDXL files: every size
(channels, levels, layers, heads, context width, vocabulary, positions) comes from tensor shapes
in the LDM/sgm key layouts A1111 files use. Two facts are not in the shapes and follow the
reference configs instead: SD2 and SDXL UNets use 64 channels per attention head, and OpenCLIP
text towers use 64 channels per head with GELU activations.

Whether a file predicts noise (eps) or velocity (v) is not in the shapes either: a `<name>.yaml`
beside the file decides when it says so, then a `v_pred` marker tensor; otherwise SD2
text-to-image files get A1111's probe (`is_v_prediction`) on the built UNet, and the rest are eps.
Nothing here builds a module; `sd_models` does that from the configs.
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
OPEN_CLIP_PREFIX = "cond_stage_model.model."                          # SD2: OpenCLIP ViT-H
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."  # SDXL base: CLIP ViT-L (HF layout)
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."              # SDXL base: OpenCLIP bigG
REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."           # SDXL refiner: OpenCLIP bigG only

SD1_HEADS = 8            # SD1 UNets use 8 attention heads at every level
UNET_HEAD_DIM = 64       # SD2 and SDXL UNets use 64 channels per attention head
CLIP_HEAD_DIM = 64       # CLIP ViT text towers (OpenAI and OpenCLIP) use 64 channels per head
NORM_GROUPS = 32         # every GroupNorm of the SD UNet and VAE
SCALE_FACTOR = 0.18215   # SD1 / SD2 latent scale
SDXL_SCALE_FACTOR = 0.13025

SD1, SD2, SDXL = "SD1", "SD2", "SDXL"
# Empty marker tensors some fine-tunes (SDXL v-prediction anime models) carry: `v_pred` says the
# model predicts v; `ztsnr` that it was trained with a zero-terminal-SNR schedule.
V_PRED_MARKER, ZTSNR_MARKER = "v_pred", "ztsnr"
EPS, V = "eps", "v"
HF_CLIP, OPEN_CLIP = "hf_clip", "open_clip"


@dataclass(frozen=True)
class EncoderSource:
    """Where one text encoder's weights sit in a checkpoint and in which layout.

    `slot` is the model attribute it becomes (`text_encoder` or `text_encoder_2`); `layout` is
    HF_CLIP (transformers names under `prefix`) or OPEN_CLIP (`token_embedding`, `resblocks`, …);
    `projection` says whether the built module is a `CLIPTextModelWithProjection` (SDXL's bigG,
    whose `text_projection` is used) or a plain `CLIPTextModel`.
    """

    slot: str
    prefix: str
    layout: str
    projection: bool = False


@dataclass
class ModelConfig:
    """Everything needed to build the parts of one checkpoint.

    `clip` is the first text encoder's `CLIPTextConfig` kwargs (None for an SDXL refiner, which
    only has the OpenCLIP bigG encoder); `clip2` is SDXL's second (bigG) encoder's, else None.
    `prediction` is "eps" or "v"; while `needs_prediction_probe` is True it is a placeholder that
    `sd_models.build_model` replaces with `is_v_prediction(unet)` once the UNet is built.
    `encoders` lists where the text encoders' weights sit in the file.
    """

    architecture: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    clip: dict[str, Any] | None
    is_inpainting: bool = False
    notes: list[str] = field(default_factory=list)
    clip2: dict[str, Any] | None = None
    prediction: str = EPS
    is_refiner: bool = False
    needs_prediction_probe: bool = False
    encoders: list[EncoderSource] = field(default_factory=list)


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise errors.CheckpointLoadError(f"the checkpoint lacks the tensor {key!r} that fixes the model's shape")
    return tuple(sd[key].shape)


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _has_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


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


@dataclass(frozen=True)
class UNetShape:
    """The sizes of an LDM/sgm UNet read from its tensors (depth 0: a level without attention)."""

    in_channels: int
    out_channels: int
    channels: tuple[int, ...]
    layers_per_block: int
    depths: tuple[int, ...]
    mid_depth: int
    linear_projection: bool
    context: int | None
    adm_channels: int | None


def read_unet_shape(sd: Mapping[str, torch.Tensor]) -> UNetShape:
    """Channels, levels, per-level transformer depths and projections of the UNet in `sd`.

    Raises:
        errors.CheckpointLoadError: a tensor that fixes the shape is missing, or the block count
            does not fit the levels.
    """
    p = UNET_PREFIX
    keys = [k[len(p):] for k in sd if k.startswith(p)]
    conv_in = _shape(sd, p + "input_blocks.0.0.weight")
    n_input = len(_indices(keys, r"input_blocks\.(\d+)\."))
    levels = len(_indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    if n_input % levels:
        raise errors.CheckpointLoadError(
            f"UNet layout not understood: {n_input} input blocks for {levels} levels")
    per_level = n_input // levels - 1
    channels, depths = [], []
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        channels.append(_shape(sd, f"{p}input_blocks.{first}.0.out_layers.3.weight")[0])
        depths.append(len(_indices(keys, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")))
    proj_in = [sd[k] for k in sd if k.startswith(p) and k.endswith(".proj_in.weight")]
    adm_key = p + "label_emb.0.0.weight"
    return UNetShape(
        in_channels=conv_in[1],
        out_channels=_shape(sd, p + "out.2.weight")[0],
        channels=tuple(channels),
        layers_per_block=per_level,
        depths=tuple(depths),
        mid_depth=len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.")),
        linear_projection=bool(proj_in) and proj_in[0].ndim == 2,
        context=context_dim(sd),
        adm_channels=int(sd[adm_key].shape[1]) if adm_key in sd else None,
    )


def _sd1_attention(shape: UNetShape) -> dict[str, Any]:
    """SD1: 8 heads everywhere and one transformer depth for every attention block."""
    attn_depths = {d for d in shape.depths if d} | ({shape.mid_depth} if shape.mid_depth else set())
    if len(attn_depths) > 1:
        raise errors.CheckpointLoadError(f"UNet with differing transformer depths {sorted(attn_depths)} is not SD1")
    return {"attention_head_dim": SD1_HEADS,
            "transformer_layers_per_block": max(attn_depths) if attn_depths else 1}


def _head_dim_64_attention(shape: UNetShape) -> dict[str, Any]:
    """SD2 / SDXL: heads per level = channels / 64 (diffusers' `attention_head_dim` counts heads).

    Transformer depth is one number when every attention block has the same depth (SD2, the SDXL
    refiner), else one per level with 0 for a level without attention (SDXL base: 0, 2, 10).
    diffusers reads the middle block's depth from the last entry, so a last level without
    attention carries the middle block's depth there.
    """
    attn_depths = {d for d in shape.depths if d} | ({shape.mid_depth} if shape.mid_depth else set())
    if len(attn_depths) <= 1:
        depth: int | tuple[int, ...] = max(attn_depths) if attn_depths else 1
    else:
        per_level = list(shape.depths)
        if per_level[-1] != shape.mid_depth:
            if per_level[-1]:
                raise errors.CheckpointLoadError(
                    f"UNet layout not understood: the last level's transformer depth {per_level[-1]} differs "
                    f"from the middle block's {shape.mid_depth}")
            per_level[-1] = shape.mid_depth
        depth = tuple(per_level)
    return {"attention_head_dim": tuple(max(1, c // UNET_HEAD_DIM) for c in shape.channels),
            "transformer_layers_per_block": depth}


def infer_unet_config(sd: Mapping[str, torch.Tensor], architecture: str = SD1) -> dict[str, Any]:
    """Keyword arguments of diffusers' UNet2DConditionModel for the UNet in `sd`.

    SDXL's `label_emb` (the "vector" conditioning) becomes a projection class embedding: the
    caller computes the whole vector (pooled text + size/crop embeddings) and passes it as
    `class_labels`.
    """
    shape = read_unet_shape(sd)
    attention = [d > 0 for d in shape.depths]
    heads = _sd1_attention(shape) if architecture == SD1 else _head_dim_64_attention(shape)
    config: dict[str, Any] = {
        "sample_size": 128 if architecture == SDXL else 64,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        "block_out_channels": shape.channels,
        "layers_per_block": shape.layers_per_block,
        "cross_attention_dim": shape.context or 768,
        "attention_head_dim": heads["attention_head_dim"],
        "norm_num_groups": NORM_GROUPS,
        "use_linear_projection": shape.linear_projection,
        "transformer_layers_per_block": heads["transformer_layers_per_block"],
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if not shape.mid_depth:
        config["mid_block_type"] = None
    if shape.adm_channels is not None:
        config["class_embed_type"] = "projection"
        config["projection_class_embeddings_input_dim"] = shape.adm_channels
    return config


def infer_vae_config(sd: Mapping[str, torch.Tensor], scaling_factor: float = SCALE_FACTOR) -> dict[str, Any]:
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
        "scaling_factor": scaling_factor,
        "mid_block_add_attention": f"{p}encoder.mid.attn_1.q.weight" in sd,
    }


def clip_prefix(sd: Mapping[str, torch.Tensor]) -> str:
    """The prefix of the SD1 CLIP text model's keys in this file (with or without `text_model.`)."""
    if any(k.startswith(CLIP_PREFIXES[0]) for k in sd):
        return CLIP_PREFIXES[0]
    return CLIP_PREFIXES[1]


def _text_config(vocab: int, hidden: int, intermediate: int, layers: int, positions: int, act: str,
                 projection: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // CLIP_HEAD_DIM),
        "max_position_embeddings": positions,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": projection,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def infer_clip_config(sd: Mapping[str, torch.Tensor], prefix: str | None = None) -> dict[str, Any]:
    """Keyword arguments of transformers' CLIPTextConfig for an OpenAI CLIP text model stored in
    transformers names under `prefix` (default: the SD1 prefix of this file)."""
    p = prefix if prefix is not None else clip_prefix(sd)
    keys = [k[len(p):] for k in sd if k.startswith(p)]
    vocab, hidden = _shape(sd, p + "embeddings.token_embedding.weight")
    layers = _indices(keys, r"encoder\.layers\.(\d+)\.")
    if not layers:
        raise errors.CheckpointLoadError(f"the CLIP text encoder has no layers ({p}encoder.layers.*)")
    return _text_config(vocab, hidden, _shape(sd, p + "encoder.layers.0.mlp.fc1.weight")[0], len(layers),
                        _shape(sd, p + "embeddings.position_embedding.weight")[0], "quick_gelu", hidden)


def infer_open_clip_config(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Keyword arguments of transformers' CLIPTextConfig for an OpenCLIP text tower under `prefix`
    (GELU, 64 channels per head; `projection_dim` from the text projection if present)."""
    keys = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    vocab, hidden = _shape(sd, prefix + "token_embedding.weight")
    layers = _indices(keys, r"transformer\.resblocks\.(\d+)\.")
    if not layers:
        raise errors.CheckpointLoadError(f"the OpenCLIP text encoder has no layers ({prefix}transformer.resblocks.*)")
    projection = sd.get(prefix + "text_projection")          # OpenCLIP: [width, proj]
    linear = sd.get(prefix + "text_projection.weight")       # a Linear weight: [proj, width]
    proj = int(projection.shape[1]) if projection is not None else int(linear.shape[0]) if linear is not None else hidden
    return _text_config(vocab, hidden, _shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0],
                        len(layers), _shape(sd, prefix + "positional_embedding")[0], "gelu", proj)


def prediction_from_yaml(filename: str) -> str | None:
    """"v" or "eps" when a `<checkpoint stem>.yaml` beside `filename` sets `parameterization`
    (A1111 reads that config when present), else None."""
    if not filename:
        return None
    path = os.path.splitext(filename)[0] + ".yaml"
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf8", errors="replace") as f:
        match = re.search(r"^\s*parameterization\s*:\s*[\"']?(v|eps)[\"']?\s*(#.*)?$", f.read(), re.MULTILINE)
    return match.group(1) if match else None


@torch.no_grad()
def is_v_prediction(unet: torch.nn.Module) -> bool:
    """A1111's probe for SD2 v-prediction: with x = 0.5, t = 999 and a context of 0.5s, an eps
    model's output stays near x while a v model's is far below it (mean(out - x) < -1).

    `unet` is a diffusers UNet2DConditionModel with 4 input channels. A1111 probes in float32 on
    the CPU, and `sd_models.build_model` passes such a module; another one is probed where it is.
    """
    config = unet.config
    weight = next(unet.parameters())
    x = torch.ones((1, config.in_channels, 8, 8), device=weight.device, dtype=weight.dtype) * 0.5
    context = torch.ones((1, 2, config.cross_attention_dim), device=weight.device, dtype=weight.dtype) * 0.5
    out = unet(x, torch.tensor([999], device=weight.device), encoder_hidden_states=context, return_dict=False)[0]
    return (out.float() - x.float()).mean().item() < -1


def _refuse_depth(sd: Mapping[str, torch.Tensor], where: str) -> None:
    """SD2 depth-to-image files need a MiDaS depth model, which Serena does not have."""
    conv_in = sd.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if _has_prefix(sd, "depth_model.") or (conv_in is not None and conv_in.shape[1] == 5):
        raise errors.UnsupportedModel(
            f"checkpoint{where} is an SD2 depth-to-image model (5 UNet input channels / depth_model.* keys): "
            "it needs a MiDaS depth model to make its conditioning, and depth models are not supported")


def _text_encoders(sd: Mapping[str, torch.Tensor], arch: str) -> tuple[list[EncoderSource], bool]:
    """The text encoders of an `arch` file and whether it is an SDXL refiner."""
    if arch == SD1:
        return [EncoderSource("text_encoder", clip_prefix(sd), HF_CLIP)], False
    if arch == SD2:
        return [EncoderSource("text_encoder", OPEN_CLIP_PREFIX, OPEN_CLIP)], False
    if _has_prefix(sd, REFINER_OPEN_CLIP_PREFIX):
        return [EncoderSource("text_encoder_2", REFINER_OPEN_CLIP_PREFIX, OPEN_CLIP, projection=True)], True
    return [EncoderSource("text_encoder", SDXL_CLIP_PREFIX, HF_CLIP),
            EncoderSource("text_encoder_2", SDXL_OPEN_CLIP_PREFIX, OPEN_CLIP, projection=True)], False


def _encoder_config(sd: Mapping[str, torch.Tensor], source: EncoderSource) -> dict[str, Any]:
    if source.layout == HF_CLIP:
        return infer_clip_config(sd, source.prefix)
    return infer_open_clip_config(sd, source.prefix)


def _prediction(sd: Mapping[str, torch.Tensor], arch: str, in_channels: int, filename: str,
                prediction: str | None) -> tuple[str, bool, str]:
    """(prediction, whether the UNet probe must decide it, why) for one file."""
    if prediction is not None:
        if prediction not in (EPS, V):
            raise ValueError(f"prediction must be 'eps', 'v' or None, not {prediction!r}")
        return prediction, False, "prediction given by the caller"
    from_yaml = prediction_from_yaml(filename)
    if from_yaml is not None:
        return from_yaml, False, f"prediction {from_yaml!r} from {os.path.splitext(filename)[0]}.yaml"
    if V_PRED_MARKER in sd:
        return V, False, f"prediction 'v' from the file's {V_PRED_MARKER!r} marker tensor"
    if arch == SD2 and in_channels == 4:
        return EPS, True, "prediction decided by A1111's v-prediction probe"
    return EPS, False, f"{arch} {'inpainting ' if in_channels == 9 else ''}models predict noise (eps)"


def infer_config(sd: Mapping[str, torch.Tensor], filename: str = "", prediction: str | None = None) -> ModelConfig:
    """Architecture and part configs of a checkpoint.

    Args:
        sd: the checkpoint's tensors in the A1111/LDM/sgm layout.
        filename: the file's path, for messages and the `<stem>.yaml` beside it.
        prediction: "eps" or "v" to override the detection; None detects (see `_prediction`).

    Raises:
        errors.UnsupportedModel: an SD2 depth-to-image model, or a UNet input width that is not
            text-to-image (4) or inpainting (9).
        errors.CheckpointLoadError: not an SD checkpoint, or a layout that is not understood.
    """
    arch = detect_architecture(sd)
    where = f" {filename!r}" if filename else ""
    if arch == SD2:
        _refuse_depth(sd, where)
    try:
        encoders, is_refiner = _text_encoders(sd, arch)
        unet = infer_unet_config(sd, arch)
        vae = infer_vae_config(sd, SDXL_SCALE_FACTOR if arch == SDXL else SCALE_FACTOR)
        texts = {e.slot: _encoder_config(sd, e) for e in encoders}
    except errors.CheckpointLoadError as e:
        raise errors.CheckpointLoadError(f"cannot read the model shape of {arch} checkpoint{where}: {e.message}") from e
    if arch == SD1 and unet["use_linear_projection"]:
        raise errors.CheckpointLoadError(
            f"checkpoint{where} has linear attention projections (an SD2.x-style UNet) but an SD1 "
            "text encoder; that mix is not a known Stable Diffusion layout")
    if unet["in_channels"] not in (4, 9):
        raise errors.UnsupportedModel(
            f"checkpoint{where} has a UNet with {unet['in_channels']} input channels; "
            "text-to-image (4) and inpainting (9) UNets are supported")
    if arch == SDXL and unet.get("class_embed_type") != "projection":
        raise errors.CheckpointLoadError(
            f"cannot read the model shape of SDXL checkpoint{where}: no "
            f"'{UNET_PREFIX}label_emb.0.0.weight' (the vector conditioning's projection)")
    chosen, probe, why = _prediction(sd, arch, unet["in_channels"], filename, prediction)
    notes = [why] + ([f"the file carries a {ZTSNR_MARKER!r} marker: trained with a zero-terminal-SNR schedule"]
                     if ZTSNR_MARKER in sd else [])
    return ModelConfig(architecture=arch, unet=unet, vae=vae, clip=texts.get("text_encoder"),
                       is_inpainting=unet["in_channels"] == 9, notes=notes, clip2=texts.get("text_encoder_2"),
                       prediction=chosen, is_refiner=is_refiner, needs_prediction_probe=probe, encoders=encoders)


def find_checkpoint_config_near_filename(info: Any) -> str | None:
    """A1111: the `<name>.yaml` beside a checkpoint, if present (reported by `/sdapi/v1/sd-models`)."""
    if info is None:
        return None
    config = os.path.splitext(info.filename)[0] + ".yaml"
    return config if os.path.exists(config) else None
