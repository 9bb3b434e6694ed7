"""Textual-inversion embeddings over the API: `/embeddings`, `/refresh-embeddings`, and a txt2img job
that uses one (`TI hashes` in its infotext), on the demo checkpoint (real loading code)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from api_helpers import API, TXT2IMG_BASE
from modules import demo_checkpoint
from modules.textual_inversion import textual_inversion

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def folder(api_runtime, client):
    """`<data>/embeddings` with a 2-vector `.pt`, a `.safetensors` and a 1024-wide one; removed after."""
    path = textual_inversion.embeddings_dir()
    shutil.rmtree(path, ignore_errors=True)
    demo_checkpoint.write_demo_embedding(os.path.join(path, "apiemb.pt"), vectors=2)
    demo_checkpoint.write_demo_embedding(os.path.join(path, "nested", "apist.safetensors"))
    demo_checkpoint.write_demo_embedding(os.path.join(path, "apiwide.safetensors"), width=1024)
    yield path
    shutil.rmtree(path, ignore_errors=True)
    assert client.post(f"{API}/refresh-embeddings").status_code == 200


def test_embeddings_lists_loaded_and_skipped(client, folder):
    assert client.post(f"{API}/refresh-embeddings").json() is None
    r = client.get(f"{API}/embeddings")
    assert r.status_code == 200
    assert r.json() == {
        "loaded": {
            "apiemb": {"step": 100, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "serena-demo-tiny",
                       "shape": 64, "vectors": 2},
            "apist": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 64, "vectors": 1},
        },
        "skipped": {
            "apiwide": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 1024,
                        "vectors": 1},
        },
    }


def test_refresh_picks_up_added_and_removed_files(client, folder):
    client.post(f"{API}/refresh-embeddings")
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "apilate.bin"))
    os.remove(os.path.join(folder, "apiemb.pt"))
    assert client.post(f"{API}/refresh-embeddings").status_code == 200
    loaded = client.get(f"{API}/embeddings").json()["loaded"]
    assert set(loaded) == {"apist", "apilate"}


def test_txt2img_with_an_embedding_reports_ti_hashes(client, folder):
    body = {**TXT2IMG_BASE, "seed": 7, "subseed": 5, "sampler_index": "Euler"}
    r = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube apiemb"})  # no refresh needed
    assert r.status_code == 200, r.text
    sha = hashlib.sha256(open(os.path.join(folder, "apiemb.pt"), "rb").read()).hexdigest()[:12]
    assert f'TI hashes: "apiemb: {sha}"' in json.loads(r.json()["info"])["infotexts"][0]
    plain = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube"}).json()
    assert "TI hashes" not in json.loads(plain["info"])["infotexts"][0]
    assert r.json()["images"][0] != plain["images"][0]
    wide = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube apiwide"}).json()
    assert "TI hashes" not in json.loads(wide["info"])["infotexts"][0]


def test_image_and_sdxl_embeddings_are_listed(client, folder):
    from modules import demo_embeddings
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "apipng.png"), vectors=2, store="pixels")
    demo_embeddings.write_demo_sdxl_embedding(os.path.join(folder, "apixl.safetensors"), vectors=3)
    assert client.post(f"{API}/refresh-embeddings").status_code == 200
    body = client.get(f"{API}/embeddings").json()
    assert body["loaded"]["apipng"] == {"step": 100, "sd_checkpoint": "0123456789",
                                        "sd_checkpoint_name": "serena-demo-tiny", "shape": 64, "vectors": 2}
    assert body["skipped"]["apixl"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                        "shape": 768 + 1280, "vectors": 3}
