"""Reading model files safely: tensors only, pickled code refused and never run, clear errors."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy
import pytest
import safetensors.torch
import torch

from modules import errors, safe_load


class _WritesAFile:
    """A pickle payload whose unpickling would create `path` (what a malicious .ckpt does)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_safetensors_roundtrip(tmp_path):
    path = str(tmp_path / "m.safetensors")
    safetensors.torch.save_file({"a": torch.arange(4.0)}, path)
    assert torch.equal(safe_load.load_state_dict(path)["a"], torch.arange(4.0))


def test_ckpt_with_nested_state_dict_loads(tmp_path):
    path = str(tmp_path / "m.ckpt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 7}, path)
    assert list(safe_load.load_state_dict(path)) == ["w"]


def _save_lightning_checkpoint(path: str) -> None:
    """Write a .ckpt shaped like the official SD 1.x files: Lightning's ModelCheckpoint class as a
    "callbacks" key, numpy scalars and arrays beside the weights (pytorch_lightning is faked for the save)."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    fakes = {name: types.ModuleType(name) for name in names}
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    fakes[names[-1]].ModelCheckpoint = model_checkpoint
    sys.modules.update(fakes)
    try:
        torch.save({"epoch": 6, "global_step": 470000, "pytorch-lightning_version": "1.4.2",
                    "state_dict": {"w": torch.ones(2)},
                    "callbacks": {model_checkpoint: {"best_model_score": numpy.float64(0.5), "monitor": None}},
                    "rng_state": numpy.arange(3, dtype=numpy.uint32)}, path)
    finally:
        for name in names:
            del sys.modules[name]


def test_lightning_training_ckpt_with_numpy_scalars_loads(tmp_path):
    path = str(tmp_path / "sd-v1-4.ckpt")
    _save_lightning_checkpoint(path)
    assert "pytorch_lightning" not in sys.modules
    state = safe_load.load_state_dict(path)
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, writer):
    marker = str(tmp_path / "pwned.txt")
    path = str(tmp_path / "evil.ckpt")
    payload = {"state_dict": {"w": torch.ones(1)}, "x": _WritesAFile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    assert not os.path.exists(marker)
    with pytest.raises(errors.CheckpointLoadError) as info:
        safe_load.load_state_dict(path)
    assert "evil.ckpt" in str(info.value)
    assert not os.path.exists(marker)


def test_truncated_safetensors_names_the_file(tmp_path):
    path = str(tmp_path / "cut.safetensors")
    data = safetensors.torch.save({"a": torch.zeros(1000)})
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(errors.CheckpointLoadError, match="cut.safetensors"):
        safe_load.load_state_dict(path)


def test_garbage_ckpt_names_the_file(tmp_path):
    path = str(tmp_path / "junk.ckpt")
    with open(path, "wb") as f:
        f.write(b"this is not a checkpoint at all" * 10)
    with pytest.raises(errors.CheckpointLoadError, match="junk.ckpt"):
        safe_load.load_state_dict(path)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(errors.CheckpointNotFound, match="nope.safetensors"):
        safe_load.load_state_dict(str(tmp_path / "nope.safetensors"))


def test_metadata(tmp_path):
    path = str(tmp_path / "m.safetensors")
    safetensors.torch.save_file({"a": torch.zeros(1)}, path, metadata={"ss_tag": '{"x": 1}', "name": "n"})
    assert safe_load.read_safetensors_metadata(path) == {"ss_tag": {"x": 1}, "name": "n"}
