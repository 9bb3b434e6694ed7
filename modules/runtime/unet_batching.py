"""Opt-in batching of UNet calls across queued jobs that run together (issue 13, option
`jobs_batch_requests`).

Why a rendezvous and not one big `p`: every job keeps its own whole pipeline — its own `p`, prompts,
seeds, scripts hooks, infotext, saving and run context — so its PNG and infotext are what it would
be alone. Only the UNet evaluations are merged. The job service runs the jobs of a *batch group*
concurrently, one thread each (`InProcessExecutor`); :func:`forward`, which
`StableDiffusionModel.apply_model` calls for every UNet evaluation, is where they meet:

- outside a group (the default, and every test golden) it is exactly
  ``unet(x, t, return_dict=False, **kwargs)[0]``;
- inside one, a call waits for the group's other live members to arrive; the calls that fit
  together (same UNet object, same shapes but the batch dimension, same dtypes and devices, same
  keyword names — :func:`call_key`) are run as ONE call on the concatenated inputs by whichever
  thread closed the round, and each member gets its slice.

Byte identity is checked, not assumed: a batched matmul may round differently from separate ones,
and what decides it is the kernels chosen for the shapes, not the values. So the first merged call
of each *signature* (call key + the members' batch sizes, in member order) also runs every member
alone; when every slice equals its lone result bit for bit (`torch.equal`) the signature is
batchable and later calls merge, otherwise the lone results are used — no job ever gets a different
result — and later calls of that shape in the group run alone without waiting. Verdicts are kept per
UNet (weakly) in a bounded cache and logged once each.

Liveness: a member leaves the group when its job ends (done, failed, interrupted); nobody waits for
a member that left, nor for one running a call alone. A short wait bound (a safety net that only
costs speed) closes a round with whoever has arrived. Results never depend on timing.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

log = logging.getLogger(__name__)

FIRST_WAIT_S = 5.0
"""How long a member waits for the others at the group's first UNet call (they start together but
encode prompts at their own pace)."""
MIN_WAIT_S = 0.05
"""The shortest wait later on; the bound is twice the group's latest UNet call, at least this: a
member that takes longer than that to arrive is busy elsewhere (decoding, saving)."""
VERDICTS_KEPT = 256


def _call(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """One plain UNet evaluation (what a job computes alone)."""
    return unet(x, t, return_dict=False, **kwargs)[0]


@dataclass(frozen=True)
class _Membership:
    group: "BatchGroup"
    name: str


_member: contextvars.ContextVar[_Membership | None] = contextvars.ContextVar("serena_unet_batch", default=None)


def forward(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The UNet's output for `x` at timesteps `t` (`kwargs`: encoder_hidden_states, class_labels).

    Outside a batch group: ``unet(x, t, return_dict=False, **kwargs)[0]``. Inside one (the calling
    thread runs a member, see :func:`member`): possibly computed as part of one merged call, with a
    result bit-identical to the plain call.
    """
    joined = _member.get()
    if joined is None:
        return _call(unet, x, t, kwargs)
    return joined.group.forward(joined.name, unet, x, t, kwargs)


@contextlib.contextmanager
def member(group: "BatchGroup", name: str) -> Iterator[None]:
    """Run the block (one job) as member `name` of `group`; it leaves the group when the block ends,
    however it ends, so the others stop waiting for it."""
    token = _member.set(_Membership(group, name))
    try:
        yield
    finally:
        _member.reset(token)
        group.leave(name)


# --- which calls fit together ----------------------------------------------------------------------------
def _thread_modes(device: torch.device) -> tuple:
    """Per-thread torch modes the merged call runs under (the closing thread's): members must share them."""
    kind = device.type
    return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled(kind),
            torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None)


def call_key(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> tuple | None:
    """What two UNet calls must share to be merged: the UNet object, every input's shape past the
    batch dimension, dtypes, devices, keyword names and the thread's grad/autocast modes. None
    when this call cannot be merged at all (`t` or a keyword tensor not one row per sample, or a
    keyword value that is not a tensor)."""
    n = x.shape[0]
    if t.ndim != 1 or t.shape[0] != n:
        return None
    extra = []
    for name in sorted(kwargs):
        value = kwargs[name]
        if value is None:
            extra.append((name, None))
        elif isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
            extra.append((name, tuple(value.shape[1:]), value.dtype, value.device))
        else:
            return None
    return (id(unet), tuple(x.shape[1:]), x.dtype, x.device, t.dtype, t.device, tuple(extra), _thread_modes(x.device))


Parts = list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]


def merged_call(unet: torch.nn.Module, parts: Parts) -> list[torch.Tensor]:
    """Run `(x, t, kwargs)` calls of one :func:`call_key` as one UNet call; each call's rows of the
    output, in order (copies: they outlive the merged tensor)."""
    x = torch.cat([p[0] for p in parts])
    t = torch.cat([p[1] for p in parts])
    kwargs = {name: None if parts[0][2][name] is None else torch.cat([p[2][name] for p in parts])
              for name in parts[0][2]}
    out = _call(unet, x, t, kwargs)
    return [rows.clone() for rows in torch.split(out, [p[0].shape[0] for p in parts])]


# --- verdicts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Whether merged calls of one signature gave every member its lone result bit for bit."""

    signature: tuple
    batch_sizes: tuple[int, ...]
    batchable: bool


class Verdicts:
    """Bounded cache of verdicts per UNet (held weakly: a freed model takes its verdicts along)."""

    def __init__(self, limit: int = VERDICTS_KEPT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._by_unet: weakref.WeakKeyDictionary[torch.nn.Module, collections.OrderedDict[tuple, Verdict]] = \
            weakref.WeakKeyDictionary()

    def get(self, unet: torch.nn.Module, signature: tuple) -> bool | None:
        with self._lock:
            found = self._by_unet.get(unet, {}).get(signature)
            return None if found is None else found.batchable

    def put(self, unet: torch.nn.Module, signature: tuple, batch_sizes: tuple[int, ...], batchable: bool) -> None:
        with self._lock:
            known = self._by_unet.setdefault(unet, collections.OrderedDict())
            known[signature] = Verdict(signature, batch_sizes, batchable)
            while len(known) > self.limit:
                known.popitem(last=False)

    def of(self, unet: torch.nn.Module) -> list[Verdict]:
        """The verdicts known for `unet`, oldest first."""
        with self._lock:
            return list(self._by_unet.get(unet, {}).values())

    def clear(self) -> None:
        with self._lock:
            self._by_unet.clear()


verdicts = Verdicts()


@dataclass
class Stats:
    """Counters for tests and logs: `merged` merged UNet calls whose slices were used, `checked`
    signatures checked against lone calls, `alone` calls a member ran alone inside a group."""

    merged: int = 0
    checked: int = 0
    alone: int = 0


stats = Stats()
_stats_lock = threading.Lock()


def _count(name: str) -> None:
    with _stats_lock:
        setattr(stats, name, getattr(stats, name) + 1)


# --- the rendezvous ------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Call:
    """One member's pending UNet call. `result` after `done`: its output, or None (run it alone)."""

    member: str
    key: tuple
    unet: torch.nn.Module
    x: torch.Tensor
    t: torch.Tensor
    kwargs: dict[str, Any]
    taken: bool = False
    result: torch.Tensor | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def resolve(self, result: torch.Tensor | None) -> None:
        self.result = result
        self.done.set()


class BatchGroup:
    """The jobs of one batch group; their threads meet in :meth:`forward`. Thread-safe.

    Members are named up front (all live until they :meth:`leave`), so an early member waits for a
    late starter instead of running its first calls alone.
    """

    def __init__(self, members: Iterable[str], *, first_wait_s: float | None = None,
                 min_wait_s: float | None = None, cache: Verdicts | None = None) -> None:
        self.members = tuple(members)
        self._order = {name: i for i, name in enumerate(self.members)}
        self._first_wait_s = FIRST_WAIT_S if first_wait_s is None else first_wait_s
        self._min_wait_s = MIN_WAIT_S if min_wait_s is None else min_wait_s
        self._verdicts = verdicts if cache is None else cache
        self._cond = threading.Condition()
        self._live = set(self.members)
        self._posted: dict[str, _Call] = {}  # the open round's calls
        self._solo_now: set[str] = set()  # members inside a call they run without the rendezvous
        self._solo_keys: set[tuple] = set()  # call keys this group runs alone (not batchable)
        self._last_call_s: float | None = None

    def leave(self, name: str) -> None:
        """Member `name` is done: nobody waits for it any more."""
        with self._cond:
            self._live.discard(name)
            self._cond.notify_all()

    def close(self) -> None:
        """Every member is done."""
        with self._cond:
            self._live.clear()
            self._cond.notify_all()

    def forward(self, name: str, unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor,
                kwargs: dict[str, Any]) -> torch.Tensor:
        """Member `name`'s UNet call, merged with the others' where that is bit-identical."""
        key = call_key(unet, x, t, kwargs)
        with self._cond:
            meet = key is not None and key not in self._solo_keys and name in self._live and len(self._live) > 1
            if not meet:
                self._solo_now.add(name)
                self._cond.notify_all()
        if not meet:
            try:
                return self._timed(lambda: _call(unet, x, t, kwargs))
            finally:
                with self._cond:
                    self._solo_now.discard(name)
                    self._cond.notify_all()
        call = _Call(name, key, unet, x, t, kwargs)
        round_calls = self._arrive(call)
        if round_calls is not None:
            self._serve(round_calls)
        call.done.wait()
        if call.result is not None:
            return call.result
        _count("alone")
        return self._timed(lambda: _call(unet, x, t, kwargs))

    # --- steps of a round --------------------------------------------------------------------------
    def _wait_bound(self) -> float:
        if self._last_call_s is None:
            return self._first_wait_s
        return max(self._min_wait_s, 2.0 * self._last_call_s)

    def _ready(self) -> bool:
        """Every live member has posted a call or is running one alone."""
        return all(m in self._posted or m in self._solo_now for m in self._live)

    def _arrive(self, call: _Call) -> list[_Call] | None:
        """Post `call`; return the round's calls if this thread closes the round (all live members
        arrived, or the wait bound passed), None if another thread took it."""
        with self._cond:
            self._posted[call.member] = call
            self._cond.notify_all()
            deadline = time.monotonic() + self._wait_bound()
            while not call.taken:
                left = deadline - time.monotonic()
                if self._ready() or left <= 0:
                    return self._take()
                self._cond.wait(left)
            return None

    def _take(self) -> list[_Call]:
        """Close the open round (caller holds the lock): its calls in member order."""
        calls = sorted(self._posted.values(), key=lambda c: self._order.get(c.member, len(self._order)))
        self._posted.clear()
        for c in calls:
            c.taken = True
        self._cond.notify_all()
        return calls

    def _serve(self, calls: list[_Call]) -> None:
        """Resolve a closed round: lone calls go back to their threads at once, calls that fit
        together are merged here."""
        parts: dict[tuple, list[_Call]] = {}
        for c in calls:
            parts.setdefault(c.key, []).append(c)
        for same in parts.values():
            if len(same) == 1:
                same[0].resolve(None)
        for same in parts.values():
            if len(same) > 1:
                self._serve_merged(same)

    def _serve_merged(self, calls: list[_Call]) -> None:
        results: list[torch.Tensor | None] = [None] * len(calls)
        try:
            results = self._merged_results(calls)
        except Exception:  # noqa: BLE001 - a failed merge costs speed only: each member runs its own call
            log.warning("merged UNet call failed; the jobs run their calls alone", exc_info=True)
        finally:
            for c, r in zip(calls, results):
                c.resolve(r)

    def _merged_results(self, calls: list[_Call]) -> list[torch.Tensor | None]:
        """Each call's output from one merged call, when its signature is known batchable; the lone
        results when it is being checked; None each (run alone) when it is known not batchable."""
        unet, key = calls[0].unet, calls[0].key
        sizes = tuple(c.x.shape[0] for c in calls)
        signature = (key[1:], sizes)
        verdict = self._verdicts.get(unet, signature)
        if verdict is False:
            self._run_alone_from_now(key)
            return [None] * len(calls)
        merged = self._timed(lambda: merged_call(unet, [(c.x, c.t, c.kwargs) for c in calls]))
        if verdict:
            _count("merged")
            return list(merged)
        alone = [_call(unet, c.x, c.t, c.kwargs) for c in calls]
        batchable = all(torch.equal(a, b) for a, b in zip(merged, alone))
        self._verdicts.put(unet, signature, sizes, batchable)
        _count("checked")
        log.info("UNet batching: %d calls of shape %s (batch sizes %s, %s) %s", len(calls), tuple(calls[0].x.shape[1:]),
                 sizes, calls[0].x.dtype, "merge bit-identically: batched from now on" if batchable
                 else "differ when merged: run alone")
        if not batchable:
            self._run_alone_from_now(key)
        return alone

    def _run_alone_from_now(self, key: tuple) -> None:
        with self._cond:
            self._solo_keys.add(key)
            self._cond.notify_all()

    def _timed(self, fn: Any) -> Any:
        start = time.monotonic()
        out = fn()
        self._last_call_s = time.monotonic() - start
        return out


# --- which queued requests may run as one group ---------------------------------------------------------------
MAY_DIFFER = frozenset({
    "prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt", "seed", "subseed", "subseed_strength",
    "seed_resize_from_h", "seed_resize_from_w", "init_images", "mask", "comments", "force_task_id",
    "send_images", "save_images",
})
"""Request fields that change the data a job computes with, not which UNet calls it makes nor how it
patches the shared model. Every other field must be equal for two jobs to share a group."""
_PROMPT_FIELDS = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
_SAME_CHECKPOINT = (None, "", "None", "Use same checkpoint")


def _has_extra_networks(value: Any) -> bool:
    """`<lora:…>`-style tags in a prompt (or list of prompts): networks patch the shared weights per job."""
    from modules.extra_networks import re_extra_net
    texts = value if isinstance(value, list) else [value]
    return any(isinstance(text, str) and re_extra_net.search(text) for text in texts)


def groupable(request: dict[str, Any]) -> bool:
    """Whether a request may run in a group at all: no selectable or always-on scripts (they may
    patch the model per job), no styles (their text, read at run time, may add networks), no
    extra-network tags, no refiner or hires checkpoint (they switch the shared model mid-job), no
    `override_settings` kept afterwards (setting an option globally may run a hook that waits for
    the queue, which the group holds)."""
    if request.get("script_name") or request.get("script_args") or request.get("alwayson_scripts"):
        return False
    if request.get("styles"):
        return False
    if request.get("override_settings") and request.get("override_settings_restore_afterwards") is False:
        return False
    if any(request.get(name) not in _SAME_CHECKPOINT for name in ("refiner_checkpoint", "hr_checkpoint_name")):
        return False
    return not any(_has_extra_networks(request.get(name)) for name in _PROMPT_FIELDS)


def request_key(kind: str, request: dict[str, Any], checkpoint: str | None) -> str | None:
    """Jobs whose keys are equal (and not None) may run as one batch group: same kind, checkpoint
    and every field outside :data:`MAY_DIFFER` (size, sampler, scheduler, steps, CFG, hires and
    batch settings, override_settings …). None: this request never joins a group (:func:`groupable`)."""
    if not groupable(request):
        return None
    rest = {name: value for name, value in request.items() if name not in MAY_DIFFER}
    return json.dumps([kind, checkpoint, rest], sort_keys=True, default=str)
