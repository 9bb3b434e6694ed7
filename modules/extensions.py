"""A1111's extensions (spec §2.6): discovery, `metadata.ini`, preload, install and the active list.

Extensions live in `<data>/extensions/<NAME>/` and in the install's `extensions-builtin/<NAME>/`.
`list_extensions()` rebuilds the `extensions` list (built-ins first, then user extensions, each in
sorted folder order); `active()` is what loads, after `disabled_extensions`,
`disable_all_extensions` and `--disable-all-extensions` / `--disable-extra-extensions`.

Lifecycle, as the composition root drives it:
1. `preload_extensions(parser)` (from `cmd_args`) before flags are parsed: each `preload.py`'s
   `preload(parser)`; a failing one is reported and the others still run.
2. `run_extensions_installers()` before scripts load: each active extension's `install.py` in a
   subprocess of this interpreter, rerun only when its content or the extension's version changed
   (a stamp in the data folder). A failing install is reported with its output and the extension
   is left out of `active()` for this run.
3. `modules.scripts.load_scripts()` imports every active extension's `scripts/*.py`.

Git information is read with the `git` command (never the network), only when asked for.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any

from modules import errors, paths

extensions: list["Extension"] = []
extension_paths: dict[str, "Extension"] = {}
loaded_extensions: dict[str, "Extension"] = {}

failed_installs: dict[str, str] = {}
"""Extension path -> output of its failed `install.py`; such an extension is inactive for this run."""


def _user_dir() -> str:
    from modules import shared
    return os.path.join(shared.data_paths.data_path, "extensions")


def _builtin_dir() -> str:
    return os.path.join(paths.script_path, "extensions-builtin")


def __getattr__(name: str) -> str:
    """A1111's `extensions_dir` / `extensions_builtin_dir` / `script_path` strings; the user folder
    follows `--data-dir`."""
    if name == "extensions_dir":
        return _user_dir()
    if name == "extensions_builtin_dir":
        return _builtin_dir()
    if name == "script_path":
        return paths.script_path
    raise AttributeError(f"module 'modules.extensions' has no attribute {name!r}")


def _flags() -> Any:
    from modules import shared
    return shared.cmd_opts


def active() -> list["Extension"]:
    """The extensions whose scripts load now, in `extensions` order."""
    from modules import shared
    flags, opts = _flags(), shared.opts
    mode = opts.disable_all_extensions
    if getattr(flags, "disable_all_extensions", False) or mode == "all":
        return []
    builtin_only = getattr(flags, "disable_extra_extensions", False) or mode == "extra"
    return [x for x in extensions if x.enabled and (x.is_builtin or not builtin_only)
            and x.path not in failed_installs]


class ExtensionMetadata:
    """An extension's `metadata.ini`: `[Extension] Name / Requires`, `[scripts/<file>]` and `[scripts]`
    `Requires / Before / After`, `[callbacks/<name>] Before / After`."""

    filename = "metadata.ini"
    section_metadata = "Extension"

    def __init__(self, path: str, canonical_name: str):
        self.path = path
        self.config = configparser.ConfigParser()
        filepath = os.path.join(path, self.filename)
        if os.path.isfile(filepath):
            try:
                self.config.read(filepath, encoding="utf8")
            except Exception:
                errors.report(f"Error reading {self.filename} for extension {canonical_name}.", exc_info=True)
        self.canonical_name = self.config.get(self.section_metadata, "Name", fallback=canonical_name).lower().strip()
        self.requires = self.get_script_requirements("Requires", self.section_metadata)

    def get_script_requirements(self, field: str, section: str, extra_section: str | None = None) -> list[str]:
        """The names in `field` of `section` (plus `extra_section`'s), lower-cased."""
        text = self.config.get(section, field, fallback="")
        if extra_section:
            text = text + ", " + self.config.get(extra_section, field, fallback="")
        return self.parse_list(text.lower())

    @staticmethod
    def parse_list(text: str) -> list[str]:
        """Split a comma- or whitespace-separated list."""
        return [x for x in re.split(r"[,\s]+", text.strip()) if x] if text else []

    def list_callback_order_instructions(self):
        """(callback name, Before list, After list) for each `[callbacks/<name>]` section."""
        for section in self.config.sections():
            if section.startswith("callbacks/"):
                name = section[len("callbacks/"):]
                yield (name, self.parse_list(self.config.get(section, "Before", fallback="")),
                       self.parse_list(self.config.get(section, "After", fallback="")))


class Extension:
    """One extension folder. Git fields stay empty/None until `read_info_from_repo()`."""

    cached_fields = ["remote", "commit_date", "branch", "commit_hash", "version"]

    def __init__(self, name: str, path: str, enabled: bool = True, is_builtin: bool = False,
                 metadata: ExtensionMetadata | None = None):
        self.name = name
        self.path = path
        self.enabled = enabled
        self.status = ""
        self.can_update = False
        self.is_builtin = is_builtin
        self.commit_hash = ""
        self.commit_date: int | None = None
        self.version = ""
        self.branch: str | None = None
        self.remote: str | None = None
        self.have_info_from_repo = False
        self.metadata = metadata or ExtensionMetadata(path, name)
        self.canonical_name = self.metadata.canonical_name

    def to_dict(self) -> dict:
        return {x: getattr(self, x) for x in self.cached_fields}

    def from_dict(self, d: dict) -> None:
        for field in self.cached_fields:
            setattr(self, field, d[field])

    def _git(self, *args: str) -> str:
        out = subprocess.run(["git", "-c", f"safe.directory={self.path}", "-C", self.path, *args],
                             capture_output=True, text=True, timeout=10, check=True,
                             env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        return out.stdout.strip()

    def read_info_from_repo(self) -> None:
        """Fill remote, branch, commit_hash, commit_date and version from a git checkout (local
        reads only). A folder that is not a checkout, or has no remote, keeps `remote` None."""
        if self.is_builtin or self.have_info_from_repo:
            return
        self.have_info_from_repo = True
        if not os.path.exists(os.path.join(self.path, ".git")):
            self.remote = None
            return
        try:
            self.remote = self._git("config", "--get", "remote.origin.url") or None
        except Exception:
            self.remote = None  # no remote: not listed by the API, as in A1111
            return
        try:
            self.commit_hash = self._git("rev-parse", "HEAD")
            self.commit_date = int(self._git("log", "-1", "--format=%ct", "HEAD"))
            try:
                self.branch = self._git("symbolic-ref", "--short", "-q", "HEAD") or None
            except subprocess.CalledProcessError:
                self.branch = None  # detached head
            self.version = self.commit_hash[:8]
        except Exception:
            errors.report(f"Failed reading extension data from Git repository ({self.name})", exc_info=True)
            self.remote = None

    def list_files(self, subdir: str, extension: str) -> list:
        """`ScriptFile`s for the files in `<path>/<subdir>` ending in `extension`, sorted by name."""
        from modules import scripts
        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        res = [scripts.ScriptFile(self.path, filename, os.path.join(dirpath, filename))
               for filename in sorted(os.listdir(dirpath))]
        return [x for x in res if os.path.splitext(x.path)[1].lower() == extension and os.path.isfile(x.path)]

    def __repr__(self) -> str:
        return f"Extension({self.name!r}, builtin={self.is_builtin}, enabled={self.enabled})"


def list_extensions() -> None:
    """Rebuild `extensions` from the two folders; report duplicate canonical names and missing or
    disabled requirements (the extension still loads, as in A1111)."""
    from modules import shared
    extensions.clear()
    extension_paths.clear()
    loaded_extensions.clear()
    flags, mode = _flags(), shared.opts.disable_all_extensions
    if getattr(flags, "disable_all_extensions", False):
        print('*** "--disable-all-extensions" arg was used, will not load any extensions ***')
    elif mode == "all":
        print('*** "Disable all extensions" option was set, will not load any extensions ***')
    elif getattr(flags, "disable_extra_extensions", False):
        print('*** "--disable-extra-extensions" arg was used, will only load built-in extensions ***')
    elif mode == "extra":
        print('*** "Disable all extensions" option was set, will only load built-in extensions ***')
    disabled = set(shared.opts.disabled_extensions or [])
    for root in (_builtin_dir(), _user_dir()):
        if not os.path.isdir(root):
            continue
        for dirname in sorted(os.listdir(root)):
            path = os.path.join(root, dirname)
            if not os.path.isdir(path) or dirname.startswith((".", "__")):
                continue
            metadata = ExtensionMetadata(path, dirname)
            previous = loaded_extensions.get(metadata.canonical_name)
            if previous is not None:
                errors.report(f'Duplicate canonical name "{metadata.canonical_name}" found in extensions '
                              f'"{dirname}" and "{previous.name}". Former will be discarded.')
                continue
            ext = Extension(dirname, path, enabled=dirname not in disabled,
                            is_builtin=root == _builtin_dir(), metadata=metadata)
            extensions.append(ext)
            extension_paths[ext.path] = ext
            loaded_extensions[ext.canonical_name] = ext
    for ext in extensions:
        if not ext.enabled:
            continue
        for req in ext.metadata.requires:
            required = loaded_extensions.get(req)
            if required is None:
                errors.report(f'Extension "{ext.name}" requires "{req}" which is not installed.')
            elif not required.enabled:
                errors.report(f'Extension "{ext.name}" requires "{required.name}" which is disabled.')


def find_extension(filename: str) -> "Extension | None":
    """The extension whose folder holds `filename`."""
    parent = os.path.dirname(os.path.realpath(filename))
    for ext in extensions:
        root = os.path.realpath(ext.path)
        if parent == root or parent.startswith(root + os.sep):
            return ext
    return None


# --- preload ------------------------------------------------------------------------------------------
def _settings(settings_file: str | None) -> dict:
    if settings_file and os.path.isfile(settings_file):
        try:
            with open(settings_file, encoding="utf8") as f:
                return json.load(f)
        except Exception:
            errors.report(f"Could not load settings from {settings_file}", exc_info=True)
    return {}


def preload_folders(data_dir: str | None, settings_file: str | None, *, disable_all: bool = False,
                    disable_extra: bool = False) -> list[str]:
    """The extension folders whose `preload.py` runs: enabled user extensions (per the settings
    file and the flags), then every built-in one, as A1111 does before parsing flags."""
    settings = _settings(settings_file)
    disabled = set(settings.get("disabled_extensions") or [])
    mode = settings.get("disable_all_extensions", "none")
    folders: list[str] = []
    user_root = os.path.join(os.path.abspath(data_dir) if data_dir else paths.script_path, "extensions")
    if not (disable_all or disable_extra or mode != "none") and os.path.isdir(user_root):
        folders += [os.path.join(user_root, d) for d in sorted(os.listdir(user_root)) if d not in disabled]
    if os.path.isdir(_builtin_dir()):
        folders += [os.path.join(_builtin_dir(), d) for d in sorted(os.listdir(_builtin_dir()))]
    return [f for f in folders if os.path.isfile(os.path.join(f, "preload.py"))]


def preload_extensions(folders: list[str], parser: Any) -> None:
    """Run each folder's `preload.py` `preload(parser)`; failures are reported, the rest go on."""
    import importlib.util
    for folder in folders:
        path = os.path.join(folder, "preload.py")
        try:
            spec = importlib.util.spec_from_file_location("preload.py", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "preload"):
                module.preload(parser)
        except Exception:
            errors.report(f"Error running preload() for {path}", exc_info=True)


# --- install.py ---------------------------------------------------------------------------------------
def _stamp_file() -> str:
    from modules import shared
    return os.path.join(shared.data_paths.data_path, "cache", "extension-installs.json")


def _install_stamp(ext: Extension, installer: str) -> str:
    ext.read_info_from_repo()
    with open(installer, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return f"{digest}:{ext.version}"


def run_extension_installer(ext: Extension) -> bool:
    """Run `<ext>/install.py` with this interpreter; True if it succeeded. The webui root is the
    working folder and on PYTHONPATH (A1111's environment for installers)."""
    installer = os.path.join(ext.path, "install.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (paths.script_path, env.get("PYTHONPATH", "")) if x)
    try:
        result = subprocess.run([sys.executable, installer], cwd=paths.script_path, env=env,
                                capture_output=True, text=True, timeout=3600)
    except Exception as e:
        failed_installs[ext.path] = str(e)
        errors.report(f"Error running install.py for extension {ext.path}: {e}")
        return False
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        failed_installs[ext.path] = output
        errors.report(f"Error running install.py for extension {ext.path} (exit code {result.returncode}); "
                      f"the extension is disabled for this run.\nOutput:\n{output}")
        return False
    if output:
        print(output)
    return True


def run_extensions_installers() -> list[str]:
    """Run the `install.py` of every active extension whose installer or version changed since its
    last successful run; returns the names that ran."""
    failed_installs.clear()
    stamp_file = _stamp_file()
    stamps = _settings(stamp_file)
    ran: list[str] = []
    changed = False
    for ext in active():
        installer = os.path.join(ext.path, "install.py")
        if not os.path.isfile(installer):
            continue
        stamp = _install_stamp(ext, installer)
        if stamps.get(ext.path) == stamp:
            continue
        ran.append(ext.name)
        if run_extension_installer(ext):
            stamps[ext.path] = stamp
        else:
            stamps.pop(ext.path, None)
        changed = True
    if changed:
        try:
            os.makedirs(os.path.dirname(stamp_file), exist_ok=True)
            with open(stamp_file, "w", encoding="utf8") as f:
                json.dump(stamps, f, indent=4)
        except OSError:
            errors.report(f"Could not write {stamp_file}", exc_info=True)
    return ran
