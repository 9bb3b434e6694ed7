"""The agent-scheduler routes (`/agent-scheduler/v1`) on Serena's job service.

A task queued there makes the same image as the same request through `/sdapi/v1` (and as the
golden), running through `ProcessingRunner.run` once; the queue listing, positions, moves, run,
requeue, cancellation, history and results answer with the extension's shapes and status words;
errors are 404 / 409 / 422 JSON; callbacks are off by default and never go to a local address
unless the server allows local requests; everything is behind `--api-auth`.
The queue is paused wherever its state must hold still while the test looks at it.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import http.server
import io
import json
import os
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
from api_helpers import free_port
from job_helpers import record_runner_calls
from fastapi import Depends
from fastapi.testclient import TestClient
from PIL import Image

from modules import cmd_args, shared
from modules.api import agent_scheduler
from modules.options import OptionInfo
from modules.runtime import job_service

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden"))
import harness  # noqa: E402

pytestmark = pytest.mark.timeout(180)

AS = "/agent-scheduler/v1"
TINY = {"prompt": "a small house", "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "seed": 7,
        "sampler_name": "Euler"}
ERROR_KEYS = {"error", "detail", "body", "errors"}


# --- fixtures and helpers -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(api_runtime):
    from modules.api.app import build_app
    app = build_app(api_runtime.cmd_opts)
    agent_scheduler.add_routes(app, [])
    return app


@pytest.fixture()
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def service(api_runtime):
    """The process's job service, running again (and empty of this test's pending tasks) afterwards."""
    service = agent_scheduler.current_service()
    before = set(service.store.pending_ids())
    yield service
    for job_id in set(service.store.pending_ids()) - before:
        service.cancel(job_id)
    service.resume()


@pytest.fixture()
def runner_calls(monkeypatch) -> list:
    """Every `ProcessingRunner.run` call (the real method runs)."""
    return record_runner_calls(monkeypatch)


def queue(client, payload: dict, kind: str = "txt2img") -> str:
    r = client.post(f"{AS}/queue/{kind}", json=payload)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"task_id"}
    return r.json()["task_id"]


def task(client, task_id: str) -> dict:
    r = client.get(f"{AS}/task/{task_id}")
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return r.json()["data"]


def wait_finished(client, task_id: str, timeout: float = 150.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = task(client, task_id)
        if data["status"] in ("done", "failed", "interrupted"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still {task(client, task_id)['status']}")


def queued_ids(client, **params) -> list[str]:
    r = client.get(f"{AS}/queue", params=params)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["pending_tasks"]]


def result_images(client, task_id: str) -> list[tuple[Image.Image, str, bytes]]:
    """(image, infotext, file bytes) of each result."""
    r = client.get(f"{AS}/task/{task_id}/results")
    assert r.status_code == 200, r.text
    out = []
    for item in r.json()["data"]:
        prefix, b64 = item["image"].split(",", 1)
        assert prefix == "data:image/png;base64"
        data = base64.b64decode(b64)
        out.append((Image.open(io.BytesIO(data)), item["infotext"], data))
    return out


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def count_jobs() -> int:
    return len(job_service.current().store.ids())


# --- generation: same images as /sdapi/v1 and the goldens ---------------------------------------------
@pytest.mark.parametrize("name, kind", [("txt2img-euler-64", "txt2img"), ("img2img-resize0", "img2img")])
def test_queued_task_makes_the_sdapi_image_once_through_the_runner(client, service, runner_calls, name, kind):
    request = harness.load_request(name)
    with harness.default_options():
        r = client.post(f"/sdapi/v1/{kind}", json=request)
        assert r.status_code == 200, r.text
        assert len(runner_calls) == 1
        sdapi = [Image.open(io.BytesIO(base64.b64decode(x))) for x in r.json()["images"]]
        task_id = queue(client, {**request, "name": "golden"}, kind)
        data = wait_finished(client, task_id)
    assert len(runner_calls) == 2, "the queued task reached ProcessingRunner.run once"
    assert data["status"] == "done" and data["type"] == kind and data["name"] == "golden"
    assert "init_images" not in data["params"] and data["params"]["prompt"] == request["prompt"]
    results = result_images(client, task_id)
    golden = [Image.open(p) for p in harness.expected_files(name)]
    assert len(results) == len(sdapi) == len(golden) == 1
    for (image, infotext, _), same, want in zip(results, sdapi, golden):
        assert np.array_equal(pixels(image), pixels(same))
        assert np.array_equal(pixels(image), pixels(want))
        assert infotext == image.info["parameters"] == want.info["parameters"]


def test_results_zip_holds_the_same_files(client, service):
    task_id = queue(client, TINY)
    wait_finished(client, task_id)
    files = [data for _, _, data in result_images(client, task_id)]
    r = client.get(f"{AS}/task/{task_id}/results", params={"zip": "true"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f"attachment; filename=results-{task_id}.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert [archive.read(n) for n in archive.namelist()] == files
    assert client.get(f"{AS}/results/{task_id}").json()["data"][0]["image"].startswith("data:image/png")  # old path


def test_checkpoint_and_vae_become_override_settings(client, service):
    from modules import sd_models
    title = sd_models.model_data.sd_model.sd_checkpoint_info.title
    service.pause()
    task_id = queue(client, {**TINY, "checkpoint": title, "vae": "None"})
    stored = service.get(task_id).request
    assert stored["override_settings"]["sd_model_checkpoint"] == title
    assert stored["override_settings"]["sd_vae"] == "None"
    assert task(client, task_id)["params"]["checkpoint"] == title
    for field in ("checkpoint", "vae", "callback_url", "name"):
        assert field not in stored


# --- the queue: listing, positions, moves, run, cancel, requeue, history ----------------------------------
def test_queue_listing_positions_and_moves_while_paused(client, service):
    assert client.post(f"{AS}/queue/pause").json() == {"success": True, "message": "Queue paused."}
    a, b, c = (queue(client, {**TINY, "name": n}) for n in "abc")
    r = client.get(f"{AS}/queue")
    body = r.json()
    assert set(body) == {"current_task_id", "pending_tasks", "total_pending_tasks", "paused"}
    assert body["paused"] is True and body["total_pending_tasks"] >= 3
    mine = [t for t in body["pending_tasks"] if t["id"] in (a, b, c)]
    assert [t["id"] for t in mine] == [a, b, c]
    assert {t["status"] for t in mine} == {"pending"}
    assert [t["name"] for t in mine] == ["a", "b", "c"]
    assert all(isinstance(t["created_at"], int) for t in mine)  # listings give milliseconds
    assert isinstance(task(client, a)["created_at"], str)  # one task: ISO time
    assert set(mine[0]) >= {"id", "api_task_id", "name", "type", "status", "params", "priority", "position",
                            "result", "bookmarked", "created_at", "updated_at"}

    def order() -> list[str]:
        return [x for x in queued_ids(client, limit=100) if x in (a, b, c)]

    def position(x: str) -> int:
        r = client.get(f"{AS}/task/{x}/position")
        assert r.status_code == 200 and r.json()["data"]["status"] == "pending"
        return r.json()["data"]["position"]

    assert [position(x) for x in (a, b, c)] == sorted(position(x) for x in (a, b, c))
    assert position(c) - position(a) == 2
    assert client.post(f"{AS}/task/{c}/move/top").json()["message"] == "Task moved to top"
    assert order() == [c, a, b] and position(c) == 0 and task(client, c)["position"] == 0
    assert client.post(f"{AS}/task/{c}/move/bottom").json()["message"] == "Task moved to bottom"
    assert order() == [a, b, c]
    assert client.post(f"{AS}/task/{c}/move/{b}").status_code == 200
    assert order() == [a, c, b]
    assert client.post(f"{AS}/move/{b}/{a}").status_code == 200  # the extension's old path
    assert order() == [b, a, c]
    assert client.post(f"{AS}/task/{c}/run").json()["message"].startswith("Task is scheduled to run next")
    assert order() == [c, b, a]
    first, second = queued_ids(client, limit=1)[0], queued_ids(client, limit=1, offset=1)[0]
    assert [first, second] == queued_ids(client, limit=2)
    assert client.get(f"{AS}/queue", params={"offset": -1}).status_code == 422


def test_cancel_requeue_history_and_resume(client, service):
    service.pause()
    a, b = queue(client, {**TINY, "name": "first"}), queue(client, {**TINY, "seed": 8})
    r = client.delete(f"{AS}/task/{a}")
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Task cancelled"}
    cancelled = task(client, a)
    assert cancelled["status"] == "interrupted" and cancelled["position"] is None
    assert client.get(f"{AS}/task/{a}/position").json()["data"] == {"status": "interrupted", "position": None}
    assert client.delete(f"{AS}/task/{a}").status_code == 409
    assert a not in queued_ids(client, limit=100)
    assert client.get(f"{AS}/task/{a}/results").status_code == 409  # never ran: no results
    r = client.post(f"{AS}/task/{a}/requeue")
    assert r.status_code == 200 and r.json()["message"] == "Task requeued"
    copy = r.json()["task_id"]
    assert task(client, copy)["name"] == "Copy of first" and task(client, a)["status"] == "interrupted"
    assert client.post(f"{AS}/queue/resume").json() == {"success": True, "message": "Queue resumed."}
    assert client.get(f"{AS}/queue").json()["paused"] is False
    assert wait_finished(client, b)["status"] == "done"
    assert wait_finished(client, copy)["status"] == "done"
    assert np.array_equal(pixels(result_images(client, copy)[0][0]),
                          pixels(result_images(client, queue_and_wait(client, TINY))[0][0]))

    newest = client.get(f"{AS}/history", params={"limit": 2}).json()
    assert set(newest) == {"tasks", "total"} and len(newest["tasks"]) == 2 and newest["total"] >= 4
    second_page = client.get(f"{AS}/history", params={"limit": 2, "offset": 1}).json()["tasks"]
    assert second_page[0]["id"] == newest["tasks"][1]["id"]
    assert all(t["status"] in ("done", "failed", "interrupted") for t in newest["tasks"])
    interrupted = client.get(f"{AS}/history", params={"status": "interrupted", "limit": 1000}).json()
    assert a in [t["id"] for t in interrupted["tasks"]]
    assert {t["status"] for t in interrupted["tasks"]} == {"interrupted"}
    done = next(t for t in client.get(f"{AS}/history", params={"limit": 1000}).json()["tasks"] if t["id"] == b)
    result = json.loads(done["result"])
    assert result["images"] and result["infotexts"][0].startswith("a small house")
    assert client.get(f"{AS}/history", params={"status": "bookmarked"}).json() == {"tasks": [], "total": 0}
    assert client.get(f"{AS}/history", params={"status": "nonsense"}).status_code == 422
    assert client.post(f"{AS}/task/{b}/rename", params={"name": "renamed"}).status_code == 200
    assert task(client, b)["name"] == "renamed"
    assert client.post(f"{AS}/task/{b}/bookmark").status_code == 501


def queue_and_wait(client, payload: dict) -> str:
    task_id = queue(client, payload)
    wait_finished(client, task_id)
    return task_id


def test_cancelling_the_running_task_interrupts_it_with_partial_results(client, service):
    service.pause()
    task_id = queue(client, {**TINY, "steps": 30})
    at_step, go_on = threading.Event(), threading.Event()

    def on_event(event):
        if event.type == "progress" and event.data.get("step") == 2 and not at_step.is_set():
            at_step.set()
            go_on.wait(30)  # the job waits here (its own thread) until the test has cancelled it
    unsubscribe = service.subscribe(task_id, on_event)
    try:
        service.resume()
        assert at_step.wait(60)
        running = client.get(f"{AS}/queue").json()
        assert running["current_task_id"] == task_id
        assert running["pending_tasks"][0]["id"] == task_id and running["pending_tasks"][0]["status"] == "running"
        assert client.get(f"{AS}/task/{task_id}/position").json()["data"] == {"status": "running", "position": 0}
        r = client.delete(f"{AS}/task/{task_id}")
        assert r.status_code == 200 and r.json()["message"] == "Task interrupted"
    finally:
        go_on.set()
        unsubscribe()
    assert wait_finished(client, task_id)["status"] == "interrupted"
    (image, infotext, _), = result_images(client, task_id)
    assert image.size == (64, 64) and "Steps: 30" in infotext
    assert client.delete(f"{AS}/task/{task_id}").status_code == 409  # finished


# --- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/task/nope"), ("GET", "/task/nope/position"), ("GET", "/task/nope/results"), ("DELETE", "/task/nope"),
    ("POST", "/task/nope/move/top"), ("POST", "/task/nope/requeue"), ("POST", "/task/nope/run"),
    ("POST", "/task/nope/rename?name=x"),
])
def test_unknown_task_is_404_json(client, service, method, path):
    r = client.request(method, AS + path)
    assert r.status_code == 404, r.text
    assert set(r.json()) == ERROR_KEYS and "nope" in r.json()["detail"]


@pytest.mark.parametrize("payload, field", [
    ({"steps": 0}, "steps"), ({"width": "wide"}, "width"), ({"callback_url": 5}, "callback_url"),
])
def test_bad_body_is_422_naming_the_field_and_queues_nothing(client, service, payload, field):
    before = count_jobs()
    r = client.post(f"{AS}/queue/txt2img", json={**TINY, **payload})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", field]
    assert count_jobs() == before


@pytest.mark.parametrize("payload, words", [
    ({"sampler_name": "No Such Sampler"}, "No Such Sampler"), ({"steps": 100000}, "steps"),
    ({"checkpoint": "no-such-checkpoint"}, "no-such-checkpoint"), ({"vae": "no-such-vae"}, "no-such-vae"),
    ({"callback_url": "ftp://example.com/x"}, "callback_url"),
])
def test_request_refused_by_prepare_is_4xx_and_queues_nothing(client, service, payload, words):
    before = count_jobs()
    r = client.post(f"{AS}/queue/txt2img", json={**TINY, **payload})
    assert 400 <= r.status_code < 500, r.text
    assert set(r.json()) == ERROR_KEYS and words in r.json()["detail"]
    assert count_jobs() == before


def test_img2img_without_init_images_is_refused(client, service):
    before = count_jobs()
    r = client.post(f"{AS}/queue/img2img", json=TINY)
    assert r.status_code == 404 and "init" in r.json()["detail"].lower()
    assert count_jobs() == before


def test_moving_a_finished_task_is_409(client, service):
    task_id = queue_and_wait(client, TINY)
    assert client.post(f"{AS}/task/{task_id}/move/top").status_code == 409
    assert client.post(f"{AS}/task/{task_id}/run").status_code == 409


# --- callbacks ----------------------------------------------------------------------------------------------
class Receiver:
    """A local HTTP server that keeps every POST it gets: (path, form fields, [(file name, bytes)])."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], list[tuple[str, bytes]]]] = []
        self.got = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
                message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
                fields, files = {}, []
                for part in message.iter_parts():
                    if part.get_filename():
                        files.append((part.get_filename(), part.get_payload(decode=True)))
                    else:
                        fields[part.get_param("name", header="content-disposition")] = part.get_content().strip()
                receiver.posts.append((self.path, fields, files))
                self.send_response(200)
                self.end_headers()
                receiver.got.set()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def callback_option(monkeypatch):
    """The option the lead adds to modules/options.py, declared here for the test (default off)."""
    monkeypatch.setitem(shared.opts.data_labels, agent_scheduler.CALLBACK_OPTION,
                        OptionInfo(False, "Send agent-scheduler callbacks"))
    monkeypatch.delitem(shared.opts.data, agent_scheduler.CALLBACK_OPTION, raising=False)
    return shared.opts


def test_local_callback_url_is_refused_at_submit(client, service, receiver):
    assert shared.opts.api_forbid_local_requests is True
    before = count_jobs()
    for url in (receiver.url, "http://[::1]:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest"):
        r = client.post(f"{AS}/queue/txt2img", json={**TINY, "callback_url": url})
        assert r.status_code == 422, url
        assert "callback_url" in r.json()["detail"]
    assert count_jobs() == before


def test_callbacks_are_off_by_default_and_posted_when_on(client, service, receiver, callback_option, clean_opts):
    clean_opts.data["api_forbid_local_requests"] = False  # the receiver is on the loopback address
    finished = {}
    service.add_finish_listener(lambda record: finished.setdefault(record.id, threading.Event()).set()
                                if record is not None else None)  # runs after the callback listener
    assert agent_scheduler.callbacks_enabled() is False
    quiet = queue(client, {**TINY, "callback_url": receiver.url})
    wait_finished(client, quiet)
    deadline = time.monotonic() + 30
    while quiet not in finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert quiet in finished

    callback_option.data[agent_scheduler.CALLBACK_OPTION] = True
    assert agent_scheduler.callbacks_enabled() is True
    sent = queue(client, {**TINY, "seed": 9, "callback_url": receiver.url})
    assert task(client, sent)["api_task_callback"] == receiver.url
    wait_finished(client, sent)
    assert receiver.got.wait(30)
    time.sleep(0.2)
    assert len(receiver.posts) == 1, "the task queued while callbacks were off posted nothing"
    path, fields, files = receiver.posts[0]
    assert path == "/done" and fields == {"task_id": sent, "status": "done"}
    assert [(name, data) for name, data in files] == [
        (name, data) for name, data in job_service.current().result_files(sent)]
    assert files[0][1] == result_images(client, sent)[0][2]


# --- auth ------------------------------------------------------------------------------------------------------
def test_every_route_needs_the_api_credentials(api_runtime):
    from modules.api.app import build_app, make_auth_dependency
    app = build_app(cmd_args.parse(["--api-auth", "alice:s3cret"], environ={}))
    agent_scheduler.add_routes(app, [Depends(make_auth_dependency(app.state.serena_credentials))])
    c = TestClient(app, raise_server_exceptions=False)
    for method, path in [("GET", "/queue"), ("POST", "/queue/txt2img"), ("GET", "/task/x"), ("DELETE", "/task/x"),
                         ("GET", "/history"), ("POST", "/queue/pause"), ("GET", "/task/x/results"),
                         ("POST", "/pause"), ("GET", "/samplers")]:
        r = c.request(method, AS + path)
        assert r.status_code == 401, (method, path)
        assert r.json()["detail"] == "Incorrect username or password"
    assert c.get(f"{AS}/queue", auth=("alice", "s3cret")).status_code == 200
    assert c.get(f"{AS}/task/x", auth=("alice", "s3cret")).status_code == 404
