"""Benchmark: peak memory and time of a large VAE decode, tiled (`modules.sd_vae_tiling`) and whole.

A random-weight **full-size** SD1.5 VAE (`checkpoint_load.SD15_VAE`: 128/256/512/512 channels,
2 layers per block, 4 latent channels; float32, CPU) decodes one random latent. Each case runs in a
fresh subprocess with torch pinned to `--threads` threads, through Serena's own entry point
(`sd_vae_tiling.decode` with the `vae_tiling` option "Always" or "Never", tile `--tile` px). A case
reports its peak RSS (VmHWM from /proc/self/status, as bench/checkpoint_load.py reads it) minus the
peak after building the VAE and the latent (the baseline), and the decode time.

The whole decode of a large image needs a great deal of memory (at 2048², one 256-channel
activation is 4 GiB). Before running it, the benchmark measures the whole decode at 256² and scales
its peak by area: if the estimate for `--size` is over half the memory available now
(MemAvailable), the whole decode is measured at the largest of 1536², 1024², 768² that fits, and
the table says so. The whole decode runs first, then the tiled one. The tiled decode always runs at `--size`.

Usage: `venv/bin/python bench/vae_tiling_memory.py [--size 2048] [--tile 512] [--threads 2]
[--memory-fraction 0.5] [--cases whole,tiled]`.
Runs by hand (minutes on 2 cores), not in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.checkpoint_load import SD15_VAE  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[2]))
from diffusers import AutoencoderKL
from modules import options, shared, sd_vae_tiling

def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

size, tile, mode, config = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6])
shared.opts = options.Options()
shared.opts.data.update(vae_tiling=mode, vae_tile_size=tile)
torch.manual_seed(0)
vae = AutoencoderKL(**config).eval()
latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
baseline = peak_rss()
with torch.no_grad():
    start = time.perf_counter()
    image = sd_vae_tiling.decode(vae, latents)
    seconds = time.perf_counter() - start
assert image.shape == (1, 3, size, size), image.shape
print(json.dumps({"baseline": baseline, "peak": peak_rss(), "seconds": seconds}))
"""

GIB = 1024 ** 3
PROBE = 256  # side of the whole decode whose peak, scaled by area, estimates the others


def run_case(size: int, tile: int, mode: str, threads: int) -> dict:
    """One decode in a fresh subprocess: {"baseline", "peak" (bytes), "seconds"}."""
    out = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(threads), str(size), str(tile), mode,
                          json.dumps(SD15_VAE)], check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def whole_size(size: int, probe_bytes: int, probe_size: int, budget: int) -> int:
    """The largest of `size`, 1536, 1024, 768 (not above `size`) whose whole-decode peak, scaled by
    area from the probe, fits in `budget` bytes; the probe's size when none does."""
    for candidate in (size, 1536, 1024, 768):
        if candidate <= size and probe_bytes * (candidate / probe_size) ** 2 <= budget:
            return candidate
    return probe_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels (multiple of 8)")
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels (the vae_tile_size option)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="largest share of MemAvailable the whole decode may be estimated to need")
    parser.add_argument("--cases", default="whole,tiled", help="which decodes to run: whole, tiled or both")
    args = parser.parse_args(argv)

    probe = run_case(PROBE, args.tile, "Never", args.threads)
    probe_bytes = probe["peak"] - probe["baseline"]
    budget = int(mem_available() * args.memory_fraction)
    untiled = whole_size(args.size, probe_bytes, PROBE, budget)
    estimate = probe_bytes * (args.size / PROBE) ** 2
    print(f"whole decode at {PROBE}²: {probe_bytes / GIB:.2f} GiB over baseline, {probe['seconds']:.1f} s; "
          f"scaled to {args.size}²: about {estimate / GIB:.1f} GiB; budget ({args.memory_fraction:.0%} of MemAvailable): "
          f"{budget / GIB:.1f} GiB",
          flush=True)
    if untiled != args.size:
        print(f"the whole {args.size}² decode would not fit in the budget: "
              f"measuring the whole decode at {untiled}² instead", flush=True)

    rows = []
    wanted = set(args.cases.split(","))
    for case, name, size, mode in (("whole", "whole", untiled, "Never"),
                                   ("tiled", f"tiled {args.tile} px", args.size, "Always")):
        if case in wanted:
            rows.append((name, size, run_case(size, args.tile, mode, args.threads)))
            print(f"{name} {size}²: {rows[-1][2]}", flush=True)
    rows.reverse()
    if len(rows) < 2:
        return 0
    print(f"\nfull-size SD1.5 VAE decode, float32, CPU, {args.threads} torch threads")
    print(f"{'case':<16}{'image':>12}{'baseline GiB':>14}{'peak GiB':>10}{'over base GiB':>15}{'time s':>9}")
    for name, size, result in rows:
        print(f"{name:<16}{f'{size}²':>12}{result['baseline'] / GIB:>14.2f}{result['peak'] / GIB:>10.2f}"
              f"{(result['peak'] - result['baseline']) / GIB:>15.2f}{result['seconds']:>9.1f}")
    tiled, whole = rows[0][2], rows[1][2]
    ratio = (whole["peak"] - whole["baseline"]) / (tiled["peak"] - tiled["baseline"])
    note = "" if untiled == args.size else f" (whole at {untiled}², tiled at {args.size}²)"
    print(f"\nmemory over baseline, whole / tiled: {ratio:.1f}×{note}")
    if untiled != args.size:
        print(f"whole {args.size}² estimated from the {PROBE}² probe: {estimate / GIB:.1f} GiB, "
              f"{estimate / (tiled['peak'] - tiled['baseline']):.1f}× the tiled figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
