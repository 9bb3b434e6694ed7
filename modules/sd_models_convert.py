"""Key mapping between A1111/LDM/sgm checkpoints and diffusers/transformers module names.

The mapping is a table of module prefixes built from the part's config — for each LDM block
(`input_blocks.4.1.`, `encoder.down.2.block.0.`, …) the diffusers block it becomes and the kind
of block it is. Inside a block, names are renamed by kind (a UNet ResBlock's `in_layers.0` is
diffusers' `norm1`; a VAE attention's `q` is `to_q`, stored as a 1×1 conv in LDM and as a linear
weight in diffusers). One table serves both directions: loading (LDM → diffusers) and writing
the demo checkpoint (diffusers → LDM), so the two cannot drift apart.

OpenCLIP text towers (SD2, SDXL's bigG) use the same table design: each `resblocks.N.` is a
block kind whose inner names are renamed, whose fused `attn.in_proj_*` tensor is split into
transformers' q/k/v projections (and concatenated back), and whose `text_projection` ([width,
proj], applied as x @ P) is stored transposed as transformers' Linear weight. Whole-key rows
(a row whose LDM name does not end in ".", like `positional_embedding`) map one tensor each.

Keys that are not weights of the model (the DDPM schedule buffers, EMA copies, position ids) are
known and skipped on purpose; any other key no table accounts for is reported by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from modules import errors
from modules.sd_models_config import HF_CLIP, UNET_PREFIX, VAE_PREFIX, EncoderSource, ModelConfig

PLAIN, UNET_RES, UNET_ATTN, VAE_RES, VAE_ATTN = "plain", "unet_res", "unet_attn", "vae_res", "vae_attn"
OPEN_CLIP_BLOCK, TRANSPOSED = "open_clip_block", "transposed"

# Inner renames per block kind: LDM module path → diffusers module path.
INNER = {
    PLAIN: {},
    UNET_ATTN: {},
    UNET_RES: {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"},
    VAE_RES: {"nin_shortcut": "conv_shortcut"},
    VAE_ATTN: {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"},
    OPEN_CLIP_BLOCK: {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                      "attn.out_proj": "self_attn.out_proj"},
    TRANSPOSED: {},
}

# Fused tensors per block kind: LDM name → the diffusers names of its equal parts along dim 0.
FUSED = {
    OPEN_CLIP_BLOCK: {
        "attn.in_proj_weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "attn.in_proj_bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    },
}
# Block kinds whose every inner module is listed in INNER / FUSED: any other inner name is an
# unexpected key of the file, reported by its own name.
CLOSED_KINDS = frozenset({OPEN_CLIP_BLOCK})
# OpenCLIP tensors no built module uses: the CLIP loss temperature always; the text projection
# when the tower is SD2's (its conditioning is the hidden states, never the projected pooled output).
OPEN_CLIP_UNUSED = ("logit_scale",)
OPEN_CLIP_UNUSED_WITHOUT_PROJECTION = ("text_projection", "text_projection.weight")
# Some converters store OpenCLIP's projection already as a Linear weight ([proj, width]) under this name.
LINEAR_TEXT_PROJECTION = "text_projection.weight"

# Tensors in SD checkpoints that are not module weights: the DDPM schedule, training leftovers.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates",
    "v_pred", "ztsnr",  # markers read by `sd_models_config.infer_config`, no weights
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
    if config.get("class_embed_type") == "projection":  # SDXL's vector conditioning (label_emb)
        rows += [Row("label_emb.0.0.", "class_embedding.linear_1.", PLAIN),
                 Row("label_emb.0.2.", "class_embedding.linear_2.", PLAIN)]
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


def open_clip_table(config: Mapping[str, Any], projection: bool, text_model_prefix: str = "") -> Table:
    """Rows of an OpenCLIP text tower (LDM names after e.g. `cond_stage_model.model.`) ↔ transformers'
    CLIPTextModel (`text_model_prefix` ""), or CLIPTextModelWithProjection (`text_model_prefix`
    "text_model.", plus `text_projection` when `projection`)."""
    t = text_model_prefix
    rows = [Row("token_embedding.", f"{t}embeddings.token_embedding.", PLAIN),
            Row("positional_embedding", f"{t}embeddings.position_embedding.weight", PLAIN),
            Row("ln_final.", f"{t}final_layer_norm.", PLAIN)]
    rows += [Row(f"transformer.resblocks.{n}.", f"{t}encoder.layers.{n}.", OPEN_CLIP_BLOCK)
             for n in range(int(config["num_hidden_layers"]))]
    if projection:
        rows.append(Row("text_projection", "text_projection.weight", TRANSPOSED))
    return Table(rows)


def _lookup(index: Mapping[str, Row], key: str) -> tuple[Row, str] | None:
    """The row whose prefix (whole dot-separated components) starts `key`, and the rest of `key`;
    a whole-key row (no trailing ".") matches `key` itself, with an empty rest."""
    row = index.get(key)
    if row is not None and not row.ldm.endswith("."):
        return row, ""
    parts = key.split(".")
    for n in range(min(len(parts) - 1, 6), 0, -1):
        prefix = ".".join(parts[:n]) + "."
        row = index.get(prefix)
        if row is not None:
            return row, key[len(prefix):]
    return None


def _rename_inner(rest: str, kind: str, reverse: bool) -> str:
    if not rest:
        return rest
    module, _, param = rest.rpartition(".")
    renames = INNER[kind]
    if reverse:
        renames = {v: k for k, v in renames.items()}
    return f"{renames.get(module, module)}.{param}" if module else rest


def _ldm_to_diffusers_tensor(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    if kind == VAE_ATTN and tensor.ndim == 4:
        return tensor[:, :, 0, 0]
    if kind == TRANSPOSED:
        return tensor.T.contiguous()
    return tensor


def _diffusers_to_ldm_tensor(kind: str, diffusers_key: str, tensor: torch.Tensor) -> torch.Tensor:
    if kind == VAE_ATTN and tensor.ndim == 2 and diffusers_key.endswith(".weight"):
        return tensor[:, :, None, None]
    if kind == TRANSPOSED:
        return tensor.T.contiguous()
    return tensor


def _fused_parts(kind: str) -> dict[str, tuple[str, ...]]:
    return FUSED.get(kind, {})


def _fused_by_part(kind: str) -> dict[str, tuple[str, int, int]]:
    """diffusers inner name → (fused LDM inner name, index of the part, number of parts)."""
    return {part: (fused, i, len(parts)) for fused, parts in _fused_parts(kind).items()
            for i, part in enumerate(parts)}


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
        fused = _fused_parts(row.kind).get(rest)
        if fused is not None:  # one LDM tensor holds several diffusers ones, stacked on dim 0
            for name, piece in zip(fused, tensor.chunk(len(fused), dim=0)):
                out[row.diffusers + name] = piece
            continue
        if row.kind in CLOSED_KINDS and rest.rpartition(".")[0] not in INNER[row.kind]:
            unmapped.append(key)
            continue
        out[row.diffusers + _rename_inner(rest, row.kind, reverse=False)] = _ldm_to_diffusers_tensor(row.kind, tensor)
    return out, unmapped


def part_to_ldm(sd: Mapping[str, torch.Tensor], prefix: str, table: Table) -> dict[str, torch.Tensor]:
    """Map a diffusers state dict back to LDM names under `prefix` (used to write checkpoints)."""
    out: dict[str, torch.Tensor] = {}
    pieces: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in sd.items():
        found = _lookup(table.by_diffusers, key)
        if found is None:
            raise errors.CheckpointLoadError(f"no LDM name for diffusers key {key!r}")
        row, rest = found
        fused = _fused_by_part(row.kind).get(rest)
        if fused is not None:
            name, index, count = fused
            slot = pieces.setdefault(prefix + row.ldm + name, [None] * count)
            slot[index] = tensor
            out.setdefault(prefix + row.ldm + name, tensor)  # placeholder: keeps the first part's place
            continue
        out[prefix + row.ldm + _rename_inner(rest, row.kind, reverse=True)] = _diffusers_to_ldm_tensor(row.kind, key, tensor)
    for name, parts in pieces.items():
        missing = [i for i, t in enumerate(parts) if t is None]
        if missing:
            raise errors.CheckpointLoadError(f"cannot write {name!r}: parts {missing} of it are missing")
        out[name] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out


def convert_clip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The CLIP text model's weights with `prefix` stripped (transformers 5 names have no `text_model.`)."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and not is_ignored_key(k)}


def encoder_root(source: EncoderSource) -> str:
    """The key prefix a text encoder owns in the file: its prefix, less a trailing `text_model.`
    (so `cond_stage_model.transformer.` belongs to the SD1 encoder whichever way it is keyed)."""
    return source.prefix.removesuffix("text_model.")


def convert_text_encoder(sd: Mapping[str, torch.Tensor], source: EncoderSource,
                         config: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One text encoder's weights in transformers names. Returns (converted, unmapped keys).

    HF-layout encoders are the keys under `source.prefix` with it stripped. OpenCLIP towers go
    through `open_clip_table`; their `logit_scale`, and the `text_projection` of a tower built
    without one (SD2), are skipped on purpose. A projection stored as a Linear weight
    (`text_projection.weight`, [proj, width]) is read as OpenCLIP's [width, proj] `text_projection`
    transposed, when the file has no `text_projection` itself.
    """
    if source.layout == HF_CLIP:
        return convert_clip(sd, source.prefix), []
    unused = {source.prefix + name for name in
              OPEN_CLIP_UNUSED + (() if source.projection else OPEN_CLIP_UNUSED_WITHOUT_PROJECTION)}
    rest = {k: v for k, v in sd.items() if k not in unused}
    linear, plain = source.prefix + LINEAR_TEXT_PROJECTION, source.prefix + "text_projection"
    if linear in rest and plain not in rest:
        rest[plain] = rest.pop(linear).T
    table = open_clip_table(config, source.projection, "text_model." if source.projection else "")
    return convert_part(rest, source.prefix, table)


@dataclass
class ConvertedCheckpoint:
    """The parts' state dicts in diffusers/transformers names (`text_encoder` is None for an SDXL
    refiner; `text_encoder_2` is SDXL's OpenCLIP bigG, else None)."""

    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor] | None
    text_encoder_2: dict[str, torch.Tensor] | None = None


def convert_checkpoint(sd: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any],
                       vae_config: Mapping[str, Any], clip_prefix: str | None = None, filename: str = "", *,
                       encoders: Sequence[tuple[EncoderSource, Mapping[str, Any]]] | None = None
                       ) -> ConvertedCheckpoint:
    """Split an LDM/sgm state dict into diffusers UNet / VAE and transformers text encoder state dicts.

    Args:
        sd: the checkpoint's tensors.
        unet_config, vae_config: the diffusers configs of the UNet and VAE.
        clip_prefix: SD1 only (when `encoders` is None): the prefix of its HF-layout CLIP.
        filename: for messages.
        encoders: (where, CLIPTextConfig kwargs) of each text encoder (`ModelConfig.encoders`
            with `clip` / `clip2`); see `convert_model`.

    Raises:
        errors.CheckpointLoadError: a key belongs to no part, or to no block of its part; the
            message names those keys.
    """
    if encoders is None:
        if clip_prefix is None:
            raise ValueError("convert_checkpoint needs clip_prefix (SD1) or encoders")
        encoders = [(EncoderSource("text_encoder", clip_prefix, HF_CLIP), {})]
    unet, unet_unmapped = convert_part(sd, UNET_PREFIX, unet_table(unet_config))
    vae, vae_unmapped = convert_part(sd, VAE_PREFIX, vae_table(vae_config))
    texts: dict[str, dict[str, torch.Tensor]] = {}
    text_unmapped: list[str] = []
    for source, config in encoders:
        texts[source.slot], unmapped = convert_text_encoder(sd, source, config)
        text_unmapped += unmapped
        text_unmapped += [k for k in sd if k.startswith(encoder_root(source)) and not k.startswith(source.prefix)
                          and not is_ignored_key(k)]
    roots = (UNET_PREFIX, VAE_PREFIX) + tuple(encoder_root(s) for s, _ in encoders)
    stray = [k for k in sd if not is_ignored_key(k) and not k.startswith(roots)]
    unexpected = unet_unmapped + vae_unmapped + text_unmapped + stray
    if unexpected:
        where = f" in {filename!r}" if filename else ""
        raise errors.CheckpointLoadError(
            f"unexpected keys{where} ({len(unexpected)}): {_names(unexpected)}")
    return ConvertedCheckpoint(unet=unet, vae=vae, text_encoder=texts.get("text_encoder"),
                               text_encoder_2=texts.get("text_encoder_2"))


def convert_model(sd: Mapping[str, torch.Tensor], config: ModelConfig, filename: str = "") -> ConvertedCheckpoint:
    """`convert_checkpoint` for any family, with the encoders and configs `infer_config` found."""
    configs = {"text_encoder": config.clip, "text_encoder_2": config.clip2}
    encoders = [(source, configs[source.slot] or {}) for source in config.encoders]
    return convert_checkpoint(sd, config.unet, config.vae, filename=filename, encoders=encoders)


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")
