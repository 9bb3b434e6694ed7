"""Golden images: every canonical request must reproduce its committed PNG files byte for byte."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(harness.HERE), ".artifacts", "golden")

pytestmark = pytest.mark.golden


def _describe_difference(expected: bytes, actual: bytes) -> str:
    from PIL import Image, ImageChops
    a, b = Image.open(io.BytesIO(expected)), Image.open(io.BytesIO(actual))
    if a.size != b.size:
        return f"size {a.size} != {b.size}"
    if a.info.get("parameters") != b.info.get("parameters"):
        return f"infotext differs:\n  expected {a.info.get('parameters')!r}\n  actual   {b.info.get('parameters')!r}"
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    changed = sum(1 for px in diff.getdata() if px != (0, 0, 0))
    return f"{changed} pixels differ (max channel diff {max(max(px) for px in diff.getdata())})"


def test_suite_has_the_canonical_requests():
    names = harness.request_names()
    assert len(names) >= 14
    for name in names:
        assert harness.expected_files(name), f"no golden file for {name}: run test/golden/regenerate.py {name}"


@pytest.mark.parametrize("name", harness.request_names())
def test_golden(serena, name):
    expected = [open(p, "rb").read() for p in harness.expected_files(name)]
    actual = harness.render(name)
    assert len(actual) == len(expected), f"{name}: {len(actual)} images, golden has {len(expected)}"
    for i, (exp, act) in enumerate(zip(expected, actual)):
        if exp != act:
            os.makedirs(ARTIFACTS, exist_ok=True)
            with open(os.path.join(ARTIFACTS, f"{name}-{i}.png"), "wb") as f:
                f.write(act)
            pytest.fail(f"{name}-{i}.png: {_describe_difference(exp, act)} (actual written to {ARTIFACTS})")


RENDER_IN_SUBPROCESS = r"""
import hashlib, os, sys, tempfile
sys.path[:0] = [{root!r}, {test!r}, {golden!r}]
import conftest, webui, harness
from modules import cmd_args
with tempfile.TemporaryDirectory() as d:
    webui.initialize(cmd_args.parse(["--data-dir", d, *conftest.TEST_FLAGS], environ={{}}))
    print(hashlib.sha256(b"".join(harness.render({name!r}))).hexdigest())
"""


def test_same_request_in_two_processes_gives_identical_bytes():
    name = "txt2img-batch2-iter2"
    root = os.path.dirname(os.path.dirname(harness.HERE))
    code = RENDER_IN_SUBPROCESS.format(root=root, test=os.path.dirname(harness.HERE), golden=harness.HERE, name=name)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]  # side by side: one core each
    digests = []
    for run in runs:
        out, err = run.communicate(timeout=240)
        assert run.returncode == 0, err[-2000:]
        digests.append(out.strip().splitlines()[-1])
    expected = hashlib.sha256(b"".join(open(p, "rb").read() for p in harness.expected_files(name))).hexdigest()
    assert digests[0] == digests[1] == expected
