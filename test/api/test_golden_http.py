"""An HTTP request with the same fields as a golden request returns the golden image: the same
pixels and the same infotext (the API encodes the PNG itself, so the bytes are compared too)."""
from __future__ import annotations

import base64
import io
import os
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden"))
import harness  # noqa: E402

pytestmark = pytest.mark.timeout(240)

CASES = ["txt2img-euler-64", "txt2img-batch2-iter2", "txt2img-dpmpp-2m-karras", "txt2img-hires-latent",
         "txt2img-clip-skip-2", "img2img-inpaint-fill1", "img2img-inpaint-only-masked"]


@pytest.mark.parametrize("name", CASES)
def test_http_request_returns_the_golden_image(server, name):
    host, port = server
    request = harness.load_request(name)
    route = "img2img" if request.get("init_images") else "txt2img"
    with harness.default_options():
        r = httpx.post(f"http://{host}:{port}/sdapi/v1/{route}", json=request, timeout=200)
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    expected = harness.expected_files(name)
    assert len(images) == len(expected)
    for b64, path in zip(images, expected):
        got, want = Image.open(io.BytesIO(base64.b64decode(b64))), Image.open(path)
        assert got.info["parameters"] == want.info["parameters"]
        assert got.size == want.size
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))
