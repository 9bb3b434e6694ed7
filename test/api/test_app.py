"""The HTTP shell: error bodies, headers, gzip, CORS, auth and the body-size limit."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modules import cmd_args, errors
from modules.api.app import build_app, parse_credentials

pytestmark = pytest.mark.timeout(60)

ERROR_KEYS = {"error", "detail", "body", "errors"}


def make_client(*flags: str) -> TestClient:
    return TestClient(build_app(cmd_args.parse(list(flags), environ={})), raise_server_exceptions=False)


def test_domain_error_has_a1111_shape_and_names_the_problem():
    r = make_client().post("/sdapi/v1/png-info", json={"image": "not base64!"})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == "InvalidImage"
    assert "Invalid encoded image" in body["detail"]


def test_validation_error_keeps_fastapi_shape():
    r = make_client().post("/sdapi/v1/txt2img", json={"steps": "many", "width": 64})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", "steps"]
    assert {"loc", "msg", "type"} <= set(detail[0])


@pytest.mark.parametrize("payload, field", [
    ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"width": -64}, "width"),
    ({"denoising_strength": 1.5}, "denoising_strength"), ({"subseed_strength": -1}, "subseed_strength"),
    ({"seed": 1.5}, "seed"), ({"styles": "not a list"}, "styles"), ({"override_settings": [1]}, "override_settings"),
])
def test_out_of_range_and_wrong_types_are_422(payload, field):
    r = make_client().post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == field


def test_body_that_is_not_json_is_422():
    r = make_client().post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_route_is_404_in_a1111_shape():
    r = make_client().get("/sdapi/v1/no-such-route")
    assert r.status_code == 404
    assert set(r.json()) == ERROR_KEYS


def test_process_time_header_and_gzip():
    c = make_client()
    r = c.get("/sdapi/v1/options", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert float(r.headers["x-process-time"]) >= 0
    assert r.headers.get("content-encoding") == "gzip"
    small = c.post("/sdapi/v1/interrupt", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_no_cors_unless_configured():
    r = make_client().get("/sdapi/v1/progress", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    c = make_client("--cors-allow-origins", "http://good.example")
    ok = c.get("/sdapi/v1/progress", headers={"origin": "http://good.example"})
    assert ok.headers["access-control-allow-origin"] == "http://good.example"
    bad = c.get("/sdapi/v1/progress", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_cors_regex():
    c = make_client("--cors-allow-origins-regex", r"https://.*\.good\.example")
    r = c.options("/sdapi/v1/txt2img", headers={"origin": "https://a.good.example",
                                                "access-control-request-method": "POST"})
    assert r.headers["access-control-allow-origin"] == "https://a.good.example"


@pytest.mark.parametrize("route, method", [
    ("/sdapi/v1/progress", "GET"), ("/sdapi/v1/options", "GET"), ("/sdapi/v1/txt2img", "POST"),
    ("/sdapi/v1/loras", "GET"), ("/sdapi/v1/refresh-loras", "POST"), ("/sdapi/v1/interrupt", "POST"),
    # Registered by the Api class beside /sdapi/v1: they hand out task ids and live previews.
    ("/internal/progress", "POST"), ("/internal/pending-tasks", "GET"),
])
def test_api_auth_protects_every_route(route, method):
    c = make_client("--api-auth", "alice:s3cret,bob:pw")
    r = c.request(method, route)
    assert r.status_code == 401
    assert r.json()["detail"] == "Incorrect username or password"
    assert set(r.json()) == ERROR_KEYS
    assert c.request(method, route, auth=("alice", "wrong")).status_code == 401
    assert c.request(method, route, auth=("mallory", "s3cret")).status_code == 401


def test_api_auth_accepts_every_configured_user():
    c = make_client("--api-auth", "alice:s3cret,bob:pw")
    assert c.get("/sdapi/v1/progress", auth=("alice", "s3cret")).status_code == 200
    assert c.get("/sdapi/v1/progress", auth=("bob", "pw")).status_code == 200
    assert c.get("/internal/pending-tasks", auth=("bob", "pw")).status_code == 200
    assert c.post("/internal/progress", json={"id_task": "x"}, auth=("bob", "pw")).status_code == 200


def test_no_auth_without_flag():
    assert make_client().get("/sdapi/v1/progress").status_code == 200


def test_gradio_auth_also_guards_the_api_unless_api_auth_is_given():
    client = make_client("--gradio-auth", "ui:pw")
    assert client.get("/sdapi/v1/options").status_code == 401
    assert client.get("/sdapi/v1/options", auth=("ui", "pw")).status_code == 200
    client = make_client("--gradio-auth", "ui:pw", "--api-auth", "bot:key")
    assert client.get("/sdapi/v1/options", auth=("ui", "pw")).status_code == 401
    assert client.get("/sdapi/v1/options", auth=("bot", "key")).status_code == 200


@pytest.mark.parametrize("spec", ["nocolon", "a:b:c", ",", ""])
def test_bad_api_auth_spec_is_a_config_error(spec):
    with pytest.raises(errors.ConfigError):
        parse_credentials(spec)


def test_body_size_limit(clean_opts):
    clean_opts.data["api_max_body_mb"] = 1
    c = make_client()
    big = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = c.post("/sdapi/v1/png-info", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert set(r.json()) == ERROR_KEYS
    assert "api_max_body_mb" in r.json()["detail"]
    assert "x-process-time" in r.headers

    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = c.post("/sdapi/v1/png-info", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # The server keeps serving.
    assert c.get("/sdapi/v1/progress").status_code == 200


def test_server_stop_routes_only_with_flag():
    assert make_client().post("/sdapi/v1/server-stop").status_code == 404
    c = make_client("--api-server-stop")
    assert c.post("/sdapi/v1/server-restart").status_code == 501
    r = c.post("/sdapi/v1/server-stop")
    assert r.status_code == 200 and r.json() == "Stopping."


def test_api_log_prints_one_line_per_request(capsys):
    c = make_client("--api-log")
    c.get("/sdapi/v1/progress")
    out = capsys.readouterr().out
    assert out.count("API ") == 1 and "GET /sdapi/v1/progress" in out and " 200 " in out


def test_cmd_flags_hide_credentials():
    c = make_client("--api-auth", "alice:s3cret")
    flags = c.get("/sdapi/v1/cmd-flags", auth=("alice", "s3cret")).json()
    assert flags["api_auth"] == "***"
    assert "s3cret" not in c.get("/sdapi/v1/cmd-flags", auth=("alice", "s3cret")).text
