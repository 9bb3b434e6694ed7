"""Serena launcher: flags, environment preparation, then the server or the command-line generator.

`./webui.sh` runs this file inside venv/. `python launch.py generate …` (or `./webui.sh generate …`)
runs one generation in-process (see `modules/cli.py`); anything else is parsed as A1111's flags.
"""
from __future__ import annotations

import os
import sys


# A1111's launcher helpers that extensions' install.py scripts call (`import launch`).
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")


def is_installed(package: str) -> bool:
    """Whether a distribution (or, failing that, a module) named `package` is installed."""
    import importlib.metadata
    import importlib.util
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            return False


def run(command: str, desc: str | None = None, errdesc: str | None = None, custom_env: dict | None = None,
        live: bool = False) -> str:
    """Run a shell command; its output, or RuntimeError (with the output) when it fails."""
    import subprocess
    if desc:
        print(desc)
    result = subprocess.run(command, shell=True, env=os.environ if custom_env is None else custom_env,
                            capture_output=not live, text=True)
    if result.returncode != 0:
        message = [f"{errdesc or 'Error running command'}.", f"Command: {command}",
                   f"Error code: {result.returncode}"]
        if not live:
            message += [f"stdout: {result.stdout or '<empty>'}", f"stderr: {result.stderr or '<empty>'}"]
        raise RuntimeError("\n".join(message))
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = False) -> str:
    """`pip <command>` in this interpreter (install.py scripts install their requirements so)."""
    index = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index}', desc=f"Installing {desc}" if desc else None,
               errdesc=f"Couldn't install {desc}", live=live)


def prepare_environment(cmd_opts) -> None:
    """Set-up work done before anything loads a model: the CLIP tokenizer vocabulary.

    This is the only step that may use the network (PyPI), and only when the vocabulary is missing.
    """
    from modules import clip_tokenizer, paths
    clip_tokenizer.ensure_vocab(os.path.join(paths.tokenizers_dir, "clip-vit-large-patch14"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if argv[:1] == ["generate"]:
        from modules import cli
        return cli.main(argv[1:])
    from modules import cmd_args
    opts = cmd_args.parse(argv)
    if not opts.skip_prepare_environment:
        prepare_environment(opts)
    if opts.exit:
        print("Serena: environment is set up; exiting (--exit).")
        return 0
    import webui
    webui.start(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
