"""Batching of queued requests (issue 13, option `jobs_batch_requests`): which requests group, the
UNet-call rendezvous (merged only where bit-identical), and queued jobs on the demo model whose
images stay byte-identical to the same jobs run alone.
"""
from __future__ import annotations

import threading
import time

import pytest
import torch

from modules.runtime import executors, unet_batching
from modules.runtime.job_service import JobService, batch_limit
from modules.runtime.job_store import DONE, INTERRUPTED, JobStore
from job_helpers import golden_bytes, golden_request, options_set, prepared, wait_status

GOLDEN = "txt2img-euler-64"


# --- which requests may share a group (pure) ------------------------------------------------------------------
def _request(**fields) -> dict:
    base = {"prompt": "a red apple", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 6,
            "seed": 1, "sampler_name": "Euler", "scheduler": None, "cfg_scale": 7.0, "batch_size": 1, "n_iter": 1,
            "override_settings": {"add_version_to_infotext": False}, "script_name": None, "script_args": [],
            "alwayson_scripts": {}, "styles": None, "refiner_checkpoint": None}
    return {**base, **fields}


def key(request: dict, kind: str = "txt2img", checkpoint: str | None = "demo") -> str | None:
    return unet_batching.request_key(kind, request, checkpoint)


def test_requests_that_differ_only_in_prompts_and_seeds_share_a_key():
    base = key(_request())
    assert base is not None
    assert key(_request(prompt="a green pear on a plate", negative_prompt="", seed=99, subseed=3,
                        subseed_strength=0.5, save_images=True, force_task_id="task(x)")) == base


@pytest.mark.parametrize("change", [
    {"steps": 7}, {"width": 96}, {"height": 96}, {"sampler_name": "Heun"}, {"scheduler": "Karras"},
    {"cfg_scale": 5.0}, {"batch_size": 2}, {"n_iter": 2}, {"enable_hr": True}, {"hr_scale": 1.5},
    {"denoising_strength": 0.3}, {"override_settings": {"add_version_to_infotext": True}},
    {"override_settings": {}}, {"tiling": True},
])
def test_requests_that_change_the_unet_calls_or_settings_do_not_group(change):
    assert key(_request(**change)) != key(_request())


def test_other_kind_or_checkpoint_does_not_group():
    assert key(_request(), kind="img2img") != key(_request())
    assert key(_request(), checkpoint="other") != key(_request())


@pytest.mark.parametrize("change", [
    {"prompt": "an apple <lora:shiny:0.8>"}, {"negative_prompt": ["ok", "<hypernet:h:1>"]},
    {"hr_prompt": "<lyco:x:1> pear"}, {"script_name": "x/y/z plot"}, {"script_args": [1]},
    {"alwayson_scripts": {"soft inpainting": {"args": [True]}}}, {"styles": ["cinematic"]},
    {"refiner_checkpoint": "sdxl-refiner"}, {"hr_checkpoint_name": "other.safetensors"},
    {"override_settings_restore_afterwards": False},
])
def test_requests_that_patch_or_switch_the_shared_model_never_group(change):
    assert key(_request(**change)) is None
    assert key(_request(refiner_checkpoint="None", hr_checkpoint_name="Use same checkpoint")) is not None


# --- the rendezvous, with small stand-in UNets --------------------------------------------------------------
class BatchInvariantUNet(torch.nn.Module):
    """Elementwise maths only: each output row depends on its own input rows, whatever the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        self.batch_sizes.append(x.shape[0])
        out = torch.tanh(x * 1.7) + t.view(-1, 1, 1, 1) * 1e-3 + encoder_hidden_states[:, 0, 0].view(-1, 1, 1, 1)
        return (out,)


class FakeBatchVariantKernel(BatchInvariantUNet):
    """A fake of a kernel that rounds differently for another batch size: the output moves by a
    tiny amount that depends on how many rows are computed together."""

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        (out,) = super().forward(x, t, encoder_hidden_states)
        return (out + x.shape[0] * 1e-6,)


def _inputs(seed: int, steps: int, rows: int = 2, size: int = 8) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 4, size, size, generator=g), torch.full((rows,), 900.0 - 100 * i),
             torch.randn(rows, 5, 16, generator=g)) for i in range(steps)]


def _lone(unet, calls) -> list[torch.Tensor]:
    return [unet(x, t, encoder_hidden_states=c)[0] for x, t, c in calls]


def run_members(group: unet_batching.BatchGroup, unet, calls: dict[str, list[tuple]]) -> dict[str, list[torch.Tensor]]:
    """Each member's calls through `forward`, one thread per member (as a batch group's jobs run)."""
    results: dict[str, list[torch.Tensor]] = {}
    failures: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with unet_batching.member(group, name):
                results[name] = [unet_batching.forward(unet, x, t, encoder_hidden_states=c) for x, t, c in calls[name]]
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(e)
    threads = [threading.Thread(target=work, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    return results


def test_outside_a_group_forward_is_the_plain_call():
    unet = BatchInvariantUNet()
    (x, t, c), = _inputs(0, 1)
    plain = unet(x, t, encoder_hidden_states=c)[0]
    assert torch.equal(unet_batching.forward(unet, x, t, encoder_hidden_states=c), plain)
    assert unet.batch_sizes == [2, 2]


def test_a_batch_invariant_unet_is_checked_once_then_merged():
    unet, cache = BatchInvariantUNet(), unet_batching.Verdicts()
    calls = {"a": _inputs(1, 4), "b": _inputs(2, 4)}
    expected = {name: _lone(BatchInvariantUNet(), c) for name, c in calls.items()}
    group = unet_batching.BatchGroup(["a", "b"], first_wait_s=30, min_wait_s=30, cache=cache)
    results = run_members(group, unet, calls)
    for name in calls:
        assert all(torch.equal(r, e) for r, e in zip(results[name], expected[name], strict=True))
    # first round: merged (4 rows) and each member alone (the check); then merged only
    assert unet.batch_sizes == [4, 2, 2, 4, 4, 4]
    (verdict,) = cache.of(unet)
    assert verdict.batchable and verdict.batch_sizes == (2, 2)


def test_a_batch_variant_kernel_is_never_merged_and_every_result_is_the_lone_one():
    unet, cache = FakeBatchVariantKernel(), unet_batching.Verdicts()
    calls = {"a": _inputs(3, 4), "b": _inputs(4, 4)}
    expected = {name: _lone(FakeBatchVariantKernel(), c) for name, c in calls.items()}
    group = unet_batching.BatchGroup(["a", "b"], first_wait_s=30, min_wait_s=30, cache=cache)
    results = run_members(group, unet, calls)
    for name in calls:
        assert all(torch.equal(r, e) for r, e in zip(results[name], expected[name], strict=True))
    assert unet.batch_sizes.count(4) == 1, "only the check merged; later calls ran alone"
    assert unet.batch_sizes.count(2) == 2 + 2 * 3
    (verdict,) = cache.of(unet)
    assert not verdict.batchable
    # a new group on the same UNet knows the verdict: it never merges
    unet.batch_sizes.clear()
    run_members(unet_batching.BatchGroup(["a", "b"], first_wait_s=30, min_wait_s=30, cache=cache), unet, calls)
    assert 4 not in unet.batch_sizes


def test_nobody_waits_for_a_member_that_left_or_calls_with_another_shape():
    unet, cache = BatchInvariantUNet(), unet_batching.Verdicts()
    group = unet_batching.BatchGroup(["a", "b", "gone"], first_wait_s=30, min_wait_s=30, cache=cache)
    group.leave("gone")  # e.g. failed before its first step
    calls = {"a": _inputs(5, 2), "b": _inputs(6, 2)}
    start = time.monotonic()
    results = run_members(group, unet, calls)
    assert time.monotonic() - start < 10, "waited for the member that left"
    assert 4 in unet.batch_sizes
    assert all(torch.equal(r, e) for r, e in zip(results["a"], _lone(BatchInvariantUNet(), calls["a"])))

    unet = BatchInvariantUNet()
    shapes = {"a": _inputs(7, 2, size=8), "b": _inputs(8, 2, size=16)}
    group = unet_batching.BatchGroup(["a", "b"], first_wait_s=30, min_wait_s=30, cache=cache)
    start = time.monotonic()
    results = run_members(group, unet, shapes)
    assert time.monotonic() - start < 10, "waited out the bound for an incompatible call"
    assert unet.batch_sizes == [2, 2, 2, 2]
    for name in shapes:
        assert all(torch.equal(r, e) for r, e in zip(results[name], _lone(BatchInvariantUNet(), shapes[name])))
    assert cache.of(unet) == []


# --- queued jobs on the demo model -------------------------------------------------------------------------------
@pytest.fixture()
def defaults(serena):
    from golden import harness
    with harness.default_options():
        yield


@pytest.fixture()
def service(tmp_path, serena):
    made = JobService(JobStore(str(tmp_path / "jobs")), executors.InProcessExecutor()).start()
    yield made
    made.stop()
    made.store.close()


def watch_together(service: JobService) -> dict[str, set[str]]:
    """For each job: every job that was running while it reported a step."""
    seen: dict[str, set[str]] = {}

    def on_event(event) -> None:
        if event.type == "progress" and event.data.get("kind") == "step":
            seen.setdefault(event.job_id, set()).update(service.running_ids())
    service.subscribe("*", on_event)
    return seen


def unet_batch_sizes(serena) -> tuple[list[int], object, object]:
    """Record the batch size of every call of the loaded model's UNet."""
    unet = serena.sd_model.unet
    sizes: list[int] = []
    handle = unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes, unet, handle


def test_compatible_queued_jobs_share_unet_calls_and_keep_their_lone_bytes(service, defaults, serena, monkeypatch):
    """Two compatible jobs queued while paused run as one group (at once, UNet calls merged at least
    for the check); each PNG equals the same job run alone. A job with other steps is not grouped."""
    monkeypatch.setattr(unet_batching, "FIRST_WAIT_S", 60.0)  # the merge must not depend on timing here
    monkeypatch.setattr(unet_batching, "MIN_WAIT_S", 60.0)
    golden = prepared("txt2img", golden_request(GOLDEN))
    other = prepared("txt2img", {**golden_request(GOLDEN), "prompt": "a green pear on a plate", "seed": 77})
    fewer_steps = prepared("txt2img", {**golden_request(GOLDEN), "steps": 4})
    unet_batching.verdicts.clear()
    checked_before = unet_batching.stats.checked
    sizes, unet, handle = unet_batch_sizes(serena)
    together = watch_together(service)
    try:
        with options_set(jobs_batch_requests=True):
            service.pause()
            a = service.submit("txt2img", golden).id
            b = service.submit("txt2img", other).id
            c = service.submit("txt2img", fewer_steps).id
            service.resume()
            assert [wait_status(service, job) for job in (a, b, c)] == [DONE, DONE, DONE]
    finally:
        handle.remove()
    assert together[a] == {a, b} and together[b] == {a, b}, together
    assert together[c] == {c}, "the job with other steps ran in the group"
    lone_rows = min(sizes)
    assert 2 * lone_rows in sizes, f"no merged UNet call: {sizes}"
    verdicts = unet_batching.verdicts.of(unet)
    assert verdicts and unet_batching.stats.checked > checked_before, "no verdict was reached"
    print(f"\ndemo model verdicts on this machine: {[(v.batch_sizes, v.batchable) for v in verdicts]}; "
          f"UNet calls by batch size: { {n: sizes.count(n) for n in sorted(set(sizes))} }")
    assert [data for _, data in service.result_files(a)] == golden_bytes(GOLDEN)
    alone = service.run("txt2img", other).images  # the option is off again: the same job alone
    assert [data for _, data in service.result_files(b)] == alone


def test_interrupting_one_member_leaves_the_other_byte_identical(service, defaults):
    golden = prepared("txt2img", golden_request(GOLDEN))
    other = prepared("txt2img", {**golden_request(GOLDEN), "prompt": "a green pear", "seed": 5})
    together = watch_together(service)
    with options_set(jobs_batch_requests=True):
        service.pause()
        a = service.submit("txt2img", golden).id
        b = service.submit("txt2img", other).id
        service.subscribe(b, lambda e: e.type == "progress" and e.data.get("step") == 2 and service.cancel(b))
        service.resume()
        assert wait_status(service, b) == INTERRUPTED
        assert wait_status(service, a) == DONE
    assert together[a] >= {a, b}
    assert service.get(b).error == "interrupted"
    assert [data for _, data in service.result_files(a)] == golden_bytes(GOLDEN)


def test_with_the_option_off_queued_jobs_run_one_at_a_time(service, defaults, serena):
    request = prepared("txt2img", {**golden_request(GOLDEN), "steps": 2})
    assert batch_limit(service.executor) == 1
    sizes, _, handle = unet_batch_sizes(serena)
    together = watch_together(service)
    try:
        service.pause()
        ids = [service.submit("txt2img", request).id for _ in range(2)]
        service.resume()
        assert [wait_status(service, job) for job in ids] == [DONE, DONE]
    finally:
        handle.remove()
    assert all(together[job] == {job} for job in ids), together
    assert len(set(sizes)) == 1, f"a merged UNet call with the option off: {sizes}"
    with options_set(jobs_batch_requests=True):
        assert batch_limit(service.executor) == 4
        assert batch_limit(object()) == 1  # an executor that does not batch (Ray)
