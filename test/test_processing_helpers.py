"""Shared set-up of the processing tests: a private data folder holding the demo checkpoint.

Not a test module: it provides the `env` fixture (module-scoped: the data folder, with the demo
checkpoint loaded) and the autouse `fresh_state` fixture (a clean `shared.state` around every
test), which test_processing.py, test_processing_hires.py and test_processing_img2img.py import,
plus small image helpers. Generation is real: the demo checkpoint goes through the real loading
code, the real samplers and the real VAE.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from modules import clip_tokenizer, cmd_args, demo_checkpoint, options, paths, sd_models, shared

DEMO_NAME = "demo.safetensors"


def _copy_tokenizer(models_dir: str) -> None:
    source = clip_tokenizer.default_target_dir()
    if not clip_tokenizer.has_vocab(source):
        pytest.skip(f"no CLIP vocabulary in {source}: run `python -m modules.clip_tokenizer`")
    shutil.copytree(source, os.path.join(models_dir, "tokenizers", os.path.basename(source)))


def make_env(tmp_path_factory) -> tuple[pytest.MonkeyPatch, str]:
    """Fresh options/paths/flags, the demo checkpoint as `demo` and `demo2`, the model loaded."""
    data = str(tmp_path_factory.mktemp("processing-data"))
    models = os.path.join(data, "models")
    checkpoint = demo_checkpoint.ensure_demo_checkpoint(str(tmp_path_factory.mktemp("demo")))
    os.makedirs(os.path.join(models, "Stable-diffusion"))
    for name in (DEMO_NAME, "demo2.safetensors"):
        shutil.copy(checkpoint, os.path.join(models, "Stable-diffusion", name))
    _copy_tokenizer(models)
    mp = pytest.MonkeyPatch()
    mp.setattr(shared, "data_paths", paths.data_paths(data))
    mp.setattr(shared, "opts", options.Options())
    mp.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", data, "--use-cpu", "all"], environ={}))
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()
    sd_models.list_models()
    sd_models.load_model(sd_models.get_checkpoint_info("demo"))
    return mp, data


def close_env(mp: pytest.MonkeyPatch) -> None:
    from modules import lora_networks
    lora_networks.restore()  # weights a LoRA test left patched go back before the model is dropped
    sd_models.model_data.set_sd_model(None)
    sd_models.model_data.loaded_sd_models.clear()
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()
    mp.undo()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The data folder of one test module's environment (`make_env`), torn down after the module."""
    mp, data = make_env(tmp_path_factory)
    yield data
    close_env(mp)


@pytest.fixture(autouse=True)
def fresh_state(env):
    """A begun, then ended and reset, `shared.state` around each test of a module that imports this."""
    shared.state.begin("test")
    yield
    shared.state.end()
    shared.state.reset()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def files_under(folder: str) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


def test_image(width: int = 64, height: int = 64) -> Image.Image:
    """A deterministic colourful init image."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    ((x + y) * 127 // max(width + height - 2, 1))], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


test_image.__test__ = False  # a helper, not a test
