"""A small txt2img job on the loaded model and its pixels, shared by the model-file tests (VAE,
textual inversion, LoRA) that compare a job's bytes before and after a file was used."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import numpy as np

from modules import processing


def job(**kwargs) -> processing.Processed:
    """A 64x64, 3-step Euler txt2img job with a fixed seed; `kwargs` override any field."""
    base = dict(prompt="a red cube", negative_prompt="blurry", seed=1234, steps=3, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.process_images(processing.StableDiffusionProcessingTxt2Img(**base))


def image_bytes(res: processing.Processed) -> bytes:
    """The first image's RGB pixels."""
    return np.asarray(res.images[0].convert("RGB")).tobytes()


@contextlib.contextmanager
def options_set(**values) -> Iterator[None]:
    """`shared.opts` set to `values` for the block (every thread sees them), restored afterwards."""
    from modules import shared
    old = {key: getattr(shared.opts, key) for key in values}
    for key, value in values.items():
        shared.opts.set(key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            shared.opts.set(key, value)


@contextlib.contextmanager
def empty_folder(path: str) -> Iterator[str]:
    """`path` as an empty folder for the test, removed again afterwards."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
