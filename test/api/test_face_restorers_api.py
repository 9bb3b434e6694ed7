"""Face restoration over HTTP: /face-restorers lists what is installed as A1111 shapes it, extras and
txt2img restore with the demo files, and missing or broken files fail their request, naming the
file, while the server stays healthy."""
from __future__ import annotations

import os
import sys

from api_helpers import API, TXT2IMG_BASE, decode, png_b64
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # test/face_helpers.py
from face_helpers import CODEFORMER, DETECTOR, GFPGAN, demo_models, linked  # noqa: E402


def _image() -> Image.Image:
    return Image.radial_gradient("L").resize((48, 48)).convert("RGB")


def test_face_restorers_lists_installed_restorers_as_a1111(client, api_runtime):
    root = api_runtime.data_paths.models_path
    assert client.get(f"{API}/face-restorers").json() == []
    with linked(root, (DETECTOR, GFPGAN)):
        assert client.get(f"{API}/face-restorers").json() == [
            {"name": "GFPGAN", "cmd_dir": os.path.join(root, "GFPGAN")}]
        with linked(root, (CODEFORMER,)):
            names = [r["name"] for r in client.get(f"{API}/face-restorers").json()]
            assert names == ["CodeFormer", "GFPGAN"]
    assert client.get(f"{API}/face-restorers").json() == []


def test_extras_missing_files_are_404_naming_file_and_folder(client, api_runtime):
    root = api_runtime.data_paths.models_path
    with linked(root, (GFPGAN,)):
        r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "gfpgan_visibility": 1})
    assert r.status_code == 404
    assert f"detection_Resnet50_Final.pth (RetinaFace-ResNet50) in {os.path.join(root, 'GFPGAN')}" in r.json()["detail"]
    r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "codeformer_visibility": 0.5})
    assert r.status_code == 404 and "codeformer-v0.1.0.pth" in r.json()["detail"]


def test_extras_and_txt2img_restore_with_the_demo_files(client, api_runtime):
    root = api_runtime.data_paths.models_path
    with linked(root, (DETECTOR, GFPGAN)):
        r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "gfpgan_visibility": 0.5})
        assert r.status_code == 200, r.text
        assert decode(r.json()["image"]).tobytes() == _image().tobytes()  # the demo detector finds no face
        assert "GFPGAN visibility: 0.5" in r.json()["html_info"]
        r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "restore_faces": True,
                                                "override_settings": {"face_restoration_model": "GFPGAN"}})
        assert r.status_code == 200, r.text
        assert "Face restoration: GFPGAN" in r.json()["info"]
    r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "restore_faces": True})  # files gone: skipped (A1111)
    assert r.status_code == 200 and "Face restoration" not in r.json()["info"]


def test_broken_files_fail_their_request_and_the_server_stays_healthy(client, api_runtime):
    root = api_runtime.data_paths.models_path
    os.makedirs(os.path.join(root, "GFPGAN"), exist_ok=True)
    truncated = os.path.join(root, "GFPGAN", "GFPGANv1.4.pth")
    with open(os.path.join(demo_models(), *GFPGAN), "rb") as f:
        head = f.read(1 << 16)
    with open(truncated, "wb") as f:
        f.write(head)
    try:
        with linked(root, (DETECTOR,)):
            r = client.post(f"{API}/extra-single-image", json={"image": png_b64(_image()), "gfpgan_visibility": 1})
            assert r.status_code == 422 and "GFPGANv1.4.pth" in r.json()["detail"]
            r = client.post(f"{API}/txt2img", json={**TXT2IMG_BASE, "restore_faces": True,
                                                    "override_settings": {"face_restoration_model": "GFPGAN"}})
            assert r.status_code == 422 and "GFPGANv1.4.pth" in r.json()["detail"]
    finally:
        os.remove(truncated)
    assert client.get(f"{API}/face-restorers").status_code == 200
    ok = client.post(f"{API}/txt2img", json=TXT2IMG_BASE)
    assert ok.status_code == 200 and "Face restoration" not in ok.json()["info"]
