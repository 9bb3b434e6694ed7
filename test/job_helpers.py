"""A small txt2img job on the loaded model and its pixels, shared by the model-file tests (VAE,
textual inversion, LoRA) that compare a job's bytes before and after a file was used."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any, Iterator

import numpy as np

from modules import processing


def job(**kwargs) -> processing.Processed:
    """A 64x64, 3-step Euler txt2img job with a fixed seed; `kwargs` override any field."""
    base = dict(prompt="a red cube", negative_prompt="blurry", seed=1234, steps=3, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.process_images(processing.StableDiffusionProcessingTxt2Img(**base))


def image_bytes(res: processing.Processed) -> bytes:
    """The first image's RGB pixels."""
    return np.asarray(res.images[0].convert("RGB")).tobytes()


@contextlib.contextmanager
def options_set(**values) -> Iterator[None]:
    """`shared.opts` set to `values` for the block (every thread sees them), restored afterwards."""
    from modules import shared
    old = {key: getattr(shared.opts, key) for key in values}
    for key, value in values.items():
        shared.opts.set(key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            shared.opts.set(key, value)


@contextlib.contextmanager
def empty_folder(path: str) -> Iterator[str]:
    """`path` as an empty folder for the test, removed again afterwards."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- golden requests and queued jobs (job service, Ray executor, job APIs) ------------------------------------
def golden_request(name: str) -> dict:
    """The golden request `name` (test/golden/requests), images inlined as base64."""
    from golden import harness
    return harness.load_request(name)


def golden_bytes(name: str) -> list[bytes]:
    """The expected PNG files of golden request `name`, in image order."""
    from golden import harness
    out = []
    for path in harness.expected_files(name):
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def prepared(kind: str, fields: dict) -> dict:
    """`fields` resolved as a job service stores a request (`jobs.prepare`), as JSON."""
    from modules.runtime import jobs
    return jobs.prepare(kind, jobs.request_model(kind, fields)).model_dump(mode="json")


def record_runner_calls(monkeypatch) -> list:
    """Every `ProcessingRunner.run` call from now on (the real method still runs)."""
    from modules.runtime.runner import ProcessingRunner
    calls: list = []
    original = ProcessingRunner.run

    def run(self, request):
        calls.append(request)
        return original(self, request)

    monkeypatch.setattr(ProcessingRunner, "run", run)
    return calls


def read_events(response) -> "Iterator[tuple[str, object]]":
    """(event, decoded JSON data) of each Server-Sent Event of a streaming httpx response; comments
    (keep-alives) skipped."""
    import json
    name, data = None, []
    for line in response.iter_lines():
        if line == "":
            if name is not None or data:
                yield name or "message", json.loads("\n".join(data)) if data else None
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def wait_status(service: Any, job_id: str, statuses: tuple[str, ...] | None = None, timeout: float = 120.0) -> str:
    """The status of job `job_id` once it is one of `statuses` (default: finished — done, failed or
    interrupted); fails the test when it is not within `timeout` seconds."""
    from modules.runtime.job_store import DONE, FAILED, INTERRUPTED
    statuses = statuses or (DONE, FAILED, INTERRUPTED)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = service.store.status_of(job_id)
        if status in statuses:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {service.store.status_of(job_id)}")
