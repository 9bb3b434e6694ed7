"""Benchmark: jobs per minute through the job service, in-process against Ray workers.

Serena is initialised in this process (the server) on the demo checkpoint in a temporary data
folder, torch pinned to 1 thread; a local Ray instance gets 2 CPUs. Each Ray worker is a process
of its own, initialised once with the same flags, torch pinned to 1 thread too, so two workers use
two cores. Every job is the same small txt2img (default 128x128, 40 Euler steps, a different seed
per job) submitted to a `JobService` with its own `JobStore` (results written as PNG files, as in
the server).

Measured in one run, in this order:

1. added latency of the Ray path, two ways: pairs of the same request run (submit and wait)
   through the in-process service and through a 1-worker Ray service, alternating which goes
   first, the median over pairs of (Ray time - in-process time) — honest but noisy on a shared
   machine, as it subtracts two ~1 s timings; and measured directly, the median over the same Ray
   jobs of (`RayExecutor.run` wall time - the worker's own `jobs.execute` time), i.e. the call,
   the options, the event stream and the result transfer. Required: <= 50 ms (the direct figure
   decides when the paired one is swamped by load from other processes).
2. throughput: a burst of `--jobs` jobs submitted at once to each service (in-process, Ray with 1
   worker, Ray with 2 workers), timed from the first submit to the last finish; jobs per minute
   and their ratios. Required: Ray 2 workers >= 1.6x in-process.
3. the server's share of a Ray job (what stays on the one server when workers are added): its CPU
   time per job (dispatch, Ray calls, progress events, store writes: `time.process_time` of this
   process over the 2-worker burst), the store writes per job, the PNG bytes and events per job.

Usage: `venv/bin/python bench/jobs_throughput.py [--jobs 24] [--pairs 30] [--steps 40] [--size 128]`.
Exits 1 if a requirement fails.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REQUIRED_RATIO = 1.6
REQUIRED_ADDED_MS = 50.0


@dataclass
class ServerCost:
    """What the server spent on one burst of jobs (filled by :func:`burst`)."""

    jobs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    store_s: float = 0.0
    png_bytes: int = 0
    events: int = 0
    per_job_s: list[float] = field(default_factory=list)


def request(seed: int, steps: int, size: int) -> dict:
    from modules.runtime import jobs
    fields = {"prompt": "a lighthouse on a cliff", "negative_prompt": "blurry", "seed": seed, "steps": steps,
              "width": size, "height": size, "sampler_name": "Euler", "cfg_scale": 7.0}
    return jobs.prepare("txt2img", jobs.request_model("txt2img", fields)).model_dump(mode="json")


def timed_run(service, req: dict) -> float:
    start = time.perf_counter()
    output = service.run("txt2img", req)
    elapsed = time.perf_counter() - start
    assert len(output.images) == 1
    return elapsed


def watch_store(service, cost: ServerCost) -> None:
    """Time the service's store writes (results and final status) into `cost`."""
    store = service.store
    for name in ("write_results", "finish"):
        original = getattr(store, name)

        def timed(*args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                cost.store_s += time.perf_counter() - start
        setattr(store, name, timed)


def burst(service, jobs: int, steps: int, size: int, first_seed: int) -> ServerCost:
    """Submit `jobs` jobs at once and wait for all; the wall time and the server's costs."""
    cost = ServerCost(jobs=jobs)
    done = threading.Semaphore(0)
    finished: list[str] = []
    service.add_finish_listener(lambda record: (finished.append(record.id), done.release()))
    unsubscribe = service.subscribe("*", lambda event: setattr(cost, "events", cost.events + 1))
    requests = [request(first_seed + i, steps, size) for i in range(jobs)]
    cpu0, start = time.process_time(), time.perf_counter()
    ids = [service.submit("txt2img", req).id for req in requests]
    for _ in ids:
        assert done.acquire(timeout=600), "a job did not finish"
    cost.wall_s = time.perf_counter() - start
    cost.cpu_s = time.process_time() - cpu0
    unsubscribe()
    service._finish_listeners.clear()  # noqa: SLF001 - the benchmark's own listener
    for job_id in ids:
        record = service.get(job_id)
        assert record.status == "done", (job_id, record.status, record.error)
        cost.per_job_s.append(record.finished - record.started)
        cost.png_bytes += sum(len(data) for _, data in service.result_files(job_id))
    return cost


def per_minute(cost: ServerCost) -> float:
    return cost.jobs / cost.wall_s * 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, help="jobs per throughput burst")
    parser.add_argument("--pairs", type=int, default=30, help="alternated pairs for the added latency")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    import ray

    import webui
    from modules import cmd_args
    from modules.runtime import executors
    from modules.runtime.executor_ray import WORKER_NICENESS_ENV, RayExecutor
    from modules.runtime.job_service import JobService
    from modules.runtime.job_store import JobStore

    with tempfile.TemporaryDirectory(prefix="serena-bench-jobs-") as data_dir:
        flags = ["--data-dir", data_dir, "--use-cpu", "all", "--no-half"]
        webui.initialize(cmd_args.parse(flags, environ={}))
        os.environ.setdefault(WORKER_NICENESS_ENV, "0")  # as RayExecutor does for a local instance
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

        def service(executor, name: str) -> JobService:
            return JobService(JobStore(os.path.join(data_dir, name)), executor).start()

        local = service(executors.InProcessExecutor(), "jobs-local")
        started = time.perf_counter()
        ray1 = service(RayExecutor(workers=1, worker_flags=flags, torch_threads=1), "jobs-ray1")
        print(f"Ray with 1 worker ready in {time.perf_counter() - started:.1f} s "
              f"(worker init {ray1.executor.worker_info['ray-0']['init_s']:.1f} s)")
        for i in range(3):  # warm-up: caches, first-call costs on both paths
            timed_run(local, request(900 + i, args.steps, args.size))
            timed_run(ray1, request(900 + i, args.steps, args.size))

        diffs, local_times, ray_times = [], [], []
        for i in range(args.pairs):
            req = request(1000 + i, args.steps, args.size)
            if i % 2 == 0:
                t_local, t_ray = timed_run(local, req), timed_run(ray1, req)
            else:
                t_ray, t_local = timed_run(ray1, req), timed_run(local, req)
            local_times.append(t_local)
            ray_times.append(t_ray)
            diffs.append(t_ray - t_local)
        added_ms = statistics.median(diffs) * 1000
        overheads = [t.overhead_s for t in list(ray1.executor.job_times)[-args.pairs:]]
        direct_ms = statistics.median(overheads) * 1000

        in_process = burst(local, args.jobs, args.steps, args.size, 2000)
        one = burst(ray1, args.jobs, args.steps, args.size, 3000)
        local.stop()
        ray1.stop()
        ray2 = service(RayExecutor(workers=2, worker_flags=flags, torch_threads=1), "jobs-ray2")
        for i in range(2):
            timed_run(ray2, request(950 + i, args.steps, args.size))
        watch_store(ray2, cost := ServerCost())
        two = burst(ray2, args.jobs, args.steps, args.size, 4000)
        two.store_s = cost.store_s
        ray2.stop()
        ray.shutdown()

    print(f"job: txt2img {args.size}x{args.size}, {args.steps} Euler steps, demo checkpoint, torch 1 thread per "
          f"process; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"added latency, {args.pairs} pairs: median in-process {statistics.median(local_times) * 1000:.0f} ms, "
          f"median Ray 1 worker {statistics.median(ray_times) * 1000:.0f} ms, "
          f"median of differences {added_ms:.1f} ms; measured directly (executor.run minus the worker's "
          f"jobs.execute, median) {direct_ms:.1f} ms (required <= {REQUIRED_ADDED_MS:.0f} ms)")
    for name, cost in (("in-process", in_process), ("Ray, 1 worker", one), ("Ray, 2 workers", two)):
        print(f"{name:15s} {cost.jobs} jobs in {cost.wall_s:6.2f} s = {per_minute(cost):6.1f} jobs/min "
              f"(median job {statistics.median(cost.per_job_s) * 1000:.0f} ms)")
    ratio1, ratio2 = per_minute(one) / per_minute(in_process), per_minute(two) / per_minute(in_process)
    print(f"ratio Ray 1 worker / in-process: {ratio1:.2f}x; Ray 2 workers / in-process: {ratio2:.2f}x "
          f"(required >= {REQUIRED_RATIO}x)")
    n = two.jobs
    print(f"server share per Ray job (2 workers): CPU {two.cpu_s / n * 1000:.1f} ms, store writes "
          f"{two.store_s / n * 1000:.1f} ms, {two.png_bytes / n / 1024:.1f} KiB of PNG, {two.events / n:.0f} events")
    ok = ratio2 >= REQUIRED_RATIO and direct_ms <= REQUIRED_ADDED_MS
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
