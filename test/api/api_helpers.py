"""Helpers shared by the API tests (importable because pytest puts test/api on sys.path)."""
from __future__ import annotations

import base64
import io
import re
import socket

from PIL import Image, ImageChops

API = "/sdapi/v1"

# What A1111's test payloads send (spec §9), scaled down for 2 shared CPU cores.
TXT2IMG_BASE = {
    "prompt": "example prompt", "negative_prompt": "", "seed": -1, "subseed": -1, "subseed_strength": 0,
    "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7, "width": 64, "height": 64,
    "restore_faces": False, "tiling": False, "eta": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
    "s_noise": 1, "sampler_index": "Euler a",
}


def png_b64(image: Image.Image, prefix: bool = True) -> str:
    """PNG base64 of `image`, as a data URI unless `prefix` is False."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return ("data:image/png;base64," + data) if prefix else data


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(client, route: str, payload: dict, status: int = 200) -> dict:
    """POST `payload` to `/sdapi/v1/<route>`, assert the HTTP status, return the JSON body."""
    r = client.post(f"{API}/{route}", json=payload)
    assert r.status_code == status, r.text
    return r.json()


def infotext_param(infotext: str, key: str) -> str:
    """The value of `key` on an infotext's parameter line (its last line); fails when absent."""
    match = re.search(rf"(?:^|, ){re.escape(key)}: ([^,]+)", infotext.split("\n")[-1])
    assert match, f"{key!r} not in {infotext!r}"
    return match.group(1)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    """Whether two images have the same size and the same RGB pixels."""
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None
