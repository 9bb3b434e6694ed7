"""Test-wide set-up: offline hub, pinned thread count, and an initialised runtime on demand.

The thread count is pinned because float results depend on it (golden images compare bytes).
`serena` (session fixture) initialises Serena exactly as `webui.initialize()` does for a script
author, in a temporary data folder holding the generated demo checkpoint.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("IGNORE_CMD_ARGS_ERRORS", "")

import pytest  # noqa: E402
import torch  # noqa: E402

TORCH_THREADS = 1
torch.set_num_threads(TORCH_THREADS)

from serena_flags import TEST_FLAGS  # noqa: E402,F401  (one list for every runtime the suite starts)


@pytest.fixture(scope="session")
def serena_data_dir(tmp_path_factory) -> str:
    """A data folder (config.json, models/, outputs/) private to this test session."""
    return str(tmp_path_factory.mktemp("serena-data"))


@pytest.fixture(scope="session")
def serena(serena_data_dir):
    """Serena initialised in-process on the demo checkpoint; yields `modules.shared`."""
    import webui
    from modules import cmd_args, shared
    webui.initialize(cmd_args.parse(["--data-dir", serena_data_dir, *TEST_FLAGS], environ={}))
    yield shared


@pytest.fixture()
def clean_state(serena):
    """Reset progress/cancellation flags around a test that interrupts or skips."""
    serena.state.reset()
    yield serena.state
    serena.state.reset()


@pytest.fixture(scope="session")
def tokenizer():
    """The real CLIP tokenizer (vocabulary fetched at set-up into models/tokenizers)."""
    from modules import clip_tokenizer
    folder = clip_tokenizer.default_target_dir()
    if not clip_tokenizer.has_vocab(folder):
        pytest.skip(f"no CLIP vocabulary in {folder}: run `python -m modules.clip_tokenizer` (launch.py does)")
    return clip_tokenizer.load_tokenizer(folder)


@pytest.fixture(autouse=True)
def _idle_state_is_clean():
    """Each test starts with nothing left on the idle run context (what `shared.state` shows outside
    any job): an interrupt or progress a test wrote outside a job never reaches the next test, in
    whatever order the tests run (a job clears it too, as A1111's `state.begin()`)."""
    from modules.runtime import context
    idle = context.idle()
    idle.cancel.__init__()
    idle.progress.reset()
    yield
