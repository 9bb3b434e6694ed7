"""Regenerate golden images ON PURPOSE. Usage (from the repository root):

    venv/bin/python test/golden/regenerate.py [NAME ...]     # all requests when no NAME is given

Commit the changed files under test/golden/expected/ with the reason in the commit message
(see docs/golden.md). The thread count is the one `test/conftest.py` pins.
"""
from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "test")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import conftest  # noqa: E402  (pins the thread count exactly as the tests do)
import webui  # noqa: E402
from golden import harness  # noqa: E402
from modules import cmd_args  # noqa: E402


def main(names: list[str]) -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        webui.initialize(cmd_args.parse(["--data-dir", data_dir, *conftest.TEST_FLAGS], environ={}))
        os.makedirs(harness.EXPECTED_DIR, exist_ok=True)
        for name in names or harness.request_names():
            for old in harness.expected_files(name):
                os.unlink(old)
            for i, data in enumerate(harness.render(name)):
                with open(os.path.join(harness.EXPECTED_DIR, f"{name}-{i}.png"), "wb") as f:
                    f.write(data)
            print(f"regenerated {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
