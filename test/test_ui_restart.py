"""A1111's "Reload UI" / "Apply and restart UI" (modules/ui_restart.py, webui.UiServer): with a
serving loop the app is rebuilt and `/internal/ping` answers with a new boot id; without one the
extensions are reloaded in place."""
from __future__ import annotations

import base64
import socket
import time
import urllib.request

from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules import shared, ui_restart
from modules.api.app import parse_credentials


def _app(credentials=None) -> FastAPI:
    app = FastAPI()
    app.state.serena_credentials = parse_credentials(credentials) if credentials else None
    ui_restart.add_routes(app)
    return app


def _loop(monkeypatch, make_app):
    """A `webui.UiServer` of `make_app` at a free port, with its own command list: the browser
    tests' loop (same process) must not restart with it. Returns (server, port, commands)."""
    import webui
    monkeypatch.setattr(webui, "load_extensions", lambda: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    commands: list[str] = []
    serving = webui.UiServer("127.0.0.1", port, poll_s=0.05, make_app=make_app,
                             take_command=lambda: commands.pop() if commands else None).start_background()
    return serving, port, commands


def test_ping_answers_empty_with_the_boot_id_behind_the_credentials():
    app = _app()
    response = TestClient(app).get("/internal/ping")
    assert response.status_code == 200 and response.json() == {}
    assert response.headers[ui_restart.BOOT_HEADER] == app.state.serena_boot != _app().state.serena_boot
    guarded = TestClient(_app("user:pw"))
    assert guarded.get("/internal/ping").status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"user:pw").decode()}
    assert guarded.get("/internal/ping", headers=auth).status_code == 200


def test_without_a_serving_loop_the_restart_reloads_in_place(monkeypatch):
    monkeypatch.setattr(ui_restart, "loops_running", 0)
    reloaded = []
    assert ui_restart.request_restart(lambda: reloaded.append(1)) is False and reloaded == [1]
    assert shared.state.server_command != "restart"
    assert "location.reload" in ui_restart.page_reload_js() and "serenaRestartReload" not in ui_restart.page_reload_js()


def test_serving_loop_rebuilds_the_app_on_request(serena, monkeypatch):
    builds = []

    def make_app() -> FastAPI:
        app = _app()
        builds.append(app.state.serena_boot)
        return app

    running = ui_restart.loops_running
    serving, port, commands = _loop(monkeypatch, make_app)
    try:
        assert ui_restart.loop_active() and ui_restart.loops_running == running + 1
        assert "serenaRestartReload" in ui_restart.page_reload_js()
        commands.append("restart")
        deadline = time.monotonic() + 30
        while serving.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/ping") as response:
            assert response.headers[ui_restart.BOOT_HEADER] == builds[-1] != builds[0]
        assert len(builds) == 2
    finally:
        serving.stop()
    assert ui_restart.loops_running == running


def test_restart_request_sets_the_command_the_loop_takes(monkeypatch):
    import webui
    monkeypatch.setattr(ui_restart, "loops_running", 1)
    monkeypatch.setattr(shared.state, "server_command", None)
    monkeypatch.setattr(shared.state, "interrupted", False)  # a restart interrupts the running job (A1111)
    assert ui_restart.request_restart() is True and shared.state.interrupted
    assert webui._take_server_command() == "restart" and shared.state.server_command is None


def test_a_failing_rebuild_keeps_the_current_app_serving(serena, monkeypatch):
    builds = []

    def make_app() -> FastAPI:
        if builds:
            raise RuntimeError("an extension broke the page")
        app = _app()
        builds.append(app.state.serena_boot)
        return app

    serving, port, commands = _loop(monkeypatch, make_app)
    try:
        commands.append("restart")
        deadline = time.monotonic() + 10
        while commands and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/ping") as response:
            assert response.headers[ui_restart.BOOT_HEADER] == builds[0]  # the old app still answers
        assert serving.restarts == 0
    finally:
        serving.stop()
