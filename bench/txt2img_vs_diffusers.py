"""Benchmark (a): Serena's txt2img against diffusers' StableDiffusionPipeline on the same weights.

One process. Serena is initialised in a temporary data folder (which writes and loads the demo
checkpoint `serena-demo-tiny.safetensors`); a diffusers `StableDiffusionPipeline` is then built
from the *same* loaded module objects (`shared.sd_model.unet`, `.vae`, `.text_encoder`,
`.tokenizer`) with an `EulerDiscreteScheduler` on the SD1 schedule (scaled-linear betas
0.00085–0.012 over 1000 steps, timesteps spaced linearly from 999 to 0, as A1111's "Euler" with
the "Automatic" schedule), no safety checker, PIL output.

Both sides do the same work for one 512×512, 20-step image with CFG 7: prompt and negative prompt
encoded once each (Serena's `persistent_cond_cache` is turned off, else a repeated prompt would
reuse the previous job's conditioning and skip the text encoder), 20 UNet evaluations on a batch
of 2 (cond + uncond), one VAE decode, conversion to a PIL image. The benchmark counts those
module calls on each side before timing and refuses to time two pipelines that do different work
(it also prints, for information, how much of one run each side spends outside the networks).
Serena runs through its public path:
`process_images(StableDiffusionProcessingTxt2Img(...))` (validation, prompt parsing, seeds,
sampling, decode, infotext; saving is off, as `do_not_save_samples`/`do_not_save_grid` ask).

Both are warmed up, then run in alternated pairs (the side that goes first alternates too) with
the torch thread count pinned, so that drift in the machine's load hits both alike. It prints
every run's time, the medians and the ratio median(Serena) / median(diffusers); required ≤ 1.05.

Usage: `venv/bin/python bench/txt2img_vs_diffusers.py [--pairs 11] [--threads 1]`.
Exits 1 when the ratio is above the limit or the two sides do different work.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REQUIRED_RATIO = 1.05
PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed, sharp focus"
NEGATIVE_PROMPT = "blurry, low quality, watermark"
SEED = 1234
CFG_SCALE = 7.0

# SD1 noise schedule (the LDM config every SD1 checkpoint was trained with)
SD1_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@dataclass
class Job:
    """What both sides are asked to make."""

    width: int = 512
    height: int = 512
    steps: int = 20


@dataclass
class WorkCount:
    """Module calls seen during one generation (to prove both sides do the same work)."""

    unet_batches: list[int] = field(default_factory=list)
    text_encoder_batches: list[int] = field(default_factory=list)
    vae_decodes: list[tuple[int, ...]] = field(default_factory=list)
    network_seconds: float = 0.0  # inside the UNet, text encoder and VAE decoder
    total_seconds: float = 0.0

    def describe(self) -> str:
        sizes = sorted(set(self.unet_batches))
        outside_ms = (self.total_seconds - self.network_seconds) * 1000
        return (f"{len(self.unet_batches)} UNet calls (batch {sizes}), text encoder batches {self.text_encoder_batches}, "
                f"{len(self.vae_decodes)} VAE decode(s) of {self.vae_decodes}; {self.total_seconds:.3f} s, "
                f"of which {outside_ms:.1f} ms outside the networks")


def setup_serena(data_dir: str, threads: int) -> Any:
    """Initialise Serena in `data_dir` on the demo checkpoint; return the loaded model."""
    import torch
    torch.set_num_threads(threads)
    import webui
    from modules import cmd_args, shared
    webui.initialize(cmd_args.parse(["--data-dir", data_dir, "--use-cpu", "all", "--no-half"], environ={}))
    # A1111's default keeps the last prompts' conditioning between jobs, so a repeated prompt would
    # skip the text encoder; diffusers encodes every time, and both sides must do the same work.
    shared.opts.set("persistent_cond_cache", False)
    model = shared.sd_model
    info = model.sd_checkpoint_info
    print(f"checkpoint: {os.path.basename(info.filename)} [{model.sd_model_hash}], device {model.device}, "
          f"dtype {model.dtype}")
    return model


def build_diffusers_pipeline(model: Any) -> Any:
    """A StableDiffusionPipeline over the very module objects Serena has loaded."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    scheduler = EulerDiscreteScheduler(**SD1_SCHEDULE, prediction_type="epsilon", timestep_spacing="linspace",
                                       interpolation_type="linear", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet is model.unet and pipe.vae is model.vae and pipe.text_encoder is model.text_encoder
    return pipe


def run_serena(job: Job) -> Any:
    """One txt2img through Serena's public path; returns the PIL image."""
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=job.width, height=job.height, steps=job.steps,
        sampler_name="Euler", cfg_scale=CFG_SCALE, seed=SEED, do_not_save_samples=True, do_not_save_grid=True)
    processed = processing.process_images(p)
    assert len(processed.images) == 1
    return processed.images[0]


def run_diffusers(pipe: Any, job: Job) -> Any:
    """One txt2img through diffusers' pipeline; returns the PIL image."""
    import torch
    generator = torch.Generator("cpu").manual_seed(SEED)
    out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=job.width, height=job.height,
               num_inference_steps=job.steps, guidance_scale=CFG_SCALE, generator=generator, output_type="pil")
    assert len(out.images) == 1
    return out.images[0]


def count_work(model: Any, run: Callable[[], Any]) -> tuple[WorkCount, Any]:
    """Run once with hooks on the UNet, text encoder and VAE decoder; return what they saw."""
    counts = WorkCount()
    started: list[float] = []

    def record(into: list, value: Any) -> None:
        into.append(value)
        started.append(time.perf_counter())

    def finished(*_: Any) -> None:
        counts.network_seconds += time.perf_counter() - started.pop()

    hooks = [
        model.unet.register_forward_pre_hook(
            lambda m, args, kwargs: record(counts.unet_batches, int(args[0].shape[0])), with_kwargs=True),
        model.text_encoder.register_forward_pre_hook(
            lambda m, args, kwargs: record(counts.text_encoder_batches,
                                           int((args[0] if args else kwargs["input_ids"]).shape[0])), with_kwargs=True),
        model.vae.decoder.register_forward_pre_hook(lambda m, args: record(counts.vae_decodes, tuple(args[0].shape))),
    ]
    hooks += [module.register_forward_hook(finished) for module in (model.unet, model.text_encoder, model.vae.decoder)]
    t0 = time.perf_counter()
    try:
        image = run()
    finally:
        counts.total_seconds = time.perf_counter() - t0
        for hook in hooks:
            hook.remove()
    return counts, image


def timed(run: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def check_same_work(model: Any, pipe: Any, job: Job) -> bool:
    """Both sides: the same number and batch of UNet calls, one decode of the same latent size."""
    serena_work, serena_image = count_work(model, lambda: run_serena(job))
    diffusers_work, diffusers_image = count_work(model, lambda: run_diffusers(pipe, job))
    print(f"Serena:    {serena_work.describe()}; image {serena_image.size}")
    print(f"diffusers: {diffusers_work.describe()}; image {diffusers_image.size}")
    same = (serena_work.unet_batches == diffusers_work.unet_batches == [2] * job.steps
            and serena_work.text_encoder_batches == diffusers_work.text_encoder_batches
            and serena_work.vae_decodes == diffusers_work.vae_decodes
            and len(serena_work.vae_decodes) == 1
            and serena_image.size == diffusers_image.size == (job.width, job.height))
    if not same:
        print("FAIL: the two pipelines do not do the same work; timing them would compare nothing")
        return False
    print(f"for information, mean absolute pixel difference between the two images: "
          f"{mean_abs_difference(serena_image, diffusers_image):.2f} / 255 (the sigma schedules interpolate "
          f"differently: log-sigma in Serena as in A1111, linear in diffusers)")
    return True


def mean_abs_difference(a: Any, b: Any) -> float:
    """Mean absolute difference of two RGB images' 8-bit values."""
    import numpy as np
    pixels_a = np.asarray(a.convert("RGB"), dtype=np.int16)
    pixels_b = np.asarray(b.convert("RGB"), dtype=np.int16)
    return float(np.abs(pixels_a - pixels_b).mean())


def main() -> int:
    """Set both sides up, check they do the same work, time alternated pairs, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=11, help="alternated Serena/diffusers pairs (at least 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (pinned)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="width and height")
    args = parser.parse_args()
    pairs = max(args.pairs, 7)
    job = Job(width=args.size, height=args.size, steps=args.steps)

    import torch
    import diffusers
    with tempfile.TemporaryDirectory(prefix="serena-bench-txt2img-") as data_dir:
        model = setup_serena(data_dir, args.threads)
        pipe = build_diffusers_pipeline(model)
        torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, torch threads: {torch.get_num_threads()} "
              f"(interop {torch.get_num_interop_threads()}), {job.width}x{job.height}, {job.steps} steps, Euler, "
              f"CFG {CFG_SCALE}")
        for _ in range(args.warmup):
            run_serena(job)
            run_diffusers(pipe, job)
        if not check_same_work(model, pipe, job):  # after the warm-up, so that a warm cache would show
            return 1
        serena_times, diffusers_times = alternate(pipe, job, pairs)
    return report(serena_times, diffusers_times)


def alternate(pipe: Any, job: Job, pairs: int) -> tuple[list[float], list[float]]:
    """Time `pairs` Serena/diffusers pairs, alternating which side goes first; print each pair."""
    serena_times: list[float] = []
    diffusers_times: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            s, d = timed(lambda: run_serena(job)), timed(lambda: run_diffusers(pipe, job))
        else:
            d, s = timed(lambda: run_diffusers(pipe, job)), timed(lambda: run_serena(job))
        serena_times.append(s)
        diffusers_times.append(d)
        print(f"pair {i + 1:2d} ({'Serena' if i % 2 == 0 else 'diffusers'} first): Serena {s:.3f} s, "
              f"diffusers {d:.3f} s, ratio {s / d:.3f}", flush=True)
    return serena_times, diffusers_times


def report(serena_times: list[float], diffusers_times: list[float]) -> int:
    """Print medians and ratios; 0 when median(Serena) / median(diffusers) is within the limit, else 1."""
    import torch
    med_s, med_d = statistics.median(serena_times), statistics.median(diffusers_times)
    ratio = med_s / med_d
    pair_ratio = statistics.median(s / d for s, d in zip(serena_times, diffusers_times))
    print(f"median Serena {med_s:.3f} s, median diffusers {med_d:.3f} s over {len(serena_times)} pairs "
          f"(torch threads {torch.get_num_threads()})")
    print(f"median of per-pair ratios: {pair_ratio:.3f}; fastest runs: Serena {min(serena_times):.3f} s, "
          f"diffusers {min(diffusers_times):.3f} s (ratio {min(serena_times) / min(diffusers_times):.3f})")
    ok = ratio <= REQUIRED_RATIO
    print(f"txt2img time ratio Serena / diffusers (median / median): {ratio:.3f} "
          f"(required <= {REQUIRED_RATIO}) {'OK' if ok else 'FAIL'}")
    if not ok:
        print(f"FAIL: Serena's txt2img is {100 * (ratio - 1):.1f}% slower than diffusers' pipeline on the same "
              f"weights (allowed: {100 * (REQUIRED_RATIO - 1):.0f}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
