"""Contract test of the execution surface (M10): every generation runs through ProcessingRunner.run.

The runner is instrumented (its `run` wrapped by a recorder that calls the real method), never
replaced, except in (a) where the inner function is swapped to prove plain delegation. (e) covers
the job service's front ends (Serena's job API, the agent-scheduler routes); a job run by a Ray
worker is counted inside the worker in `test/test_ray_executor.py`.
"""
from __future__ import annotations

import base64
import json
import os

import pytest

# Imported at the top on purpose: no hidden initialisation order (M10 invariant).
from modules import processing
from modules.runtime import runner as runner_module  # noqa: F401  (the import itself is under test)
from modules.runtime.runner import ProcessingRequest, ProcessingRunner

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_INPUTS = os.path.join(os.path.dirname(HERE), "golden", "inputs")


class RunnerRecorder:
    """Counts `ProcessingRunner.run` calls while delegating to the real method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.requests: list[ProcessingRequest] = []
        original = ProcessingRunner.run
        recorder = self

        def run(self_runner, request):
            recorder.requests.append(request)
            return original(self_runner, request)

        monkeypatch.setattr(ProcessingRunner, "run", run)

    @property
    def count(self) -> int:
        return len(self.requests)


@pytest.fixture()
def recorder(monkeypatch) -> RunnerRecorder:
    return RunnerRecorder(monkeypatch)


def _txt2img(**kw) -> processing.StableDiffusionProcessingTxt2Img:
    args = dict(prompt="a lighthouse at dusk", negative_prompt="fog", width=64, height=64, steps=3,
                sampler_name="Euler a", scheduler="Automatic", seed=4242, do_not_save_samples=True,
                do_not_save_grid=True)
    args.update(kw)
    return processing.StableDiffusionProcessingTxt2Img(**args)


def _img2img(**kw) -> processing.StableDiffusionProcessingImg2Img:
    from PIL import Image
    init = Image.open(os.path.join(GOLDEN_INPUTS, "init.png")).convert("RGB")
    args = dict(prompt="a lighthouse", init_images=[init], width=64, height=64, steps=3, sampler_name="Euler",
                scheduler="Automatic", seed=7, denoising_strength=0.6, do_not_save_samples=True, do_not_save_grid=True)
    args.update(kw)
    return processing.StableDiffusionProcessingImg2Img(**args)


def _png_bytes(processed) -> list[bytes]:
    from modules import infotext_utils
    return [infotext_utils.image_to_bytes(im, "png", processed.infotexts[i]) for i, im in enumerate(processed.images)]


# (a) -------------------------------------------------------------------------------------------------
def test_request_wraps_processing_both_ways():
    p = object()
    assert ProcessingRequest(p).processing is p
    assert ProcessingRequest(processing=p).processing is p


def test_run_delegates_to_process_images_inner_and_returns_its_result(monkeypatch):
    seen, sentinel = [], object()

    def inner(p):
        seen.append(p)
        return sentinel

    monkeypatch.setattr(processing, "process_images_inner", inner)
    p = object()
    assert ProcessingRunner().run(ProcessingRequest(p)) is sentinel
    assert seen == [p]


def test_runner_has_no_runtime_context_in_its_constructor():
    import inspect
    assert list(inspect.signature(ProcessingRunner.__init__).parameters) in (["self"], ["self", "args", "kwargs"])
    ProcessingRunner()


# (b) -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_txt2img, _img2img], ids=["txt2img", "img2img"])
def test_process_images_reaches_the_runner_exactly_once(serena, recorder, make):
    p = make()
    processed = processing.process_images(p)
    assert recorder.count == 1
    assert recorder.requests[0].processing is p
    assert len(processed.images) == 1 and processed.images[0].size == (64, 64)


def test_each_call_reaches_the_runner_once_also_for_batches(serena, recorder):
    processing.process_images(_txt2img(batch_size=2, n_iter=2))
    processing.process_images(_txt2img())
    assert recorder.count == 2


# (c) -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_txt2img, _img2img], ids=["txt2img", "img2img"])
def test_runner_path_and_direct_inner_call_give_identical_bytes(serena, make):
    """`p` is built complete (sampler and scheduler as `process_images` normalises them), so the only
    difference between the two calls is the path: through the runner, or straight to the inner call."""
    through_runner = processing.process_images(make())
    direct = processing.process_images_inner(make())
    assert through_runner.infotexts == direct.infotexts
    assert _png_bytes(through_runner) == _png_bytes(direct)


# (d) entry points --------------------------------------------------------------------------------------
def test_cli_generation_goes_through_the_runner(serena, recorder, tmp_path):
    from modules import cli
    request = {"prompt": "a boat", "width": 64, "height": 64, "steps": 2, "seed": 11,
               "override_settings": {"save_to_dirs": False}}
    processed = cli.run(request, outdir=str(tmp_path))
    assert recorder.count == 1
    assert len(processed.images) == 1
    assert any(name.endswith(".png") for name in os.listdir(tmp_path))


def test_cli_img2img_goes_through_the_runner(serena, recorder, tmp_path):
    from modules import cli
    request = cli.resolve_image_paths({"prompt": "a boat", "init_images": ["init.png"], "width": 64, "height": 64,
                                       "steps": 2, "seed": 11}, GOLDEN_INPUTS)
    cli.run(request, outdir=str(tmp_path))
    assert recorder.count == 1
    assert isinstance(recorder.requests[0].processing, processing.StableDiffusionProcessingImg2Img)


def test_cli_main_goes_through_the_runner(serena, recorder, tmp_path, monkeypatch, capsys):
    """The real `./webui.sh generate` entry point, in-process (initialize is the session's)."""
    import webui
    from modules import cli
    monkeypatch.setattr(webui, "initialize", lambda *a, **k: None)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"prompt": "a boat", "width": 64, "height": 64, "steps": 2, "seed": 3}))
    rc = cli.main(["--request", str(req), "--outdir", str(tmp_path / "out"), "--sampler-name", "DDIM"])
    assert rc == 0
    assert recorder.count == 1
    assert recorder.requests[0].processing.sampler_name == "DDIM"


# (d) API over a real HTTP connection (uvicorn on loopback, in this process so the runner is observed)
@pytest.fixture(scope="module")
def http_server(serena):
    import socket
    from modules.api.app import build_app, serve
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(build_app(serena.cmd_opts), "127.0.0.1", port, background=True)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


def _b64_file(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def test_http_txt2img_reaches_the_runner_once(http_server, recorder):
    import requests
    r = requests.post(f"{http_server}/sdapi/v1/txt2img", timeout=120,
                      json={"prompt": "a kite", "width": 64, "height": 64, "steps": 2, "seed": 8})
    assert r.status_code == 200, r.text
    assert recorder.count == 1
    assert isinstance(recorder.requests[0].processing, processing.StableDiffusionProcessingTxt2Img)
    assert len(r.json()["images"]) == 1


def test_http_img2img_reaches_the_runner_once(http_server, recorder):
    import requests
    body = {"prompt": "a kite", "init_images": [_b64_file(os.path.join(GOLDEN_INPUTS, "init.png"))],
            "mask": _b64_file(os.path.join(GOLDEN_INPUTS, "mask.png")), "width": 64, "height": 64, "steps": 2,
            "seed": 8, "denoising_strength": 0.7}
    r = requests.post(f"{http_server}/sdapi/v1/img2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert recorder.count == 1
    assert isinstance(recorder.requests[0].processing, processing.StableDiffusionProcessingImg2Img)


def test_http_request_that_fails_validation_never_reaches_the_runner(http_server, recorder):
    import requests
    r = requests.post(f"{http_server}/sdapi/v1/txt2img", json={"width": 65, "height": 64, "steps": 2}, timeout=60)
    assert r.status_code == 422
    assert recorder.count == 0


# (d) UI: the functions the Generate buttons are bound to --------------------------------------------------
def test_ui_generate_buttons_go_through_the_runner(serena, recorder):
    from PIL import Image
    from modules import ui_handlers
    common = dict(prompt="a kite", negative_prompt="", styles=[], sampler_name="Euler", scheduler="Automatic",
                  steps=2, width=64, height=64, n_iter=1, batch_size=1, cfg_scale=7.0, seed=5)
    ui_handlers.generate_txt2img(dict(common, enable_hr=False, denoising_strength=0.7))
    init = Image.open(os.path.join(GOLDEN_INPUTS, "init.png")).convert("RGB")
    ui_handlers.generate_img2img(dict(common, init_image=init, denoising_strength=0.6))
    assert [type(r.processing).__name__ for r in recorder.requests] == [
        "StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img"]


# M10 invariants beyond the call path ------------------------------------------------------------------
def test_infotext_reports_the_m10_version(serena):
    processed = processing.process_images(_txt2img())
    assert processed.infotexts[0].endswith("Version: v0.0.10-m10")
    assert processed.version == "v0.0.10-m10"


@pytest.mark.parametrize("first, second", [("modules.runtime.runner", "modules.processing"),
                                           ("modules.processing", "modules.runtime.runner")])
def test_imports_work_in_any_order_in_a_fresh_process(first, second):
    """No hidden initialisation order and no import cycle between processing and the runner."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(HERE))
    code = (f"import {first}, {second}; from modules.runtime.runner import ProcessingRunner, ProcessingRequest; "
            "from modules.processing import process_images, StableDiffusionProcessingTxt2Img; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# (e) scripts: a selectable script's `run` that calls process_images N times reaches the runner N times
class _RepeatScript:
    """Built on first use (modules.scripts is imported lazily by the tests)."""

    @staticmethod
    def make():
        import copy

        from modules import scripts

        class Repeat(scripts.Script):
            def title(self):
                return "Repeat"

            def run(self, p, times):
                images, infotexts, last = [], [], None
                for n in range(int(times)):
                    q = copy.copy(p)
                    q.seed = p.seed + n
                    last = processing.process_images(q)
                    images += last.images
                    infotexts += last.infotexts
                return processing.Processed(p, images, p.seed, last.info, infotexts=infotexts)

        return Repeat()


def test_script_run_reaches_the_runner_once_per_process_images_call(http_server, recorder, monkeypatch):
    import requests

    from modules import scripts
    runner = scripts.ScriptRunner(is_img2img=False)
    runner.add_script(_RepeatScript.make(), n_args=1)
    monkeypatch.setattr(scripts, "scripts_txt2img", runner)
    r = requests.post(f"{http_server}/sdapi/v1/txt2img", timeout=120,
                      json={"prompt": "a kite", "width": 64, "height": 64, "steps": 2, "seed": 8,
                            "script_name": "repeat", "script_args": [3]})
    assert r.status_code == 200, r.text
    assert recorder.count == 3
    assert [q.processing.seed for q in recorder.requests] == [8, 9, 10]
    assert len(r.json()["images"]) == 3


# (e) the job service's front ends: queued jobs reach the runner once, with golden bytes --------------------
def _golden(name: str) -> tuple[dict, list[bytes]]:
    import sys
    sys.path.insert(0, os.path.dirname(HERE))
    from golden import harness
    request = harness.load_request(name)
    expected = []
    for path in harness.expected_files(name):
        with open(path, "rb") as f:
            expected.append(f.read())
    return request, expected


def _poll_done(get, timeout: float = 120.0) -> dict:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get()
        if body["status"] in ("done", "failed", "interrupted"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job not finished: {body}")


@pytest.fixture()
def golden_defaults(serena):
    import sys
    sys.path.insert(0, os.path.dirname(HERE))
    from golden import harness
    with harness.default_options():
        yield


def test_a_job_through_the_serena_job_api_reaches_the_runner_once(http_server, recorder, golden_defaults):
    import requests
    request, expected = _golden("txt2img-euler-64")
    r = requests.post(f"{http_server}/serena/v1/jobs", json={"kind": "txt2img", "request": request}, timeout=60)
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    body = _poll_done(lambda: requests.get(f"{http_server}/serena/v1/jobs/{job}", timeout=30).json())
    assert body["status"] == "done"
    image = requests.get(f"{http_server}/serena/v1/jobs/{job}/results/0", timeout=30).content
    assert recorder.count == 1
    assert [image] == expected


def test_a_job_through_the_agent_scheduler_routes_reaches_the_runner_once(http_server, recorder, golden_defaults):
    import requests
    request, expected = _golden("txt2img-euler-64")
    r = requests.post(f"{http_server}/agent-scheduler/v1/queue/txt2img", json=request, timeout=60)
    assert r.status_code == 200, r.text
    task = r.json()["task_id"]
    _poll_done(lambda: requests.get(f"{http_server}/agent-scheduler/v1/task/{task}", timeout=30).json()["data"])
    results = requests.get(f"{http_server}/agent-scheduler/v1/task/{task}/results", timeout=30).json()
    assert recorder.count == 1
    images = [base64.b64decode(item["image"].split(",", 1)[1]) for item in results["data"]]
    assert images == expected
