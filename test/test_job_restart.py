"""A server killed with SIGKILL while a job runs: after a restart, the pending jobs run, the running
one is failed with the reason, and nothing is lost or duplicated in the store or on disk."""
from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import time

import httpx
import pytest

from test_launch import Server

pytestmark = pytest.mark.timeout(400)

JOB = {"prompt": "a kite", "negative_prompt": "", "width": 64, "height": 64, "steps": 3, "seed": 3,
       "save_images": False}
LONG_STEPS = 150  # api_max_steps; with n_iter it runs for several seconds


def job_id(n: int) -> str:
    return f"task(restart-{n})"


def rows(data_dir: str) -> list[tuple[str, str, str | None]]:
    db = sqlite3.connect(os.path.join(data_dir, "jobs", "jobs.sqlite3"))
    try:
        return db.execute("SELECT id, status, error FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


def wait_active(base: str, task: str, request: concurrent.futures.Future, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request.done():
            raise AssertionError(f"{task} ended before it was seen running: {request.result().text[:500]}")
        status = httpx.post(f"{base}/internal/progress", json={"id_task": task}, timeout=10).json()
        if status["active"] and (status["progress"] or 0) > 0.05:
            return
        time.sleep(0.05)
    raise AssertionError(f"{task} never ran")


def test_pending_jobs_survive_a_kill_and_the_running_one_fails_with_the_reason(tmp_path):
    data = str(tmp_path)
    flags = ("--nowebui", "--skip-install")
    srv = Server(data, *flags)
    with srv, concurrent.futures.ThreadPoolExecutor(5) as pool:
        first = httpx.post(f"{srv.base}/sdapi/v1/txt2img", json={**JOB, "force_task_id": job_id(1)}, timeout=120)
        assert first.status_code == 200
        futures = [pool.submit(httpx.post, f"{srv.base}/sdapi/v1/txt2img", timeout=300,
                               json={**JOB, "force_task_id": job_id(2), "steps": LONG_STEPS,
                                     "n_iter": 8, "width": 128, "height": 128})]
        wait_active(srv.base, job_id(2), futures[0])
        for n in (3, 4, 5):  # queued behind the running job, in this order
            futures.append(pool.submit(httpx.post, f"{srv.base}/sdapi/v1/txt2img", timeout=300,
                                       json={**JOB, "force_task_id": job_id(n), "seed": n}))
            deadline = time.monotonic() + 30
            while job_id(n) not in [r[0] for r in rows(data)] and time.monotonic() < deadline:
                time.sleep(0.05)
        assert [(i, s) for i, s, _ in rows(data)] == [
            (job_id(1), "done"), (job_id(2), "running"), (job_id(3), "pending"), (job_id(4), "pending"),
            (job_id(5), "pending")]
        srv.proc.kill()  # SIGKILL: no clean-up runs
        srv.proc.wait(30)
        for future in futures:
            with pytest.raises(httpx.HTTPError):
                future.result()

    with Server(data, *flags) as again:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(s in ("pending", "running") for _, s, _ in rows(data)):
            time.sleep(0.2)
        assert httpx.get(f"{again.base}/sdapi/v1/sd-models", timeout=10).status_code == 200  # still healthy
    final = rows(data)
    assert [(i, s) for i, s, _ in final] == [
        (job_id(1), "done"), (job_id(2), "failed"), (job_id(3), "done"), (job_id(4), "done"), (job_id(5), "done")]
    assert "server stopped while this job was running" in final[1][2]
    results = os.path.join(data, "jobs", "results")
    assert sorted(os.listdir(results)) == sorted(job_id(n) for n in (1, 3, 4, 5))
    for n in (1, 3, 4, 5):
        assert os.listdir(os.path.join(results, job_id(n))) == ["00000.png"]  # one image each, no leftovers
