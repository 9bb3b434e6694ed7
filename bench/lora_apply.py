"""Benchmark: applying and restoring a LoRA on the full-size SDXL UNet, Serena against diffusers/peft.

One process. The full-size SDXL base UNet (diffusers `UNet2DConditionModel`: 320/640/1280, transformer
depths 0/2/10, heads of 64, context 2048, `label_emb` of 2816; 2.57 G parameters) is built once on the
CPU in float32 with random weights — float32 because that is what a CPU user runs: Serena's CPU default
dtype (A1111's `--no-half`), since CPUs have no fast float16 matmul and many float16 ops are missing or
slow there. A random rank-32 kohya SDXL LoRA (alpha 16, float16 as kohya saves them) is written to a
temporary .safetensors file, covering, as sd-scripts' SDXL LoRAs do, every Linear of every
Transformer2DModel of the UNet — `proj_in`, `proj_out`, `attn1`/`attn2` `to_q`/`to_k`/`to_v`/`to_out.0`,
`ff.net.0.proj`, `ff.net.2`: 722 modules — under sd-scripts' LDM names (`lora_unet_input_blocks_4_1_…`,
from Serena's checkpoint table, `lora_keys.ldm_name`).

Both sides then do the same weight arithmetic, W ← W + (alpha / rank) · up @ down, on every one of those
modules and undo it, reading the file each time, alternated, `--repeat` times each (median):

- **Serena**: `lora_networks.apply_networks(model, [(file, te 1, unet 1)])` (read, key matching, changes
  computed, originals saved, weights written) then `lora_networks.restore()` (originals put back exactly);
- **diffusers/peft**: `StableDiffusionXLPipeline.load_lora_weights(file)` (diffusers' kohya SDXL converter,
  peft LoRA layers injected) + `fuse_lora()` (peft merge), then `unfuse_lora()` (peft unmerge: subtract
  the delta again) + `unload_lora_weights()` (the layers taken out).

Checked each run: Serena's restore gives back the UNet byte for byte (a checksum of every patched
weight's bits before the apply and after the restore), and, once, Serena's patched weights equal
diffusers' fused ones to float32 rounding. Requirement: median(Serena) / median(diffusers) ≤ 2.

Usage: `venv/bin/python bench/lora_apply.py [--repeat 3] [--threads N]`. Needs about 20 GB of RAM.
Exits 1 when the requirement or a check fails.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint_load  # noqa: E402  (the full-size SDXL configs live there)

REQUIRED_RATIO = 2.0
RANK, ALPHA = 32, 16.0
SDXL_UNET = {**checkpoint_load.SDXL_UNET, "addition_embed_type": None}  # the full-size SDXL UNet
LORA_SUFFIXES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def build_unet() -> torch.nn.Module:
    """The full-size SDXL UNet on the CPU in float32, random weights (filled tensor by tensor)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    unet = unet.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.normal_(0.0, fan_in ** -0.5 if p.dim() > 1 else 0.02, generator=generator)
        for b in unet.buffers():
            b.zero_()
    return unet.eval().requires_grad_(False)


def lora_targets(unet: torch.nn.Module) -> list[str]:
    """The UNet's Transformer2DModel Linear modules (diffusers paths), as sd-scripts' SDXL LoRAs cover."""
    paths = []
    for path, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".attentions." not in f".{path}":
            continue
        if path.endswith(("proj_in", "proj_out")) or path.endswith(LORA_SUFFIXES):
            paths.append(path)
    return paths


def write_lora(unet: torch.nn.Module, paths: list[str], filename: str) -> None:
    """A random rank-32 kohya SDXL LoRA over `paths`, keyed by sd-scripts' LDM names, float16."""
    import safetensors.torch

    from modules import lora_keys, sd_models_convert

    table = sd_models_convert.unet_table(SDXL_UNET)
    modules = dict(unet.named_modules())
    generator = torch.Generator().manual_seed(1)
    state = {}
    for path in paths:
        ldm = lora_keys.ldm_name(path, table)
        assert ldm is not None, path
        key = "lora_unet_" + ldm.replace(".", "_")
        out_dim, in_dim = modules[path].weight.shape
        state[key + ".lora_down.weight"] = (torch.randn((RANK, in_dim), generator=generator) * in_dim ** -0.5).half()
        state[key + ".lora_up.weight"] = (torch.randn((out_dim, RANK), generator=generator) * 0.01).half()
        state[key + ".alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
    safetensors.torch.save_file(state, filename)


class _Model:
    """What Serena's LoRA code needs of a model: the UNet and its config (for the LDM names)."""

    def __init__(self, unet: torch.nn.Module):
        from types import SimpleNamespace
        self.unet, self.text_encoder, self.text_encoder_2 = unet, None, None
        self.config = SimpleNamespace(unet=SDXL_UNET)


def checksum(weights: list[torch.Tensor]) -> int:
    """A checksum of the bits of these float32 tensors (equal bits ⇒ equal sums; any change moves it)."""
    total = 0
    for i, w in enumerate(weights):
        bits = w.detach().view(torch.int32)
        total += (i + 1) * int(bits.sum(dtype=torch.int64)) + int((bits[::7] ^ 0x5BD1E995).sum(dtype=torch.int64))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionXLPipeline

    from modules import lora_networks
    from modules.lora_network import NetworkOnDisk

    t = time.perf_counter()
    unet = build_unet()
    paths = lora_targets(unet)
    modules = dict(unet.named_modules())
    weights = [modules[p].weight for p in paths]
    n_params = sum(p.numel() for p in unet.parameters())
    patched = sum(w.numel() for w in weights)
    print(f"UNet: {n_params / 1e9:.3f} G parameters, float32 ({n_params * 4 / 1e9:.1f} GB), built in "
          f"{time.perf_counter() - t:.1f} s; LoRA covers {len(paths)} modules, {patched / 1e9:.3f} G weights "
          f"({patched * 4 / 1e9:.1f} GB); torch threads {torch.get_num_threads()}; RSS {rss_gb():.1f} GB")
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=None)
    model = _Model(unet)
    sample = [paths[i] for i in range(0, len(paths), max(1, len(paths) // 12))]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        filename = os.path.join(tmp, "sdxl-random-rank32.safetensors")
        write_lora(unet, paths, filename)
        print(f"LoRA file: {os.path.getsize(filename) / 1e6:.0f} MB, rank {RANK}, alpha {ALPHA:g}")
        entry = NetworkOnDisk("sdxl-random-rank32", filename, {})

        def serena() -> tuple[float, float, dict | None]:
            lora_networks._state_dict_cache.clear()  # read the file each time, as diffusers does
            before = checksum(weights)
            t0 = time.perf_counter()
            failures = lora_networks.apply_networks(model, [(entry, 1.0, 1.0)])
            t1 = time.perf_counter()
            assert not failures, failures
            assert len(lora_networks.loaded_networks[0].modules) == len(paths)
            values = {p: modules[p].weight.detach().clone() for p in sample}
            peak = rss_gb()
            t2 = time.perf_counter()
            lora_networks.restore()
            t3 = time.perf_counter()
            if checksum(weights) != before:
                raise SystemExit("Serena's restore did not give back the same bits")
            return t1 - t0, t3 - t2, {"values": values, "rss": peak}

        def diffusers() -> tuple[float, float, dict | None]:
            t0 = time.perf_counter()
            pipe.load_lora_weights(filename, adapter_name="bench")
            pipe.fuse_lora(components=["unet"], lora_scale=1.0)
            t1 = time.perf_counter()
            wrapped = sum(1 for m in unet.modules() if hasattr(m, "base_layer"))
            assert wrapped == len(paths), f"diffusers wrapped {wrapped} modules, not {len(paths)}"
            values = {p: modules[p].weight.detach().clone() for p in sample}  # the Linear is now peft's base_layer
            peak = rss_gb()
            t2 = time.perf_counter()
            pipe.unfuse_lora(components=["unet"])
            pipe.unload_lora_weights()
            t3 = time.perf_counter()
            return t1 - t0, t3 - t2, {"values": values, "rss": peak}

        runs: dict[str, list] = {"serena": [], "diffusers": []}
        sides = (("serena", serena), ("diffusers", diffusers))
        for i in range(args.repeat + 1):  # the first round warms both up and is not counted
            for name, fn in (sides if i % 2 == 0 else sides[::-1]):
                gc.collect()
                apply_s, undo_s, extra = fn()
                label = "warm-up" if i == 0 else f"run {i}"
                print(f"{label:8s} {name:9s}: apply {apply_s:6.2f} s, restore {undo_s:6.2f} s, "
                      f"total {apply_s + undo_s:6.2f} s (RSS while applied {extra['rss']:.1f} GB)", flush=True)
                if i == 0:
                    runs[name + "_values"] = extra["values"]
                else:
                    runs[name].append((apply_s, undo_s))
    diff = max(float((runs["serena_values"][p] - runs["diffusers_values"][p]).abs().max()) for p in sample)
    scale = max(float(runs["serena_values"][p].abs().max()) for p in sample)
    same = diff <= 1e-5 * scale
    print(f"Serena's patched weights vs diffusers' fused ones ({len(sample)} modules): max |diff| {diff:.2e} "
          f"(weights up to {scale:.2f}): {'same to float32 rounding' if same else 'DIFFERENT'}")
    print("Serena's restore: byte-identical in every run")

    def med(name: str, part: int | None = None) -> float:
        return statistics.median((r[0] + r[1]) if part is None else r[part] for r in runs[name])

    ratio = med("serena") / med("diffusers")
    print(f"median apply: Serena {med('serena', 0):.2f} s, diffusers load_lora_weights + fuse_lora "
          f"{med('diffusers', 0):.2f} s")
    print(f"median restore: Serena {med('serena', 1):.2f} s, diffusers unfuse_lora + unload_lora_weights "
          f"{med('diffusers', 1):.2f} s")
    print(f"median apply + restore: Serena {med('serena'):.2f} s, diffusers/peft {med('diffusers'):.2f} s")
    print(f"ratio Serena / diffusers: {ratio:.2f}  (required <= {REQUIRED_RATIO}: "
          f"{'PASS' if ratio <= REQUIRED_RATIO else 'FAIL'})")
    ok &= same and ratio <= REQUIRED_RATIO
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
