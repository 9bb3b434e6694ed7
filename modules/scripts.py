"""A1111's script surface (spec §2.4): the `Script` base class, `ScriptRunner` and hook dispatch.

Processing fires the lifecycle hooks through a runner (`p.scripts.<hook>(p, ...)`). Only
AlwaysVisible scripts receive them, only if the subclass overrides the hook, each with its own
slice of `p.script_args`; a failing hook is logged and the others still run (A1111 behaviour).
`load_scripts(folders)` imports `scripts/*.py` from those folders and registers every Script
subclass; the lead's composition root decides which folders (root, extensions).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

AlwaysVisible = object()
"""Returned by `Script.show` for scripts that are always active (not chosen from the dropdown)."""


@dataclass
class MaskBlendArgs:
    """`on_mask_blend`: the inpainting blend of one step (or the final one); `blended_latent` may be replaced."""

    current_latent: Any
    nmask: Any
    init_latent: Any
    mask: Any
    blended_latent: Any
    denoiser: Any = None
    sigma: Any = None

    @property
    def is_final_blend(self) -> bool:
        return self.denoiser is None


@dataclass
class PostSampleArgs:
    """`post_sample`: the sampled latents before decoding; `samples` may be replaced."""

    samples: Any


@dataclass
class PostprocessImageArgs:
    """`postprocess_image*`: one finished image; `image` may be replaced."""

    image: Any


@dataclass
class PostProcessMaskOverlayArgs:
    """`postprocess_maskoverlay`: image `index`'s mask and original-outside-mask overlay."""

    index: int
    mask_for_overlay: Any
    overlay_image: Any


@dataclass
class PostprocessBatchListArgs:
    """`postprocess_batch_list`: the batch's decoded images; the list may be edited."""

    images: list


class Script:
    """Base class of A1111 scripts; subclasses override `title` and the hooks they need."""

    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group = None
    create_group = True
    infotext_fields: list | None = None
    paste_field_names: list | None = None
    api_info = None
    on_before_component_elem_id: list | None = None
    on_after_component_elem_id: list | None = None
    setup_for_ui_only = False
    controls: list | None = None

    def title(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define title()")

    def show(self, is_img2img: bool) -> Any:
        """False: hidden; True: selectable from the dropdown; AlwaysVisible: always on."""
        return True

    def ui(self, is_img2img: bool) -> list:
        return []

    def run(self, p: Any, *args: Any) -> Any:
        """Selectable scripts do their work here and return a `Processed`."""
        return None

    # Lifecycle hooks (AlwaysVisible scripts only), in the order of spec §2.3; signatures are A1111's.
    # `*args` is the script's own slice of the argument array. Override only what you need.
    def setup(self, p: Any, *args: Any) -> None: pass
    def before_process(self, p: Any, *args: Any) -> None: pass
    def process(self, p: Any, *args: Any) -> None: pass
    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None: pass
    def after_extra_networks_activate(self, p: Any, *args: Any, **kwargs: Any) -> None: pass
    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None: pass
    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None: pass
    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None: pass
    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None: pass
    def on_mask_blend(self, p: Any, mba: MaskBlendArgs, *args: Any) -> None: pass
    def post_sample(self, p: Any, ps: PostSampleArgs, *args: Any) -> None: pass
    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None: pass
    def postprocess_maskoverlay(self, p: Any, ppmo: PostProcessMaskOverlayArgs, *args: Any) -> None: pass
    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None: pass
    def postprocess(self, p: Any, processed: Any, *args: Any) -> None: pass
    def before_hr(self, p: Any, *args: Any) -> None: pass
    def before_component(self, component: Any, **kwargs: Any) -> None: pass
    def after_component(self, component: Any, **kwargs: Any) -> None: pass

    def on_before_component(self, callback: Callable, *, elem_id: str) -> None:
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback: Callable, *, elem_id: str) -> None:
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's element id: `script_[<tab>_]<title>_<item_id>`.

        The tab name is there only for a script shown the same way on both tabs; the lower-cased
        title has whitespace turned into `_` and every other character outside `a-z_0-9` dropped.
        """
        need_tabname = self.show(True) == self.show(False)
        tabname = ("img2img_" if self.is_img2img else "txt2img_") if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


def overrides(script: Script, hook: str) -> bool:
    """Whether `script`'s class replaces the base `Script.<hook>` (A1111 runs only those)."""
    return getattr(type(script), hook, None) is not getattr(Script, hook, None)


class ScriptRunner:
    """The scripts of one tab, in load order, with the flat argument array layout."""

    HOOKS = ("setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
             "process_before_every_sampling", "process_batch", "postprocess_batch", "postprocess_batch_list",
             "on_mask_blend", "post_sample", "postprocess_image", "postprocess_maskoverlay",
             "postprocess_image_after_composite", "postprocess", "before_hr")

    def __init__(self, is_img2img: bool = False):
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]

    def add_script(self, script: Script, n_args: int | None = None, controls: list | None = None) -> None:
        """Register `script`; its slice of the flat argument array holds `controls` (UI components,
        whose `.value` are the defaults) or `n_args` empty slots."""
        visibility = script.show(self.is_img2img)
        if visibility is False:
            return
        script.is_img2img = self.is_img2img
        script.is_txt2img = not self.is_img2img
        script.name = script.name or script.title().lower()
        controls = list(controls) if controls is not None else [None] * (n_args or 0)
        script.controls = [c for c in controls if c is not None] or None
        script.args_from = len(self.inputs)
        script.args_to = script.args_from + len(controls)
        self.inputs.extend(controls)
        self.scripts.append(script)
        if visibility is AlwaysVisible:
            script.alwayson = True
            self.alwayson_scripts.append(script)
        else:
            self.selectable_scripts.append(script)
            self.titles.append(script.title())
            self.title_map[script.title().lower()] = script

    def script(self, title: str) -> Script | None:
        """The script whose title matches `title`, case-insensitively."""
        return self.title_map.get(title.lower()) if title else None

    def run(self, p: Any, *args: Any) -> Any:
        """Run the selectable script chosen by args[0] (1-based); None when none is chosen."""
        index = args[0] if args else 0
        if not index:
            return None
        if not 0 < index <= len(self.selectable_scripts):
            raise IndexError(f"script index {index} out of range 1..{len(self.selectable_scripts)}")
        script = self.selectable_scripts[index - 1]
        return script.run(p, *args[script.args_from:script.args_to])

    # One dispatch method per hook; each calls `_dispatch` with A1111's arguments.
    def _dispatch(self, hook: str, p: Any, *extra: Any, **kwargs: Any) -> None:
        """Call `hook` on every AlwaysVisible script that overrides it, with its own args."""
        script_args = getattr(p, "script_args", None) or ()
        for script in self.alwayson_scripts:
            if not overrides(script, hook):
                continue
            own_args = tuple(script_args[script.args_from:script.args_to]) if script.args_from is not None else ()
            try:
                getattr(script, hook)(p, *extra, *own_args, **kwargs)
            except Exception:
                log.exception("error running %s of %s", hook, script.filename or script.title())

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:
        """Run `setup` once (A1111 spelling kept); API jobs skip `setup_for_ui_only` scripts."""
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            if overrides(script, "setup"):
                args = (getattr(p, "script_args", None) or ())[script.args_from:script.args_to]
                try:
                    script.setup(p, *args)
                except Exception:
                    log.exception("error running setup of %s", script.title())

    def before_process(self, p: Any) -> None: self._dispatch("before_process", p)
    def process(self, p: Any) -> None: self._dispatch("process", p)
    def before_process_batch(self, p: Any, **kwargs: Any) -> None: self._dispatch("before_process_batch", p, **kwargs)
    def after_extra_networks_activate(self, p: Any, **kwargs: Any) -> None:
        self._dispatch("after_extra_networks_activate", p, **kwargs)
    def process_before_every_sampling(self, p: Any, **kwargs: Any) -> None:
        self._dispatch("process_before_every_sampling", p, **kwargs)
    def process_batch(self, p: Any, **kwargs: Any) -> None: self._dispatch("process_batch", p, **kwargs)
    def postprocess_batch(self, p: Any, images: Any, **kwargs: Any) -> None:
        self._dispatch("postprocess_batch", p, images=images, **kwargs)
    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None:
        self._dispatch("postprocess_batch_list", p, pp, **kwargs)
    def on_mask_blend(self, p: Any, mba: MaskBlendArgs) -> None: self._dispatch("on_mask_blend", p, mba)
    def post_sample(self, p: Any, ps: PostSampleArgs) -> None: self._dispatch("post_sample", p, ps)
    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None: self._dispatch("postprocess_image", p, pp)
    def postprocess_maskoverlay(self, p: Any, ppmo: PostProcessMaskOverlayArgs) -> None:
        self._dispatch("postprocess_maskoverlay", p, ppmo)
    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs) -> None:
        self._dispatch("postprocess_image_after_composite", p, pp)
    def postprocess(self, p: Any, processed: Any) -> None: self._dispatch("postprocess", p, processed)
    def before_hr(self, p: Any) -> None: self._dispatch("before_hr", p)

    def set_named_arg(self, args: list, script_name: str, arg_elem_id: str, value: Any, fuzzy: bool = False) -> list:
        """Set the argument of `script_name` whose control's elem_id matches `arg_elem_id`."""
        script = next((s for s in self.scripts if s.name == script_name.lower()), None)
        if script is None:
            raise RuntimeError(f"script {script_name!r} not found")
        for i, control in enumerate(script.controls or []):
            elem_id = getattr(control, "elem_id", None) or ""
            if (arg_elem_id in elem_id) if fuzzy else elem_id.endswith(arg_elem_id):
                args[script.args_from + i] = value
                return args
        raise RuntimeError(f"arg {arg_elem_id!r} not found in script {script_name!r}")


@dataclass
class ScriptFile:
    """A script file to load: the folder it belongs to, its file name and its path (A1111 fields)."""

    basedir: str
    filename: str
    path: str


@dataclass
class ScriptClassData:
    """A Script subclass found while loading, with where it came from (A1111 fields)."""

    script_class: type
    path: str
    basedir: str
    module: Any


scripts_data: list[ScriptClassData] = []
scripts_txt2img = ScriptRunner(is_img2img=False)
scripts_img2img = ScriptRunner(is_img2img=True)
scripts_postproc = None
scripts_current: ScriptRunner | None = None


def _default_basedir() -> str:
    from modules import paths
    return paths.script_path


current_basedir: str | None = None
"""The folder (webui root or extension) of the script file being loaded now; see `basedir()`."""


def basedir() -> str:
    """The folder of the extension (or the webui root) whose script is loading.

    Scripts call this at import time to find files next to them, as in A1111; outside loading it
    is the webui root.
    """
    return current_basedir or _default_basedir()


def _import_file(path: str, basedir: str) -> Any:
    """Import one script file as a module; the extension dir is on sys.path while it loads.

    The module is named after the file, extension included ("xyz_grid.py"), as A1111 names
    script modules: extensions find each other's scripts by `script_class.__module__`.
    """
    global current_basedir
    name = os.path.basename(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, basedir)
    previous, current_basedir = current_basedir, basedir
    try:
        spec.loader.exec_module(module)
    finally:
        current_basedir = previous
        sys.path.remove(basedir)
    return module


def topological_sort(dependencies: dict[str, list[str]]) -> list[str]:
    """Names in `dependencies` order, each after the names it depends on (cycles are broken)."""
    visited: set[str] = set()
    result: list[str] = []

    def visit(name: str) -> None:
        visited.add(name)
        for dep in dependencies.get(name, []):
            if dep in dependencies and dep not in visited:
                visit(dep)
        result.append(name)

    for name in dependencies:
        if name not in visited:
            visit(name)
    return result


@dataclass
class ScriptWithDependencies:
    script_canonical_name: str
    file: ScriptFile
    requires: list
    load_before: list
    load_after: list


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """The root's `<scriptdirname>/*<extension>` then each active extension's, sorted by the
    extensions' metadata.ini `Requires` / `Before` / `After` (A1111's dependency order)."""
    from modules import errors, extensions, paths
    found: dict[str, ScriptWithDependencies] = {}
    active = extensions.active() if include_extensions else []
    by_extension: dict[str, list[ScriptWithDependencies]] = {ext.canonical_name: [] for ext in active}
    root = os.path.join(paths.script_path, scriptdirname)
    if os.path.isdir(root):
        for filename in sorted(os.listdir(root)):
            path = os.path.join(root, filename)
            if os.path.isfile(path) and os.path.splitext(filename)[1].lower() == extension:
                found[filename] = ScriptWithDependencies(filename, ScriptFile(paths.script_path, filename, path), [], [], [])
    for ext in active:
        for file in ext.list_files(scriptdirname, extension):
            name = ("builtin/" if ext.is_builtin else "") + ext.canonical_name + "/" + file.filename
            relative = scriptdirname + "/" + file.filename
            meta = ext.metadata
            item = ScriptWithDependencies(name, file, meta.get_script_requirements("Requires", relative, scriptdirname),
                                          meta.get_script_requirements("Before", relative, scriptdirname),
                                          meta.get_script_requirements("After", relative, scriptdirname))
            found[name] = item
            by_extension[ext.canonical_name].append(item)
    for name, item in found.items():
        for before in item.load_before:  # "load me before X": X loads after me
            if before in found:
                found[before].load_after.append(name)
            for other in by_extension.get(before, []):
                other.load_after.append(name)
        for after in list(item.load_after):  # an extension name stands for all its scripts
            if after not in found and after in by_extension:
                item.load_after.remove(after)
                item.load_after.extend(other.script_canonical_name for other in by_extension[after])
    dependencies = {}
    for name, item in found.items():
        for required in item.requires:
            if required not in found and required not in by_extension:
                errors.report(f'Script "{name}" requires "{required}" to be loaded, but it is not.')
        dependencies[name] = item.load_after
    return [found[name].file for name in topological_sort(dependencies)]


def load_scripts(folders: list[str] | None = None) -> list[ScriptClassData]:
    """Import script files and register every Script subclass they define.

    With no `folders`: the webui root's `scripts/` and every active extension's `scripts/`, in
    A1111's dependency order (`list_scripts`). With `folders`: `<folder>/scripts/*.py` (or
    `<folder>/*.py` for a `scripts` folder) of each, in that order. A file that fails to import is
    reported with its traceback and skipped. The txt2img and img2img runners are rebuilt with a
    fresh instance of every class found.
    """
    from modules import errors, script_callbacks
    # A reload: the callbacks the previous script files registered go, so they are not doubled
    # (A1111 clears every callback here; Serena's own registrations are kept).
    previous = {os.path.realpath(d.path) for d in scripts_data}
    if previous:
        for callbacks in script_callbacks.callback_map.values():
            callbacks[:] = [c for c in callbacks if os.path.realpath(c.script) not in previous]
    files: list[ScriptFile] = []
    if folders is None:
        files = list_scripts("scripts", ".py")
    for folder in folders or []:
        is_scripts_dir = os.path.basename(os.path.normpath(folder)) == "scripts"
        script_dir = folder if is_scripts_dir else os.path.join(folder, "scripts")
        if not os.path.isdir(script_dir):
            continue
        basedir = os.path.dirname(os.path.normpath(script_dir))
        for filename in sorted(os.listdir(script_dir)):
            path = os.path.join(script_dir, filename)
            if filename.endswith(".py") and os.path.isfile(path):
                files.append(ScriptFile(basedir, filename, path))
    found: list[ScriptClassData] = []
    for file in files:
        try:
            module = _import_file(file.path, file.basedir)
        except Exception:
            errors.report(f"Error loading script: {file.path}", exc_info=True)
            continue
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
                found.append(ScriptClassData(obj, file.path, file.basedir, module))
    scripts_data[:] = found
    _rebuild_runners()
    return found


def _rebuild_runners() -> None:
    global scripts_txt2img, scripts_img2img
    scripts_txt2img = ScriptRunner(is_img2img=False)
    scripts_img2img = ScriptRunner(is_img2img=True)
    for data in scripts_data:
        for runner in (scripts_txt2img, scripts_img2img):
            try:
                script = data.script_class()
                script.filename = data.path
                controls = script.ui(runner.is_img2img) if script.show(runner.is_img2img) is not False else []
                runner.add_script(script, controls=list(controls or []))
            except Exception:
                log.exception("error creating script %s", data.path)
