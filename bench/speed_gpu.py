"""Benchmark (speed, GPU): Serena's GPU paths against diffusers' default pipeline, in one run.

On a CUDA machine, for a random-weight **full-size** SD1.5 (512×512, 20 steps) and SDXL base
(1024×1024, 30 steps) checkpoint in float16 (written once to a temporary folder in the A1111/sgm key
layout and loaded through Serena's loader), Euler, CFG 7, batch 1:

- **diffusers**: `StableDiffusionPipeline` / `StableDiffusionXLPipeline` over the loaded float16
  modules, with diffusers' defaults (SDPA attention processors);
- **Serena eager**: plain attention (`--disable-opt-split-attention`: softmax(q·kᵀ)·v by matmuls);
- **Serena SDPA**: the default (`--opt-sdp-attention`);
- **Serena CUDA graphs**: SDPA + `--cuda-graphs` (one graph per shape, replayed);
- **Serena compile**: SDPA + `--torch-compile` (inductor, one compiled graph per shape).

For each: UNet it/s (the sampling loop's UNet evaluations on the CFG batch of 2, timed with the device
synchronised, median of 3 loops after warm-up, compilation and capture) and end-to-end ms of one
txt2img (prompt encoding, sampling, VAE decode, PIL image; median of 3 after a warm-up). The table is
printed last; every figure also goes to `--json`.

Without CUDA it prints that the GPU figures are unmeasured and exits 0. `--smoke` runs the whole
flow on the CPU with the tiny demo configurations (compile backend "eager"), to check the script
itself on a machine without a GPU.

Usage: `python bench/speed_gpu.py [--models sd15,sdxl] [--variants ...] [--json out.json] [--smoke]`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed, sharp focus"
NEGATIVE_PROMPT = "blurry, low quality, watermark"
SEED = 1234
CFG_SCALE = 7.0
SD1_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
JOBS = {"sd15": (512, 20), "sdxl": (1024, 30)}
VARIANTS = ("diffusers", "sdpa", "eager", "cuda-graphs", "compile")  # SDPA before the ones compared with it


# --- checkpoints ------------------------------------------------------------------------------------------------
def random_value(key: str, shape: Any, device: str, generator: Any) -> Any:
    """Random float16 weights: norms' scales 1, everything else N(0, 0.02²) (values only drive timing)."""
    import torch
    if len(shape) == 1 and "norm" in key and key.endswith("weight"):
        return torch.ones(tuple(shape), dtype=torch.float16, device=device)
    return (torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32) * 0.02).to(torch.float16)


def layout(kind: str, smoke: bool) -> dict:
    """The checkpoint's keys and shapes (meta tensors) in the A1111/sgm layout."""
    import torch
    from modules import demo_checkpoint
    if smoke:
        return {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                for k, v in demo_checkpoint.demo_state_dict("sdxl" if kind == "sdxl" else "sd1").items()}
    import checkpoint_load as sizes
    if kind == "sdxl":
        return sizes.sdxl_layout()

    def meta(module: Any) -> dict:
        return module.state_dict()
    return demo_checkpoint.ldm_state_dict(sizes.SD15_UNET, sizes.SD15_VAE, sizes.SD15_CLIP, meta)


def write_checkpoint(kind: str, path: str, device: str, smoke: bool) -> None:
    import safetensors.torch
    import torch
    t = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(0)
    state = {}
    for key, meta in layout(kind, smoke).items():
        if meta.dtype == torch.int64:
            state[key] = torch.arange(meta.shape[-1], dtype=torch.int64).expand(meta.shape).contiguous()
        elif key.endswith("logit_scale") or key.endswith(("alphas_cumprod", "betas", "alphas_cumprod_prev")):
            continue  # Serena uses SD's schedule when the file has none
        else:
            state[key] = random_value(key, meta.shape, device, generator).cpu()
    safetensors.torch.save_file(state, path)
    print(f"[{kind}] wrote {os.path.getsize(path) / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s", flush=True)


# --- Serena ---------------------------------------------------------------------------------------------------------
def init_serena(data_dir: str, smoke: bool) -> None:
    """`webui.initialize` without a model; where Gradio is not installed (a bare GPU machine), without
    the scripts (A1111's script runners build Gradio components), which txt2img does not need."""
    import importlib.util

    import webui
    from modules import cmd_args, shared
    if importlib.util.find_spec("gradio") is None:
        print("gradio is not installed here: Serena's scripts are not loaded (txt2img runs without them)")
        webui.load_extensions = lambda: None
    flags = ["--data-dir", data_dir, "--skip-load-model-at-start", "--no-hashing"]
    if smoke:
        flags += ["--use-cpu", "all", "--no-half"]
    webui.initialize(cmd_args.parse(flags, environ={}))
    shared.opts.set("persistent_cond_cache", False)  # diffusers encodes the prompts every time


def load(path: str, variant: str, smoke: bool) -> Any:
    """The checkpoint loaded as the current model, with `variant`'s attention and wrappers."""
    import torch
    from modules import devices, sd_attention, sd_compile, sd_models
    info = sd_models.CheckpointInfo(path, compute_hash=False)
    info.register()
    sd_models.model_data.set_sd_model(None)
    sd_models.model_data.loaded_sd_models.clear()
    devices.torch_gc()
    dtype = torch.float32 if smoke else torch.float16
    model = sd_models.load_model(info, dtype=dtype, dtype_vae=dtype)
    sd_attention.apply(model, "None" if variant == "eager" else "sdp")
    flags = types.SimpleNamespace(torch_compile=variant == "compile", cuda_graphs=variant == "cuda-graphs",
                                  torch_compile_backend="eager" if smoke else "inductor",
                                  torch_compile_mode="default")
    sd_compile.apply(model, flags)
    return model


def synchronize() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], outputs: list | None = None) -> float:
    synchronize()
    t = time.perf_counter()
    out = fn()
    synchronize()
    elapsed = time.perf_counter() - t
    if outputs is not None:
        outputs.append(out)
    return elapsed


def image_digest(image: Any) -> str:
    import hashlib
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:16]


def serena_unet_loop(model: Any, size: int, steps: int) -> Callable[[], Any]:
    """`steps` UNet evaluations on a CFG batch of 2, as the sampler makes them (apply_model)."""
    import torch
    from modules import prompt_parser
    device = model.device
    x = torch.randn((2, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(SEED)).to(device)
    texts = prompt_parser.SdConditioning([PROMPT, NEGATIVE_PROMPT], width=size, height=size)
    cond = model.get_learned_conditioning(texts)
    ts = torch.linspace(999, 0, steps)

    def run() -> None:
        with torch.no_grad():
            for t in ts:
                model.apply_model(x, t.expand(2).to(device), cond)
    return run


def serena_txt2img(size: int, steps: int) -> Callable[[], Any]:
    def run() -> Any:
        from modules import processing
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=size, height=size, steps=steps,
            sampler_name="Euler", cfg_scale=CFG_SCALE, seed=SEED, do_not_save_samples=True, do_not_save_grid=True)
        images = processing.process_images(p).images
        assert len(images) == 1 and images[0].size == (size, size)
        return images[0]
    return run


# --- diffusers ----------------------------------------------------------------------------------------------------------
def diffusers_pipeline(model: Any) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    scheduler = EulerDiscreteScheduler(**SD1_SCHEDULE, prediction_type="epsilon", timestep_spacing="linspace",
                                       interpolation_type="linear", steps_offset=1)
    if model.is_sdxl:
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder,
                                         text_encoder_2=model.text_encoder_2, tokenizer=model.tokenizer,
                                         tokenizer_2=model.tokenizer, unet=diffusers_sdxl_unet(model.unet),
                                         scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                       unet=model.unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_sdxl_unet(unet: Any) -> Any:
    """The SDXL UNet as diffusers' SDXL pipeline drives it: Serena builds it with the sgm layout's
    class embedding (`class_embed_type="projection"`, fed the 2816-wide vector Serena's conditioner
    makes), diffusers' pipeline wants `addition_embed_type="text_time"` (it embeds the size/crop ids
    itself). Same weights, same shapes: the linear layers are renamed and shared, not copied."""
    import torch
    from diffusers import UNet2DConditionModel
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(class_embed_type=None, addition_embed_type="text_time", addition_time_embed_dim=256)
    with torch.device("meta"):
        twin = UNet2DConditionModel(**config)
    state = {k.replace("class_embedding.", "add_embedding."): v for k, v in unet.state_dict().items()}
    twin.load_state_dict(state, strict=True, assign=True)
    return twin.eval().requires_grad_(False)


def diffusers_unet_loop(pipe: Any, model: Any, size: int, steps: int) -> Callable[[], Any]:
    import torch
    device = model.device
    x = torch.randn((2, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(SEED)).to(device, model.dtype)
    kwargs: dict = {}
    if model.is_sdxl:
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPT, None, device, 1, True, NEGATIVE_PROMPT)
        time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=model.dtype)
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.cat([pooled, neg_pooled]), "time_ids": time_ids}
    else:
        pos, neg = pipe.encode_prompt(PROMPT, device, 1, True, NEGATIVE_PROMPT)
    hidden = torch.cat([pos, neg])
    ts = torch.linspace(999, 0, steps)

    def run() -> None:
        with torch.no_grad():
            for t in ts:
                pipe.unet(x, t.to(device), encoder_hidden_states=hidden, return_dict=False, **kwargs)
    return run


def diffusers_txt2img(pipe: Any, size: int, steps: int) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        generator = torch.Generator("cpu").manual_seed(SEED)
        images = pipe(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, width=size, height=size,
                      num_inference_steps=steps, guidance_scale=CFG_SCALE, generator=generator,
                      output_type="pil").images
        assert len(images) == 1
        return images[0]
    return run


# --- measuring -----------------------------------------------------------------------------------------------------------
def measure(unet_loop: Callable[[], Any], txt2img: Callable[[], Any], steps: int, repeats: int) -> dict:
    first = timed(unet_loop)  # warm-up: compilation / capture happen here
    loops = [timed(unet_loop) for _ in range(repeats)]
    figures = {"first_loop_s": first, "unet_it_s": steps / statistics.median(loops), "unet_loops_s": loops}
    print(f"  UNet: {figures['unet_it_s']:.1f} it/s (first loop {first:.1f} s)", flush=True)
    images: list = []
    try:
        timed(txt2img, images)
        ends = [timed(txt2img, images) for _ in range(repeats)]
    except Exception as e:  # noqa: BLE001 - keep the UNet figures
        import traceback
        traceback.print_exc()
        return {**figures, "error": f"txt2img: {type(e).__name__}: {e}"}
    digests = sorted({image_digest(im) for im in images})
    import numpy as np
    pixels = np.asarray(images[0].convert("RGB"), dtype=np.float32)
    return {"first_loop_s": first, "unet_it_s": steps / statistics.median(loops),
            "txt2img_ms": 1000 * statistics.median(ends), "deterministic": len(digests) == 1,
            "image_digests": digests, "image_mean": float(pixels.mean()), "pixels": pixels,
            "unet_loops_s": loops, "txt2img_s": ends}


def save(path: str | None, gpu: str, all_results: dict) -> None:
    """Write every figure so far to `path` (after each variant: a run cut short keeps what it measured)."""
    if not path:
        return
    import torch
    clean = {kind: {variant: {k: v for k, v in figures.items() if k not in ("pixels", "sdpa_pixels")}
                    for variant, figures in results.items()} for kind, results in all_results.items()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"gpu": gpu, "torch": torch.__version__, "results": clean}, f, indent=1)


def run_model(kind: str, path: str, variants: list[str], repeats: int, smoke: bool, results: dict,
              on_variant: Callable[[], None] = lambda: None) -> dict:
    size, steps = JOBS[kind]
    if smoke:
        size, steps = 64, 3
    for variant in variants:
        t = time.perf_counter()
        try:
            if variant == "diffusers":
                model = load(path, "sdpa", smoke)
                pipe = diffusers_pipeline(model)
                figures = measure(diffusers_unet_loop(pipe, model, size, steps), diffusers_txt2img(pipe, size, steps),
                                  steps, repeats)
                del pipe
            else:
                model = load(path, variant, smoke)
                figures = measure(serena_unet_loop(model, size, steps), serena_txt2img(size, steps), steps, repeats)
                from modules import sd_compile
                status = getattr(sd_compile, "status", None)
                if status is not None:
                    figures["status"] = str(status(model))
        except Exception as e:  # noqa: BLE001 - one variant failing must not lose the others' figures
            import traceback
            traceback.print_exc()
            figures = {"error": f"{type(e).__name__}: {e}"}
        figures["wall_s"] = time.perf_counter() - t
        results[variant] = figures
        pixels = figures.pop("pixels", None)
        if pixels is not None and variant != "diffusers":
            reference = next((r for r in results.values() if r is not figures and "sdpa_pixels" in r), None)
            if variant == "sdpa":
                figures["sdpa_pixels"] = pixels
            elif reference is not None:
                import numpy as np
                figures["mean_abs_diff_vs_sdpa"] = float(np.abs(pixels - reference["sdpa_pixels"]).mean())
                figures["same_bytes_as_sdpa"] = figures["image_digests"] == reference["image_digests"]
        print(f"[{kind}] {variant}: " + json.dumps({k: v for k, v in figures.items()
                                                   if isinstance(v, (int, float, str, bool))}), flush=True)
        on_variant()
    return results


def table(all_results: dict, gpu: str) -> str:
    lines = [f"GPU: {gpu}", "| model | variant | UNet it/s | txt2img ms | vs diffusers (ms) | same bytes twice | "
                            "vs SDPA image (mean abs, 0-255) |", "|---|---|---|---|---|---|---|"]
    for kind, results in all_results.items():
        size, steps = JOBS[kind]
        base = results.get("diffusers", {}).get("txt2img_ms")
        for variant, f in results.items():
            if "error" in f:
                its = f"{f['unet_it_s']:.1f}" if "unet_it_s" in f else ""
                lines.append(f"| {kind} {size}² {steps} steps | {variant} | {its} | error: {f['error'][:70]} | | | |")
                continue
            ratio = f"{f['txt2img_ms'] / base:.3f}" if base else ""
            versus = f.get("mean_abs_diff_vs_sdpa")
            versus = ("identical" if f.get("same_bytes_as_sdpa") else f"{versus:.3f}") if versus is not None else ""
            lines.append(f"| {kind} {size}² {steps} steps | {variant} | {f['unet_it_s']:.1f} | {f['txt2img_ms']:.0f} | "
                         f"{ratio} | {'yes' if f['deterministic'] else 'NO'} | {versus} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny demo configurations: checks the script")
    args = parser.parse_args()

    import torch
    if not torch.cuda.is_available() and not args.smoke:
        print("GPU figures unmeasured: CUDA is not available on this machine (torch "
              f"{torch.__version__}); run this benchmark on a CUDA machine.")
        return 0
    device = "cpu" if args.smoke else "cuda"
    gpu = "CPU (smoke run)" if args.smoke else torch.cuda.get_device_name(0)
    import diffusers
    print(f"{gpu}; torch {torch.__version__}, diffusers {diffusers.__version__}", flush=True)
    all_results: dict = {}
    with tempfile.TemporaryDirectory(prefix="serena-bench-gpu-") as data_dir:
        init_serena(data_dir, args.smoke)
        for kind in args.models.split(","):
            path = os.path.join(data_dir, f"{kind}-random-fp16.safetensors")
            write_checkpoint(kind, path, device, args.smoke)
            all_results[kind] = {}
            run_model(kind, path, args.variants.split(","), args.repeats, args.smoke, all_results[kind],
                      lambda: save(args.json, gpu, all_results))
            save(args.json, gpu, all_results)
            os.remove(path)
            print(table(all_results, gpu), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
