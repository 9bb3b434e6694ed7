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


def test_fewer_script_args_than_controls_keep_the_other_defaults(client, monkeypatch):
    import gradio as gr
    runner = scripts.ScriptRunner(is_img2img=False)
    with gr.Blocks():
        controls = [gr.Slider(1, 10, value=2, label="Steps"), gr.Textbox("default label", label="Label")]
    runner.add_script(EchoSteps(), controls=controls)
    monkeypatch.setattr(scripts, "scripts_txt2img", runner)
    EchoSteps.calls.clear()
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "seed": 4, "script_name": "Echo Steps",
                                            "script_args": [1]})
    assert r.status_code == 200, r.text
    assert EchoSteps.calls == [(1, "default label")]


def test_builtin_scripts_are_listed_with_their_real_arguments(client):
    listed = client.get(f"{API}/scripts").json()
    for title in ("prompt matrix", "prompts from file or textbox", "x/y/z plot"):
        assert title in listed["txt2img"] and title in listed["img2img"]
    for title in ("loopback", "sd upscale", "outpainting mk2", "poor man's outpainting", "img2img alternative test"):
        assert title in listed["img2img"] and title not in listed["txt2img"]
    assert "custom code" not in listed["txt2img"]  # only with --allow-code
    info = {(x["name"], x["is_img2img"]): x for x in client.get(f"{API}/script-info").json()}
    xyz = info[("x/y/z plot", False)]
    assert xyz["is_alwayson"] is False and len(xyz["args"]) == 18
    x_type = xyz["args"][0]
    assert x_type["label"] == "X type" and "Sampler" in x_type["choices"] and "Steps" in x_type["choices"]
    margin = next(a for a in xyz["args"] if a["label"] == "Grid margins (px)")
    assert (margin["minimum"], margin["maximum"], margin["step"], margin["value"]) == (0, 500, 2, 0)
    matrix = info[("prompt matrix", False)]
    assert [a["value"] for a in matrix["args"]] == [False, False, "positive", "comma", 0]
