"""Bad input over HTTP, one row per item of the hardening issue: each answer is a 4xx whose JSON
names the field (and is itself strict JSON), the server stays healthy, and the next valid request
returns exactly the image it returned before the bad one."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from api_helpers import API, TXT2IMG_BASE, png_b64

pytestmark = pytest.mark.timeout(300)

REFERENCE = {**TXT2IMG_BASE, "seed": 1234, "sampler_index": "Euler", "prompt": "a red cube"}
HIRES = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5, "hr_second_pass_steps": 1}


def strict_json(text: str):
    """Parse `text` as RFC 8259 JSON: NaN/Infinity are not JSON, and lone surrogates are not text."""
    def refuse(constant):
        raise ValueError(f"non-JSON constant {constant}")
    value = json.loads(text, parse_constant=refuse)
    text.encode("utf-8")
    return value


def raw_post(client, path: str, body: str):
    return client.post(f"{API}/{path}", content=body.encode("utf-8", "surrogatepass"),
                       headers={"content-type": "application/json"})


def body_with(changes_json: str) -> str:
    """REFERENCE as JSON with raw JSON text `changes_json` (`"key": value, ...`) spliced in."""
    base = {k: v for k, v in REFERENCE.items() if f'"{k}":' not in changes_json}
    return "{" + changes_json + ", " + json.dumps(base)[1:]


@pytest.fixture(scope="module")
def reference_png(api_runtime):
    from fastapi.testclient import TestClient

    from modules.api.app import build_app
    with TestClient(build_app(api_runtime.cmd_opts)) as c:
        r = c.post(f"{API}/txt2img", json=REFERENCE)
    assert r.status_code == 200, r.text
    return r.json()["images"][0]


def assert_healthy(client, reference_png):
    """The next valid request works and returns the same image as before any bad input."""
    r = client.post(f"{API}/txt2img", json=REFERENCE)
    assert r.status_code == 200, r.text
    assert r.json()["images"][0] == reference_png


def names(response, field: str) -> bool:
    """True if the 4xx body names `field` (FastAPI's loc list, or A1111's detail text)."""
    body = strict_json(response.text)
    if isinstance(body.get("detail"), list):
        return any(field in [str(x) for x in item["loc"]] for item in body["detail"])
    return field in str(body.get("detail", "")) + str(body.get("errors", ""))


# --- item 1: folders outside the data folder ----------------------------------------------------------
@pytest.mark.parametrize("option", ["outdir_txt2img_samples", "outdir_grids", "temp_dir", "outdir_save"])
def test_folder_outside_is_422_naming_the_option(client, reference_png, clean_opts, tmp_path, option):
    r = client.post(f"{API}/options", json={option: str(tmp_path)})
    assert r.status_code == 422 and names(r, option)
    r = client.post(f"{API}/txt2img", json={**REFERENCE, "override_settings": {option: "../elsewhere"}})
    assert r.status_code == 422 and names(r, option)
    assert_healthy(client, reference_png)


# --- item 11: image URLs to special addresses ------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://224.0.0.251/x.png", "http://[ff02::fb]/x.png", "http://0.0.0.0/x.png"])
def test_image_url_to_a_special_address_is_422_naming_the_field(client, reference_png, clean_opts, url):
    clean_opts.data["api_enable_requests"] = True
    r = client.post(f"{API}/img2img", json={**REFERENCE, "init_images": [url]})
    assert r.status_code == 422 and names(r, "init_images")
    assert_healthy(client, reference_png)


# --- item 2: non-finite numbers -------------------------------------------------------------------
NUMERIC_FIELDS = ["subseed_strength", "denoising_strength", "seed", "width", "height", "cfg_scale", "steps",
                  "eta", "s_churn", "s_noise", "hr_scale", "batch_size", "refiner_switch_at"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"])
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_non_finite_number_is_422_naming_the_field(client, reference_png, field, literal):
    r = raw_post(client, "txt2img", body_with(f'"{field}": {literal}'))
    assert r.status_code == 422, r.text
    assert names(r, field)


def test_non_finite_numbers_anywhere_are_422_with_strict_json(client, reference_png):
    for path, body in [("txt2img", body_with('"override_settings": {"CLIP_stop_at_last_layers": NaN}')),
                       ("txt2img", body_with('"script_args": [1, Infinity]')),
                       ("img2img", body_with('"init_images": [], "image_cfg_scale": -Infinity')),
                       ("options", '{"CLIP_stop_at_last_layers": NaN}'),
                       ("extra-single-image", '{"upscaling_resize": Infinity, "image": ""}'),
                       ("png-info", '{"image": NaN}')]:
        r = raw_post(client, path, body)
        assert r.status_code == 422, (path, r.text[:300])
        strict_json(r.text)
    assert_healthy(client, reference_png)


def test_finite_overrides_of_a_number_option_stay_checked(client, reference_png, clean_opts):
    r = client.post(f"{API}/options", json={"CLIP_stop_at_last_layers": 1e300})
    assert r.status_code == 422 and names(r, "CLIP_stop_at_last_layers")


# --- item 3: empty prompt lists --------------------------------------------------------------------
@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_empty_prompt_list_is_422_and_the_server_stays_healthy(client, reference_png, field):
    r = client.post(f"{API}/txt2img", json={**REFERENCE, **HIRES, field: []})
    assert r.status_code == 422, r.text
    assert names(r, field)
    assert_healthy(client, reference_png)


# --- item 4: inpainting with an init image of another size ------------------------------------------
@pytest.mark.parametrize("size", [(96, 64), (64, 128), (200, 150)])
def test_inpaint_latent_resize_with_init_of_another_size(client, reference_png, size):
    init = Image.new("RGB", size, (200, 30, 30))
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    r = client.post(f"{API}/img2img", json={**REFERENCE, "init_images": [png_b64(init)], "mask": png_b64(mask),
                                           "resize_mode": 3, "inpaint_full_res": False, "denoising_strength": 0.6})
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert out.size == (64, 64)
    assert_healthy(client, reference_png)


# --- item 5: text that is not Unicode ---------------------------------------------------------------
@pytest.mark.parametrize("changes, field", [
    ('"prompt": "\\ud800x"', "prompt"),
    ('"negative_prompt": ["\\udfff"]', "negative_prompt"),
    ('"styles": ["a\\ud83d"]', "styles"),
    ('"sampler_name": "\\ud800"', "sampler_name"),
    ('"override_settings": {"sd_vae": "\\ud800"}', "sd_vae"),
])
def test_unpaired_surrogate_is_422_naming_the_field(client, reference_png, changes, field):
    r = raw_post(client, "txt2img", body_with(changes))
    assert r.status_code == 422, r.text
    assert names(r, field)
    assert_healthy(client, reference_png)


def test_paired_surrogates_are_ordinary_text(client):
    r = raw_post(client, "txt2img", body_with('"prompt": "a cube \\ud83d\\ude00"'))
    assert r.status_code == 200, r.text


# --- item 6: runaway emphasis ------------------------------------------------------------------------
def test_runaway_emphasis_is_422_naming_the_prompt(client, reference_png):
    r = client.post(f"{API}/txt2img", json={**REFERENCE, "prompt": "(" * 9999 + "x" + ")" * 9999})
    assert r.status_code == 422, r.text
    assert names(r, "prompt")
    assert_healthy(client, reference_png)


def test_deep_but_allowed_emphasis_makes_a_finite_image(client, reference_png):
    r = client.post(f"{API}/txt2img", json={**REFERENCE, "prompt": "(" * 100 + "x" + ")" * 100})
    assert r.status_code == 200, r.text
    pixels = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).getextrema()
    assert pixels != ((0, 0), (0, 0), (0, 0))  # NaN decodes to black
    assert_healthy(client, reference_png)


# --- malformed bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status", [(b'{"prompt": ', 422), (b'{"prompt": "\xff\xfe"}', 400),
                                          (b'[1, 2]', 422), (b'"text"', 422), (b'null', 422)])
def test_malformed_body_is_4xx_json(client, reference_png, body, status):
    r = client.post(f"{API}/txt2img", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    strict_json(r.text)
    assert_healthy(client, reference_png)


# --- item 8: wrong method ------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, allow", [("GET", "txt2img", "POST"), ("DELETE", "options", "GET, HEAD, POST"),
                                                 ("PUT", "progress", "GET, HEAD")])
def test_wrong_method_is_405_with_allow(client, method, path, allow):
    r = client.request(method, f"{API}/{path}")
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert strict_json(r.text)["error"] == "HTTPException"
