"""The FIFO queue over a real server: concurrent requests equal the same requests made alone,
an interrupt stops only the running job, waiting requests never block progress or the listings."""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import pytest

from api_helpers import API, TXT2IMG_BASE

pytestmark = pytest.mark.timeout(240)


def payload(seed: int, **changes) -> dict:
    return {**TXT2IMG_BASE, "seed": seed, "steps": 1, **changes}


def post(base: str, body: dict, timeout: float = 180) -> dict:
    r = httpx.post(f"{base}{API}/txt2img", json=body, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def base(server):
    host, port = server
    return f"http://{host}:{port}"


def test_16_concurrent_requests_equal_the_same_requests_alone(base):
    seeds = list(range(100, 116))
    overrides = [{"CLIP_stop_at_last_layers": 2} if s % 2 else {} for s in seeds]
    alone = {s: post(base, payload(s, override_settings=o))["images"][0] for s, o in zip(seeds, overrides)}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = {s: pool.submit(post, base, payload(s, override_settings=o)) for s, o in zip(seeds, overrides)}
        together = {s: f.result()["images"][0] for s, f in futures.items()}
    assert together == alone
    assert len(set(alone.values())) == 16


def test_waiting_requests_do_not_block_control_routes(base):
    """While a long job runs and others wait, progress/options/listings/skip answer at once."""
    long_job = payload(1, steps=150, n_iter=4, width=128, height=128, force_task_id="task(txt2img-LONG000)")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        running = pool.submit(post, base, long_job)
        deadline = time.time() + 60
        while time.time() < deadline:  # the long job is sampling before the others are sent
            status = httpx.post(f"{base}/internal/progress", json={"id_task": "task(txt2img-LONG000)"},
                                timeout=5).json()
            if status["active"] and status["progress"] > 0:
                break
            time.sleep(0.05)
        waiting = [pool.submit(post, base, payload(s)) for s in range(2, 6)]
        while httpx.get(f"{base}/internal/pending-tasks", timeout=5).json()["size"] < 4 and time.time() < deadline:
            time.sleep(0.05)
        for route in ("progress", "options", "samplers", "sd-models", "upscalers", "prompt-styles", "scripts"):
            t0 = time.perf_counter()
            assert httpx.get(f"{base}{API}/{route}", timeout=10).status_code == 200
            # Generous bound for 2 loaded cores; the proof is that the running job is still running.
            assert time.perf_counter() - t0 < 5.0, route
        assert not running.done(), "the long job finished first: the test proves nothing"
        pending = httpx.get(f"{base}/internal/pending-tasks", timeout=5).json()
        assert pending["size"] >= 1
        status = httpx.post(f"{base}/internal/progress", json={"id_task": "task(txt2img-LONG000)"}, timeout=5).json()
        assert status["active"] is True and 0 < status["progress"] <= 1
        httpx.post(f"{base}{API}/interrupt", timeout=5)
        assert running.result()["images"]
        for f in waiting:
            assert len(f.result()["images"]) == 1


def test_interrupt_stops_only_the_running_job(base):
    seeds = [201, 202, 203]
    alone = {s: post(base, payload(s))["images"][0] for s in seeds}
    long_job = payload(200, steps=150, n_iter=3, width=128, height=128, force_task_id="task(txt2img-INTR000)")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(post, base, long_job)
        deadline = time.time() + 60
        while time.time() < deadline:
            status = httpx.post(f"{base}/internal/progress", json={"id_task": "task(txt2img-INTR000)"},
                                timeout=5).json()
            if status["active"] and status["progress"] > 0.02:
                break
            time.sleep(0.05)
        others = {s: pool.submit(post, base, payload(s)) for s in seeds}
        time.sleep(0.2)
        assert httpx.post(f"{base}{API}/interrupt", timeout=5).json() == {}
        interrupted = running.result()
        results = {s: f.result()["images"][0] for s, f in others.items()}
    info = json.loads(interrupted["info"])
    assert len(interrupted["images"]) < 3  # stopped before the third batch, kept what it made
    assert len(interrupted["images"]) == len(info["infotexts"])
    assert results == alone
    done = httpx.post(f"{base}/internal/progress", json={"id_task": "task(txt2img-INTR000)"}, timeout=5).json()
    assert done["completed"] is True and done["active"] is False


def test_live_preview_and_progress_of_the_running_job(base):
    from modules import shared
    saved = dict(shared.opts.data)
    shared.opts.data["show_progress_every_n_steps"] = 1
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(post, base, payload(9, steps=150, width=128, height=128))
            preview = None
            deadline = time.time() + 60
            while time.time() < deadline and not running.done():
                p = httpx.get(f"{base}{API}/progress", timeout=5).json()
                if p["current_image"]:
                    preview = p
                    break
                time.sleep(0.05)
            httpx.post(f"{base}{API}/interrupt", timeout=5)
            running.result()
        assert preview is not None, "no live preview while the job ran"
        assert 0 < preview["progress"] <= 1 and preview["eta_relative"] >= 0
        no_image = httpx.get(f"{base}{API}/progress", params={"skip_current_image": True}, timeout=5).json()
        assert no_image["current_image"] is None
    finally:
        shared.opts.data.clear()
        shared.opts.data.update(saved)


def test_server_answers_after_a_burst_of_bad_requests(base):
    good = post(base, payload(55))["images"][0]
    def bad(i):
        return httpx.post(f"{base}{API}/txt2img", content=b"{" * (i + 1), timeout=30,
                          headers={"content-type": "application/json"}).status_code
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(bad, range(16)))
    assert all(c == 422 for c in codes)
    assert post(base, payload(55))["images"][0] == good
    assert threading.active_count() < 200


def test_routes_waiting_for_the_queue_do_not_starve_other_blocking_routes(base):
    """Reload routes that wait behind a running job must not use up the shared worker threads
    (40 by default) that png-info and the options POST run in."""
    from PIL import Image

    from api_helpers import png_b64
    from modules import call_queue
    image = png_b64(Image.new("RGB", (8, 8)))
    call_queue.queue_lock.acquire()  # stands for a long job
    held = True
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        try:
            waiting = [pool.submit(httpx.post, f"{base}{API}/refresh-checkpoints", timeout=60) for _ in range(48)]
            time.sleep(1.0)
            assert not any(f.done() for f in waiting)
            t0 = time.perf_counter()
            r = httpx.post(f"{base}{API}/png-info", json={"image": image}, timeout=10)
            assert r.status_code == 200 and time.perf_counter() - t0 < 5.0
        finally:
            call_queue.queue_lock.release()
            held = False
        assert all(f.result().status_code == 200 for f in waiting)
    assert not held
