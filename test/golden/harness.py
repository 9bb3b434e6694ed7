"""The golden suite: canonical requests whose PNG bytes are compared byte for byte.

Each `requests/NAME.json` holds `/sdapi/v1/txt2img` fields (img2img when it has `init_images`;
image fields may be paths relative to this folder). Its images are rendered through the same
path as the CLI and the API (`modules.runtime.jobs` → `process_images`), encoded as PNG with
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
import re
from typing import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REQUESTS_DIR = os.path.join(HERE, "requests")
EXPECTED_DIR = os.path.join(HERE, "expected")


def request_names() -> list[str]:
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REQUESTS_DIR, "*.json")))


DEMO_FILES_KEY = "serena_demo_files"
"""A request's map of files to write under the data folder's `models/` for it (path → kind), e.g.
`{"Stable-diffusion/sdxl.safetensors": "sdxl", "Lora/pat.safetensors": "lora"}`; not an API field."""


def load_request(name: str) -> dict:
    """The request with image paths replaced by base64, ready for the API models (demo files
    entry removed)."""
    from modules import cli
    with open(os.path.join(REQUESTS_DIR, name + ".json"), encoding="utf8") as f:
        request = json.load(f)
    request.pop(DEMO_FILES_KEY, None)
    if isinstance(request.get("image"), str):  # extras requests
        request["image"] = cli.resolve_image_paths({"init_images": [request["image"]]}, HERE)["init_images"][0]
    return cli.resolve_image_paths(request, HERE)


def demo_files(name: str) -> dict[str, str]:
    """The demo files request `name` needs (relative path under models/ → kind)."""
    with open(os.path.join(REQUESTS_DIR, name + ".json"), encoding="utf8") as f:
        return json.load(f).get(DEMO_FILES_KEY, {})


def demo_writers() -> dict:
    """Kind → `writer(path)` for the deterministic demo files goldens may use."""
    from modules import demo_checkpoint, demo_embeddings, demo_hypernetwork
    writers = {
        "lora": demo_checkpoint.write_demo_lora,
        "embedding": demo_checkpoint.write_demo_embedding,
        "embedding-sdxl": lambda path: demo_embeddings.write_demo_sdxl_embedding(
            path, widths=(demo_checkpoint.CLIP_CONFIG["hidden_size"], demo_checkpoint.BIGG_DEMO_CONFIG["hidden_size"])),
        "vae": demo_checkpoint.write_demo_vae,
        "hypernetwork": demo_hypernetwork.write_demo_hypernetwork,
    }
    from modules import demo_faces, demo_lycoris, demo_upscalers
    writers["face-detector-one-face"] = demo_faces.write_retinaface_one_face  # finds one face in 64×64 images
    writers["gfpgan"] = lambda path: demo_faces.write_gfpgan(os.path.dirname(path))  # GFPGANv1.4.pth
    writers["parsenet"] = lambda path: demo_faces.write_parsenet(os.path.dirname(path))  # parsing_parsenet.pth
    writers["lora-sdxl"] = demo_lycoris.write_demo_sdxl_lora
    for kind in demo_lycoris.KINDS:  # kind "lycoris:<loha|lokr|…>" (kohya layout, SD1 demo)
        writers[f"lycoris:{kind}"] = lambda path, kind=kind: demo_lycoris.write_demo_lycoris(path, kind)
    for demo in demo_upscalers.DEMO_FILES:  # kind "upscaler:<demo file name>"
        writers[f"upscaler:{demo.filename}"] = lambda path, demo=demo: demo_upscalers.write_demo_to(path, demo)
    for kind in demo_checkpoint.DEMO_KINDS:
        writers.setdefault(kind, lambda path, kind=kind: demo_checkpoint.write_demo_checkpoint(path, kind))
    return writers


@contextlib.contextmanager
def with_demo_files(files: dict[str, str]) -> Iterator[None]:
    """Write `files` under the data folder's models/ (embeddings: its embeddings/), refresh the
    registries, and remove them again afterwards, so other tests see the folders as they were."""
    from modules import sd_models, sd_vae, shared, upscaling
    if not files:
        yield
        return
    writers = demo_writers()
    written = []
    for relative, kind in files.items():
        root = shared.data_paths.data_path if relative.startswith("embeddings/") else shared.data_paths.models_path
        path = os.path.join(root, relative)
        writers[kind](path)
        written.append(path)
    refresh = (sd_models.list_models, sd_vae.refresh_vae_list, lambda: upscaling.refresh_model_upscalers(force=True))
    for step in refresh:
        step()
    try:
        yield
    finally:
        for path in written:
            os.unlink(path)
        for step in refresh:
            step()


def expected_files(name: str) -> list[str]:
    """`expected/NAME-<i>.png` in image order (not the files of a longer name that starts with NAME)."""
    pattern = re.compile(re.escape(name) + r"-(\d+)\.png")
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(EXPECTED_DIR, f"{name}-*.png"))
             if (m := pattern.fullmatch(os.path.basename(p)))]
    return [p for _, p in sorted(found)]


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
        if sd_models.model_data.sd_model.sd_checkpoint_info.filename != demo.filename:
            sd_models.reload_model_weights(info=demo)


def render(name: str) -> list[bytes]:
    """PNG bytes (with infotext) of every image the request `name` returns, in order. Requests
    named `extras-*` are `/sdapi/v1/extra-single-image` requests (the PNG holds the extras infotext)."""
    from modules import infotext_utils
    from modules.api import models
    from modules.runtime import jobs as generation
    request = load_request(name)
    if name.startswith("extras-"):
        return [render_extras(request, files=demo_files(name))]
    is_img2img = bool(request.get("init_images"))
    model = models.StableDiffusionImg2ImgProcessingAPI if is_img2img else models.StableDiffusionTxt2ImgProcessingAPI
    req = model.model_validate(request)
    with with_demo_files(demo_files(name)), default_options():
        processed = (generation.run_img2img if is_img2img else generation.run_txt2img)(req)
    return [infotext_utils.image_to_bytes(image, "png", processed.infotexts[i])
            for i, image in enumerate(processed.images)]


def render_extras(request: dict, files: dict[str, str]) -> bytes:
    """The PNG bytes of an extras (postprocessing) request, as the API route runs it."""
    from modules import infotext_utils, upscaling
    from modules.api import image_io, models
    req = models.ExtrasSingleImageRequest.model_validate(request)
    image = image_io.decode_base64_to_image(req.image, "image")
    with with_demo_files(files), default_options():
        out, html = upscaling.run_extras(image, **req.model_dump(exclude={"image", "show_extras_results"}))
    return infotext_utils.image_to_bytes(out, "png", html)  # the route's html_info, kept with the pixels
