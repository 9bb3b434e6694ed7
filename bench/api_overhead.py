"""Benchmark: latency the HTTP API adds to a txt2img over calling `process_images` in-process.

Serena is initialised on the demo checkpoint in a temporary data folder and served by uvicorn on
a free loopback port (in this process, as `webui.py` serves it). Each pair runs the same 64x64,
1-step txt2img twice, alternating which goes first: once as `POST /sdapi/v1/txt2img` through a
keep-alive httpx client (validation, queue, processing, PNG + base64 encoding, JSON, network),
once as a direct `process_images(StableDiffusionProcessingTxt2Img(...))`. The figure is the
median over pairs of (HTTP time − in-process time). Required: ≤ 15 ms.

Usage: `venv/bin/python bench/api_overhead.py [--pairs 40]`. Exits 1 if the requirement fails.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REQUIRED_MS = 15.0
PAYLOAD = {"prompt": "example prompt", "seed": 1, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler a",
           "cfg_scale": 7.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(data_dir: str) -> str:
    """Initialise Serena in `data_dir`, serve the API, return its base URL."""
    import torch
    import webui
    from modules import cmd_args
    from modules.api.app import build_app, serve
    torch.set_num_threads(1)
    tokenizers = os.path.join(ROOT, "models", "tokenizers")
    if os.path.isdir(tokenizers):
        shutil.copytree(tokenizers, os.path.join(data_dir, "models", "tokenizers"), dirs_exist_ok=True)
    flags = cmd_args.parse(["--data-dir", data_dir, "--use-cpu", "all", "--no-half"], environ={})
    webui.initialize(flags)
    port = free_port()
    serve(build_app(flags), "127.0.0.1", port, background=True)
    return f"http://127.0.0.1:{port}"


def in_process() -> float:
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(**PAYLOAD, do_not_save_samples=True, do_not_save_grid=True)
    t0 = time.perf_counter()
    processed = processing.process_images(p)
    elapsed = time.perf_counter() - t0
    assert len(processed.images) == 1
    return elapsed


def over_http(client, base: str) -> float:
    t0 = time.perf_counter()
    r = client.post(f"{base}/sdapi/v1/txt2img", json=PAYLOAD)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40, help="alternated pairs (at least 30)")
    args = parser.parse_args()
    pairs = max(args.pairs, 30)
    import httpx
    with tempfile.TemporaryDirectory(prefix="serena-bench-api-") as data_dir:
        base = setup(data_dir)
        with httpx.Client(timeout=120) as client:
            for _ in range(3):  # warm-up: model on device, caches, connection open
                over_http(client, base)
                in_process()
            diffs, http_times, direct_times = [], [], []
            for i in range(pairs):
                if i % 2 == 0:
                    h, d = over_http(client, base), in_process()
                else:
                    d, h = in_process(), over_http(client, base)
                http_times.append(h)
                direct_times.append(d)
                diffs.append(h - d)
    added_ms = statistics.median(diffs) * 1000
    print(f"pairs: {pairs}; median in-process: {statistics.median(direct_times) * 1000:.1f} ms; "
          f"median HTTP: {statistics.median(http_times) * 1000:.1f} ms")
    verdict = "OK" if added_ms <= REQUIRED_MS else "FAIL"
    print(f"API overhead (median of HTTP - in-process, 64x64, 1 step): {added_ms:.2f} ms "
          f"(required <= {REQUIRED_MS:.0f} ms) {verdict}")
    return 0 if added_ms <= REQUIRED_MS else 1


if __name__ == "__main__":
    sys.exit(main())
