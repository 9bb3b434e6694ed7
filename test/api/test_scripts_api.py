"""script_name / script_args / alwayson_scripts resolved against registered scripts (spec §1.3)."""
from __future__ import annotations

import json

import pytest

from api_helpers import API, TXT2IMG_BASE
from modules import processing, scripts

pytestmark = pytest.mark.timeout(120)


class EchoSteps(scripts.Script):
    """Selectable: runs the job with the steps given as its first argument."""

    calls: list = []

    def title(self):
        return "Echo Steps"

    def show(self, is_img2img):
        return True

    def run(self, p, steps, label):
        EchoSteps.calls.append((steps, label))
        p.steps = steps
        return processing.process_images(p)


class Recorder(scripts.Script):
    """AlwaysVisible: records the arguments it receives in `process`."""

    seen: list = []

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        Recorder.seen.append(args)


@pytest.fixture()
def registered(monkeypatch):
    runner = scripts.ScriptRunner(is_img2img=False)
    runner.add_script(Recorder(), n_args=2)
    runner.add_script(EchoSteps(), n_args=2)
    monkeypatch.setattr(scripts, "scripts_txt2img", runner)
    EchoSteps.calls.clear()
    Recorder.seen.clear()
    return runner


def test_selected_script_gets_its_args(client, registered):
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "seed": 4, "script_name": "echo steps",
                                            "script_args": [1, "hello"]})
    assert r.status_code == 200, r.text
    assert EchoSteps.calls == [(1, "hello")]
    assert json.loads(r.json()["info"])["steps"] == 1


def test_alwayson_args_overwrite_defaults(client, registered):
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "seed": 4, "steps": 1,
                                            "alwayson_scripts": {"RECORDER": {"args": [5]}}})
    assert r.status_code == 200, r.text
    assert Recorder.seen == [(5, None)]


def test_alwayson_script_runs_when_not_named(client, registered):
    assert client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "steps": 1}).status_code == 200
    assert Recorder.seen == [(None, None)]


def test_script_errors(client, registered):
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "alwayson_scripts": {"Echo Steps": {"args": []}}})
    assert r.status_code == 422
    assert r.json()["detail"] == "Cannot have a selectable script in the always on scripts params"
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "script_name": "recorder"})
    assert r.status_code == 422 and r.json()["detail"] == "Script 'recorder' not found"
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "alwayson_scripts": {"Nope": {}}})
    assert r.status_code == 422 and r.json()["detail"] == "Script 'Nope' not found"


def test_scripts_listing(client, registered):
    assert client.get(f"{API}/scripts").json()["txt2img"] == ["recorder", "echo steps"]
