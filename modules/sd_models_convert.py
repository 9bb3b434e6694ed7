"""Key mapping between A1111/LDM checkpoints and diffusers/transformers module names.

The mapping is a table of module prefixes built from the part's config — for each LDM block
(`input_blocks.4.1.`, `encoder.down.2.block.0.`, …) the diffusers block it becomes and the kind
of block it is. Inside a block, names are renamed by kind (a UNet ResBlock's `in_layers.0` is
diffusers' `norm1`; a VAE attention's `q` is `to_q`, stored as a 1×1 conv in LDM and as a linear
weight in diffusers). One table serves both directions: loading (LDM → diffusers) and writing
the demo checkpoint (diffusers → LDM), so the two cannot drift apart.

Keys that are not weights of the model (the DDPM schedule buffers, EMA copies, position ids) are
known and skipped on purpose; any other key no table accounts for is reported by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from modules import errors
from modules.sd_models_config import UNET_PREFIX, VAE_PREFIX

PLAIN, UNET_RES, UNET_ATTN, VAE_RES, VAE_ATTN = "plain", "unet_res", "unet_attn", "vae_res", "vae_attn"

# Inner renames per block kind: LDM module path → diffusers module path.
INNER = {
    PLAIN: {},
    UNET_ATTN: {},
    UNET_RES: {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"},
    VAE_RES: {"nin_shortcut": "conv_shortcut"},
    VAE_ATTN: {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"},
}

# Tensors in SD checkpoints that are not module weights: the DDPM schedule, training leftovers.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates",
)
IGNORED_PREFIXES = ("model_ema.", "first_stage_model.loss.")
IGNORED_SUFFIXES = ("embeddings.position_ids",)


@dataclass(frozen=True)
class Row:
    ldm: str
    diffusers: str
    kind: str


@dataclass
class Table:
    """Prefix rows of one part, indexed both ways."""

    rows: list[Row]
    by_ldm: dict[str, Row] = field(init=False)
    by_diffusers: dict[str, Row] = field(init=False)

    def __post_init__(self) -> None:
        self.by_ldm = {r.ldm: r for r in self.rows}
        self.by_diffusers = {r.diffusers: r for r in self.rows}


def unet_table(config: Mapping[str, Any]) -> Table:
    """Prefix rows of an SD UNet (LDM `UNetModel` ↔ diffusers `UNet2DConditionModel`)."""
    levels = len(config["block_out_channels"])
    per_level = int(config["layers_per_block"])
    attention = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    rows = [Row("time_embed.0.", "time_embedding.linear_1.", PLAIN),
            Row("time_embed.2.", "time_embedding.linear_2.", PLAIN),
            Row("input_blocks.0.0.", "conv_in.", PLAIN),
            Row("out.0.", "conv_norm_out.", PLAIN),
            Row("out.2.", "conv_out.", PLAIN)]
    i = 1
    for level in range(levels):
        for j in range(per_level):
            rows.append(Row(f"input_blocks.{i}.0.", f"down_blocks.{level}.resnets.{j}.", UNET_RES))
            if attention[level]:
                rows.append(Row(f"input_blocks.{i}.1.", f"down_blocks.{level}.attentions.{j}.", UNET_ATTN))
            i += 1
        if level < levels - 1:
            rows.append(Row(f"input_blocks.{i}.0.op.", f"down_blocks.{level}.downsamplers.0.conv.", PLAIN))
            i += 1
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None:
        rows += [Row("middle_block.0.", "mid_block.resnets.0.", UNET_RES),
                 Row("middle_block.1.", "mid_block.attentions.0.", UNET_ATTN),
                 Row("middle_block.2.", "mid_block.resnets.1.", UNET_RES)]
    i = 0
    for up in range(levels):
        has_attention = attention[levels - 1 - up]
        for j in range(per_level + 1):
            rows.append(Row(f"output_blocks.{i}.0.", f"up_blocks.{up}.resnets.{j}.", UNET_RES))
            if has_attention:
                rows.append(Row(f"output_blocks.{i}.1.", f"up_blocks.{up}.attentions.{j}.", UNET_ATTN))
            if j == per_level and up < levels - 1:
                sub = 2 if has_attention else 1
                rows.append(Row(f"output_blocks.{i}.{sub}.conv.", f"up_blocks.{up}.upsamplers.0.conv.", PLAIN))
            i += 1
    return Table(rows)


def vae_table(config: Mapping[str, Any]) -> Table:
    """Prefix rows of the KL autoencoder (LDM `AutoencoderKL` ↔ diffusers `AutoencoderKL`)."""
    levels = len(config["block_out_channels"])
    per_level = int(config["layers_per_block"])
    rows = [Row(f"{n}.", f"{n}.", PLAIN) for n in (
        "encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out", "quant_conv", "post_quant_conv")]
    rows += [Row("encoder.norm_out.", "encoder.conv_norm_out.", PLAIN),
             Row("decoder.norm_out.", "decoder.conv_norm_out.", PLAIN)]
    for i in range(levels):
        for j in range(per_level):
            rows.append(Row(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.", VAE_RES))
        if i < levels - 1:
            rows.append(Row(f"encoder.down.{i}.downsample.conv.", f"encoder.down_blocks.{i}.downsamplers.0.conv.", PLAIN))
    for b in range(levels):
        up = levels - 1 - b
        for j in range(per_level + 1):
            rows.append(Row(f"decoder.up.{b}.block.{j}.", f"decoder.up_blocks.{up}.resnets.{j}.", VAE_RES))
        if b > 0:
            rows.append(Row(f"decoder.up.{b}.upsample.conv.", f"decoder.up_blocks.{up}.upsamplers.0.conv.", PLAIN))
    for side in ("encoder", "decoder"):
        rows += [Row(f"{side}.mid.block_1.", f"{side}.mid_block.resnets.0.", VAE_RES),
                 Row(f"{side}.mid.block_2.", f"{side}.mid_block.resnets.1.", VAE_RES)]
        if config.get("mid_block_add_attention", True):
            rows.append(Row(f"{side}.mid.attn_1.", f"{side}.mid_block.attentions.0.", VAE_ATTN))
    return Table(rows)


def _lookup(index: Mapping[str, Row], key: str) -> tuple[Row, str] | None:
    """The row whose prefix (whole dot-separated components) starts `key`, and the rest of `key`."""
    parts = key.split(".")
    for n in range(min(len(parts) - 1, 6), 0, -1):
        prefix = ".".join(parts[:n]) + "."
        row = index.get(prefix)
        if row is not None:
            return row, key[len(prefix):]
    return None


def _rename_inner(rest: str, kind: str, reverse: bool) -> str:
    module, _, param = rest.rpartition(".")
    renames = INNER[kind]
    if reverse:
        renames = {v: k for k, v in renames.items()}
    return f"{renames.get(module, module)}.{param}" if module else rest


def _ldm_to_diffusers_tensor(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    if kind == VAE_ATTN and tensor.ndim == 4:
        return tensor[:, :, 0, 0]
    return tensor


def _diffusers_to_ldm_tensor(kind: str, diffusers_key: str, tensor: torch.Tensor) -> torch.Tensor:
    if kind == VAE_ATTN and tensor.ndim == 2 and diffusers_key.endswith(".weight"):
        return tensor[:, :, None, None]
    return tensor


def is_ignored_key(key: str) -> bool:
    """A key that is not a model weight and is skipped on purpose."""
    return key in SCHEDULE_BUFFERS or key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def convert_part(sd: Mapping[str, torch.Tensor], prefix: str, table: Table) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map the keys of `sd` under `prefix` to diffusers names. Returns (converted, unmapped keys)."""
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in sd.items():
        if not key.startswith(prefix) or is_ignored_key(key):
            continue
        found = _lookup(table.by_ldm, key[len(prefix):])
        if found is None:
            unmapped.append(key)
            continue
        row, rest = found
        out[row.diffusers + _rename_inner(rest, row.kind, reverse=False)] = _ldm_to_diffusers_tensor(row.kind, tensor)
    return out, unmapped


def part_to_ldm(sd: Mapping[str, torch.Tensor], prefix: str, table: Table) -> dict[str, torch.Tensor]:
    """Map a diffusers state dict back to LDM names under `prefix` (used to write checkpoints)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        found = _lookup(table.by_diffusers, key)
        if found is None:
            raise errors.CheckpointLoadError(f"no LDM name for diffusers key {key!r}")
        row, rest = found
        out[prefix + row.ldm + _rename_inner(rest, row.kind, reverse=True)] = _diffusers_to_ldm_tensor(row.kind, key, tensor)
    return out


def convert_clip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The CLIP text model's weights with `prefix` stripped (transformers 5 names have no `text_model.`)."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and not is_ignored_key(k)}


@dataclass
class ConvertedCheckpoint:
    """The three parts' state dicts in diffusers/transformers names."""

    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor]


def convert_checkpoint(sd: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any],
                       vae_config: Mapping[str, Any], clip_prefix: str, filename: str = "") -> ConvertedCheckpoint:
    """Split an SD1 LDM state dict into diffusers UNet / VAE and transformers CLIP state dicts.

    Raises:
        errors.CheckpointLoadError: a key belongs to no part, or to no block of its part; the
            message names those keys.
    """
    unet, unet_unmapped = convert_part(sd, UNET_PREFIX, unet_table(unet_config))
    vae, vae_unmapped = convert_part(sd, VAE_PREFIX, vae_table(vae_config))
    clip = convert_clip(sd, clip_prefix)
    stray = [k for k in sd if not is_ignored_key(k)
             and not k.startswith((UNET_PREFIX, VAE_PREFIX, "cond_stage_model.transformer."))]
    clip_stray = [k for k in sd if k.startswith("cond_stage_model.transformer.") and not k.startswith(clip_prefix)
                  and not is_ignored_key(k)]
    unexpected = unet_unmapped + vae_unmapped + clip_stray + stray
    if unexpected:
        where = f" in {filename!r}" if filename else ""
        raise errors.CheckpointLoadError(
            f"unexpected keys{where} ({len(unexpected)}): {_names(unexpected)}")
    return ConvertedCheckpoint(unet=unet, vae=vae, text_encoder=clip)


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")
