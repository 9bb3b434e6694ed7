"""Every non-generating `/sdapi/v1` route through a TestClient: shapes, defaults and errors.

Ports A1111's test_utils.py (options round trip, listing routes answer 200) and test_extras.py.
"""
from __future__ import annotations

import base64
import io
import os
import time

import pytest
from PIL import Image, PngImagePlugin

from api_helpers import decode, png_b64

pytestmark = pytest.mark.timeout(60)

API = "/sdapi/v1"


@pytest.mark.parametrize("route", [
    "cmd-flags", "samplers", "schedulers", "upscalers", "latent-upscale-modes", "sd-models", "sd-vae",
    "hypernetworks", "face-restorers", "realesrgan-models", "prompt-styles", "embeddings", "memory",
    "scripts", "script-info", "extensions", "loras", "progress", "options",
])
def test_get_routes_answer_200(client, route):
    assert client.get(f"{API}/{route}").status_code == 200


def test_options_round_trip_send_seed(client, clean_opts):
    """A1111 test_utils: flip send_seed, read it back, restore it."""
    original = client.get(f"{API}/options").json()["send_seed"]
    assert client.post(f"{API}/options", json={"send_seed": not original}).status_code == 200
    assert client.get(f"{API}/options").json()["send_seed"] == (not original)
    assert client.post(f"{API}/options", json={"send_seed": original}).json() is None
    assert client.get(f"{API}/options").json()["send_seed"] == original


def test_options_get_lists_every_option(client, api_runtime):
    body = client.get(f"{API}/options").json()
    assert set(api_runtime.opts.data_labels) <= set(body)
    assert body["samples_format"] == "png"


def test_options_post_errors(client, clean_opts):
    r = client.post(f"{API}/options", json={"no_such_option": 1})
    assert r.status_code == 422 and "no_such_option" in r.json()["detail"]
    r = client.post(f"{API}/options", json={"jpeg_quality": "high"})
    assert r.status_code == 422 and "jpeg_quality" in r.json()["detail"]
    r = client.post(f"{API}/options", json={"jpeg_quality": 1000})
    assert r.status_code == 422
    r = client.post(f"{API}/options", json={"samples_format": "tiff"})
    assert r.status_code == 422
    r = client.post(f"{API}/options", json={"sd_model_checkpoint": "no-such-model.safetensors"})
    assert r.status_code == 404 and "no-such-model" in r.json()["detail"]
    assert client.post(f"{API}/options", json=[1, 2]).status_code == 422


def test_options_post_ignores_restricted_options(client, clean_opts):
    before = clean_opts.api_enable_requests
    assert client.post(f"{API}/options", json={"api_enable_requests": not before}).status_code == 200
    assert clean_opts.api_enable_requests == before


def test_options_post_checkpoint_alias_reads_back_as_title(client, clean_opts):
    """Clients (Open WebUI, SillyTavern) match GET options' sd_model_checkpoint against sd-models titles."""
    model = client.get(f"{API}/sd-models").json()[0]
    for alias in (model["model_name"], model["hash"], model["title"]):
        assert client.post(f"{API}/options", json={"sd_model_checkpoint": alias}).status_code == 200
        assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == model["title"]


def test_options_post_saves_config(client, clean_opts, api_runtime):
    client.post(f"{API}/options", json={"jpeg_quality": 81})
    path = api_runtime.cmd_opts.ui_settings_file or api_runtime.data_paths.config_file
    assert os.path.isfile(path)
    assert '"jpeg_quality": 81' in open(path, encoding="utf8").read()


def test_sd_models_lists_the_demo_checkpoint(client):
    models = client.get(f"{API}/sd-models").json()
    assert any(m["filename"].endswith("serena-demo-tiny.safetensors") for m in models)
    item = models[0]
    assert set(item) == {"title", "model_name", "hash", "sha256", "filename", "config"}


def test_upscalers_and_latent_modes(client):
    names = [u["name"] for u in client.get(f"{API}/upscalers").json()]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    modes = [x["name"] for x in client.get(f"{API}/latent-upscale-modes").json()]
    assert modes == ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                     "Latent (nearest)", "Latent (nearest-exact)"]


def test_models_that_cannot_exist_are_empty(client):
    for route in ("face-restorers", "realesrgan-models", "hypernetworks"):
        assert client.get(f"{API}/{route}").json() == []
    assert client.get(f"{API}/embeddings").json() == {"loaded": {}, "skipped": {}}


def test_samplers_shape(client):
    samplers = client.get(f"{API}/samplers").json()
    names = [s["name"] for s in samplers]
    assert "Euler" in names and "Euler a" in names
    assert all(isinstance(v, str) for s in samplers for v in s["options"].values())


def test_schedulers_shape(client):
    items = client.get(f"{API}/schedulers").json()
    assert {"name", "label", "aliases", "default_rho", "need_inner_model"} == set(items[0])
    assert "automatic" in [s["name"] for s in items]


def test_cmd_flags(client):
    flags = client.get(f"{API}/cmd-flags").json()
    assert flags["no_half"] is True and "api_auth" in flags


def test_interrupt_and_skip_shapes(client, api_runtime):
    assert client.post(f"{API}/interrupt").json() == {}
    assert client.post(f"{API}/skip").json() is None
    api_runtime.state.reset()


def test_progress_idle(client):
    body = client.get(f"{API}/progress").json()
    assert body["progress"] == 0 and body["current_image"] is None
    assert set(body["state"]) >= {"skipped", "interrupted", "job", "job_count", "job_no", "sampling_step",
                                  "sampling_steps", "job_timestamp", "stopping_generation"}


def test_interrogate_answers_404_naming_the_model(client):
    image = png_b64(Image.new("RGB", (16, 16)))
    r = client.post(f"{API}/interrogate", json={"image": image, "model": "clip"})
    assert r.status_code == 404 and "clip" in r.json()["detail"]
    r = client.post(f"{API}/interrogate", json={"image": image, "model": "blip9"})
    assert r.status_code == 404 and "Model not found" in r.json()["detail"]
    assert client.post(f"{API}/interrogate", json={"image": ""}).status_code == 404


@pytest.mark.parametrize("route", ["create/embedding", "create/hypernetwork", "train/embedding",
                                   "train/hypernetwork"])
def test_training_routes_are_501(client, route):
    r = client.post(f"{API}/{route}", json={"name": "x"})
    assert r.status_code == 501 and "not supported" in r.json()["detail"]


def test_refresh_routes(client):
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras"):
        r = client.post(f"{API}/{route}")
        assert r.status_code == 200 and r.json() is None


def test_png_info_reads_parameters(client):
    image = Image.new("RGB", (8, 8))
    meta = PngImagePlugin.PngInfo()
    text = "a cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler, CFG scale: 7.0, Seed: 1, Size: 8x8"
    meta.add_text("parameters", text)
    meta.add_text("extra", "value")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    for payload in (encoded, "data:image/png;base64," + encoded):
        body = client.post(f"{API}/png-info", json={"image": payload}).json()
        assert body["info"] == text
        assert body["items"] == {"extra": "value"}
        assert body["parameters"]["Prompt"] == "a cat" and body["parameters"]["Steps"] == "3"
        assert body["parameters"]["Size-1"] == "8"


def test_png_info_without_parameters(client):
    body = client.post(f"{API}/png-info", json={"image": png_b64(Image.new("RGB", (8, 8)))}).json()
    assert body["info"] == ""


@pytest.mark.parametrize("upscaler", ["Lanczos", "Nearest", "None"])
def test_extra_single_image(client, upscaler):
    """A1111 test_extras: Lanczos x2 answers 200."""
    payload = {"resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
               "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128,
               "upscaling_resize_h": 128, "upscaling_crop": True, "upscaler_1": upscaler, "upscaler_2": "None",
               "extras_upscaler_2_visibility": 0, "image": png_b64(Image.new("RGB", (32, 24), "red"))}
    r = client.post(f"{API}/extra-single-image", json=payload)
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"])
    assert out.size == ((64, 48) if upscaler != "None" else (32, 24))


def test_extra_batch_images_resize_to(client):
    images = [{"data": png_b64(Image.new("RGB", (32, 32), c)), "name": c} for c in ("red", "blue")]
    r = client.post(f"{API}/extra-batch-images", json={"imageList": images, "resize_mode": 1,
                                                      "upscaling_resize_w": 48, "upscaling_resize_h": 40,
                                                      "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    assert [decode(x).size for x in r.json()["images"]] == [(48, 40), (48, 40)]


def test_extra_batch_images_count_is_limited_before_decoding(client, clean_opts, monkeypatch):
    """Small flat PNGs decode to large images: the count is checked before any is decoded."""
    from modules.api import image_io
    clean_opts.data["api_max_batch_images"] = 2
    decoded = []
    real = image_io.decode_base64_to_image
    monkeypatch.setattr(image_io, "decode_base64_to_image", lambda *a: decoded.append(1) or real(*a))
    images = [{"data": png_b64(Image.new("RGB", (16, 16))), "name": str(i)} for i in range(3)]
    r = client.post(f"{API}/extra-batch-images", json={"imageList": images, "upscaler_1": "Lanczos"})
    assert r.status_code == 422 and "api_max_batch_images" in r.json()["detail"]
    assert decoded == []
    ok = client.post(f"{API}/extra-batch-images", json={"imageList": images[:2], "upscaler_1": "Lanczos"})
    assert ok.status_code == 200 and len(ok.json()["images"]) == 2


def test_extras_missing_models_are_404(client):
    image = png_b64(Image.new("RGB", (16, 16)))
    r = client.post(f"{API}/extra-single-image", json={"image": image, "upscaler_1": "R-ESRGAN 4x+"})
    assert r.status_code == 404 and "R-ESRGAN 4x+" in r.json()["detail"]
    r = client.post(f"{API}/extra-single-image", json={"image": image, "upscaler_1": "Lanczos",
                                                      "gfpgan_visibility": 0.5})
    assert r.status_code == 404 and "GFPGAN" in r.json()["detail"]


def test_extras_bad_input(client):
    assert client.post(f"{API}/extra-single-image", json={"image": "@@@"}).status_code == 422
    assert client.post(f"{API}/extra-single-image", json={"image": "", "upscaling_resize": 0}).status_code == 422
    assert client.post(f"{API}/extra-single-image", json={"resize_mode": 2}).status_code == 422


def test_image_limits(client, clean_opts):
    clean_opts.data["api_max_pixels"] = 100 * 100
    big = png_b64(Image.new("RGB", (200, 200)))
    r = client.post(f"{API}/png-info", json={"image": big})
    assert r.status_code == 422 and "api_max_pixels" in r.json()["detail"]


def test_image_urls_refused_unless_enabled(client, clean_opts):
    clean_opts.data["api_enable_requests"] = False
    r = client.post(f"{API}/png-info", json={"image": "http://127.0.0.1:1/x.png"})
    assert r.status_code == 422 and "api_enable_requests" in r.json()["detail"]
    clean_opts.data["api_enable_requests"] = True
    clean_opts.data["api_forbid_local_requests"] = True
    r = client.post(f"{API}/png-info", json={"image": "http://127.0.0.1:1/x.png"})
    assert r.status_code == 422 and "non-public" in r.json()["detail"]
    r = client.post(f"{API}/png-info", json={"image": "http://[::1]:1/x.png"})
    assert r.status_code == 422 and "non-public" in r.json()["detail"]


@pytest.fixture()
def image_server():
    """A loopback HTTP server: /image.png answers a PNG (recording the Host header), /redirect a 302."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    hosts = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hosts.append(self.headers.get("host"))
            if self.path == "/drip":  # a never-ending body, one byte at a time
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/image.png")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], hosts
    httpd.shutdown()


def test_image_url_connects_to_the_checked_address(client, clean_opts, monkeypatch, image_server):
    """The name is resolved once and checked; the fetch goes to that address (no second lookup)."""
    from modules.api import image_io
    port, hosts = image_server
    monkeypatch.setattr(image_io, "_public_address", lambda host, field: "127.0.0.1")
    clean_opts.data["api_enable_requests"] = True
    clean_opts.data["api_forbid_local_requests"] = True
    r = client.post(f"{API}/png-info", json={"image": f"http://images.invalid:{port}/image.png"})
    assert r.status_code == 200, r.text
    assert hosts == [f"images.invalid:{port}"]


def test_image_url_fetch_without_redirects(client, clean_opts, image_server):
    """With local requests allowed (tests only), a redirect is not followed and a PNG is fetched."""
    port, _ = image_server
    clean_opts.data["api_enable_requests"] = True
    clean_opts.data["api_forbid_local_requests"] = False
    base = f"http://127.0.0.1:{port}"
    assert client.post(f"{API}/png-info", json={"image": f"{base}/image.png"}).status_code == 200
    r = client.post(f"{API}/png-info", json={"image": f"{base}/redirect"})
    assert r.status_code == 422 and "302" in r.json()["detail"]


def test_image_url_fetch_has_a_total_deadline(client, clean_opts, monkeypatch, image_server):
    """A server that keeps sending (each read within the timeout) cannot hold a request forever."""
    from modules.api import image_io
    port, _ = image_server
    monkeypatch.setattr(image_io, "_URL_TIMEOUT_S", 1)
    clean_opts.data["api_enable_requests"] = True
    clean_opts.data["api_forbid_local_requests"] = False
    start = time.monotonic()
    r = client.post(f"{API}/png-info", json={"image": f"http://127.0.0.1:{port}/drip"})
    assert r.status_code == 422 and "took longer than 1 s" in r.json()["detail"]
    assert time.monotonic() - start < 10


def test_loras_lists_only_the_lora_folder(client, api_runtime):
    folder = os.path.join(api_runtime.data_paths.models_path, "Lora")
    os.makedirs(folder, exist_ok=True)
    import torch
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, os.path.join(folder, "tiny.safetensors"),
              metadata={"ss_output_name": "tiny_alias", "ss_network_dim": "4"})
    open(os.path.join(folder, "broken.safetensors"), "wb").close()
    open(os.path.join(folder, "notes.txt"), "w").close()
    items = client.get(f"{API}/loras").json()
    assert [x["name"] for x in items] == ["broken", "tiny"]
    assert items[1]["path"].startswith(folder)
    assert items[1]["alias"] == "tiny_alias" and items[1]["metadata"]["ss_network_dim"] == "4"
    assert items[0]["metadata"] == {} and items[0]["alias"] == "broken"


def test_prompt_styles(client, monkeypatch, tmp_path):
    from modules import shared, styles
    csv = tmp_path / "styles.csv"
    csv.write_text("name,prompt,negative_prompt\nCinematic,\"{prompt}, film grain\",blurry\n", encoding="utf8")
    monkeypatch.setattr(shared, "prompt_styles", styles.StyleDatabase([str(csv)]))
    items = client.get(f"{API}/prompt-styles").json()
    assert {"name": "Cinematic", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"} in items


def test_postscript_images_are_refused_before_any_decoder_runs(client):
    """EPS would be handed to Ghostscript by Pillow; only raster formats are accepted."""
    eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nshowpage\n").decode()
    r = client.post(f"{API}/png-info", json={"image": eps})
    assert r.status_code == 422 and "Invalid encoded image" in r.json()["detail"]
