"""Serena's job API (`/serena/v1/jobs`): a queued job makes the golden image, through the runner
once; listing, cancelling and results answer by the job's state; the event stream, read from a real
server, reports a job in order and ends with it.

The queue is paused (`service.pause()`) wherever a test needs a job to stay pending; every test
resumes it, whatever happens.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import threading
import time
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from PIL import Image

from api_helpers import free_port
from job_helpers import read_events

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "quality"))
import harness  # noqa: E402
from test_processing_runner import RunnerRecorder  # noqa: E402

pytestmark = pytest.mark.timeout(120)

JOBS = "/serena/v1/jobs"
TINY = {"prompt": "a small boat", "negative_prompt": "", "seed": 77, "steps": 2, "width": 64, "height": 64,
        "sampler_name": "Euler", "do_not_save_samples": True, "do_not_save_grid": True}
FINAL = {"done", "failed", "interrupted"}


# --- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(api_runtime) -> Iterator[str]:
    """A real uvicorn server on an app with the job routes (the API's own error handling)."""
    from modules.api.app import build_app, serve
    from modules.api.jobs_api import add_routes
    app = build_app(api_runtime.cmd_opts)
    add_routes(app, [])
    port = free_port()
    server = serve(app, "127.0.0.1", port, background=True)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    server.serena_thread.join(10)


@pytest.fixture()
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


@pytest.fixture()
def service(api_runtime):
    """The process's job service; paused tests always leave it running and with an empty queue."""
    from modules.runtime import job_service
    svc = job_service.current()
    assert not svc.store.pending_ids(), "another test left jobs pending"
    yield svc
    for job_id in svc.store.pending_ids():
        svc.cancel(job_id)
    svc.resume()


@contextlib.contextmanager
def paused(svc) -> Iterator[None]:
    svc.pause()
    try:
        yield
    finally:
        svc.resume()


def submit(http: httpx.Client, request: dict | None = None, kind: str = "txt2img", status: int = 201,
           **extra: Any) -> dict:
    r = http.post(JOBS, json={"kind": kind, "request": {**TINY, **(request or {})}, **extra})
    assert r.status_code == status, r.text
    return r.json()


def wait_for(http: httpx.Client, job_id: str, statuses: set[str], timeout: float = 60) -> dict:
    """Poll the job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"{JOBS}/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s"
        time.sleep(0.05)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def assert_error(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    for word in words:
        assert word in json.dumps(body), body
    return body


# --- submit → get → results ------------------------------------------------------------------------
def test_a_queued_job_makes_the_golden_image_through_the_runner_once(http, service, monkeypatch):
    request = harness.load_request("txt2img-euler-64")
    recorder = RunnerRecorder(monkeypatch)
    with harness.default_options():
        r = http.post(JOBS, json={"kind": "txt2img", "request": request, "name": "apple"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert r.headers["location"] == f"{JOBS}/{job['id']}"
        assert (job["kind"], job["name"], job["source"]) == ("txt2img", "apple", "serena")
        assert job["status"] in ("pending", "running") and job["created"] > 0
        done = wait_for(http, job["id"], FINAL)
        assert recorder.count == 1
        via_sdapi = http.post("/sdapi/v1/txt2img", json=request).json()["images"]

    assert done["status"] == "done" and done["error"] is None
    assert done["started"] >= done["created"] and done["finished"] >= done["started"]
    assert done["result"]["images"] == 1 and done["position"] is None
    results = http.get(f"{JOBS}/{job['id']}/results").json()
    assert results["infotexts"] == done["result"]["infotexts"] and results["info"] == done["result"]["info"]
    (expected,) = harness.expected_files("txt2img-euler-64")
    got = base64.b64decode(results["images"][0])
    assert np.array_equal(pixels(got), pixels(open(expected, "rb").read()))
    assert Image.open(io.BytesIO(got)).info["parameters"] == Image.open(expected).info["parameters"]
    assert got == base64.b64decode(via_sdapi[0])  # same bytes as the synchronous route

    file = http.get(f"{JOBS}/{job['id']}/results/0")
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert file.content == got
    assert_error(http.get(f"{JOBS}/{job['id']}/results/1"), 404, "no image 1")


# --- listing ----------------------------------------------------------------------------------------
def test_list_pages_in_queue_order_and_filters_by_status(http, service):
    with paused(service):
        ids = [submit(http, name=f"job {i}")["id"] for i in range(3)]
        page = http.get(JOBS, params={"status": "pending", "limit": 2}).json()
        assert (page["total"], page["offset"], page["limit"]) == (3, 0, 2)
        assert [j["id"] for j in page["jobs"]] == ids[:2]
        assert [j["position"] for j in page["jobs"]] == [0, 1]
        rest = http.get(JOBS, params={"status": "pending", "limit": 2, "offset": 2}).json()
        assert [j["id"] for j in rest["jobs"]] == ids[2:] and rest["total"] == 3

        http.post(f"{JOBS}/{ids[1]}/cancel")
        both = http.get(JOBS, params=[("status", "pending"), ("status", "interrupted"), ("limit", 500)]).json()
        states = {j["id"]: j["status"] for j in both["jobs"]}
        assert {i: states[i] for i in ids} == {ids[0]: "pending", ids[1]: "interrupted", ids[2]: "pending"}
        pending = http.get(JOBS, params={"status": "pending"}).json()
        assert [j["id"] for j in pending["jobs"]] == [ids[0], ids[2]]
        assert [j["position"] for j in pending["jobs"]] == [0, 1]
    wait_for(http, ids[2], FINAL)
    done = http.get(JOBS, params={"status": "done", "newest_first": "true", "limit": 1}).json()
    assert done["jobs"][0]["id"] == ids[2] and done["total"] >= 2


@pytest.mark.parametrize("params, field", [
    ({"status": "finished"}, "status"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
    ({"offset": -1}, "offset"), ({"offset": 2 ** 60}, "offset"),
])
def test_list_refuses_bad_filters_naming_them(http, params, field):
    body = assert_error(http.get(JOBS, params=params), 422)
    assert field in body["detail"][0]["loc"]


# --- cancelling and results by state -----------------------------------------------------------------
def test_cancel_a_pending_job_it_never_runs(http, service, monkeypatch):
    recorder = RunnerRecorder(monkeypatch)
    with paused(service):
        job = submit(http)
        assert_error(http.get(f"{JOBS}/{job['id']}/results"), 409, "pending")
        assert_error(http.get(f"{JOBS}/{job['id']}/results/0"), 409, "pending")
        cancelled = http.post(f"{JOBS}/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "interrupted" and cancelled.json()["started"] is None
    time.sleep(0.3)  # the dispatcher, resumed, must not pick it up
    assert http.get(f"{JOBS}/{job['id']}").json()["status"] == "interrupted"
    assert recorder.count == 0
    assert http.get(f"{JOBS}/{job['id']}/results").json()["images"] == []


def test_cancel_a_running_job_interrupts_it(http, service):
    job = submit(http, {"steps": 150})
    deadline = time.monotonic() + 60
    while True:  # running and sampling
        seen = http.get(f"{JOBS}/{job['id']}").json()
        if seen["status"] == "running" and seen["progress"] and seen["progress"]["step"] >= 1:
            break
        assert seen["status"] in ("pending", "running") and time.monotonic() < deadline, seen
        time.sleep(0.02)
    assert 0 < seen["progress"]["progress"] < 1 and seen["progress"]["steps"] == 150
    r = http.post(f"{JOBS}/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("running", "interrupted")
    end = wait_for(http, job["id"], FINAL)
    assert end["status"] == "interrupted" and end["error"] == "interrupted"
    assert end["finished"] - end["started"] < 30


def test_cancel_a_finished_job_is_409_and_an_unknown_one_404(http, service):
    job = submit(http)
    wait_for(http, job["id"], FINAL)
    assert_error(http.post(f"{JOBS}/{job['id']}/cancel"), 409, "already done")
    for route in ("", "/cancel", "/results", "/results/0", "/events"):
        method = http.post if route == "/cancel" else http.get
        assert_error(method(f"{JOBS}/no-such-job{route}"), 404, "no-such-job")


# --- validation and auth ----------------------------------------------------------------------------
def test_bad_kind_is_422_naming_kind(http):
    body = assert_error(http.post(JOBS, json={"kind": "upscale", "request": TINY}), 422)
    assert body["detail"][0]["loc"] == ["body", "kind"]


@pytest.mark.parametrize("field, value, named", [
    ("steps", 0, "steps"), ("width", "wide", "width"), ("sampler_name", "No Such Sampler", "No Such Sampler"),
])
def test_bad_request_field_is_422_naming_it_and_queues_nothing(http, service, field, value, named):
    before = service.store.ids()
    assert_error(http.post(JOBS, json={"kind": "txt2img", "request": {**TINY, field: value}}), 422, named)
    assert service.store.ids() == before


def test_img2img_without_init_images_is_refused(http, service):
    assert_error(http.post(JOBS, json={"kind": "img2img", "request": TINY}), 404, "Init image not found")


def test_api_auth_guards_the_job_routes(api_runtime):
    from modules import cmd_args
    from modules.api.app import build_app, make_auth_dependency
    from modules.api.jobs_api import add_routes
    app = build_app(cmd_args.parse(["--api-auth", "alice:s3cret"], environ={}))
    add_routes(app, [Depends(make_auth_dependency(app.state.serena_credentials))])
    with TestClient(app, raise_server_exceptions=False) as c:
        for route in (JOBS, f"{JOBS}/x", f"{JOBS}/x/events", f"{JOBS}/x/results"):
            r = c.get(route)
            assert r.status_code == 401 and r.json()["error"] == "AuthFailed", (route, r.text)
        assert c.post(JOBS, json={"kind": "txt2img", "request": TINY}).status_code == 401
        assert c.get(JOBS, auth=("alice", "s3cret")).status_code == 200
        assert c.get(JOBS, auth=("alice", "wrong")).status_code == 401


# --- the event stream over a real server ---------------------------------------------------------------
def test_event_stream_reports_the_job_in_order_and_ends_with_it(http, service, clean_opts):
    clean_opts.data.update(live_previews_enable=True, show_progress_every_n_steps=2)
    with paused(service):
        job = submit(http, {"steps": 30, "n_iter": 2})
        with http.stream("GET", f"{JOBS}/{job['id']}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            stream = read_events(r)
            first = next(stream)
            assert first[0] == "status" and first[1]["status"] == "pending" and first[1]["position"] == 0
            service.resume()
            events = [first, *stream]  # ends when the server ends the stream
    names = [name for name, _ in events]
    assert names[1] == "started" and names[-1] == "done" and names.count("done") == 1
    assert set(names) <= {"status", "queued", "started", "progress", "preview", "done"}
    final = events[-1][1]
    assert final["result"]["images"] == 2 and final["status"] == "done"

    progress = [data for name, data in events if name == "progress"]
    for before, after in zip(progress, progress[1:]):
        assert (after["job_no"], after["step"]) > (before["job_no"], before["step"])
        assert after["progress"] >= before["progress"]
    assert {p["job_no"] for p in progress} == {0, 1}
    assert all(p["job_count"] == 2 and p["steps"] in (0, 30) for p in progress), progress
    assert [p["step"] for p in progress if p["job_no"] == 1][-1] == 30

    previews = [data for name, data in events if name == "preview"]
    assert previews, names
    assert len({p["id_live_preview"] for p in previews}) == len(previews)
    image = Image.open(io.BytesIO(base64.b64decode(previews[0]["image"].removeprefix("data:image/png;base64,"))))
    assert image.size == (64, 64)


def test_no_previews_when_live_previews_are_off(http, service, clean_opts):
    clean_opts.data.update(live_previews_enable=False, show_progress_every_n_steps=1)
    job = submit(http, {"steps": 6})
    with http.stream("GET", f"{JOBS}/{job['id']}/events") as r:
        names = [name for name, _ in read_events(r)]
    assert "preview" not in names and names[-1] == "done"


def test_event_stream_on_a_finished_job_ends_at_once(http, service):
    job = submit(http)
    wait_for(http, job["id"], FINAL)
    start = time.monotonic()
    with http.stream("GET", f"{JOBS}/{job['id']}/events") as r:
        events = list(read_events(r))
    assert time.monotonic() - start < 5
    assert [name for name, _ in events] == ["status", "done"]
    assert events[1][1]["result"]["images"] == 1


def test_event_stream_of_a_cancelled_pending_job(http, service):
    with paused(service):
        job = submit(http)
        with http.stream("GET", f"{JOBS}/{job['id']}/events") as r:
            stream = read_events(r)
            assert next(stream)[0] == "status"
            threading.Timer(0.2, lambda: httpx.post(f"{http.base_url}{JOBS}/{job['id']}/cancel")).start()
            rest = list(stream)
    assert [name for name, _ in rest] == ["interrupted"]
    assert rest[0][1]["error"] == "cancelled before it ran"


def test_a_client_that_leaves_is_unsubscribed(http, service, monkeypatch):
    active: list[int] = [0]
    subscribe = service.subscribe

    def counting(job_id, fn):
        active[0] += 1
        unsubscribe = subscribe(job_id, fn)

        def undo():
            active[0] -= 1
            unsubscribe()
        return undo

    monkeypatch.setattr(service, "subscribe", counting)
    with paused(service):
        job = submit(http)
        with http.stream("GET", f"{JOBS}/{job['id']}/events") as r:
            stream = read_events(r)  # kept: a dropped reader generator closes the connection
            assert next(stream)[0] == "status"
            assert active[0] == 1
            stream.close()  # the client goes away
        deadline = time.monotonic() + 10
        while active[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert active[0] == 0
        http.post(f"{JOBS}/{job['id']}/cancel")
