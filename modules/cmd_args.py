"""Command-line flags, with A1111's names and defaults (spec §7).

`build_parser()` makes a fresh parser; nothing is parsed at import. The launcher parses
`sys.argv` plus `COMMANDLINE_ARGS`; tests parse their own lists.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """Return the argparse parser holding every flag Serena accepts."""
    p = argparse.ArgumentParser(prog="webui", description="Serena — Stable Diffusion web UI")
    add = p.add_argument
    # locations
    add("--data-dir", type=str, default=None, help="base folder for user data (default: the install folder)")
    add("--models-dir", type=str, default=None, help="models folder (default: <data-dir>/models)")
    add("--ckpt", type=str, default=None, help="checkpoint to register and select at start")
    add("--ckpt-dir", type=str, default=None, help="extra folder scanned for checkpoints")
    add("--vae-dir", type=str, default=None, help="folder with VAE files")
    add("--embeddings-dir", type=str, default=None, help="textual inversion folder")
    add("--lora-dir", type=str, default=None, help="LoRA folder (default: <models-dir>/Lora)")
    add("--hypernetwork-dir", type=str, default=None,
        help="hypernetwork folder (default: <models-dir>/hypernetworks)")
    add("--config", type=str, default=None, help="model config fallback (kept for A1111 compatibility)")
    add("--ui-settings-file", type=str, default=None, help="options file (default: <data-dir>/config.json)")
    add("--ui-config-file", type=str, default=None, help="UI defaults file (default: <data-dir>/ui-config.json)")
    add("--styles-file", type=str, action="append", default=None, help="styles csv; repeatable")
    # devices and precision
    add("--use-cpu", nargs="+", default=[], help="modules to run on CPU: all, sd, interrogate, …")
    add("--precision", choices=["full", "half", "autocast"], default="autocast",
        help="full: float32 everywhere; half: the UNet and text encoder in half precision (float16 on a GPU, "
             "bfloat16 on a CPU); autocast (default): half where it is known to be safe and faster "
             "(a GPU; a CPU with AVX-512 BF16 or AMX, unless --no-cpu-bf16)" + HONOURED)
    add("--no-half", action="store_true", help="keep every model in float32" + HONOURED)
    add("--no-half-vae", action="store_true", help="keep the VAE in float32" + HONOURED)
    add("--upcast-sampling", action="store_true",
        help="half-precision UNet weights, computed under autocast with float32 activations (no effect with "
             "--no-half)" + HONOURED)
    add("--no-cpu-bf16", action="store_true",
        help="on a CPU, stay in float32 even where the CPU has fast bfloat16 (AVX-512 BF16 / AMX)" + HONOURED)
    add("--device-id", type=str, default=None, help="CUDA device index")
    for flag in ("--medvram", "--medvram-sdxl", "--lowvram", "--lowram"):
        add(flag, action="store_true", help="memory mode; Serena keeps the whole model on its device" + COMPAT)
    add("--xformers", action="store_true", help="xformers attention; Serena has no xformers and uses SDPA" + COMPAT)
    for flag, what in (("--opt-sdp-attention", "PyTorch scaled-dot-product attention (the default where available)"),
                       ("--opt-sdp-no-mem-attention", "SDPA without the memory-efficient kernel (deterministic on CUDA)"),
                       ("--opt-split-attention", "attention split into query slices sized to free memory (Doggettx)"),
                       ("--opt-split-attention-v1", "attention split into fixed query slices (v1)"),
                       ("--opt-split-attention-invokeai", "attention split into slices (InvokeAI's rule)"),
                       ("--opt-sub-quad-attention", "sub-quadratic attention: query and key chunks, bounded memory"),
                       ("--disable-opt-split-attention", "plain attention: no optimization")):
        add(flag, action="store_true", help=what + HONOURED)
    add("--disable-nan-check", action="store_true",
        help="do not check latents and decoded images for NaNs (honoured by Serena)")
    # launcher behaviour
    for flag in ("--skip-torch-cuda-test", "--skip-prepare-environment", "--skip-install",
                 "--skip-python-version-check", "--skip-version-check", "--reinstall-torch",
                 "--reinstall-xformers", "--update-check", "--update-all-extensions", "--dump-sysinfo",
                 "--do-not-download-clip", "--no-download-sd-model", "--test-server"):
        add(flag, action="store_true", help="accepted for A1111 compatibility")
    add("--exit", action="store_true", help="set up the environment, then exit")
    add("--no-hashing", action="store_true", help="do not compute sha256 of checkpoints")
    add("--skip-load-model-at-start", action="store_true", help="do not load a model at start")
    add("--disable-all-extensions", action="store_true", help="load no extension")
    add("--disable-extra-extensions", action="store_true", help="load only built-in extensions")
    add("--freeze-settings", action="store_true", help="refuse every option change")
    add("--hide-ui-dir-config", action="store_true",
        help="make the folder and file-name options read-only (UI and API)")
    add("--allow-outside-data-dir", action="store_true",
        help="let folder options set through the API or UI point outside the data folder "
             "(by default they must resolve inside --data-dir, or the install folder)")
    add("--no-prompt-history", action="store_true", help="do not write params.txt")
    add("--filenames-max-length", type=int, default=128, help="longest file name part")
    add("--unix-filenames-sanitization", action="store_true", help="only replace '/' in file names")
    add("--allow-code", action="store_true", help="allow the Custom code script")
    add("--enable-insecure-extension-access", action="store_true")
    # server
    add("--api", action="store_true", help="serve /sdapi/v1 (always on in Serena; accepted)")
    add("--nowebui", action="store_true", help="serve the API alone (port 7861 unless --port)")
    # job service (modules/runtime/job_service.py)
    add("--executor", choices=("local", "ray"), default="local",
        help="where queued jobs run: in this process (default) or on Ray worker processes")
    add("--ray-address", type=str, default=None,
        help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one for this server")
    add("--ray-workers", type=int, default=1, help="Ray worker actors, one job each at a time (default 1)")
    add("--listen", action="store_true", help="bind 0.0.0.0")
    add("--port", type=int, default=None, help="port (default 7860; 7861 with --nowebui)")
    add("--server-name", type=str, default=None, help="explicit host to bind")
    add("--api-auth", type=str, default=None, help='HTTP Basic credentials for the API: "u1:p1,u2:p2"')
    add("--api-log", action="store_true", help="log one line per API request (honoured by Serena)")
    add("--api-server-stop", action="store_true", help="enable server-kill / server-restart / server-stop")
    add("--gradio-auth", type=str, default=None, help='UI login "u:p,…"')
    add("--gradio-auth-path", type=str, default=None)
    add("--cors-allow-origins", type=str, default=None, help="comma-separated origins allowed by CORS")
    add("--cors-allow-origins-regex", type=str, default=None, help="regex of origins allowed by CORS")
    add("--tls-keyfile", type=str, default=None); add("--tls-certfile", type=str, default=None)
    add("--timeout-keep-alive", type=int, default=30, help="uvicorn keep-alive timeout")
    add("--subpath", type=str, default=None, help="root path behind a proxy")
    add("--share", action="store_true"); add("--ngrok", type=str, default=None)
    add("--autolaunch", action="store_true"); add("--theme", type=str, default=None)
    add("--no-gradio-queue", action="store_true")
    _add_a1111_compat_flags(p)
    return p


COMPAT = " (accepted for A1111 compatibility; Serena ignores it)"
HONOURED = " (honoured by Serena)"

MODEL_PATH_FLAGS = {
    "esrgan_models_path": "ESRGAN", "realesrgan_models_path": "RealESRGAN", "bsrgan_models_path": "BSRGAN",
    "dat_models_path": "DAT", "gfpgan_models_path": "GFPGAN", "codeformer_models_path": "Codeformer",
    "scunet_models_path": "ScuNET", "swinir_models_path": "SwinIR", "ldsr_models_path": "LDSR",
    "lyco_dir_backcompat": "LyCORIS",
}
"""A1111's per-model-family folder flags → their folder under the models folder (A1111's default).
Serena looks for the upscaler and face-restoration models it supports in its own folders under
`<models-dir>` whatever these say; the flags are parsed, and filled with A1111's defaults, because
extensions read them."""


def _add_a1111_compat_flags(p: argparse.ArgumentParser) -> None:
    """The rest of A1111 v1.10's flags, with its defaults: extensions read them from `shared.cmd_opts`.

    Each help says whether Serena honours the flag or only accepts it.
    """
    add = p.add_argument
    add("-f", action="store_true", help=argparse.SUPPRESS)  # A1111: allow running as root
    # honoured by Serena
    add("--loglevel", type=str, default=None,
        help="log level: CRITICAL, ERROR, WARNING, INFO or DEBUG (Serena sets the root logger to it)")
    add("--vae-path", type=str, default=None,
        help="VAE file every model uses; while set, the sd_vae options are not consulted (honoured by Serena)")
    add("--disable-safe-unpickle", action="store_true", default=False,
        help="A1111: skip the pickle check. Serena never runs code from a pickled file, so with or "
             "without this flag .ckpt/.pt files are read by its restricted loader" + COMPAT)
    # folders: parsed (with A1111's defaults, filled by fill_derived_defaults) for extensions
    for dest, folder in MODEL_PATH_FLAGS.items():  # A1111's Lora extension adds --lyco-dir-backcompat
        add("--" + dest.replace("_", "-"), type=str, default=None,
            help=f"folder with {folder} model files (default: <models-dir>/{folder})" + COMPAT)
    add("--clip-models-path", type=str, default=None, help="folder with CLIP model files" + COMPAT)
    add("--textual-inversion-templates-dir", type=str, default=None,
        help="textual inversion templates (default: <install>/textual_inversion_templates)" + COMPAT)
    add("--localizations-dir", type=str, default=None,
        help="localizations folder (default: <install>/localizations)" + COMPAT)
    add("--gradio-allowed-path", action="append", default=None,
        help="folder the browser UI may serve files from; repeatable. Honoured by Serena, which (unlike A1111) "
             "does not add the data folder by default: it holds config.json and the models")
    add("--gfpgan-dir", type=str, default="./GFPGAN", help="GFPGAN source folder" + COMPAT)
    add("--gfpgan-model", type=str, default=None, help="GFPGAN model file name" + COMPAT)
    # UI and console behaviour
    add("--ui-debug-mode", action="store_true", default=False,
        help="do not load a model at start, to start the UI quickly (honoured by Serena)")
    for flag, what in (("--gradio-debug", "launch Gradio in debug mode"),
                       ("--disable-console-progressbars", "no progress bars on the console"),
                       ("--enable-console-prompts", "print prompts on the console"),
                       ("--use-textbox-seed", "seed fields as text boxes"),
                       ("--no-progressbar-hiding", "do not hide Gradio's progress bar"),
                       ("--administrator", "administrator rights"),
                       ("--log-startup", "detailed log of the start-up"),
                       ("--show-negative-prompt", "does nothing in A1111 either"),
                       ("--unload-gfpgan", "does nothing in A1111 either"),
                       ("--deepdanbooru", "does nothing in A1111 either"),
                       ("--add-stop-route", "does nothing in A1111 either"),
                       ("--no-tests", "do not run --tests")):
        add(flag, action="store_true", default=False, help=what + COMPAT)
    add("--gradio-queue", action="store_true", default=True, help="does nothing in A1111 either" + COMPAT)
    add("--gradio-img2img-tool", type=str, default=None, help="does nothing in A1111 either" + COMPAT)
    add("--gradio-inpaint-tool", type=str, default=None, help="does nothing in A1111 either" + COMPAT)
    add("--tests", type=str, default=None, help="run the tests in this folder" + COMPAT)
    add("--max-batch-count", type=int, default=16, help="largest batch count in the UI" + COMPAT)
    add("--ngrok-region", type=str, default="", help="does nothing in A1111 either" + COMPAT)
    add("--ngrok-options", type=json.loads, default={}, help="ngrok options as JSON" + COMPAT)
    add("--disable-tls-verify", action="store_false", default=None, help="allow self-signed certificates" + COMPAT)
    add("--freeze-settings-in-sections", type=str, default=None,
        help="comma-separated settings sections to freeze" + COMPAT)
    add("--freeze-specific-settings", type=str, default=None, help="comma-separated settings to freeze" + COMPAT)
    # model memory and attention: diffusers chooses the attention implementation; no split loading
    add("--opt-channelslast", action="store_true", help="channels-last memory format for the UNet" + HONOURED)
    for flag, what in (("--always-batch-cond-uncond", "does nothing in A1111 either; Serena always batches"),
                       ("--force-enable-xformers", "xformers even where it looks unsupported"),
                       ("--xformers-flash-attention", "xformers with flash attention"),
                       ("--use-ipex", "Intel XPU as the torch device"),
                       ("--disable-model-loading-ram-optimization", "load models without the RAM optimization")):
        add(flag, action="store_true", default=False, help=what + COMPAT)
    add("--sub-quad-q-chunk-size", type=int, default=1024, help="sub-quadratic attention: query chunk size" + HONOURED)
    add("--sub-quad-kv-chunk-size", type=int, default=None,
        help="sub-quadratic attention: key/value chunk size (default: the whole sequence when it fits the threshold)"
             + HONOURED)
    add("--sub-quad-chunk-threshold", type=int, default=None,
        help="sub-quadratic attention: percent of free memory above which attention is chunked" + HONOURED)
    # compilation and graphs (Serena; opt-in)
    add("--torch-compile", action="store_true",
        help="compile the UNet and the VAE decoder with torch.compile (one compiled graph per shape; "
             "falls back to eager when compilation fails)")
    add("--torch-compile-backend", type=str, default="inductor", help="torch.compile backend (default inductor)")
    add("--torch-compile-mode", type=str, default="default",
        help="torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs")
    add("--cuda-graphs", action="store_true",
        help="on CUDA, capture the UNet step as a CUDA graph per (shape, batch) and replay it (ignored elsewhere)")

def derived_folders(data: Any) -> dict[str, str]:
    """A1111's defaults of the folder flags Serena honours: `--embeddings-dir` (`<data>/embeddings`),
    `--hypernetwork-dir` (`<models>/hypernetworks`), `--lora-dir` (`<models>/Lora`). A1111 fills
    them, and extensions read them as paths (`Path(shared.cmd_opts.embeddings_dir)`), so None breaks
    them; the folders are the ones Serena's loaders fall back to when the flag is unset."""
    return {
        "embeddings_dir": os.path.join(data.data_path, "embeddings"),
        "hypernetwork_dir": os.path.join(data.models_path, "hypernetworks"),
        "lora_dir": os.path.join(data.models_path, "Lora"),
    }


def fill_derived_defaults(ns: argparse.Namespace) -> argparse.Namespace:
    """Fill the folder flags left unset with A1111's defaults, which derive from `--data-dir` /
    `--models-dir` (known only once those are parsed); `--gradio-allowed-path` becomes a list (empty
    unless given). Returns `ns`, changed in place (calling it twice changes nothing more)."""
    from modules import paths
    data = paths.data_paths(getattr(ns, "data_dir", None), getattr(ns, "models_dir", None))
    for dest, folder in MODEL_PATH_FLAGS.items():
        if getattr(ns, dest, None) is None:
            setattr(ns, dest, os.path.join(data.models_path, folder))
    for dest, folder in derived_folders(data).items():  # honoured: the same folders Serena uses
        if getattr(ns, dest, None) is None:
            setattr(ns, dest, folder)
    if getattr(ns, "textual_inversion_templates_dir", None) is None:
        ns.textual_inversion_templates_dir = os.path.join(paths.script_path, "textual_inversion_templates")
    if getattr(ns, "localizations_dir", None) is None:
        ns.localizations_dir = os.path.join(paths.script_path, "localizations")
    if hasattr(ns, "gradio_allowed_path"):
        ns.gradio_allowed_path = list(ns.gradio_allowed_path or [])
    return ns


def parser_with_extensions(args: list[str]) -> argparse.ArgumentParser:
    """`build_parser()` plus the flags extensions add in their `preload.py` (A1111 runs every
    enabled extension's `preload(parser)` before parsing). `--data-dir`, `--ui-settings-file` and
    the two disable flags are read from `args` first, to find the extensions and their settings."""
    from modules import extensions
    parser = build_parser()
    early, _ = parser.parse_known_args([a for a in args if a not in ("-h", "--help")])
    settings = early.ui_settings_file or os.path.join(
        os.path.abspath(early.data_dir) if early.data_dir else _script_path(), "config.json")
    folders = extensions.preload_folders(early.data_dir, settings, disable_all=early.disable_all_extensions,
                                         disable_extra=early.disable_extra_extensions)
    extensions.preload_extensions(folders, parser)
    return parser


def _script_path() -> str:
    from modules import paths
    return paths.script_path


def parse(argv: list[str] | None = None, *, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse `argv` plus the `COMMANDLINE_ARGS` environment variable, as A1111 does, after the
    extensions' `preload.py` added their flags.

    Unknown flags are an error, naming the flag, unless `IGNORE_CMD_ARGS_ERRORS` is set.
    """
    env = os.environ if environ is None else environ
    args = list(argv or []) + shlex.split(env.get("COMMANDLINE_ARGS", ""))
    parser = parser_with_extensions(args)
    if env.get("IGNORE_CMD_ARGS_ERRORS"):
        ns, _ = parser.parse_known_args(args)
        return fill_derived_defaults(ns)
    return fill_derived_defaults(parser.parse_args(args))


def defaults() -> argparse.Namespace:
    """Flags as they are with nothing given (what tests and `webui.initialize()` start from),
    including the defaults of extension flags."""
    return fill_derived_defaults(parser_with_extensions([]).parse_args([]))
