"""Hypernetworks over the API: `/hypernetworks` lists A1111's fields (`name`, `path`), and a txt2img
job with `<hypernet:…>` changes the image, keeps the tag in its infotext prompt, and is undone."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil

import pytest
from PIL import Image

from api_helpers import API, TXT2IMG_BASE
from modules import demo_hypernetwork
from modules.hypernetworks import hypernetwork

pytestmark = pytest.mark.timeout(180)


def pixels(response: dict) -> bytes:
    """The first image's RGB pixels (the PNG's text chunk holds the prompt, so its bytes differ)."""
    return Image.open(io.BytesIO(base64.b64decode(response["images"][0]))).convert("RGB").tobytes()


@pytest.fixture()
def folder(api_runtime):
    """`<models>/hypernetworks` with `apihn.pt` and `nested/Second.pt`; removed afterwards."""
    path = hypernetwork.hypernetwork_dir()
    shutil.rmtree(path, ignore_errors=True)
    demo_hypernetwork.write_demo_hypernetwork(os.path.join(path, "apihn.pt"))
    demo_hypernetwork.write_demo_hypernetwork(os.path.join(path, "nested", "Second.pt"), salt="second")
    open(os.path.join(path, "notes.txt"), "w").write("not a hypernetwork")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_listing_has_a1111_fields(client, folder):
    r = client.get(f"{API}/hypernetworks")
    assert r.status_code == 200
    assert r.json() == [{"name": "apihn", "path": os.path.join(folder, "apihn.pt")},
                        {"name": "Second", "path": os.path.join(folder, "nested", "Second.pt")}]


def test_listing_follows_the_folder(client, folder):
    os.remove(os.path.join(folder, "apihn.pt"))
    assert [x["name"] for x in client.get(f"{API}/hypernetworks").json()] == ["Second"]
    shutil.rmtree(folder)
    assert client.get(f"{API}/hypernetworks").json() == []


def test_txt2img_with_a_hypernetwork(client, folder):
    body = {**TXT2IMG_BASE, "seed": 7, "subseed": 5, "sampler_index": "Euler"}
    plain = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube"}).json()
    r = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube <hypernet:apihn:1>"})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["infotexts"][0].startswith("a cube <hypernet:apihn:1>\n")
    assert "Hypernet:" not in info["infotexts"][0]
    assert pixels(r.json()) != pixels(plain)
    again = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube"}).json()
    assert again["images"][0] == plain["images"][0]   # same prompt: same file bytes
    missing = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube <hypernet:nosuch:1>"})
    assert missing.status_code == 200 and pixels(missing.json()) == pixels(plain)
