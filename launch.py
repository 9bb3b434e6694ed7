"""Serena launcher: flags, environment preparation, then the server or the command-line generator.

`./webui.sh` runs this file inside venv/. `python launch.py generate …` (or `./webui.sh generate …`)
runs one generation in-process (see `modules/cli.py`); anything else is parsed as A1111's flags.
"""
from __future__ import annotations

import os
import sys


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
