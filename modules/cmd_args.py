"""Command-line flags, with A1111's names and defaults (spec §7).

`build_parser()` makes a fresh parser; nothing is parsed at import. The launcher parses
`sys.argv` plus `COMMANDLINE_ARGS`; tests parse their own lists.
"""
from __future__ import annotations

import argparse
import os
import shlex


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
    add("--precision", choices=["full", "half", "autocast"], default="autocast", help="evaluate at this precision")
    add("--no-half", action="store_true", help="keep the model in float32")
    add("--no-half-vae", action="store_true", help="keep the VAE in float32")
    add("--upcast-sampling", action="store_true", help="upcast sampling (accepted; Serena samples in the model dtype)")
    add("--device-id", type=str, default=None, help="CUDA device index")
    add("--medvram", action="store_true"); add("--medvram-sdxl", action="store_true")
    add("--lowvram", action="store_true"); add("--lowram", action="store_true")
    for flag in ("--xformers", "--opt-sdp-attention", "--opt-sdp-no-mem-attention", "--opt-split-attention",
                 "--opt-split-attention-v1", "--opt-split-attention-invokeai", "--opt-sub-quad-attention",
                 "--disable-opt-split-attention", "--disable-nan-check"):
        add(flag, action="store_true", help="accepted for A1111 compatibility")
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
    add("--listen", action="store_true", help="bind 0.0.0.0")
    add("--port", type=int, default=None, help="port (default 7860; 7861 with --nowebui)")
    add("--server-name", type=str, default=None, help="explicit host to bind")
    add("--api-auth", type=str, default=None, help='HTTP Basic credentials for the API: "u1:p1,u2:p2"')
    add("--api-log", action="store_true", help="log one line per API request")
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
    return p


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
        return ns
    return parser.parse_args(args)


def defaults() -> argparse.Namespace:
    """Flags as they are with nothing given (what tests and `webui.initialize()` start from),
    including the defaults of extension flags."""
    return parser_with_extensions([]).parse_args([])
