"""M10 benchmark: cost of the execution surface.

A 64×64, 1-step txt2img through `process_images(p)` (hence `ProcessingRunner.run`) against a direct
`process_images_inner(p)` call on an identical `p`, alternated in one process; prints the median of
each and their ratio. Required: median ratio ≤ 1.01. Run from the repository root:

    venv/bin/python bench/runner_overhead.py [--pairs 60] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_p():
    from modules import processing
    return processing.StableDiffusionProcessingTxt2Img(
        prompt="a lighthouse", negative_prompt="", width=64, height=64, steps=1, sampler_name="Euler",
        scheduler="Automatic", seed=1, do_not_save_samples=True, do_not_save_grid=True)


def timed(fn, p) -> float:
    start = time.perf_counter()
    fn(p)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=float, default=1.01)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    import webui
    from modules import cmd_args, processing

    with tempfile.TemporaryDirectory() as data_dir:
        webui.initialize(cmd_args.parse(["--data-dir", data_dir, "--use-cpu", "all", "--no-half"], environ={}))
        for _ in range(5):  # warm-up both paths
            timed(processing.process_images, make_p())
            timed(processing.process_images_inner, make_p())
        runner, direct = [], []
        for i in range(args.pairs):
            order = [(runner, processing.process_images), (direct, processing.process_images_inner)]
            for bucket, fn in (order if i % 2 == 0 else order[::-1]):
                bucket.append(timed(fn, make_p()))
    med_runner, med_direct = statistics.median(runner), statistics.median(direct)
    ratio = med_runner / med_direct
    print(f"torch threads: {torch.get_num_threads()}, pairs: {args.pairs}")
    print(f"process_images (runner): median {med_runner * 1000:.2f} ms")
    print(f"process_images_inner   : median {med_direct * 1000:.2f} ms")
    print(f"median ratio: {ratio:.4f} (limit {args.limit})")
    if ratio > args.limit:
        print("FAIL: the runner path is slower than allowed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
