"""Where the server may write and who may ask it: folder options stay inside the data folder,
`--hide-ui-dir-config` makes them read-only, CORS answers only configured origins, the docs work
offline and sit behind the same auth as the API, and image URLs reach only public unicast hosts."""
from __future__ import annotations

import ipaddress
import os
import re

import pytest
from fastapi.testclient import TestClient

from api_helpers import API, TXT2IMG_BASE

pytestmark = pytest.mark.timeout(300)

FOLDER_OPTIONS = ["outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
                  "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save",
                  "outdir_init_images", "temp_dir"]
PATTERN_OPTIONS = ["samples_filename_pattern", "directories_filename_pattern", "grid_zip_filename_pattern"]


def files_under(folder: str) -> set[str]:
    return {os.path.join(root, f) for root, _, files in os.walk(folder) for f in files}


def app_with(api_runtime, **flags):
    """A fresh app over the session's runtime with some flags changed (restored by the caller)."""
    from modules.api.app import build_app
    cmd_opts = api_runtime.cmd_opts
    saved = {k: getattr(cmd_opts, k, None) for k in flags}
    for k, v in flags.items():
        setattr(cmd_opts, k, v)
    try:
        return build_app(cmd_opts), saved
    finally:
        for k, v in saved.items():
            setattr(cmd_opts, k, v)


# --- item 1: no write outside the data folder ------------------------------------------------------------
@pytest.mark.parametrize("option", FOLDER_OPTIONS)
@pytest.mark.parametrize("value", ["{outside}", "{outside}/deeper", "../{name}", "outputs/../../{name}"])
def test_folder_option_outside_the_data_folder_is_422(client, clean_opts, tmp_path, option, value):
    outside = str(tmp_path / "outside")
    value = value.format(outside=outside, name=os.path.basename(outside))
    r = client.post(f"{API}/options", json={option: value})
    assert r.status_code == 422, r.text
    assert option in r.json()["detail"] and "outside the data folder" in r.json()["detail"]
    assert clean_opts.data.get(option) != value


@pytest.mark.parametrize("option", PATTERN_OPTIONS)
@pytest.mark.parametrize("value", ["/etc/[seed]", "../[seed]", "a/../../[seed]", "..\\[seed]"])
def test_pattern_option_that_climbs_out_is_422(client, clean_opts, option, value):
    r = client.post(f"{API}/options", json={option: value})
    assert r.status_code == 422, r.text
    assert option in r.json()["detail"]


def test_folder_inside_the_data_folder_is_accepted_and_used(client, clean_opts, api_runtime):
    data = api_runtime.data_paths.data_path
    r = client.post(f"{API}/options", json={"outdir_txt2img_samples": "outputs/inside-test",
                                            "directories_filename_pattern": "[seed]"})
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "seed": 7, "save_images": True})
    assert r.status_code == 200, r.text
    assert any(f.endswith(".png") for f in files_under(os.path.join(data, "outputs", "inside-test")))


def test_an_operators_symlink_inside_the_data_folder_is_usable(client, clean_opts, api_runtime, tmp_path):
    """outputs/ on another disk is a common set-up: a link the operator placed stays usable."""
    target = tmp_path / "other-disk"
    target.mkdir()
    link = os.path.join(api_runtime.data_paths.data_path, "linked-outputs")
    os.symlink(target, link)
    try:
        r = client.post(f"{API}/options", json={"outdir_txt2img_samples": "linked-outputs/txt2img"})
        assert r.status_code == 200, r.text[:300]
        assert client.post(f"{API}/options", json={"outdir_txt2img_samples": "linked-outputs/../../x"}).status_code == 422
    finally:
        os.remove(link)


def test_override_settings_cannot_write_outside(client, clean_opts, tmp_path):
    outside = tmp_path / "outside"
    for option in ("outdir_txt2img_samples", "outdir_samples", "outdir_txt2img_grids", "outdir_grids"):
        r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "save_images": True, "batch_size": 2,
                                                "override_settings": {option: str(outside)}})
        assert r.status_code == 422, r.text
        assert option in r.json()["detail"]
    assert not outside.exists()


def test_no_api_call_writes_outside_the_data_folder(client, clean_opts, api_runtime, tmp_path):
    """Every folder and pattern option pointed outside, then every saving request: nothing appears
    outside the data folder, and the tree outside is exactly as it was."""
    outside = tmp_path / "outside"
    outside.mkdir()
    before = files_under(str(tmp_path))
    for option in FOLDER_OPTIONS:
        client.post(f"{API}/options", json={option: str(outside)})
    for option in PATTERN_OPTIONS:
        client.post(f"{API}/options", json={option: "../../../" + str(outside) + "/[seed]"})
    client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "save_images": True, "batch_size": 2})
    client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "save_images": True,
                                        "override_settings": {"samples_filename_pattern": "../../x[seed]"}})
    assert files_under(str(tmp_path)) == before


def test_allow_outside_data_dir_flag_lets_an_operator_choose(api_runtime, clean_opts, tmp_path):
    app, _ = app_with(api_runtime)
    api_runtime.cmd_opts.allow_outside_data_dir = True
    try:
        with TestClient(app) as c:
            r = c.post(f"{API}/options", json={"outdir_txt2img_samples": str(tmp_path / "chosen")})
            assert r.status_code == 200, r.text
            r = c.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "save_images": True})
            assert r.status_code == 200
        assert any(f.endswith(".png") for f in files_under(str(tmp_path / "chosen")))
    finally:
        api_runtime.cmd_opts.allow_outside_data_dir = False


def test_hide_ui_dir_config_makes_folder_options_read_only(client, api_runtime, clean_opts):
    api_runtime.cmd_opts.hide_ui_dir_config = True
    try:
        for option in FOLDER_OPTIONS + PATTERN_OPTIONS:
            r = client.post(f"{API}/options", json={option: "outputs/x"})
            assert r.status_code == 403, r.text
            assert option in r.json()["detail"] and "read-only" in r.json()["detail"]
        r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "override_settings": {"outdir_samples": "x"}})
        assert r.status_code == 403
        assert client.post(f"{API}/options", json={"samples_format": "png"}).status_code == 200
    finally:
        api_runtime.cmd_opts.hide_ui_dir_config = False


@pytest.mark.parametrize("path", ["/docs-assets/..%2F..%2Fapi%2Fapp.py", "/docs-assets/%2Fetc%2Fpasswd",
                                  "/docs-assets/__init__.py", "/sdapi/v1/../../etc/passwd"])
def test_no_route_serves_a_file_by_path(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert "root:" not in r.text and "import" not in r.text


@pytest.mark.parametrize("target", ["/etc/passwd", "{data}/config.json", "{root}/README.md", "../../../../etc/passwd",
                                    "{root}/modules/shared.py"])
def test_the_ui_serves_no_file_by_path(ui_app_client, api_runtime, target):
    from modules import paths
    target = target.format(data=api_runtime.data_paths.data_path, root=paths.script_path)
    for url in (f"/gradio_api/file={target}", f"/gradio_api/file/{target}", f"/file={target}"):
        r = ui_app_client.get(url)
        assert r.status_code in (400, 403, 404), (url, r.status_code)
        assert "root:" not in r.text and "import" not in r.text


# --- item 7: CORS ------------------------------------------------------------------------------------------
def preflight(c, origin: str, path: str = f"{API}/txt2img"):
    return c.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-allow-origin")
            or k.lower() == "access-control-allow-credentials"}


@pytest.mark.parametrize("origin", ["http://localhost:9999", "http://127.0.0.1:1", "https://evil.example", "null"])
def test_no_cors_headers_without_cors_flags(ui_app_client, origin):
    c = ui_app_client
    assert cors_headers(preflight(c, origin)) == {}
    for path in (f"{API}/samplers", "/", "/config", "/theme.css"):
        assert cors_headers(c.get(path, headers={"Origin": origin})) == {}, path


def test_wrong_method_is_405_with_the_ui_mounted_at_the_root(ui_app_client):
    r = ui_app_client.get(f"{API}/txt2img")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert ui_app_client.put("/docs").status_code == 405


def test_configured_origin_gets_cors_and_others_do_not(api_runtime):
    app, _ = app_with(api_runtime, cors_allow_origins="https://client.example")
    with TestClient(app) as c:
        r = preflight(c, "https://client.example")
        assert r.headers["access-control-allow-origin"] == "https://client.example"
        assert "access-control-allow-origin" not in preflight(c, "http://localhost:9999").headers
        r = c.get(f"{API}/samplers", headers={"Origin": "http://localhost:9999"})
        assert "access-control-allow-origin" not in r.headers


# --- items 9 and 10: docs offline, behind auth -----------------------------------------------------------
def test_docs_pages_load_every_asset_from_this_server(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            assert client.get(url).status_code == 200, url
        assert "cdn" not in html and "googleapis" not in html


def test_openapi_document_declares_every_error_status(client):
    doc = client.get("/openapi.json").json()
    post = doc["paths"][f"{API}/txt2img"]["post"]["responses"]
    assert {"200", "400", "403", "404", "413", "422"} <= set(post)
    assert "ErrorResponse" in str(post["404"]) and "UnprocessableResponse" in str(post["422"])
    assert "501" in doc["paths"][f"{API}/train/embedding"]["post"]["responses"]


def every_route(app) -> list[tuple[str, str]]:
    """(method, concrete path) for every route of the API app, fallback 405 routes included."""
    from modules.api.app import api_routes
    out = []
    for route in api_routes(app.routes):
        path = route.path.replace("{name}", "swagger-ui.css")
        out += [(m, path) for m in sorted(route.methods)]
    assert len(out) > 100  # every /sdapi/v1 route, its 405 fallback, /internal, the docs
    return out


def test_with_api_auth_every_route_needs_credentials(api_runtime):
    app, _ = app_with(api_runtime, api_auth="alice:secret")
    routes = every_route(app)
    assert ("GET", "/docs") in routes and ("GET", "/openapi.json") in routes and ("GET", "/redoc") in routes
    with TestClient(app, raise_server_exceptions=False) as c:
        for method, path in routes:
            r = c.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            r = c.request(method, path, auth=("alice", "wrong"))
            assert r.status_code == 401, (method, path, r.status_code)
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js", f"{API}/options"):
            assert c.get(path, auth=("alice", "secret")).status_code == 200, path
        assert "401" in c.get("/openapi.json", auth=("alice", "secret")).json()["paths"][f"{API}/options"]["get"]["responses"]


@pytest.fixture(scope="module")
def ui_app_client(api_runtime):
    """The real composition (API + Gradio UI mounted at /)."""
    import webui
    with TestClient(webui.create_app(), raise_server_exceptions=False) as c:
        yield c


def test_gradio_auth_leaves_only_the_login_page_and_assets_open(api_runtime):
    import webui
    api_runtime.cmd_opts.gradio_auth = "bob:pw"
    try:
        app = webui.create_app()
    finally:
        api_runtime.cmd_opts.gradio_auth = None
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/")
        assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
        for path in ("/theme.css", "/favicon.ico", "/static/img/logo.svg"):
            assert c.get(path).status_code == 200, path
        for method, path in [("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/gradio_api/startup-events"),
                             ("GET", "/gradio_api/user"), ("GET", "/gradio_api/app_id"), ("POST", "/gradio_api/cancel"),
                             ("POST", "/gradio_api/upload"), ("POST", "/gradio_api/queue/join"),
                             ("GET", "/gradio_api/file=README.md"), ("GET", "/monitoring/x"),
                             ("GET", f"{API}/options"), ("GET", "/docs"), ("GET", "/openapi.json")]:
            assert c.request(method, path).status_code == 401, (method, path)
        assert c.post("/login", data={"username": "bob", "password": "pw"}).status_code == 200
        assert c.get("/config").status_code == 200
        assert c.get("/gradio_api/user").json() == "bob"


# --- item 11: image URLs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("224.0.0.1", False), ("239.255.255.250", False),
    ("255.255.255.255", False), ("0.0.0.0", False), ("127.0.0.1", False), ("10.1.2.3", False),
    ("100.64.0.1", False), ("169.254.169.254", False), ("240.0.0.1", False), ("198.18.0.1", False),
    ("::1", False), ("::", False), ("ff02::1", False), ("ff0e::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:224.0.0.1", False), ("2002:7f00:1::", False), ("2002:e000:1::", False),
])
def test_only_globally_routable_unicast_addresses_are_public(address, public):
    from modules.api.image_io import is_public_unicast
    assert is_public_unicast(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("host", ["224.0.0.1", "[ff0e::1]", "239.1.2.3", "[::ffff:10.0.0.1]"])
def test_image_url_to_a_special_address_is_422(client, clean_opts, host):
    clean_opts.data["api_enable_requests"] = True
    r = client.post(f"{API}/png-info", json={"image": f"http://{host}/a.png"})
    assert r.status_code == 422, r.text
    assert "non-public address" in r.json()["detail"]
