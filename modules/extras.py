"""Checkpoint merger: A1111's `modules.extras.run_modelmerger` (v1.10 behaviour), as a backend.

A UI tab or an extension calls `run_modelmerger(...)` with A1111's positional arguments; Serena
code calls `merge_checkpoints(MergeRequest(...))`, which returns a `MergeResult` and raises domain
errors. The arithmetic lives in small pure functions (`weighted_sum`, `add_difference`,
`merge_tensor`, `merge_state_dicts`, `bake_vae`, `discard_keys`, ...) that tests check against
torch directly.

What A1111 does, and Serena keeps:

- "Weighted sum" is A·(1−M) + B·M; "Add difference" is A + (B − C)·M; "No interpolation" copies A
  (then bakes a VAE, converts to fp16 and discards keys, if asked).
- Only keys containing "model" are merged (`model.diffusion_model.*`, `first_stage_model.*`,
  `cond_stage_model.*`, `model_ema.*`); other keys (the DDPM buffers) and keys missing from B keep
  A's tensor; keys only in B are dropped. For "Add difference", a B key missing from C counts as
  zero difference. `cond_stage_model.transformer.text_model.embeddings.position_ids` is never merged.
- An inpainting (9 input channels) or instruct-pix2pix (8) primary merged with a normal model (4)
  merges the first 4 input channels of each tensor whose shapes differ only there and keeps the
  rest; the file name then gains ".inpainting" / ".instruct-pix2pix". The other way round is refused.
- `save_as_half` turns float32 tensors into float16: every tensor for "No interpolation", the
  merged tensors (and a baked VAE) otherwise; other dtypes are left alone.
- File name: the custom name, else "0.7(a) + 0.3(b)", "a + 0.3(b - c)" or "a" from the models'
  `model_name`; written into `--ckpt-dir`, else the checkpoint folder.
- Metadata (with `save_metadata`): the inputs' metadata (`copy_metadata_fields`), the user's JSON,
  `format: pt`, and (with `add_merge_recipe`) `sd_merge_recipe` and `sd_merge_models` as JSON text.
- A `<name>.yaml` config beside an input is copied beside the result (`config_source`), the
  registry is rebuilt (`sd_models.list_models()`) and the new file's sha256 computed.

Where Serena is stricter (errors instead of silent fallbacks):

- An existing output file is never replaced unless `overwrite=True` (A1111 overwrites silently;
  a "No interpolation" merge without a custom name is named after the primary, so A1111 rewrites
  the primary file itself); the write is atomic (temporary file, then a hard link that fails if
  the name was taken), so an error or interrupt leaves no partial file.
- Model names must be an exact alias (title, name, stem, hash; a stale "[hash]" suffix is
  ignored), never a substring match; A1111 wants the exact title.
- A custom name that leaves the checkpoint folder (absolute, `..`) is refused; A1111 writes there.
- `.ckpt` output is refused (Serena writes no pickles); `.safetensors` only.
- Unknown models, VAEs, methods, a bad regex or metadata JSON, tensors whose shapes cannot be merged,
  and a VAE file with no key that fits are errors naming the value (A1111 answers "Failed: ...", a
  traceback, or silently skips).
- Input hashes are computed before the recipe is written, so `*_model_hash` is never null because
  a hash had not been computed yet (A1111 computes them after building the recipe).
- A VAE file whose keys carry a `first_stage_model.` prefix is baked too (A1111 bakes nothing).
- Copied metadata values that are not text (Serena, like A1111, decodes JSON-looking values when it
  reads a header) are written back as JSON text; A1111 fails to save them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
from typing import Any, Callable, Mapping, MutableMapping

import torch

from modules import errors, fileio, safe_load, sd_models, sd_models_config, sd_vae

log = logging.getLogger(__name__)

Tensor = torch.Tensor
StateDict = MutableMapping[str, Tensor]

NO_INTERPOLATION = "No interpolation"
WEIGHTED_SUM = "Weighted sum"
ADD_DIFFERENCE = "Add difference"
INTERP_METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)
CHECKPOINT_FORMATS = ("safetensors",)
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")  # A1111's radio, passed by index
checkpoint_dict_skip_on_merge = ["cond_stage_model.transformer.text_model.embeddings.position_ids"]  # A1111 name
VAE_PREFIX = "first_stage_model."
NO_VAE = ("", "None")


# --- the arithmetic (pure) ------------------------------------------------------------------------

def weighted_sum(theta0: Tensor, theta1: Tensor, alpha: float) -> Tensor:
    """A·(1−M) + B·M."""
    return ((1 - alpha) * theta0) + (alpha * theta1)


def get_difference(theta1: Tensor, theta2: Tensor) -> Tensor:
    """B − C."""
    return theta1 - theta2


def add_difference(theta0: Tensor, theta1_2_diff: Tensor, alpha: float) -> Tensor:
    """A + (B − C)·M, given B − C."""
    return theta0 + (alpha * theta1_2_diff)


def to_half(tensor: Tensor, enable: bool) -> Tensor:
    """float32 → float16 when `enable`; any other dtype unchanged (as A1111)."""
    return tensor.half() if enable and tensor.dtype == torch.float32 else tensor


def is_merged_key(key: str) -> bool:
    """Whether A1111 merges this key: its name contains "model" and it is not a skipped buffer."""
    return "model" in key and key not in checkpoint_dict_skip_on_merge


def subtract_tertiary(theta_1: StateDict, theta_2: Mapping[str, Tensor]) -> None:
    """Replace each merged key of B by B − C, in place (zero where C lacks the key)."""
    for key in list(theta_1):
        if not is_merged_key(key):
            continue
        b = theta_1[key]
        if key not in theta_2:
            theta_1[key] = torch.zeros_like(b)
            continue
        c = theta_2[key]
        if b.shape != c.shape:
            raise errors.CheckpointLoadError(
                f"cannot subtract the tertiary model from the secondary at {key!r}: shapes {tuple(b.shape)} "
                f"and {tuple(c.shape)} differ (an inpainting/instruct-pix2pix model can only be the primary)",
                field="tertiary_model_name")
        theta_1[key] = get_difference(b, c)


def merge_tensor(key: str, a: Tensor, b: Tensor, multiplier: float,
                 combine: Callable[[Tensor, Tensor, float], Tensor]) -> tuple[Tensor, str | None]:
    """`combine(a, b, M)`, and which special model A is ("inpainting", "instruct-pix2pix" or None).

    When A's second axis is 9 (inpainting) or 8 (instruct-pix2pix) and B's is 4, with every other
    axis equal, only A's first 4 channels are combined and the rest are kept.
    """
    if a.shape == b.shape:
        return combine(a, b, multiplier), None
    if a.ndim >= 2 and b.ndim == a.ndim and a.shape[0:1] + a.shape[2:] == b.shape[0:1] + b.shape[2:]:
        kinds = {9: "inpainting", 8: "instruct-pix2pix"}
        if a.shape[1] == 4 and b.shape[1] in kinds:
            raise errors.InvalidParameter(
                f"when merging an {kinds[b.shape[1]]} model with a normal one, A (the primary model) must be the "
                f"{kinds[b.shape[1]]} model ({key!r}: A has {a.shape[1]} channels, B has {b.shape[1]})",
                field="primary_model_name")
        if a.shape[1] in kinds and b.shape[1] == 4:
            merged = a.clone()
            merged[:, 0:4] = combine(a[:, 0:4], b, multiplier)
            return merged, kinds[a.shape[1]]
    raise errors.CheckpointLoadError(
        f"cannot merge {key!r}: shapes A={tuple(a.shape)} and B={tuple(b.shape)} do not fit",
        field="secondary_model_name")


@dataclasses.dataclass
class MergeFlags:
    """What the merge found about the primary model."""

    is_inpainting: bool = False
    is_instruct_pix2pix: bool = False


def merge_state_dicts(theta_0: StateDict, theta_1: Mapping[str, Tensor], multiplier: float,
                      combine: Callable[[Tensor, Tensor, float], Tensor], save_as_half: bool) -> MergeFlags:
    """Merge B (`theta_1`) into A (`theta_0`) in place: every merged key present in both."""
    flags = MergeFlags()
    for key in list(theta_0):
        if not is_merged_key(key) or key not in theta_1:
            continue
        merged, kind = merge_tensor(key, theta_0[key], theta_1[key], multiplier, combine)
        flags.is_inpainting |= kind == "inpainting"
        flags.is_instruct_pix2pix |= kind == "instruct-pix2pix"
        theta_0[key] = to_half(merged, save_as_half)
    return flags


def vae_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A VAE file's tensors by LDM VAE name (`encoder.*`, `decoder.*`, `quant_conv.*`, ...): the
    training loss and EMA counters dropped (as `sd_vae.load_vae_dict` does), a `first_stage_model.`
    prefix removed (A1111 would bake nothing from such a file)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("loss") or key in sd_vae.vae_ignore_keys:
            continue
        out[key[len(VAE_PREFIX):] if key.startswith(VAE_PREFIX) else key] = value
    return out


def bake_vae(theta_0: StateDict, vae: Mapping[str, Tensor], save_as_half: bool, vae_name: str = "VAE") -> int:
    """Write each VAE tensor over the checkpoint's `first_stage_model.<key>`, where that key exists;
    return how many were written.

    Raises:
        errors.CheckpointLoadError: no key fits, or a tensor's shape differs from the checkpoint's.
    """
    count = 0
    for key, value in vae.items():
        target = VAE_PREFIX + key
        if target not in theta_0:
            continue
        if theta_0[target].shape != value.shape:
            raise errors.CheckpointLoadError(
                f"VAE {vae_name!r} does not fit the checkpoint at {target!r}: {tuple(value.shape)} vs "
                f"{tuple(theta_0[target].shape)}", field="bake_in_vae")
        theta_0[target] = to_half(value, save_as_half)
        count += 1
    if count == 0:
        raise errors.CheckpointLoadError(
            f"VAE {vae_name!r} has no tensor that fits the checkpoint's VAE ({VAE_PREFIX}*): "
            f"is it an LDM-layout VAE file?", field="bake_in_vae")
    return count


def discard_keys(theta_0: StateDict, pattern: str) -> list[str]:
    """Remove every key the regular expression finds a match in (`re.search`); return them."""
    if not pattern:
        return []
    regex = compile_discard_regex(pattern)
    removed = [key for key in theta_0 if regex.search(key)]
    for key in removed:
        del theta_0[key]
    return removed


def compile_discard_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise errors.InvalidParameter(f"discard_weights {pattern!r} is not a valid regular expression: {e}",
                                      field="discard_weights") from e


def _fmt(value: float) -> str:
    return str(round(value, 2))


def merged_name(method: str, a: str, b: str | None, c: str | None, multiplier: float) -> str:
    """A1111's file stem for a merge without a custom name."""
    if method == WEIGHTED_SUM:
        return f"{_fmt(1 - multiplier)}({a}) + {_fmt(multiplier)}({b})"
    if method == ADD_DIFFERENCE:
        return f"{a} + {_fmt(multiplier)}({b} - {c})"
    return a


def output_filename(stem: str, flags: MergeFlags, checkpoint_format: str) -> str:
    """Stem + ".inpainting" / ".instruct-pix2pix" when the result is one + "." + format."""
    return (stem + (".inpainting" if flags.is_inpainting else "")
            + (".instruct-pix2pix" if flags.is_instruct_pix2pix else "") + "." + checkpoint_format)


# --- request and result ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MergeRequest:
    """One merge, with A1111's argument names and UI defaults.

    `secondary_model_name` is needed by "Weighted sum" and "Add difference", `tertiary_model_name`
    by "Add difference"; otherwise they are ignored, as in A1111. Model names are any alias the
    registry knows (title, name, stem, hash). `bake_in_vae` is a name of `sd_vae.vae_dict` (a VAE
    file's base name); "None" or "" for none. `config_source` is the
    index into `CONFIG_SOURCES`. `overwrite` (Serena only) allows replacing an existing file.
    """

    primary_model_name: str
    secondary_model_name: str | None = None
    tertiary_model_name: str | None = None
    interp_method: str = WEIGHTED_SUM
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    config_source: int = 0
    bake_in_vae: str | None = "None"
    discard_weights: str = ""
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str = "{}"
    overwrite: bool = False


@dataclasses.dataclass
class MergeResult:
    """The written file, its registry entry (sha256 computed unless --no-hashing), and what happened."""

    filename: str
    checkpoint_info: sd_models.CheckpointInfo | None
    is_inpainting: bool
    is_instruct_pix2pix: bool
    metadata: dict[str, str]
    discarded_keys: list[str]
    config_filename: str | None = None

    @property
    def message(self) -> str:
        return f"Checkpoint saved to {self.filename}"


# --- checks and look-ups --------------------------------------------------------------------------

def _validate(req: MergeRequest) -> dict[str, Any]:
    """Check the request's plain values; return the parsed user metadata JSON."""
    if req.interp_method not in INTERP_METHODS:
        raise errors.InvalidParameter(
            f"interp_method {req.interp_method!r} is not one of {list(INTERP_METHODS)}", field="interp_method")
    if req.checkpoint_format == "ckpt":
        raise errors.InvalidParameter(
            "checkpoint_format 'ckpt' is not written by Serena (a pickle can carry code); use 'safetensors'",
            field="checkpoint_format")
    if req.checkpoint_format not in CHECKPOINT_FORMATS:
        raise errors.InvalidParameter(
            f"checkpoint_format {req.checkpoint_format!r} is not one of {list(CHECKPOINT_FORMATS)}",
            field="checkpoint_format")
    if isinstance(req.multiplier, bool) or not isinstance(req.multiplier, (int, float)) \
            or not math.isfinite(req.multiplier):
        raise errors.InvalidParameter(f"multiplier {req.multiplier!r} is not a finite number", field="multiplier")
    if req.config_source not in range(len(CONFIG_SOURCES)):
        raise errors.InvalidParameter(
            f"config_source {req.config_source!r} is not an index of {list(CONFIG_SOURCES)}", field="config_source")
    compile_discard_regex(req.discard_weights or "")
    return _parse_metadata_json(req.metadata_json) if req.save_metadata else {}


def _parse_metadata_json(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise errors.InvalidParameter(f"metadata_json is not valid JSON: {e}", field="metadata_json") from e
    if not isinstance(value, dict):
        raise errors.InvalidParameter(f"metadata_json must be a JSON object, not {type(value).__name__}",
                                      field="metadata_json")
    return value


def resolve_checkpoint(name: str | None, field: str, role: str) -> sd_models.CheckpointInfo:
    """The registry entry `name` is an alias of (exactly, or without a trailing "[hash]").

    Raises:
        errors.CheckpointNotFound: no name given, or no checkpoint has that alias; names the known titles.
    """
    if not sd_models.checkpoints_list:
        sd_models.list_models()
    if not name:
        raise errors.CheckpointNotFound(f"merging requires a {role} model ({field} is empty)", field=field)
    info = sd_models.checkpoint_aliases.get(name) \
        or sd_models.checkpoint_aliases.get(sd_models._re_strip_checksum.sub("", name))
    if info is None:
        known = ", ".join(repr(t) for t in sd_models.checkpoints_list) or "none"
        raise errors.CheckpointNotFound(f"{role} model {name!r} not found; known checkpoints: {known}", field=field)
    return info


def resolve_vae(name: str | None) -> str | None:
    """The file a `bake_in_vae` value names in `sd_vae.vae_dict` (re-read first); None for "None"/"".

    Raises:
        errors.InvalidParameter: the name is no known VAE; the message lists them.
    """
    if name is None or name in NO_VAE:
        return None
    sd_vae.refresh_vae_list()
    if name in sd_vae.vae_dict:
        return sd_vae.vae_dict[name]
    known = ", ".join(repr(k) for k in sd_vae.vae_dict) or "none"
    raise errors.InvalidParameter(f"VAE {name!r} not found; known VAE files: {known}", field="bake_in_vae")


def checkpoint_dir() -> str:
    """Where merges are written: `--ckpt-dir`, else the checkpoint folder (as A1111)."""
    return sd_models._cmd_opt("ckpt_dir") or sd_models.model_path()


def output_path(folder: str, filename: str) -> str:
    """`folder/filename`, refused when the name is empty or leads outside `folder`."""
    if not filename or "\0" in filename or os.path.isabs(filename) or filename.startswith(("/", "\\")):
        raise errors.InvalidParameter(f"output file name {filename!r} is not a plain file name", field="custom_name")
    root = os.path.abspath(folder)
    path = os.path.abspath(os.path.join(root, filename))
    if not path.startswith(root + os.sep) or os.path.basename(path) in ("", ".", ".."):
        raise errors.InvalidParameter(
            f"output file name {filename!r} leads outside the checkpoint folder {root!r}", field="custom_name")
    return path


def _refuse_existing(path: str) -> None:
    raise errors.InvalidParameter(
        f"{path!r} already exists; choose another custom name or allow overwriting", field="custom_name")


# --- writing --------------------------------------------------------------------------------------

def write_new_file(path: str, save: Callable[[str], None], overwrite: bool = False) -> None:
    """`fileio.atomic_save`, with an existing file (when not overwriting) refused as a request error."""
    try:
        fileio.atomic_save(path, save, overwrite=overwrite)
    except FileExistsError:
        _refuse_existing(path)


def _unshared(theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous tensors, none sharing memory with another (safetensors refuses shared storage)."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, Tensor] = {}
    for key, value in theta.items():
        value = value.contiguous()
        ident = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        if value.numel() and ident in seen:
            value = value.clone()
        seen.add((value.untyped_storage().data_ptr(), value.untyped_storage().nbytes()))
        out[key] = value
    return out


def _save_safetensors(theta: Mapping[str, Tensor], metadata: Mapping[str, str]) -> Callable[[str], None]:
    import safetensors.torch

    def save(path: str) -> None:
        safetensors.torch.save_file(_unshared(theta), path, metadata=dict(metadata) if metadata else None)
    return save


# --- metadata -------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def merge_metadata(req: MergeRequest, infos: list[sd_models.CheckpointInfo | None],
                   user_metadata: Mapping[str, Any], flags: MergeFlags) -> dict[str, str]:
    """The output's safetensors metadata, as A1111 writes it (empty without `save_metadata`)."""
    if not req.save_metadata:
        return {}
    metadata: dict[str, Any] = {}
    if req.copy_metadata_fields:
        for info in infos:
            if info is not None:
                metadata.update(info.metadata)
    metadata.update(user_metadata)
    metadata["format"] = "pt"
    if req.add_merge_recipe:
        primary, secondary, tertiary = infos
        recipe = {
            "type": "webui",
            "primary_model_hash": primary.sha256 if primary else None,
            "secondary_model_hash": secondary.sha256 if secondary else None,
            "tertiary_model_hash": tertiary.sha256 if tertiary else None,
            "interp_method": req.interp_method,
            "multiplier": req.multiplier,
            "save_as_half": req.save_as_half,
            "custom_name": req.custom_name,
            "config_source": req.config_source,
            "bake_in_vae": req.bake_in_vae,
            "discard_weights": req.discard_weights,
            "is_inpainting": flags.is_inpainting,
            "is_instruct_pix2pix": flags.is_instruct_pix2pix,
        }
        models: dict[str, Any] = {}
        for info in infos:
            if info is None:
                continue
            models[info.sha256] = {"name": info.name, "legacy_hash": info.hash,
                                   "sd_merge_recipe": info.metadata.get("sd_merge_recipe")}
            earlier = info.metadata.get("sd_merge_models")
            if isinstance(earlier, dict):
                models.update(earlier)
        metadata["sd_merge_recipe"] = json.dumps(recipe)
        metadata["sd_merge_models"] = json.dumps(models)
    return {str(k): _text(v) for k, v in metadata.items()}


def copy_config(result_filename: str, config_source: int,
                infos: list[sd_models.CheckpointInfo | None]) -> str | None:
    """Copy a `<name>.yaml` beside an input to `<result>.yaml` (A1111's `create_config`); return it."""
    candidates = {0: infos, 1: infos[1:2], 2: infos[2:3]}.get(config_source, [])
    source = next((cfg for cfg in (sd_models_config.find_checkpoint_config_near_filename(i)
                                   for i in candidates if i is not None) if cfg), None)
    if source is None:
        return None
    target = os.path.splitext(result_filename)[0] + ".yaml"
    write_new_file(target, lambda tmp: shutil.copyfile(source, tmp), overwrite=True)
    return target


# --- the merge ------------------------------------------------------------------------------------

def _load(info: sd_models.CheckpointInfo) -> dict[str, Tensor]:
    log.info("Loading %s...", info.filename)
    return safe_load.load_state_dict(info.filename, device="cpu")


def merge_checkpoints(req: MergeRequest, progress: Callable[[str], None] | None = None) -> MergeResult:
    """Merge checkpoints as A1111's Checkpoint Merger does and write the result (see module doc).

    Args:
        req: what to merge and how.
        progress: called with a short text as each stage starts ("Loading B", "Merging A and B", ...).

    Raises:
        errors.CheckpointNotFound: a model name is unknown, or its file is gone.
        errors.CheckpointLoadError: an input is corrupt, or tensors/VAE do not fit.
        errors.InvalidParameter: a bad method, format, multiplier, regex, metadata JSON, VAE name,
            output name, or an output file that exists (without `overwrite`).
    """
    say = progress or (lambda text: None)
    user_metadata = _validate(req)
    needs_b = req.interp_method in (WEIGHTED_SUM, ADD_DIFFERENCE)
    needs_c = req.interp_method == ADD_DIFFERENCE
    primary = resolve_checkpoint(req.primary_model_name, "primary_model_name", "primary")
    secondary = resolve_checkpoint(req.secondary_model_name, "secondary_model_name", "secondary") if needs_b else None
    tertiary = resolve_checkpoint(req.tertiary_model_name, "tertiary_model_name", "tertiary") if needs_c else None
    vae_file = resolve_vae(req.bake_in_vae)
    folder = checkpoint_dir()
    stem = req.custom_name or merged_name(req.interp_method, primary.model_name,
                                          secondary.model_name if secondary else None,
                                          tertiary.model_name if tertiary else None, float(req.multiplier))
    path = output_path(folder, output_filename(stem, MergeFlags(), req.checkpoint_format))
    if not req.overwrite and os.path.exists(path):
        _refuse_existing(path)

    theta_0, flags = _merged_state(req, primary, secondary, tertiary, say)
    if vae_file is not None:
        say("Baking in VAE")
        vae = vae_state_dict(sd_vae.load_vae_dict(vae_file, map_location="cpu"))
        bake_vae(theta_0, vae, req.save_as_half, req.bake_in_vae or vae_file)
        del vae
    if req.save_as_half and not needs_b:
        for key in list(theta_0):
            theta_0[key] = to_half(theta_0[key], True)
    discarded = discard_keys(theta_0, req.discard_weights or "")

    path = output_path(folder, output_filename(stem, flags, req.checkpoint_format))
    infos = [primary, secondary, tertiary]
    if req.save_metadata and req.add_merge_recipe:
        for info in infos:
            if info is not None:
                info.calculate_shorthash()
    metadata = merge_metadata(req, infos, user_metadata, flags)
    say("Saving")
    log.info("Saving to %s...", path)
    write_new_file(path, _save_safetensors(theta_0, metadata), overwrite=req.overwrite)
    del theta_0
    config = copy_config(path, req.config_source, infos)
    return MergeResult(filename=path, checkpoint_info=_register(path), is_inpainting=flags.is_inpainting,
                       is_instruct_pix2pix=flags.is_instruct_pix2pix, metadata=metadata,
                       discarded_keys=discarded, config_filename=config)


def _merged_state(req: MergeRequest, primary: sd_models.CheckpointInfo,
                  secondary: sd_models.CheckpointInfo | None, tertiary: sd_models.CheckpointInfo | None,
                  say: Callable[[str], None]) -> tuple[dict[str, Tensor], MergeFlags]:
    """A's tensors with B (and C) merged in, and what the merge found."""
    theta_1 = None
    if secondary is not None:
        say("Loading B")
        theta_1 = _load(secondary)
    if tertiary is not None and theta_1 is not None:
        say("Loading C")
        theta_2 = _load(tertiary)
        say("Merging B and C")
        subtract_tertiary(theta_1, theta_2)
        del theta_2
    say("Loading A")
    theta_0 = _load(primary)
    flags = MergeFlags()
    if theta_1 is not None:
        say("Merging A and B")
        combine = add_difference if tertiary is not None else weighted_sum
        flags = merge_state_dicts(theta_0, theta_1, float(req.multiplier), combine, req.save_as_half)
        del theta_1
    return theta_0, flags


def _register(path: str) -> sd_models.CheckpointInfo | None:
    """Rebuild the registry so the new file is listed; compute its hash (unless --no-hashing)."""
    sd_models.list_models()
    target = os.path.abspath(path)
    info = next((i for i in sd_models.checkpoints_list.values() if os.path.abspath(i.filename) == target), None)
    if info is not None:
        info.calculate_shorthash()
    return info


# --- A1111's entry point --------------------------------------------------------------------------

def _dropdown_update() -> dict[str, Any]:
    """What `gr.update(choices=checkpoint_tiles())` returns, without importing Gradio here."""
    return {"__type__": "update", "choices": sd_models.checkpoint_tiles()}


def run_modelmerger(id_task: str | None, primary_model_name: str, secondary_model_name: str | None,
                    tertiary_model_name: str | None, interp_method: str, multiplier: float, save_as_half: bool,
                    custom_name: str, checkpoint_format: str, config_source: int, bake_in_vae: str | None,
                    discard_weights: str, save_metadata: bool, add_merge_recipe: bool,
                    copy_metadata_fields: bool, metadata_json: str, *, overwrite: bool = False) -> list[Any]:
    """A1111 v1.10's merger entry point: merge, write, refresh the registry.

    Returns A1111's outputs: four checkpoint-dropdown updates (the refreshed titles) and the
    message "Checkpoint saved to <path>". Errors are raised (see `merge_checkpoints`), where A1111
    returns a "Failed: ..." message for missing model names; `overwrite` is Serena's addition.
    """
    from modules import shared

    def progress(text: str) -> None:
        shared.state.textinfo = text

    request = MergeRequest(
        primary_model_name=primary_model_name, secondary_model_name=secondary_model_name,
        tertiary_model_name=tertiary_model_name, interp_method=interp_method, multiplier=multiplier,
        save_as_half=bool(save_as_half), custom_name=custom_name or "", checkpoint_format=checkpoint_format,
        config_source=config_source, bake_in_vae=bake_in_vae, discard_weights=discard_weights or "",
        save_metadata=bool(save_metadata), add_merge_recipe=bool(add_merge_recipe),
        copy_metadata_fields=bool(copy_metadata_fields), metadata_json=metadata_json, overwrite=overwrite)
    result = merge_checkpoints(request, progress)
    shared.state.textinfo = "Checkpoint saved"
    return [*[_dropdown_update() for _ in range(4)], result.message]
