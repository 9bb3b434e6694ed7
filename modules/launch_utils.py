"""A1111's `modules.launch_utils`: the launcher helpers, which extensions' `install.py` scripts call
(usually as `import launch`; `launch.py` re-exports everything here).

Serena installs nothing at start except what `prepare_environment` lists: its own requirements
come from `./webui.sh` (venv + pinned install). The helpers that run commands (`run`, `run_pip`,
`run_git`, `git_clone`) work as A1111's do, for extensions that install their own requirements.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import re
import shlex
import subprocess
import sys
from typing import Any

from modules import paths

log = logging.getLogger(__name__)

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"
script_path = paths.script_path


def __getattr__(name: str) -> Any:
    """`args` (A1111: the parsed flags) is `shared.cmd_opts`; `data_path` / `dir_extensions` follow --data-dir."""
    from modules import shared
    if name == "args":
        return shared.cmd_opts
    if name == "data_path":
        return shared.data_paths.data_path
    if name == "dir_extensions":
        return os.path.join(shared.data_paths.data_path, "extensions")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- logging -----------------------------------------------------------------------------------------------
LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(loglevel: str | None) -> bool:
    """Send log records of `loglevel` and above (--loglevel, else the environment variable
    SD_WEBUI_LOG_LEVEL, as in A1111) to stderr. Returns whether a level was set.

    Raises:
        ValueError: the level is not one of CRITICAL, ERROR, WARNING, INFO, DEBUG.
    """
    loglevel = loglevel or os.environ.get("SD_WEBUI_LOG_LEVEL")
    if not loglevel:
        return False
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ValueError(f"--loglevel {loglevel!r}: use one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    return True


# --- version information -----------------------------------------------------------------------------------
def check_python_version() -> None:
    """Warn when the interpreter is older than Serena supports (3.10)."""
    if sys.version_info < (3, 10):
        log.warning("Python %s is older than 3.10, which Serena needs", sys.version.split()[0])


def _git_output(*args: str) -> str | None:
    try:
        out = subprocess.run([git, "-C", script_path, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@functools.lru_cache(maxsize=None)
def commit_hash() -> str:
    """The install's git commit, or "<none>" outside a git checkout."""
    return _git_output("rev-parse", "HEAD") or "<none>"


@functools.lru_cache(maxsize=None)
def git_tag() -> str:
    """The install's `git describe --tags`, else Serena's version, else "<none>"."""
    tag = _git_output("describe", "--tags")
    if tag:
        return tag
    try:
        from modules.processing_infotext import SERENA_VERSION
        return str(SERENA_VERSION)
    except ImportError:
        return "<none>"


# --- running commands ----------------------------------------------------------------------------------------
def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None,
        custom_env: dict | None = None, live: bool = default_command_live) -> str:
    """Run a shell command (a list is quoted and joined); its output, or RuntimeError when it fails.

    `desc` is printed first; with `live` the output goes straight to the console and "" is
    returned. The error message holds the command, its exit code and (not live) its output.
    """
    if desc:
        print(desc)
    if isinstance(command, list):
        command = shlex.join(command)
    result = subprocess.run(command, shell=True, env=os.environ if custom_env is None else custom_env,
                            capture_output=not live, text=True)
    if result.returncode != 0:
        message = [f"{errdesc or 'Error running command'}.", f"Command: {command}",
                   f"Error code: {result.returncode}"]
        if not live:
            message += [f"stdout: {result.stdout or '<empty>'}", f"stderr: {result.stderr or '<empty>'}"]
        raise RuntimeError("\n".join(message))
    return "" if live else (result.stdout or "")


def is_installed(package: str) -> bool:
    """Whether a distribution (or, failing that, an importable module) named `package` is installed."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            return False


def repo_dir(name: str) -> str:
    """`<install>/repositories/<name>` (where A1111 clones the repositories it needs)."""
    return os.path.join(script_path, dir_repos, name)


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str:
    """`pip <command>` with this interpreter (binary wheels preferred; INDEX_URL when set)."""
    index = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index}', desc=f"Installing {desc}" if desc else None,
               errdesc=f"Couldn't install {desc}", live=live)


def check_run_python(code: str) -> bool:
    """Whether `python -c code` exits with 0."""
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def run_git(dir: str, name: str, command: str, desc: str | None = None, errdesc: str | None = None,
            custom_env: dict | None = None, live: bool = default_command_live, autofix: bool = True) -> str:
    """`git -C <dir> <command>`. With `autofix`, a failure that looks like a broken checkout gets
    one `git fetch --refetch --no-auto-gc` and the command is tried again."""
    try:
        return run(f'"{git}" -C "{dir}" {command}', desc=desc, errdesc=errdesc, custom_env=custom_env, live=live)
    except RuntimeError:
        if not autofix:
            raise
    print(f"{errdesc or 'git failed'}, attempting autofix...")
    run(f'"{git}" -C "{dir}" fetch --refetch --no-auto-gc', f"Fixing {name}", f"Couldn't fix {name}", live=True)
    return run(f'"{git}" -C "{dir}" {command}', desc=desc, errdesc=errdesc, custom_env=custom_env, live=live)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone `url` into `dir` (or update an existing clone) and check out `commithash` when given."""
    if os.path.exists(dir):
        if commithash is None:
            return
        current = run_git(dir, name, "rev-parse HEAD", None, f"Couldn't determine {name}'s hash: {commithash}",
                          live=False).strip()
        if current == commithash:
            return
        if run_git(dir, name, "config --get remote.origin.url", None, "Couldn't read the remote", live=False
                   ).strip() != url:
            run_git(dir, name, f'remote set-url origin "{url}"', None, f"Failed to set {name}'s origin URL")
        run_git(dir, name, "fetch", f"Fetching updates for {name}...", f"Couldn't fetch {name}", autofix=False)
        run_git(dir, name, f"checkout {commithash}", f"Checking out commit for {name} with hash: {commithash}...",
                f"Couldn't checkout commit {commithash} for {name}", live=True)
        return
    run(f'"{git}" clone --config core.filemode=false "{url}" "{dir}"', f"Cloning {name} into {dir}...",
        f"Couldn't clone {name}", live=True)
    if commithash is not None:
        run(f'"{git}" -C "{dir}" checkout {commithash}', None, f"Couldn't checkout {name}'s hash: {commithash}")


def git_pull_recursive(dir: str) -> None:
    """`git pull --autostash` in every git checkout under `dir`."""
    for root, dirs, _ in os.walk(dir):
        if ".git" in dirs:
            try:
                print(run(f'"{git}" -C "{root}" pull --autostash'))
            except RuntimeError as e:
                print(f"Pull in {root} failed: {e}")


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;#]+)")


def requirements_met(requirements_file: str) -> bool:
    """Whether every `name==version` line of the file is installed at exactly that version (other
    lines are not checked), as A1111 decides whether to run pip for a requirements file."""
    with open(requirements_file, encoding="utf8") as file:
        for line in file:
            match = _REQUIREMENT.match(line)
            if match is None:
                continue
            name = re.sub(r"\[.*]", "", match.group(1))
            try:
                if importlib.metadata.version(name) != match.group(2):
                    return False
            except importlib.metadata.PackageNotFoundError:
                return False
    return True


# --- start-up -------------------------------------------------------------------------------------------------
def run_extension_installer(extension_dir: str) -> bool:
    """Run one extension's `install.py` (Serena's installer: once per change, failures reported)."""
    from modules import extensions
    ext = next((e for e in extensions.extensions if os.path.abspath(e.path) == os.path.abspath(extension_dir)), None)
    if ext is None:
        return False
    return extensions.run_extension_installer(ext)


def prepare_environment(cmd_opts: Any = None) -> None:
    """Set-up work done before anything loads a model: the CLIP tokenizer vocabulary.

    This is the only step that may use the network (PyPI), and only when the vocabulary is missing.
    """
    from modules import clip_tokenizer
    clip_tokenizer.ensure_vocab(os.path.join(paths.tokenizers_dir, "clip-vit-large-patch14"))
