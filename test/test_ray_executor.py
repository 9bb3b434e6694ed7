"""The Ray executor: the job service running jobs on two Ray worker processes (CPU, torch 1 thread).

One local Ray instance and one service with two workers serve the whole module; each worker
initialises Serena with this session's flags and data folder (so it sees the same models and
options as the `serena` runtime of the test process, which plays the server). The two tests
that kill workers run last, in file order: the first leaves one worker, the second none.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
import ray

from serena_flags import TEST_FLAGS
from modules import errors, progress, sd_models, shared
from modules.runtime import context, job_service, jobs
from modules.runtime.executor_ray import WORKER_NICENESS_ENV, RayExecutor
from modules.runtime.executors import checkpoint_key
from modules.runtime.job_service import JobService
from modules.runtime.job_store import DONE, FAILED, INTERRUPTED, PENDING, JobStore
from job_helpers import golden_bytes, golden_request, prepared, wait_status


SECOND_CHECKPOINT = "serena-demo-b.safetensors"


def without_random_subseed(info: str) -> dict:
    """`Processed.js()` without what differs between two runs of one request: the subseed that
    subseed -1 draws at random (unused at subseed_strength 0) and the job's start time."""
    data = json.loads(info)
    for key in ("subseed", "all_subseeds", "job_timestamp"):
        data.pop(key)
    return data


def slow_request(steps: int = 150, seed: int = 7) -> dict:
    """A 192x192 txt2img of `steps` steps: seconds on one thread, long enough to act mid-job."""
    return prepared("txt2img", {"prompt": "a slow cube", "width": 192, "height": 192, "steps": steps, "seed": seed,
                                "sampler_name": "Euler"})


def when_step(service: JobService, job_id: str, step: int) -> threading.Event:
    """An event set once job `job_id` reported sampling step `step`."""
    reached = threading.Event()

    def on_event(event):
        if event.type == "progress" and event.data["kind"] == "step" and event.data["step"] >= step:
            reached.set()
    service.subscribe(job_id, on_event)
    return reached


def handle_of(executor: RayExecutor, name: str):
    return next(slot.handle for slot in executor.slots() if slot.name == name)


@pytest.fixture(scope="module")
def second_checkpoint(serena):
    """The demo checkpoint copied under a second name in the models folder, for the whole module."""
    folder = shared.data_paths.sd_model_dir
    path = os.path.join(folder, SECOND_CHECKPOINT)
    shutil.copyfile(os.path.join(folder, "serena-demo-tiny.safetensors"), path)
    sd_models.list_models()
    yield sd_models.get_checkpoint_info(SECOND_CHECKPOINT).title
    os.unlink(path)
    sd_models.list_models()


@pytest.fixture(scope="module")
def ray_service(serena, serena_data_dir, second_checkpoint, tmp_path_factory):
    """A started job service on two Ray workers (a local Ray instance with 2 CPUs)."""
    started = time.monotonic()
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")  # as RayExecutor does for a local instance of its own
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a failure here fails the module
    executor = RayExecutor(workers=2, worker_flags=["--data-dir", serena_data_dir, *TEST_FLAGS], torch_threads=1)
    service = JobService(JobStore(str(tmp_path_factory.mktemp("ray-jobs"))), executor).start()
    print(f"Ray and 2 workers ready in {time.monotonic() - started:.1f} s; worker init: "
          + ", ".join(f"{i['init_s']:.1f} s" for i in executor.worker_info.values()))
    yield service
    service.stop()
    service.store.close()
    ray.shutdown()


@pytest.fixture()
def defaults(serena):
    from golden import harness
    with harness.default_options():
        yield


def test_the_flags_choose_the_ray_executor_and_its_workers(serena):
    from modules import cmd_args
    flags = cmd_args.parse(["--executor", "ray", "--ray-workers", "3", "--ray-address", "auto", *TEST_FLAGS],
                           environ={})
    executor = job_service.make_executor(flags)
    assert isinstance(executor, RayExecutor) and executor.registers_tasks is False
    assert (executor.workers, executor.address, executor.worker_flags) == (3, "auto", flags)
    with pytest.raises(errors.InvalidParameter):
        RayExecutor(workers=0)


def test_workers_start_once_with_pinned_threads_and_the_demo_model(ray_service):
    infos = ray_service.executor.worker_info
    assert sorted(infos) == ["ray-0", "ray-1"]
    assert len({info["pid"] for info in infos.values()} | {os.getpid()}) == 3, "one process per worker"
    assert {info["torch_threads"] for info in infos.values()} == {1}
    selected = job_service.requested_checkpoint({})  # the server's selected checkpoint, loaded or not
    assert {checkpoint_key(info["checkpoint"]) for info in infos.values()} == {checkpoint_key(selected)}


def test_golden_request_through_ray_is_byte_identical_and_runs_the_runner_once(ray_service, defaults):
    """The same request, in this process and on the Ray workers: the same bytes (the golden ones),
    and each job called `ProcessingRunner.run` exactly once inside the worker that ran it."""
    request = prepared("txt2img", golden_request("txt2img-euler-64"))
    local = jobs.execute("task(ray-golden-local)", "txt2img", request)
    executor = ray_service.executor
    before = {slot.name: ray.get(slot.handle.test_hook_runner_calls.remote()) for slot in executor.slots()}
    outputs, workers = [], []
    for i in range(2):
        record = ray_service.submit("txt2img", request, job_id=f"task(ray-golden-{i})", keep_output=True)
        outputs.append(ray_service.wait(record.id, timeout=60))
        workers.append(ray_service.get(record.id).worker)
    after = {slot.name: ray.get(slot.handle.test_hook_runner_calls.remote()) for slot in executor.slots()}
    assert local.images == golden_bytes("txt2img-euler-64")
    for output in outputs:
        assert output.images == local.images
        assert output.infotexts == local.infotexts
        assert without_random_subseed(output.info) == without_random_subseed(local.info)
    ran = {name: after[name] - before[name] for name in after}
    assert ran == {name: workers.count(name) for name in ran}, (ran, workers)
    assert sum(ran.values()) == 2


def test_a_job_error_in_the_worker_keeps_its_type_and_field(ray_service, serena):
    request = {**prepared("txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2}), "width": 4096}
    with pytest.raises(errors.InvalidParameter) as raised:  # the sync API answers 422 naming the field
        ray_service.run("txt2img", request, job_id="task(ray-too-wide)")
    assert raised.value.field == "width" and raised.value.status_code == 422
    assert "width" in ray_service.get("task(ray-too-wide)").error


def test_cancel_interrupts_the_running_job_and_leaves_the_other_worker_alone(ray_service, defaults):
    ray_service.pause()
    slow = ray_service.submit("txt2img", slow_request(), job_id="task(ray-cancel-slow)")
    kept = ray_service.submit("txt2img", prepared("txt2img", golden_request("txt2img-euler-64")),
                              job_id="task(ray-cancel-kept)")
    started = when_step(ray_service, slow.id, 3)
    ray_service.resume()
    assert started.wait(60), "the slow job never reached step 3"
    assert len(ray_service.running_ids()) == 2 or ray_service.store.status_of(kept.id) == DONE
    ray_service.cancel(slow.id)
    assert wait_status(ray_service, slow.id) == INTERRUPTED
    assert wait_status(ray_service, kept.id) == DONE
    record = ray_service.get(slow.id)
    assert record.error == "interrupted" and record.worker != ray_service.get(kept.id).worker
    assert "Steps: 150" in record.result["infotexts"][0]
    assert len(ray_service.result_files(slow.id)) == 1, "the interrupted image is kept"
    assert [data for _, data in ray_service.result_files(kept.id)] == golden_bytes("txt2img-euler-64")
    assert all(slot.alive for slot in ray_service.executor.slots())


def test_jobs_go_to_the_worker_that_has_their_checkpoint_loaded(ray_service, serena, second_checkpoint):
    """A job asking for checkpoint B makes one worker switch to B; from then on every B job goes to
    that worker and every job on the default checkpoint to the other, with no more switches."""
    default, second = checkpoint_key(job_service.requested_checkpoint({})), checkpoint_key(second_checkpoint)
    base = {"prompt": "a cube", "width": 64, "height": 64, "steps": 2, "seed": 3}
    on_b = prepared("txt2img", {**base, "override_settings": {"sd_model_checkpoint": SECOND_CHECKPOINT}})
    on_default = prepared("txt2img", base)
    first = ray_service.run("txt2img", on_b, job_id="task(ray-affinity-first)")
    assert checkpoint_key(first.checkpoint) == second
    b_worker = ray_service.get("task(ray-affinity-first)").worker
    placed = {}
    for i, request in enumerate([on_default, on_b, on_default, on_b, on_b, on_default]):
        job_id = f"task(ray-affinity-{i})"
        output = ray_service.run("txt2img", request, job_id=job_id)
        placed[job_id] = (checkpoint_key(output.checkpoint), ray_service.get(job_id).worker)
    for checkpoint, worker in placed.values():
        assert checkpoint in (default, second)
        assert (worker == b_worker) == (checkpoint == second), placed
    slots = {slot.name: checkpoint_key(slot.checkpoint) for slot in ray_service.executor.slots()}
    assert slots[b_worker] == second and set(slots.values()) == {default, second}


def test_progress_events_arrive_in_order_with_previews_and_the_progress_routes_see_the_job(ray_service, serena):
    """Through `subscribe`: queued, started, progress with increasing steps, done last. While it
    runs, `/internal/progress` (`progress.progress_payload`) finds the job by its task id on the
    server, and a live preview made in the worker reaches the service."""
    from job_helpers import options_set
    job_id = "task(ray-progress)"
    events, seen_while_running = [], {}

    def on_event(event):
        events.append(event)
        if event.type == "progress" and event.data["kind"] == "step" and event.data["step"] == 50:
            seen_while_running["payload"] = progress.progress_payload(job_id)
            seen_while_running["context"] = context.find(job_id)
    ray_service.subscribe(job_id, on_event)
    with options_set(live_previews_enable=True, show_progress_every_n_steps=5):
        request = prepared("txt2img", {"prompt": "a cube", "width": 128, "height": 128, "steps": 60, "seed": 11,
                                       "sampler_name": "Euler"})
        ray_service.run("txt2img", request, job_id=job_id)
        preview_seen = seen_while_running.get("payload", {}).get("live_preview")
    types = [e.type for e in events]
    assert types[0] == "queued" and types[1] == "started" and types[-1] == "done"
    assert set(types[2:-1]) == {"progress"}
    steps = [e.data["step"] for e in events if e.type == "progress" and e.data["kind"] == "step"]
    assert steps == list(range(1, 61))
    payload = seen_while_running["payload"]
    assert payload["active"] and 0.8 < payload["progress"] < 0.9
    assert seen_while_running["context"] is not None and seen_while_running["context"].task_id == job_id
    assert preview_seen and preview_seen.startswith("data:image/png;base64,")


def test_the_event_stream_of_a_ray_job_reports_its_progress_in_order(ray_service, serena, monkeypatch):
    """`/serena/v1/jobs/{id}/events` over a real server whose job service runs on the Ray workers:
    started, the progress events in order with live previews made in the worker, done last."""
    import socket

    import httpx
    from job_helpers import options_set, read_events

    from modules.api.app import build_app, serve
    monkeypatch.setattr(job_service, "current", lambda: ray_service)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(build_app(serena.cmd_opts), "127.0.0.1", port, background=True)
    try:
        with options_set(live_previews_enable=True, show_progress_every_n_steps=3), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            ray_service.pause()
            job = http.post("/serena/v1/jobs", json={"kind": "txt2img", "request": {
                "prompt": "a cube", "width": 64, "height": 64, "steps": 24, "seed": 5}}, timeout=30).json()
            with http.stream("GET", f"/serena/v1/jobs/{job['id']}/events") as r:
                stream = read_events(r)
                assert next(stream)[0] == "status"
                ray_service.resume()
                events = list(stream)
    finally:
        ray_service.resume()
        server.should_exit = True
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-1] == "done" and names.count("done") == 1
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] == 24 and len(set(steps)) == len(steps)
    assert "preview" in names, names
    assert ray_service.get(job["id"]).worker.startswith("ray-")


def test_a_worker_killed_mid_job_fails_that_job_and_the_other_worker_runs_the_next(ray_service, serena):
    """Runs last: kills one of the two workers while it runs a job."""
    job = ray_service.submit("txt2img", slow_request(seed=8), job_id="task(ray-killed)")
    assert when_step(ray_service, job.id, 2).wait(60)
    victim = ray_service.get(job.id).worker
    ray.kill(handle_of(ray_service.executor, victim))
    assert wait_status(ray_service, job.id) == FAILED
    error = ray_service.get(job.id).error
    assert error.startswith(f"WorkerLost: worker {victim} died while running job {job.id}"), error
    assert [s.alive for s in ray_service.executor.slots() if s.name == victim] == [False]
    after = ray_service.run("txt2img", prepared("txt2img", {"prompt": "after", "width": 64, "height": 64, "steps": 2}),
                            job_id="task(ray-after-kill)")
    assert len(after.images) == 1
    survivor = ray_service.get("task(ray-after-kill)")
    assert survivor.status == DONE and survivor.worker != victim


def test_a_worker_dead_while_idle_is_found_before_it_gets_a_job(ray_service, serena):
    """Runs after the kill test: the last worker dies while idle; the next job is not given to it
    (it waits, pending, for a worker) and the worker is out of service."""
    (last,) = [slot for slot in ray_service.executor.slots() if slot.alive]
    ray.kill(last.handle)
    job = ray_service.submit("txt2img", prepared("txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2}),
                             job_id="task(ray-no-worker)")
    deadline = time.monotonic() + 30
    while last.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not last.alive
    assert ray_service.store.status_of(job.id) == PENDING
    assert ray_service.cancel(job.id).status == INTERRUPTED
