"""Benchmark (speed, CPU): Serena's default CPU path against diffusers' default float32 pipeline.

One process, on a **full-size** random-weight SD1.5 checkpoint written once in a temporary folder in
the A1111/LDM key layout (float32; weights from torch's default initialisation, seeded; UNet
320/640/1280/1280, VAE 128/256/512/512, CLIP ViT-L). Both sides load that same file through Serena's
loader (the modules are diffusers' `UNet2DConditionModel` / `AutoencoderKL` and transformers'
`CLIPTextModel` either way):

- **Serena**: the model as `./webui.sh` loads it on this machine, with no flag: `devices.choose` picks
  the device configuration (on a CPU with AVX-512 BF16 / AMX: bfloat16 channels-last UNet and VAE,
  float32 text encoder and sampler maths), and the attention implementation Serena picks;
- **diffusers**: the same file in float32 (`dtype=float32`: what a default `StableDiffusionPipeline`
  runs on a CPU), in a `StableDiffusionPipeline` with its own defaults.

Figures (runs alternated, the side that goes first alternating too, torch threads pinned):

1. **UNet step**: one UNet evaluation at 512×512 (latent 64×64) on a batch of 2 (CFG: cond + uncond),
   the same input on both sides (Serena through `apply_model`, which casts in and out). Median time
   ratio Serena / diffusers: required ≤ 0.6 (Serena ≥ 1.65× faster).
2. **End to end**: one 512×512 Euler txt2img of `--steps` steps, CFG 7: Serena's `process_images`
   against the pipeline's `__call__` (prompt encoding, sampling, VAE decode, PIL image).
3. **Numerical cost**: the relative error ‖serena − fp32‖ / ‖fp32‖ of one UNet output on the same
   input (bounded by `UNET_REL_ERROR_LIMIT`), and, on the demo model, the final latent of a 20-step
   txt2img on the default path against the float32 path (relative L2 difference bounded by
   `LATENT_REL_DIFF_LIMIT`) and the mean pixel difference of the two images.
4. With `--growth`: on the demo model, the default path's time per image against batch size (1, 2, 4
   at 512²) and against resolution (512², 768², 1024² at batch 1).

Usage: `venv/bin/python bench/speed_cpu.py [--pairs 5] [--e2e-pairs 1] [--steps 4] [--threads 2]
[--growth] [--checkpoint PATH]` (`--checkpoint` reuses a file written by an earlier run with
`--keep`). Exits 1 when a requirement fails. About 10–15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REQUIRED_RATIO = 0.6
UNET_REL_ERROR_LIMIT = 0.03
"""bfloat16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 0.002 per value); over the UNet's ~100
layers the measured error of one output is about 0.01 on random weights: the limit leaves room."""
LATENT_REL_DIFF_LIMIT = 0.1
"""The final latent after 20 Euler steps on the demo model: rounding differences grow through the
steps (each step feeds the next); measured ≈ 0.01–0.03 (docs/benchmarks.md)."""
PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed, sharp focus"
NEGATIVE_PROMPT = "blurry, low quality, watermark"
SEED = 1234
CFG_SCALE = 7.0
SD1_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


# --- the checkpoint -------------------------------------------------------------------------------------
def default_init(module: Any) -> dict:
    """`module` (built on the meta device) with torch's default initialisation, seeded, as a state dict."""
    import torch
    torch.manual_seed(0)
    real = module.to_empty(device="cpu")
    with torch.no_grad():
        for sub in real.modules():
            if sub is not real and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return {k: v.detach().clone() for k, v in real.state_dict().items()}


def write_checkpoint(path: str) -> None:
    """A full-size random-weight SD1.5 checkpoint in float32, A1111/LDM layout."""
    import safetensors.torch
    import torch
    from checkpoint_load import SD15_CLIP, SD15_UNET, SD15_VAE
    from modules import demo_checkpoint
    t = time.perf_counter()
    state = demo_checkpoint.ldm_state_dict(SD15_UNET, SD15_VAE, SD15_CLIP, default_init, dtype=torch.float32)
    safetensors.torch.save_file(state, path)
    print(f"wrote {path}: {os.path.getsize(path) / 2**30:.2f} GiB, {len(state)} tensors, "
          f"{time.perf_counter() - t:.0f} s", flush=True)


# --- the two sides ----------------------------------------------------------------------------------------------
def init_serena(data_dir: str, threads: int) -> None:
    """Serena initialised as `./webui.sh` would on this machine (no precision flag), no model loaded yet."""
    import torch
    torch.set_num_threads(threads)
    import webui
    from modules import cmd_args, shared
    webui.initialize(cmd_args.parse(["--data-dir", data_dir, "--use-cpu", "all", "--skip-load-model-at-start"],
                                    environ={}))
    shared.opts.set("persistent_cond_cache", False)  # diffusers encodes the prompts every time
    torch.set_num_threads(threads)


def load_both(path: str) -> tuple[Any, Any]:
    """(Serena's model on its default path, the float32 model of the same file)."""
    import torch
    from modules import devices, sd_models
    info = sd_models.CheckpointInfo(path, compute_hash=False)
    info.register()
    t = time.perf_counter()
    serena = sd_models.load_model(info)
    print(f"Serena: {devices.current().reason}; UNet {serena.dtype}, VAE {serena.dtype_vae}, text encoder "
          f"{serena.text_encoder.dtype}; loaded in {time.perf_counter() - t:.0f} s", flush=True)
    reference = sd_models.load_checkpoint(info, dtype=torch.float32, dtype_vae=torch.float32)
    assert reference.dtype == torch.float32 and not reference.device_config.channels_last
    assert reference.unet.conv_in.weight.is_contiguous()
    return serena, reference


def diffusers_pipeline(model: Any, tokenizer: Any) -> Any:
    """diffusers' StableDiffusionPipeline over the float32 modules, with its defaults (attention
    processors included: the ones diffusers sets when it builds a UNet)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    scheduler = EulerDiscreteScheduler(**SD1_SCHEDULE, prediction_type="epsilon", timestep_spacing="linspace",
                                       interpolation_type="linear", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=tokenizer,
                                   unet=model.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    return pipe


def unet_inputs(model: Any) -> tuple[Any, Any, Any]:
    """A CFG step's UNet input at 512×512: latents (2×4×64×64), timesteps, text conditioning (float32)."""
    import torch
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn((1, 4, 64, 64), generator=generator).repeat(2, 1, 1, 1) * 14.6  # sigma_max's scale
    cond = model.get_learned_conditioning([PROMPT, NEGATIVE_PROMPT])
    return x, torch.tensor([999.0, 999.0]), cond.float()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def alternate(name: str, serena: Callable[[], Any], diffusers: Callable[[], Any], pairs: int) -> tuple[list, list]:
    """`pairs` timed pairs, alternating which side goes first; prints each pair."""
    s_times, d_times = [], []
    for i in range(pairs):
        if i % 2 == 0:
            s, _ = timed(serena)
            d, _ = timed(diffusers)
        else:
            d, _ = timed(diffusers)
            s, _ = timed(serena)
        s_times.append(s)
        d_times.append(d)
        print(f"{name} pair {i + 1}: Serena {s:.2f} s, diffusers {d:.2f} s, ratio {s / d:.3f}", flush=True)
    return s_times, d_times


def run_serena_txt2img(steps: int, width: int = 512, height: int = 512, batch_size: int = 1,
                       seed: int = SEED) -> Any:
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=width, height=height, steps=steps, batch_size=batch_size,
        sampler_name="Euler", cfg_scale=CFG_SCALE, seed=seed, do_not_save_samples=True, do_not_save_grid=True)
    return processing.process_images(p)


def run_diffusers_txt2img(pipe: Any, steps: int) -> Any:
    import torch
    generator = torch.Generator("cpu").manual_seed(SEED)
    return pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=512, height=512, num_inference_steps=steps,
                guidance_scale=CFG_SCALE, generator=generator, output_type="pil").images[0]


# --- figures --------------------------------------------------------------------------------------------------------
def unet_figures(serena: Any, reference: Any, pipe: Any, pairs: int) -> tuple[float, float]:
    """(median time ratio, relative error) of one UNet evaluation."""
    import torch
    x, t, cond = unet_inputs(reference)
    with torch.no_grad():
        fast = lambda: serena.apply_model(x, t, cond)  # noqa: E731
        slow = lambda: pipe.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]  # noqa: E731
        fast(), slow()  # warm-up
        out_fast, out_slow = fast().float(), slow().float()
        error = float((out_fast - out_slow).norm() / out_slow.norm())
        s_times, d_times = alternate("UNet step", fast, slow, pairs)
    ratio = statistics.median(s_times) / statistics.median(d_times)
    print(f"UNet step (512², batch 2): median Serena {statistics.median(s_times):.2f} s, diffusers "
          f"{statistics.median(d_times):.2f} s, ratio {ratio:.3f} (required <= {REQUIRED_RATIO}); "
          f"speed-up {1 / ratio:.2f}x", flush=True)
    print(f"UNet output relative error against float32 on the same input: {error:.4f} "
          f"(limit {UNET_REL_ERROR_LIMIT})", flush=True)
    return ratio, error


def end_to_end(pipe: Any, steps: int, pairs: int) -> float:
    s_times, d_times = alternate(f"txt2img 512² {steps} steps", lambda: run_serena_txt2img(steps),
                                 lambda: run_diffusers_txt2img(pipe, steps), pairs)
    ratio = statistics.median(s_times) / statistics.median(d_times)
    print(f"end to end (512², Euler, {steps} steps, CFG {CFG_SCALE}): median Serena {statistics.median(s_times):.1f} s, "
          f"diffusers {statistics.median(d_times):.1f} s, ratio {ratio:.3f}", flush=True)
    return ratio


def capture_final_latents(run: Callable[[], Any]) -> tuple[Any, Any]:
    """(the latents the VAE decodes, the images) of one `process_images` run."""
    from modules import processing
    seen = []
    original = processing.decode_latent_batch

    def spy(model: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(batch.detach().float().clone())
        return original(model, batch, *args, **kwargs)
    processing.decode_latent_batch = spy
    try:
        result = run()
    finally:
        processing.decode_latent_batch = original
    return seen[-1], result.images


def demo_latent_difference(data_dir: str) -> float:
    """Relative L2 difference of the final latent (20 Euler steps, 512²) on the demo model, default path
    against float32."""
    import numpy as np
    import torch
    from modules import demo_checkpoint, sd_models
    path = demo_checkpoint.ensure_demo_checkpoint(os.path.join(data_dir, "demo"))
    info = sd_models.CheckpointInfo(path, compute_hash=False)
    info.register()
    sd_models.load_model(info)
    fast_latent, fast_images = capture_final_latents(lambda: run_serena_txt2img(20))
    sd_models.load_model(info, dtype=torch.float32, dtype_vae=torch.float32)
    assert sd_models.model_data.sd_model.dtype == torch.float32
    ref_latent, ref_images = capture_final_latents(lambda: run_serena_txt2img(20))
    diff = float((fast_latent - ref_latent).norm() / ref_latent.norm())
    pixels = np.abs(np.asarray(fast_images[0], dtype=np.int16) - np.asarray(ref_images[0], dtype=np.int16))
    print(f"demo model, 20 Euler steps at 512²: final latent relative difference {diff:.4f} "
          f"(limit {LATENT_REL_DIFF_LIMIT}), max |Δ| {float((fast_latent - ref_latent).abs().max()):.4f}; "
          f"image mean |Δ| {pixels.mean():.2f}/255, max {int(pixels.max())}/255", flush=True)
    sd_models.load_model(info)
    return diff


def growth(data_dir: str, steps: int = 10) -> None:
    """Time per image against batch size and resolution on the demo model, default path."""
    from modules import demo_checkpoint, sd_models
    path = demo_checkpoint.ensure_demo_checkpoint(os.path.join(data_dir, "demo"))
    info = sd_models.CheckpointInfo(path, compute_hash=False)
    info.register()
    model = sd_models.load_model(info)
    print(f"cost growth on the demo model ({model.dtype} UNet, {steps} Euler steps, median of 3):", flush=True)
    run_serena_txt2img(steps, 512, 512)  # warm-up
    base = None
    for batch in (1, 2, 4):
        times = [timed(lambda: run_serena_txt2img(steps, 512, 512, batch))[0] for _ in range(3)]
        per_image = statistics.median(times) / batch
        base = base or per_image
        print(f"  512², batch {batch}: {statistics.median(times):.2f} s, {per_image:.2f} s per image "
              f"({per_image / base:.2f}x batch 1's)", flush=True)
    base = None
    for size in (512, 768, 1024):
        run_serena_txt2img(steps, size, size)
        times = [timed(lambda: run_serena_txt2img(steps, size, size))[0] for _ in range(3)]
        per_image = statistics.median(times)
        base = base or per_image
        pixels_ratio = (size / 512) ** 2
        print(f"  {size}², batch 1: {per_image:.2f} s ({per_image / base:.2f}x 512²'s for {pixels_ratio:.2f}x the "
              f"pixels)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternated UNet-step pairs")
    parser.add_argument("--e2e-pairs", type=int, default=1, help="alternated end-to-end pairs (0: skip)")
    parser.add_argument("--steps", type=int, default=4, help="end-to-end sampling steps")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned)")
    parser.add_argument("--growth", action="store_true", help="also time batch size and resolution growth")
    parser.add_argument("--checkpoint", default=None, help="reuse this full-size checkpoint")
    parser.add_argument("--keep", default=None, help="write the checkpoint here and keep it")
    args = parser.parse_args()

    import diffusers
    import torch
    with tempfile.TemporaryDirectory(prefix="serena-bench-speed-") as data_dir:
        path = args.checkpoint or args.keep or os.path.join(data_dir, "sd15-random-fp32.safetensors")
        if not os.path.exists(path):
            write_checkpoint(path)
        init_serena(data_dir, args.threads)
        from modules import devices
        print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
              f"CPU fast bfloat16: {devices.cpu_has_fast_bf16()}", flush=True)
        serena, reference = load_both(path)
        pipe = diffusers_pipeline(reference, serena.tokenizer)
        ratio, error = unet_figures(serena, reference, pipe, args.pairs)
        e2e = end_to_end(pipe, args.steps, args.e2e_pairs) if args.e2e_pairs else None
        del pipe, reference, serena
        from modules import sd_models
        sd_models.model_data.set_sd_model(None)
        sd_models.model_data.loaded_sd_models.clear()
        latent = demo_latent_difference(data_dir)
        if args.growth:
            growth(data_dir)
    ok = ratio <= REQUIRED_RATIO and error <= UNET_REL_ERROR_LIMIT and latent <= LATENT_REL_DIFF_LIMIT
    print(f"SUMMARY: UNet step ratio {ratio:.3f} (<= {REQUIRED_RATIO}), UNet relative error {error:.4f} "
          f"(<= {UNET_REL_ERROR_LIMIT}), demo final-latent difference {latent:.4f} (<= {LATENT_REL_DIFF_LIMIT})"
          + (f", end-to-end ratio {e2e:.3f}" if e2e is not None else "") + (" OK" if ok else " FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
