"""VAE files over the API: `/sd-vae`, `/refresh-vae`, `sd_vae` in `/options` and in `override_settings`,
on the demo checkpoint with a demo VAE file (real loading code)."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from api_helpers import API, TXT2IMG_BASE
from modules import demo_checkpoint, sd_models

pytestmark = pytest.mark.timeout(180)

NAME = "api-tiny-vae.safetensors"


@pytest.fixture()
def vae_files(api_runtime, client):
    """A demo VAE and a truncated one in `models/VAE`; removed (and the list refreshed) afterwards."""
    folder = api_runtime.data_paths.vae_dir
    good = demo_checkpoint.write_demo_vae(os.path.join(folder, NAME))
    bad = os.path.join(folder, "api-broken.safetensors")
    with open(good, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:1000])
    yield good, bad
    for path in (good, bad):
        os.remove(path)
    assert client.post(f"{API}/refresh-vae").status_code == 200


def txt2img(client, **changes) -> dict:
    body = {**TXT2IMG_BASE, "seed": 99, "subseed": 5, "sampler_index": "Euler", **changes}
    r = client.post(f"{API}/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_sd_vae_lists_files_after_refresh(client, vae_files):
    good, bad = vae_files
    assert client.post(f"{API}/refresh-vae").json() is None
    listed = client.get(f"{API}/sd-vae").json()
    assert {"model_name": NAME, "filename": good} in listed
    assert {"model_name": "api-broken.safetensors", "filename": bad} in listed
    assert all(set(item) == {"model_name", "filename"} for item in listed)


def test_override_settings_vae_applies_to_one_job_only(client, vae_files):
    good, _ = vae_files
    client.post(f"{API}/refresh-vae")
    before = txt2img(client)
    with_vae = txt2img(client, override_settings={"sd_vae": NAME})
    info = json.loads(with_vae["info"])
    sha10 = hashlib.sha256(open(good, "rb").read()).hexdigest()[:10]
    assert f"VAE hash: {sha10}, VAE: {NAME}" in info["infotexts"][0]
    assert (info["sd_vae_name"], info["sd_vae_hash"]) == (NAME, sha10)
    assert with_vae["images"][0] != before["images"][0]
    after = txt2img(client)
    assert after["images"][0] == before["images"][0]
    assert json.loads(after["info"])["infotexts"] == json.loads(before["info"])["infotexts"]
    assert sd_models.model_data.sd_model.loaded_vae_file is None
    assert client.get(f"{API}/options").json()["sd_vae"] == "Automatic"


def test_options_select_vae_and_back(client, vae_files, clean_opts):
    good, _ = vae_files
    client.post(f"{API}/refresh-vae")
    before = txt2img(client)
    try:
        assert client.post(f"{API}/options", json={"sd_vae": NAME}).status_code == 200
        assert client.get(f"{API}/options").json()["sd_vae"] == NAME
        assert sd_models.model_data.sd_model.loaded_vae_file == good
        assert f"VAE: {NAME}" in json.loads(txt2img(client)["info"])["infotexts"][0]
    finally:
        assert client.post(f"{API}/options", json={"sd_vae": "Automatic"}).status_code == 200
    assert sd_models.model_data.sd_model.loaded_vae_file is None
    assert txt2img(client)["images"][0] == before["images"][0]


def test_bad_and_unknown_vae_are_clear_errors(client, vae_files, clean_opts):
    _, bad = vae_files
    client.post(f"{API}/refresh-vae")
    before = txt2img(client)
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "override_settings": {"sd_vae": "api-broken.safetensors"}})
    assert r.status_code == 422 and bad in r.json()["detail"], r.text
    r = client.post(f"{API}/options", json={"sd_vae": "api-broken.safetensors"})
    assert r.status_code == 422 and bad in r.json()["detail"], r.text
    assert client.get(f"{API}/options").json()["sd_vae"] == "Automatic"
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "override_settings": {"sd_vae": "nope.safetensors"}})
    assert r.status_code == 404 and "nope.safetensors" in r.json()["detail"] and NAME in r.json()["detail"], r.text
    assert sd_models.model_data.sd_model.loaded_vae_file is None
    assert txt2img(client)["images"][0] == before["images"][0]
