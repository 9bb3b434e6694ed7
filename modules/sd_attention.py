"""Attention implementations for the UNet and the VAE: A1111's cross-attention optimizations.

A1111 swaps the `forward` of LDM's attention classes; Serena's models are diffusers modules, whose
`Attention` layers (the UNet's transformer blocks and the VAE's mid-block, alike) delegate the
computation to a replaceable *processor*. `apply` sets one processor on every attention layer of
`model.unet` and `model.vae` (`set_attn_processor`). The choices, with A1111's names and flags:

- `sdp` (`--opt-sdp-attention`, the default): PyTorch's `scaled_dot_product_attention`, through
  diffusers' own `AttnProcessor2_0`, which is what diffusers builds the models with; applying it to
  a freshly built model changes nothing, so default generations are byte-identical to no `apply`.
- `sdp-no-mem` (`--opt-sdp-no-mem-attention`): the same with the memory-efficient SDPA kernel
  excluded (flash and math kernels only, as A1111 allows), so CUDA runs are reproducible. On the
  CPU no memory-efficient kernel exists and it computes exactly what `sdp` does.
- `Doggettx` (`--opt-split-attention`): attention over slices of the query sequence, as many as
  needed (a power of two) for the q·kᵀ block to fit the free memory (CUDA's free memory, or the
  system's available memory on the CPU).
- `V1` (`--opt-split-attention-v1`): fixed slices of two (batch × head) rows at a time.
- `InvokeAI` (`--opt-split-attention-invokeai`): whole attention while the q·kᵀ block stays under a
  budget (32 MiB on the CPU, for the caches; a third of the free memory on CUDA), else slices of
  (batch × head) rows, else of the query sequence, halving until the block fits.
- `sub-quadratic` (`--opt-sub-quad-attention`): query chunks (`--sub-quad-q-chunk-size`) and key/value
  chunks (`--sub-quad-kv-chunk-size`) with a running softmax, so memory is O(q_chunk × kv_chunk);
  while the whole q·kᵀ block fits `--sub-quad-chunk-threshold` percent of the free memory (70 when
  not given; 0: always chunk), the key/value sequence is taken whole.
- `None` (`--disable-opt-split-attention`): plain attention, softmax(q·kᵀ)·v by matmuls (diffusers'
  `AttnProcessor`).

`--xformers` names a library Serena does not ship; SDPA (which contains the same kind of kernels)
is used instead, and a log line says so once. All the split variants are the same mathematics as
`None`; they differ in the order of the sums, so images differ from `sdp` by rounding only. Each
is deterministic: the slice plan depends on the shapes and on the free memory, and a slice plan
changes which rows are computed together, never the sum order inside a row.

The choosing (`choose`) is pure and follows A1111's `apply_optimizations`: the option
`cross_attention_optimization` when it names an implementation (by title or name), else the first
flag given (A1111's priority order), else `sdp`. Unlike A1111 (whose "Automatic" on a CPU picks
InvokeAI), "Automatic" means `sdp`: it was the fastest wherever measured (one SD1.5 512² self-attention
layer, batch 2: CPU fp32 1.9 s vs 3.9 s plain and 4.3 s InvokeAI; H200 fp16 0.34 ms vs 1.4 ms plain),
and it is what the golden images were made with. The split variants trade speed for memory (H200,
1024² layer: plain 16 GiB of scores, sub-quadratic 1.1 GiB, 0.15 GiB with 512-key chunks).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

log = logging.getLogger(__name__)

DEFAULT = "sdp"
NONE = "None"
AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class Implementation:
    """One attention implementation as A1111 lists it: `name`, `label` (title "name - label"),
    and the `cmd_opt` flag (attribute of `cmd_opts`) that selects it under "Automatic"."""

    name: str
    label: str | None
    cmd_opt: str | None

    def title(self) -> str:
        """The name the settings dropdown shows (A1111's `SdOptimization.title()`)."""
        return f"{self.name} - {self.label}" if self.label else self.name


# A1111's order of priority on CUDA (Doggettx 90, sdp-no-mem 80, sdp 70, then the ones at 10), with
# xformers (100) left out: Serena has none. It is both the dropdown's order and the order in which
# flags are looked at under "Automatic".
IMPLEMENTATIONS: tuple[Implementation, ...] = (
    Implementation("Doggettx", None, "opt_split_attention"),
    Implementation("sdp-no-mem", "scaled dot product without memory efficient attention", "opt_sdp_no_mem_attention"),
    Implementation("sdp", "scaled dot product", "opt_sdp_attention"),
    Implementation("sub-quadratic", None, "opt_sub_quad_attention"),
    Implementation("V1", "original v1", "opt_split_attention_v1"),
    Implementation("InvokeAI", None, "opt_split_attention_invokeai"),
)


def names() -> list[str]:
    """The built-in implementations' titles, in A1111's order of priority."""
    return [impl.title() for impl in IMPLEMENTATIONS]


def resolve(value: str | None) -> str | None:
    """The implementation `value` names (a title or a name, any letter case, or "None"), by its
    name; None when it names none (including "Automatic")."""
    text = str(value or "").strip().casefold()
    if text == NONE.casefold():
        return NONE
    for impl in IMPLEMENTATIONS:
        if text in (impl.name.casefold(), impl.title().casefold()):
            return impl.name
    return None


def sdpa_available() -> bool:
    """Whether this torch has `scaled_dot_product_attention` (torch ≥ 2.0)."""
    return callable(getattr(torch.nn.functional, "scaled_dot_product_attention", None))


def choose(cmd_opts: Any, option_value: str) -> str:
    """The implementation to use: the option when it names one, else the first flag given in
    `IMPLEMENTATIONS` order (`--xformers` counts as SDPA's; `--disable-opt-split-attention` wins
    over them, as in A1111), else "sdp" ("None" when torch has no SDPA). Pure."""
    picked = resolve(option_value)
    if picked is not None:
        return picked
    if getattr(cmd_opts, "disable_opt_split_attention", False):
        return NONE
    if getattr(cmd_opts, "xformers", False) and sdpa_available():
        return DEFAULT
    for impl in IMPLEMENTATIONS:
        if getattr(cmd_opts, impl.cmd_opt, False):
            return impl.name
    return DEFAULT if sdpa_available() else NONE


# --- memory -------------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int | None:
    """Bytes that a new tensor on `device` may take: on CUDA the driver's free memory plus what
    torch's allocator holds unused; on the CPU the system's available memory. None when unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        stats = torch.cuda.memory_stats(device)
        held = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current", 0)
        return int(free + max(held, 0))
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- slice plans (pure) ----------------------------------------------------------------------------


def doggettx_steps(rows: int, q_len: int, k_len: int, element_size: int, free_bytes: int | None) -> int:
    """How many query slices Doggettx uses: the smallest power of two for which the q·kᵀ block,
    with A1111's allowance for the softmax copies (×2.5, ×3 in half precision), fits `free_bytes`.
    Raises MemoryError past 64 slices, as A1111 does (the image is too large for the memory)."""
    if not free_bytes:
        return 1
    required = rows * q_len * k_len * element_size * (3 if element_size == 2 else 2.5)
    if required <= free_bytes:
        return 1
    steps = 2 ** math.ceil(math.log2(required / free_bytes))
    if steps > 64:
        raise MemoryError(f"attention needs {required / 64 / 2**30:.1f} GiB free in each of 64 slices, "
                          f"{free_bytes / 2**30:.1f} GiB is free: use a smaller image")
    return steps


def invokeai_plan(rows: int, q_len: int, k_len: int, element_size: int, budget_mb: float) -> tuple[str, int]:
    """InvokeAI's slicing: ("whole", 0) while the q·kᵀ block is at most `budget_mb` MiB; else the
    divisor is the next power of two above size/budget, and the plan is ("rows", rows // divisor)
    when that leaves at least one (batch × head) row per slice, else ("query", q_len // divisor)."""
    size_mb = rows * q_len * k_len * element_size // (1 << 20)
    if size_mb <= budget_mb:
        return "whole", 0
    divisor = 1 << int((size_mb - 1) / budget_mb).bit_length()
    if divisor <= rows:
        return "rows", rows // divisor
    return "query", max(q_len // divisor, 1)


def invokeai_budget_mb(device: torch.device) -> float:
    """InvokeAI's budget for one q·kᵀ block: a third of the free CUDA memory (copies and
    fragmentation), and 32 MiB on the CPU, where smaller blocks stay in the caches."""
    if device.type == "cuda":
        free = available_memory(device) or 0
        return free / 3.3 / (1 << 20)
    return 32.0


def sub_quad_kv_chunk(rows: int, q_len: int, k_len: int, head_dim: int, value_dim: int, element_size: int,
                      kv_chunk_size: int | None, chunk_threshold: float | None, free_bytes: int | None) -> int:
    """The key/value chunk length sub-quadratic attention uses (A1111's rule). The threshold (percent of
    `free_bytes`; 70 when None; 0: no threshold) bounds memory: while the whole q·kᵀ block fits it the
    keys are taken whole, and no chunk is shorter than what the threshold allows for k and v. Without
    a threshold the chunk is `kv_chunk_size`, or √k_len when not given."""
    threshold = None
    if chunk_threshold is None:
        threshold = int(0.7 * free_bytes) if free_bytes else None
    elif chunk_threshold > 0 and free_bytes:
        threshold = int(0.01 * chunk_threshold * free_bytes)
    if threshold is not None and rows * q_len * k_len * element_size <= threshold:
        return k_len
    chunk = min(kv_chunk_size or int(math.sqrt(k_len)), k_len)
    if threshold is not None:
        chunk = max(chunk, threshold // (rows * element_size * (head_dim + value_dim)))
    return max(1, min(chunk, k_len))


# --- attention on (rows, length, dim) tensors -------------------------------------------------------
# q: (rows, Lq, D), k: (rows, Lk, D), v: (rows, Lk, Dv), rows = batch × heads; `bias` an additive mask
# broadcastable to (rows, Lq, Lk) (Lq may be 1) or None. `upcast`: scores and softmax in float32.


def _scores(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, scale: float, upcast: bool) -> torch.Tensor:
    if upcast:
        q, k = q.float(), k.float()
    s = torch.bmm(q, k.transpose(1, 2)) * scale
    if bias is not None:
        s = s + bias.to(s.dtype)
    return s


def attention_whole(q, k, v, bias, scale: float, upcast: bool = False) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias)·v in one block."""
    return torch.bmm(_scores(q, k, bias, scale, upcast).softmax(dim=-1).to(v.dtype), v)


def _bias_rows(bias, start: int, end: int):
    return None if bias is None else bias[start:end] if bias.shape[0] > 1 else bias


def _bias_queries(bias, start: int, end: int):
    return None if bias is None else bias[:, start:end] if bias.shape[1] > 1 else bias


def attention_query_slices(q, k, v, bias, scale: float, slice_size: int, upcast: bool = False) -> torch.Tensor:
    """Attention over slices of `slice_size` queries (the last one may be shorter): memory for one
    block of slice_size × Lk scores at a time."""
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2], dtype=v.dtype)
    for start in range(0, q.shape[1], slice_size):
        end = min(start + slice_size, q.shape[1])
        out[:, start:end] = attention_whole(q[:, start:end], k, v, _bias_queries(bias, start, end), scale, upcast)
    return out


def attention_row_slices(q, k, v, bias, scale: float, slice_size: int, upcast: bool = False) -> torch.Tensor:
    """Attention over slices of `slice_size` (batch × head) rows."""
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2], dtype=v.dtype)
    for start in range(0, q.shape[0], slice_size):
        end = min(start + slice_size, q.shape[0])
        out[start:end] = attention_whole(q[start:end], k[start:end], v[start:end], _bias_rows(bias, start, end),
                                         scale, upcast)
    return out


def attention_chunked(q, k, v, bias, scale: float, q_chunk: int, kv_chunk: int, upcast: bool = False) -> torch.Tensor:
    """Sub-quadratic attention: for each chunk of `q_chunk` queries, the keys and values in chunks of
    `kv_chunk`, with a running maximum, normaliser and weighted sum (online softmax, Rabe & Staats
    2021, "Self-attention does not need O(n²) memory"), so only q_chunk × kv_chunk scores exist."""
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2], dtype=v.dtype)
    k_len = k.shape[1]
    for qs in range(0, q.shape[1], q_chunk):
        qe = min(qs + q_chunk, q.shape[1])
        q_part, q_bias = q[:, qs:qe], _bias_queries(bias, qs, qe)
        if kv_chunk >= k_len:
            out[:, qs:qe] = attention_whole(q_part, k, v, q_bias, scale, upcast)
            continue
        peak = total = acc = None
        for ks in range(0, k_len, kv_chunk):
            ke = min(ks + kv_chunk, k_len)
            s = _scores(q_part, k[:, ks:ke], None if q_bias is None else q_bias[..., ks:ke], scale, upcast)
            chunk_peak = s.amax(dim=-1, keepdim=True)
            new_peak = chunk_peak if peak is None else torch.maximum(peak, chunk_peak)
            new_peak = torch.where(torch.isfinite(new_peak), new_peak, torch.zeros_like(new_peak))  # rows fully masked
            w = torch.exp(s - new_peak)
            part = torch.bmm(w.to(v.dtype), v[:, ks:ke]).to(w.dtype)
            if peak is None:
                total, acc = w.sum(dim=-1, keepdim=True), part
            else:
                carry = torch.exp(peak - new_peak)
                total = total * carry + w.sum(dim=-1, keepdim=True)
                acc = acc * carry + part
            peak = new_peak
        out[:, qs:qe] = (acc / total).to(v.dtype)
    return out


# --- processors --------------------------------------------------------------------------------------


class SdpNoMemAttnProcessor(AttnProcessor2_0):
    """diffusers' SDPA processor with the memory-efficient kernel excluded (flash and math only)."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


@dataclass(frozen=True)
class SplitAttnProcessor:
    """A diffusers attention processor computing attention with one of the split methods ("Doggettx",
    "V1", "InvokeAI", "sub-quadratic"). It does what diffusers' processors do around the attention
    (spatial → sequence for the VAE's (B, C, H, W) input, group norm, projections, mask, residual,
    output rescale) and computes the attention itself with `attention_*` above."""

    method: str
    q_chunk_size: int = 1024
    kv_chunk_size: int | None = None
    chunk_threshold: float | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.shape if hidden_states.ndim == 4 else None
        if spatial is not None:  # the VAE's attention: (B, C, H, W) → (B, H·W, C)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, k_len = context.shape[0], context.shape[1]
        bias = None
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask, k_len, batch)
            if bias.dtype == torch.bool:
                bias = torch.zeros_like(bias, dtype=hidden_states.dtype).masked_fill(~bias, -math.inf)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        upcast = bool(attn.upcast_attention or attn.upcast_softmax)
        out = self.attend(q, k, v, bias, attn.scale, upcast)
        hidden_states = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))

        if spatial is not None:
            hidden_states = hidden_states.transpose(1, 2).reshape(spatial)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def attend(self, q, k, v, bias, scale: float, upcast: bool) -> torch.Tensor:
        """Attention on (rows, L, D) tensors by this processor's method."""
        rows, q_len, k_len = q.shape[0], q.shape[1], k.shape[1]
        element_size = 4 if upcast else q.element_size()
        if self.method == "Doggettx":
            steps = doggettx_steps(rows, q_len, k_len, element_size, available_memory(q.device))
            return attention_query_slices(q, k, v, bias, scale, -(-q_len // steps), upcast)
        if self.method == "V1":
            return attention_row_slices(q, k, v, bias, scale, 2, upcast)
        if self.method == "InvokeAI":
            kind, size = invokeai_plan(rows, q_len, k_len, element_size, invokeai_budget_mb(q.device))
            if kind == "rows":
                return attention_row_slices(q, k, v, bias, scale, size, upcast)
            if kind == "query":
                return attention_query_slices(q, k, v, bias, scale, size, upcast)
            return attention_whole(q, k, v, bias, scale, upcast)
        if self.method == "sub-quadratic":
            kv_chunk = sub_quad_kv_chunk(rows, q_len, k_len, q.shape[2], v.shape[2], element_size, self.kv_chunk_size,
                                         self.chunk_threshold, available_memory(q.device))
            return attention_chunked(q, k, v, bias, scale, max(1, self.q_chunk_size), kv_chunk, upcast)
        raise ValueError(f"unknown attention method {self.method!r}")


def make_processor(name: str, cmd_opts: Any = None) -> Any:
    """A processor instance for implementation `name` (the sub-quadratic chunk flags read from
    `cmd_opts`)."""
    if name == DEFAULT:
        return AttnProcessor2_0()
    if name == "sdp-no-mem":
        return SdpNoMemAttnProcessor()
    if name == NONE:
        return AttnProcessor()
    if name == "sub-quadratic":
        return SplitAttnProcessor(name, q_chunk_size=int(getattr(cmd_opts, "sub_quad_q_chunk_size", None) or 1024),
                                  kv_chunk_size=getattr(cmd_opts, "sub_quad_kv_chunk_size", None),
                                  chunk_threshold=getattr(cmd_opts, "sub_quad_chunk_threshold", None))
    if name in ("Doggettx", "V1", "InvokeAI"):
        return SplitAttnProcessor(name)
    raise ValueError(f"unknown attention implementation {name!r}")


def _same(current: Any, wanted: Any) -> bool:
    return type(current) is type(wanted) and getattr(current, "__dict__", None) == getattr(wanted, "__dict__", None)


def set_processor(module: Any, processor: Any) -> bool:
    """Put `processor` on every attention layer of `module` (a diffusers model), unless they all have
    an equal one already; False when `module` has no attention layers."""
    if module is None or not hasattr(module, "set_attn_processor"):
        return False
    current = list(module.attn_processors.values())
    if not current:
        return False
    if not all(_same(p, processor) for p in current):
        module.set_attn_processor(processor)
    return True


_xformers_logged = False


def _log_xformers_once(cmd_opts: Any) -> None:
    global _xformers_logged
    if getattr(cmd_opts, "xformers", False) and not _xformers_logged:
        _xformers_logged = True
        log.info("--xformers: Serena has no xformers; attention uses PyTorch's scaled_dot_product_attention")


def apply(model: Any, name: str | None = None) -> str:
    """Set attention implementation `name` (a name or title; when None, the one `choose` picks from
    `shared.opts.cross_attention_optimization` and `shared.cmd_opts`) on `model.unet` and
    `model.vae`; return its name. Idempotent; parts that are missing or have no attention are skipped."""
    from modules import shared
    cmd_opts = getattr(shared, "cmd_opts", None)
    if name is None:
        name = choose(cmd_opts, getattr(getattr(shared, "opts", None), "cross_attention_optimization", AUTOMATIC))
        _log_xformers_once(cmd_opts)
    else:
        name = resolve(name) or choose(cmd_opts, AUTOMATIC)
    if name == DEFAULT and not sdpa_available():
        name = NONE
    processor = make_processor(name, cmd_opts)
    for part in ("unet", "vae"):
        set_processor(getattr(model, part, None), processor)
    return name


def current(model: Any) -> str | None:
    """The implementation set on every attention layer of `model.unet` (by name), or None when it is
    none of these (an extension's processors, a mix, or no UNet)."""
    unet = getattr(model, "unet", None)
    procs = list(getattr(unet, "attn_processors", {}).values()) if unet is not None else []
    if not procs or any(not _same(p, procs[0]) for p in procs):
        return None
    known = {AttnProcessor2_0: DEFAULT, SdpNoMemAttnProcessor: "sdp-no-mem", AttnProcessor: NONE}
    p = procs[0]
    return p.method if type(p) is SplitAttnProcessor else known.get(type(p))
