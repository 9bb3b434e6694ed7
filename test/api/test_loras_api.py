"""LoRA/LyCORIS networks over the API: `/loras` (the Lora folder and its subfolders, A1111's fields and its
parsed `ss_*` metadata), `/refresh-loras`, and txt2img jobs with a LyCORIS file and with a broken one."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import safetensors.torch

from api_helpers import API, TXT2IMG_BASE, decode
from modules import demo_lycoris, lora_networks

pytestmark = pytest.mark.timeout(180)

def pixels(b64: str) -> bytes:
    return decode(b64).convert("RGB").tobytes()


TAGS = {"1_cube": {"red cube": 3, "cube": 5}}


@pytest.fixture()
def folder(api_runtime, client):
    """`<models>/Lora` with a LoKr file in a subfolder, a kohya-metadata file and a broken one; removed after."""
    path = lora_networks.lora_dir()
    shutil.rmtree(path, ignore_errors=True)
    demo_lycoris.write_demo_lycoris(os.path.join(path, "styles", "deep", "apilokr.safetensors"), "lokr")
    safetensors.torch.save_file(demo_lycoris.build_lycoris_state_dict("loha"), os.path.join(path, "apiloha.safetensors"),
                                metadata={"ss_output_name": "loha_alias", "ss_network_dim": "4",
                                          "ss_tag_frequency": json.dumps(TAGS), "ss_base_model_version": "sd_v1"})
    with open(os.path.join(path, "apibroken.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    yield path
    shutil.rmtree(path, ignore_errors=True)
    assert client.post(f"{API}/refresh-loras").status_code == 200


def test_loras_lists_subfolders_with_a1111_fields(client, folder):
    assert client.post(f"{API}/refresh-loras").json() is None
    r = client.get(f"{API}/loras")
    assert r.status_code == 200
    items = {x["name"]: x for x in r.json()}
    assert set(items) == {"apilokr", "apiloha", "apibroken"}
    assert all(set(x) == {"name", "alias", "path", "metadata"} for x in items.values())
    assert items["apilokr"]["path"] == os.path.join(folder, "styles", "deep", "apilokr.safetensors")
    assert items["apilokr"]["alias"] == "apilokr" and items["apilokr"]["metadata"] == {}
    loha = items["apiloha"]
    assert loha["alias"] == "loha_alias" and loha["metadata"]["ss_network_dim"] == "4"
    assert loha["metadata"]["ss_tag_frequency"] == TAGS  # JSON-looking strings are parsed, as A1111 does
    assert items["apibroken"]["metadata"] == {} and items["apibroken"]["alias"] == "apibroken"


def test_refresh_picks_up_added_and_removed_files(client, folder):
    client.post(f"{API}/refresh-loras")
    demo_lycoris.write_demo_lycoris(os.path.join(folder, "late", "apinorm.safetensors"), "norm")
    os.remove(os.path.join(folder, "apiloha.safetensors"))
    assert client.post(f"{API}/refresh-loras").status_code == 200
    names = {x["name"] for x in client.get(f"{API}/loras").json()}
    assert names == {"apilokr", "apinorm", "apibroken"}


def test_txt2img_with_a_lycoris_file_and_a_broken_one(client, folder):
    body = {**TXT2IMG_BASE, "seed": 7, "subseed": 5, "sampler_index": "Euler"}
    plain = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube"}).json()
    with_lokr = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube <lora:apilokr:1>"}).json()
    assert pixels(with_lokr["images"][0]) != pixels(plain["images"][0])
    assert 'Lora hashes: "apilokr: ' in json.loads(with_lokr["info"])["infotexts"][0]
    broken = client.post(f"{API}/txt2img", json={**body, "prompt": "a cube <lyco:apibroken:1>"})
    assert broken.status_code == 200
    assert pixels(broken.json()["images"][0]) == pixels(plain["images"][0])  # left out whole; the job's comments say why
    assert "Lora hashes" not in json.loads(broken.json()["info"])["infotexts"][0]  # no hash for it
