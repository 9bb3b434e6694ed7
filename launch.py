"""Serena launcher: flags, environment preparation, then the server or the command-line generator.

`./webui.sh` runs this file inside venv/. `python launch.py generate …` (or `./webui.sh generate …`)
runs one generation in-process (see `modules/cli.py`); anything else is parsed as A1111's flags.
"""
from __future__ import annotations

import os
import sys

from modules.launch_utils import (  # noqa: E402,F401  A1111's launcher helpers: `import launch` in install.py
    check_python_version, check_run_python, commit_hash, default_command_live, dir_repos, git, git_clone,
    git_pull_recursive, git_tag, index_url, is_installed, prepare_environment, python, repo_dir,
    requirements_met, run, run_extension_installer, run_git, run_pip, setup_logging)


def __getattr__(name: str):
    """`launch.args` (the parsed flags) and the data folders, as `modules.launch_utils` gives them."""
    from modules import launch_utils
    return getattr(launch_utils, name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if argv[:1] == ["generate"]:
        from modules import cli
        return cli.main(argv[1:])
    from modules import cmd_args
    opts = cmd_args.parse(argv)
    try:
        setup_logging(opts.loglevel)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
