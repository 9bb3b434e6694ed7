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


# --- management (the Extensions tab) ----------------------------------------------------------------------
class ExtensionError(ValueError):
    """A refused or failed management request; its text is a short message for the user."""


NON_LOCAL_FLAGS = ("listen", "share", "ngrok", "server_name")


def access_refused(flags: Any = None) -> str | None:
    """Why extension management is refused, or None when allowed. A1111's rule: a server reachable
    beyond this machine (`--listen`, `--share`, `--ngrok`, `--server-name`) may not install, update
    or toggle extensions unless `--enable-insecure-extension-access` is given."""
    flags = flags if flags is not None else _flags()
    used = [f"--{name.replace('_', '-')}" for name in NON_LOCAL_FLAGS if getattr(flags, name, None)]
    if not used or getattr(flags, "enable_insecure_extension_access", False):
        return None
    return (f"Extension access is disabled because of command line flags ({', '.join(used)}); "
            "add --enable-insecure-extension-access to allow it.")


def check_access(flags: Any = None) -> None:
    """Raise `ExtensionError` when `access_refused()` says so."""
    reason = access_refused(flags)
    if reason:
        raise ExtensionError(reason)


def _git_run(args: list[str], cwd: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`git ARGS` with no terminal prompt (a private URL fails instead of waiting for a password)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    safe = ["-c", f"safe.directory={cwd}"] if cwd else []
    return subprocess.run(["git", *safe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def _first_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    fatal = [x for x in lines if x.lower().startswith(("fatal:", "error:"))]
    return (fatal or lines or ["(no output)"])[0]


def check_updates_for(ext: Extension) -> None:
    """`git fetch` the extension's remote and set `status` / `can_update`: "new commits (N behind)"
    when the upstream branch has commits HEAD lacks, "latest" when not, "unknown (remote error)"
    when fetching or comparing fails. Local remotes (file://, paths) need no network."""
    ext.read_info_from_repo()
    ext.can_update = False
    if ext.remote is None:
        ext.status = ""
        return
    try:
        fetched = _git_run(["fetch", "--quiet", "origin"], cwd=ext.path, timeout=120)
        if fetched.returncode != 0:
            raise ExtensionError(_first_line(fetched.stderr))
        upstream = f"origin/{ext.branch}" if ext.branch else "origin/HEAD"
        counted = _git_run(["rev-list", "--count", f"HEAD..{upstream}"], cwd=ext.path, timeout=30)
        if counted.returncode != 0:
            raise ExtensionError(_first_line(counted.stderr))
        behind = int(counted.stdout.strip() or 0)
    except Exception as e:
        ext.status = "unknown (remote error)"
        print(f"Extensions: checking updates for {ext.name} failed: {e}")
        return
    ext.can_update = behind > 0
    ext.status = f"new commits ({behind} behind)" if behind else "latest"


def fetch_and_reset_hard(ext: Extension) -> None:
    """Bring the checkout to its upstream branch (`git fetch` then `git reset --hard`), as A1111's
    update does; local changes in the extension folder are lost."""
    upstream = f"origin/{ext.branch}" if ext.branch else "origin/HEAD"
    for args in (["fetch", "--quiet", "origin"], ["reset", "--hard", upstream]):
        done = _git_run(args, cwd=ext.path, timeout=300)
        if done.returncode != 0:
            raise ExtensionError(f"Updating {ext.name} failed: {_first_line(done.stderr)}")
    ext.have_info_from_repo = False
    ext.read_info_from_repo()
    ext.can_update, ext.status = False, "latest"


_URL_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
_SCP_URL = re.compile(r"^[\w.-]+@[\w.-]+:[^\s]+$")


def normalize_git_url(url: str | None) -> str:
    """A remote URL compared across spellings: no trailing "/" or ".git", lower-cased scheme/host."""
    url = (url or "").strip().rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    return url.lower() if url.startswith(("https://", "http://")) else url


def validate_git_url(url: str) -> str:
    """The stripped URL, or `ExtensionError`: empty, an option-like value, whitespace inside, or a
    scheme git would not clone from here (https, http, git, ssh, file and `user@host:path`)."""
    url = (url or "").strip()
    if not url:
        raise ExtensionError("No URL specified.")
    if url.startswith("-") or any(c.isspace() for c in url):
        raise ExtensionError(f"Not a git URL: {url!r}.")
    if not (url.lower().startswith(_URL_SCHEMES) or _SCP_URL.match(url)):
        raise ExtensionError(f"Not a git URL: {url!r} (use https://…, ssh://…, git@host:path or file://…).")
    if url.lower().startswith(_URL_SCHEMES) and len(url.split("://", 1)[1].strip("/")) == 0:
        raise ExtensionError(f"Not a git URL: {url!r}.")
    return url


def default_dirname(url: str) -> str:
    """The folder name A1111 derives from a URL: its last path part without ".git"."""
    last = re.split(r"[/:]", url.strip().rstrip("/"))[-1]
    return last[:-4] if last.endswith(".git") else last


def validate_dirname(name: str, root: str) -> str:
    """The extension's folder under `root`, or `ExtensionError` for a name that would leave `root`
    (separators, "..", absolute, hidden) or a folder that already exists."""
    name = (name or "").strip()
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name \
            or "\0" in name or os.path.isabs(name):
        raise ExtensionError(f"Bad folder name for the extension: {name!r} (one plain folder name, "
                             "inside the extensions folder).")
    target = os.path.join(root, name)
    root_real = os.path.realpath(root)
    if os.path.dirname(os.path.realpath(target)) != root_real:
        raise ExtensionError(f"Bad folder name for the extension: {name!r} (it leaves the extensions folder).")
    if os.path.lexists(target):
        raise ExtensionError(f"Extension directory already exists: {target}")
    return target


def install_from_url(url: str, branch: str | None = None, dirname: str | None = None) -> Extension:
    """Clone `url` (optionally `branch`) into `<data>/extensions/<dirname>` (default: the URL's last
    part), run its `install.py`, and rebuild `extensions`; returns the new extension. Refusals and
    clone failures raise `ExtensionError` with a short message. The clone goes to `<data>/tmp`
    first, so a failed clone leaves no folder behind."""
    import shutil
    from modules import shared
    check_access()
    url = validate_git_url(url)
    root = _user_dir()
    target = validate_dirname(dirname.strip() if dirname and dirname.strip() else default_dirname(url), root)
    wanted = normalize_git_url(url)
    for ext in extensions:
        ext.read_info_from_repo()
        if ext.remote and normalize_git_url(ext.remote) == wanted:
            raise ExtensionError(f"Extension with this URL is already installed: {ext.name}")
    tmpdir = os.path.join(shared.data_paths.data_path, "tmp", "extension-" + os.path.basename(target))
    shutil.rmtree(tmpdir, ignore_errors=True)
    os.makedirs(os.path.dirname(tmpdir), exist_ok=True)
    branch_args = ["--branch", branch.strip()] if branch and branch.strip() else []
    try:
        cloned = _git_run(["clone", "--quiet", "--recurse-submodules", *branch_args, "--", url, tmpdir])
        if cloned.returncode != 0:
            raise ExtensionError(f"git clone failed: {_first_line(cloned.stderr)}")
        os.makedirs(root, exist_ok=True)
        shutil.move(tmpdir, target)
    except subprocess.TimeoutExpired:
        raise ExtensionError(f"git clone of {url} timed out.") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    ext = Extension(os.path.basename(target), target)
    if os.path.isfile(os.path.join(target, "install.py")):
        run_extension_installer(ext)
    list_extensions()
    print(f"Extensions: installed {url} into {target}")
    return extension_paths.get(target, ext)


def read_index(url: str, timeout: float = 20) -> dict:
    """The extension index at `url` (A1111's format: `{"tags": {...}, "extensions": [{"name",
    "url", "description", "tags", "added"}, ...]}`) from http(s), `file://` or a local path;
    `ExtensionError` when it cannot be read or is not such an index."""
    import urllib.parse
    import urllib.request
    url = (url or "").strip()
    if not url:
        raise ExtensionError("No extension index URL given.")
    try:
        if url.lower().startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=timeout) as response:
                text = response.read()
        else:
            path = urllib.request.url2pathname(urllib.parse.urlparse(url).path) if url.startswith("file:") else url
            with open(os.path.expanduser(path), "rb") as f:
                text = f.read()
    except Exception as e:
        raise ExtensionError(f"Could not load the extension index from {url}: {getattr(e, 'reason', None) or e}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ExtensionError(f"The extension index at {url} is not JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("extensions"), list):
        raise ExtensionError(f"The extension index at {url} has no \"extensions\" list.")
    return data
