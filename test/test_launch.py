"""The real launcher in a separate process, as `./webui.sh` runs it: flags, ports, API, UI, /docs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

import webui
from modules import cmd_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`launch.py FLAGS` in a subprocess; waits until it answers, stops it on exit."""

    def __init__(self, data_dir: str, *flags: str):
        self.port = free_port()
        env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", COMMANDLINE_ARGS="")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "launch.py"), "--skip-prepare-environment", "--data-dir", data_dir,
             "--use-cpu", "all", "--no-half", "--port", str(self.port), *flags],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.base}/sdapi/v1/sd-models", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("server did not answer within 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_default_address_is_loopback_7860_and_7861_for_nowebui():
    assert webui.server_address(cmd_args.parse([], environ={})) == ("127.0.0.1", 7860)
    assert webui.server_address(cmd_args.parse(["--nowebui"], environ={})) == ("127.0.0.1", 7861)
    assert webui.server_address(cmd_args.parse(["--listen"], environ={})) == ("0.0.0.0", 7860)
    assert webui.server_address(cmd_args.parse(["--server-name", "::1", "--port", "9000"], environ={})) == ("::1", 9000)


def test_api_only_server_generates_and_serves_docs(tmp_path):
    with Server(str(tmp_path), "--nowebui", "--api-server-stop") as srv:
        models = httpx.get(f"{srv.base}/sdapi/v1/sd-models", timeout=10).json()
        assert [m["title"].split(" ")[0] for m in models] == ["serena-demo-tiny.safetensors"]
        r = httpx.post(f"{srv.base}/sdapi/v1/txt2img", timeout=120,
                       json={"prompt": "a kite", "width": 64, "height": 64, "steps": 2, "seed": 3})
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        assert httpx.get(f"{srv.base}/docs", timeout=10).status_code == 200
        assert "/sdapi/v1/txt2img" in httpx.get(f"{srv.base}/openapi.json", timeout=10).json()["paths"]
        assert httpx.get(f"{srv.base}/", timeout=10).status_code == 404  # no UI with --nowebui
        try:  # the process exits at once, usually before answering (A1111 behaviour)
            httpx.post(f"{srv.base}/sdapi/v1/server-kill", timeout=10)
        except httpx.HTTPError:
            pass
        assert srv.proc.wait(timeout=30) is not None


def test_api_auth_and_model_loaded_on_first_use(tmp_path):
    """--api-auth guards the API; --skip-load-model-at-start loads the checkpoint with the first job."""
    with Server(str(tmp_path), "--nowebui", "--api-auth", "alice:secret", "--skip-load-model-at-start") as srv:
        assert httpx.get(f"{srv.base}/sdapi/v1/options", timeout=10).status_code == 401
        assert httpx.get(f"{srv.base}/sdapi/v1/options", auth=("alice", "wrong"), timeout=10).status_code == 401
        assert httpx.get(f"{srv.base}/sdapi/v1/options", auth=("alice", "secret"), timeout=10).status_code == 200
        r = httpx.post(f"{srv.base}/sdapi/v1/txt2img", auth=("alice", "secret"), timeout=120,
                       json={"prompt": "a kite", "width": 64, "height": 64, "steps": 1, "seed": 3})
        assert r.status_code == 200, r.text
        assert "Model: serena-demo-tiny" in r.json()["info"]


@pytest.fixture()
def ui_server(tmp_path):
    with Server(str(tmp_path)) as srv:
        yield srv


def test_ui_is_mounted_at_root_and_api_routes_are_not_shadowed(ui_server):
    page = httpx.get(f"{ui_server.base}/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    samplers = httpx.get(f"{ui_server.base}/sdapi/v1/samplers", timeout=10).json()
    assert samplers[0]["name"] == "DPM++ 2M"
