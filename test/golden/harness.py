"""The golden suite: canonical requests whose PNG bytes are compared byte for byte.

Each `requests/NAME.json` holds `/sdapi/v1/txt2img` fields (img2img when it has `init_images`;
image fields may be paths relative to this folder). Its images are rendered through the same
path as the CLI and the API (`modules.api.generation` → `process_images`), encoded as PNG with
their infotext, and compared with `expected/NAME-<i>.png`.

The requests turn `add_version_to_infotext` off: the Version field changes with every release
by design, everything else in the bytes is pinned. The torch thread count is pinned by
`test/conftest.py`. Goldens change only on purpose, through `regenerate.py`.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REQUESTS_DIR = os.path.join(HERE, "requests")
EXPECTED_DIR = os.path.join(HERE, "expected")


def request_names() -> list[str]:
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REQUESTS_DIR, "*.json")))


def load_request(name: str) -> dict:
    """The request with image paths replaced by base64, ready for the API models."""
    from modules import cli
    with open(os.path.join(REQUESTS_DIR, name + ".json"), encoding="utf8") as f:
        return cli.resolve_image_paths(json.load(f), HERE)


def expected_files(name: str) -> list[str]:
    return sorted(glob.glob(os.path.join(EXPECTED_DIR, f"{name}-*.png")),
                  key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))


@contextlib.contextmanager
def default_options() -> Iterator[None]:
    """Run with every option at its default and the demo checkpoint loaded, then restore."""
    from modules import shared, sd_models
    saved = dict(shared.opts.data)
    shared.opts.data.clear()
    demo = sd_models.get_checkpoint_info("serena-demo-tiny")
    current = sd_models.model_data.sd_model
    if current is None or current.sd_checkpoint_info.filename != demo.filename:
        sd_models.reload_model_weights(info=demo)
    try:
        yield
    finally:
        shared.opts.data.clear()
        shared.opts.data.update(saved)


def render(name: str) -> list[bytes]:
    """PNG bytes (with infotext) of every image the request `name` returns, in order."""
    from modules import infotext_utils
    from modules.api import generation, models
    request = load_request(name)
    is_img2img = bool(request.get("init_images"))
    model = models.StableDiffusionImg2ImgProcessingAPI if is_img2img else models.StableDiffusionTxt2ImgProcessingAPI
    req = model.model_validate(request)
    with default_options():
        processed = (generation.run_img2img if is_img2img else generation.run_txt2img)(req)
    return [infotext_utils.image_to_bytes(image, "png", processed.infotexts[i])
            for i, image in enumerate(processed.images)]
