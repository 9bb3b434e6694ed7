"""Fixtures for the API tests: an initialised runtime in a private data folder, the app, a
TestClient, and a real uvicorn server on a free loopback port (for the webuiapi client).

The runtime is the session-wide `serena` fixture of test/conftest.py (`webui.initialize()` on the
generated demo checkpoint in a temporary data folder).
"""
from __future__ import annotations

import os

import pytest
from api_helpers import free_port


@pytest.fixture(scope="session")
def api_runtime(serena, serena_data_dir):
    """`modules.shared` initialised by `webui.initialize()` on the demo checkpoint (test/conftest.py),
    with outputs kept inside the session's data folder."""
    opts = serena.opts
    for kind in ("txt2img", "img2img"):
        opts.data[f"outdir_{kind}_samples"] = os.path.join(serena_data_dir, "outputs", f"{kind}-images")
        opts.data[f"outdir_{kind}_grids"] = os.path.join(serena_data_dir, "outputs", f"{kind}-grids")
    yield serena


@pytest.fixture(scope="module", autouse=True)
def session_checkpoints(api_runtime):
    """The checkpoint registry of the session's data folder, rebuilt when a non-API test module run
    before this one left it emptied (its private data folder is gone)."""
    from modules import sd_models
    if not sd_models.checkpoints_list:
        sd_models.list_models()
    yield


@pytest.fixture(scope="session")
def api_app(api_runtime):
    from modules.api.app import build_app
    return build_app(api_runtime.cmd_opts)


@pytest.fixture()
def client(api_app):
    from fastapi.testclient import TestClient
    with TestClient(api_app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def server(api_app):
    """A real uvicorn server on 127.0.0.1; yields (host, port)."""
    from modules.api.app import serve
    port = free_port()
    srv = serve(api_app, "127.0.0.1", port, background=True)
    yield "127.0.0.1", port
    srv.should_exit = True


@pytest.fixture()
def clean_opts(api_runtime):
    """Restore the options' data after a test that changes them."""
    saved = dict(api_runtime.opts.data)
    yield api_runtime.opts
    api_runtime.opts.data.clear()
    api_runtime.opts.data.update(saved)
