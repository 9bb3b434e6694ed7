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


@dataclass
class OnComponent:
    """What `Script.on_before_component` / `on_after_component` callbacks receive."""

    component: Any


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
    sorting_priority = 0
    """AlwaysVisible scripts of one UI section are laid out by this, lowest first (A1111)."""

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


def _safe_title(script: Script) -> str:
    """The script's title; a failing `title()` is reported and the file name stands in (A1111)."""
    from modules import errors
    try:
        return str(script.title())
    except Exception:
        errors.report(f"Error getting the title of {script.filename}", exc_info=True)
        return f"{os.path.basename(script.filename or '?')} [error]"


def script_arg_info(control: Any) -> dict[str, Any]:
    """A control as `/sdapi/v1/script-info` lists it: label, value, minimum, maximum, step, choices."""
    info: dict[str, Any] = {"label": getattr(control, "label", None) or ""}
    for key in ("value", "minimum", "maximum", "step"):
        value = getattr(control, key, None)
        info[key] = None if callable(value) else value
    choices = getattr(control, "choices", None)
    info["choices"] = [c[0] if isinstance(c, (tuple, list)) else c for c in choices] if choices is not None else None
    return info


def script_api_info(script: Script, controls: list) -> dict[str, Any]:
    """`/sdapi/v1/script-info`'s entry for `script` (A1111's ScriptInfo fields)."""
    return {"name": script.name, "is_img2img": script.is_img2img, "is_alwayson": script.alwayson,
            "args": [script_arg_info(c) for c in controls]}


def script_callback_name(script: Script, hook: str) -> str:
    """The name metadata.ini rules and the ordering options use for `script`'s `hook`."""
    from modules import script_callbacks
    return script_callbacks.callback_name(script.filename or "", f"script_{hook}", type(script).__name__)


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
        self.dropdown: Any = None
        self._ordered: dict[str, tuple] = {}  # hook → (cache key, ordered scripts)
        # elem_id → [(callback, script)] from the scripts' on_before/after_component registrations
        self.on_before_component_elem_id: dict[str, list] = {}
        self.on_after_component_elem_id: dict[str, list] = {}

    def add_script(self, script: Script, n_args: int | None = None, controls: list | None = None) -> None:
        """Register `script` by hand (tests, API-only tools); its slice of the flat argument array holds
        `controls` (UI components, whose `.value` are the defaults) or `n_args` empty slots."""
        visibility = script.show(self.is_img2img)
        if visibility is False:
            return
        self._prepare(script)
        self.scripts.append(script)
        self._classify(script, visibility)
        if visibility is not AlwaysVisible:
            self.titles.append(script.title())
        self.title_map[script.title().lower()] = script
        self._place(script, list(controls) if controls is not None else [None] * (n_args or 0))

    def _prepare(self, script: Script) -> None:
        script.is_img2img = self.is_img2img
        script.is_txt2img = not self.is_img2img
        script.tabname = "img2img" if self.is_img2img else "txt2img"

    def _classify(self, script: Script, visibility: Any) -> None:
        if visibility is AlwaysVisible:
            script.alwayson = True
            self.alwayson_scripts.append(script)
        else:
            self.selectable_scripts.append(script)

    def _place(self, script: Script, controls: list) -> None:
        """Append `controls` to the flat argument array as `script`'s slice."""
        script.name = script.name or script.title().lower()
        script.controls = [c for c in controls if c is not None] or None
        script.args_from = len(self.inputs)
        self.inputs.extend(controls)
        script.args_to = len(self.inputs)

    def initialize_scripts(self, data: list[ScriptClassData]) -> None:
        """A fresh instance of each script class for this tab, in load order, sorted into
        AlwaysVisible and selectable ones (`show(is_img2img)`); hidden ones are left out.
        A script whose constructor or `show` raises is reported and left out."""
        from modules import errors
        self.scripts, self.selectable_scripts, self.alwayson_scripts = [], [], []
        for item in data:
            try:
                script = item.script_class()
                script.filename = item.path
                self._prepare(script)
                visibility = script.show(self.is_img2img)
            except Exception:
                errors.report(f"Error creating script {item.path}", exc_info=True)
                continue
            if visibility is False or visibility is None:
                continue
            self.scripts.append(script)
            self._classify(script, visibility)
        self._index_component_callbacks()

    def _index_component_callbacks(self) -> None:
        self.on_before_component_elem_id, self.on_after_component_elem_id = {}, {}
        for script in self.scripts:
            for elem_id, callback in script.on_before_component_elem_id or []:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))

    def setup_ui(self) -> None:
        """Build every script's `ui()` inside the active `gr.Blocks` and lay out the argument array.

        Slot 0 is the "Script" dropdown (0 = none, k = selectable_scripts[k-1]), then each
        AlwaysVisible script's controls, then each selectable script's (in a group that the dropdown
        shows); `args_from`/`args_to` say where each script's slice is. The API builds this too (in a
        throwaway Blocks), because a script's argument defaults are its controls' values. Titles,
        `api_info`, `infotext_fields` and `paste_field_names` are collected on the way.
        """
        import gradio as gr

        from modules import gradio_extensions
        gradio_extensions.install()
        global scripts_current
        self.inputs = [None]
        self.infotext_fields, self.paste_field_names = [], []
        self.titles = [_safe_title(s) for s in self.selectable_scripts]
        self.title_map = {_safe_title(s).lower(): s for s in self.scripts}
        previous, scripts_current = scripts_current, self
        try:
            for script in sorted(self.alwayson_scripts, key=lambda sc: sc.sorting_priority):  # stable: load order
                self._create_script_ui(script, visible=True)
            self.dropdown = gr.Dropdown(label="Script", elem_id="script_list", choices=["None", *self.titles],
                                        value="None", type="index")
            self.inputs[0] = self.dropdown
            for script in self.selectable_scripts:
                self._create_script_ui(script, visible=False)
            grouped = [(i + 1, s.group) for i, s in enumerate(self.selectable_scripts) if s.group is not None]
            if grouped:  # choosing a script shows its controls only
                self.dropdown.change(fn=lambda chosen: [gr.update(visible=k == chosen) for k, _ in grouped],
                                     inputs=[self.dropdown], outputs=[g for _, g in grouped], show_progress="hidden")
        finally:
            scripts_current = previous

    def _create_script_ui(self, script: Script, *, visible: bool) -> None:
        import gradio as gr

        from modules import errors
        script.name = _safe_title(script).lower()
        script.args_from = script.args_to = len(self.inputs)
        try:
            if script.create_group:
                with gr.Group(visible=visible) as group:
                    controls = script.ui(script.is_img2img)
                script.group = group
            else:
                controls = script.ui(script.is_img2img)
        except Exception:
            errors.report(f"Error creating UI for {script.name}", exc_info=True)
            controls = None
        if controls is None:
            return
        controls = list(controls.values()) if isinstance(controls, dict) else list(controls)
        for control in controls:
            try:
                control.custom_script_source = os.path.basename(script.filename or "")
            except Exception:  # an extension may return something that is not a component
                pass
        script.api_info = script_api_info(script, controls)
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names
        self._place(script, controls)

    def default_script_args(self) -> list:
        """The flat argument array with every control's default value; slot 0 = no script."""
        return [0] + [getattr(c, "value", None) for c in self.inputs[1:]]

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Gradio is about to build `component`: tell every script, and the `on_before_component`
        callbacks registered for its elem_id (A1111 passes them `OnComponent(component)`)."""
        self._component_hook("before_component", self.on_before_component_elem_id, component, kwargs)

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """`component` was built: the same as `before_component`, for the after hooks."""
        self._component_hook("after_component", self.on_after_component_elem_id, component, kwargs)

    def _component_hook(self, hook: str, by_elem_id: dict, component: Any, kwargs: dict) -> None:
        from modules import errors
        for callback, script in by_elem_id.get(kwargs.get("elem_id"), []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                errors.report(f"Error running on_{hook} callback for {script.filename}", exc_info=True)
        for script in self.scripts:
            try:
                getattr(script, hook)(component, **kwargs)
            except Exception:
                errors.report(f"Error running {hook} of {script.filename}", exc_info=True)

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
    def ordered_scripts(self, hook: str) -> list[Script]:
        """The AlwaysVisible scripts that override `hook`, in the order they run: load order, moved
        by metadata.ini `[callbacks/<name>]` rules and the `prioritized_callbacks_script_<hook>`
        option. A script's callback name is A1111's `<extension>/<file>/script_<hook>/<class>`."""
        from modules import script_callbacks
        category = f"script_{hook}"
        candidates = [s for s in self.alwayson_scripts if overrides(s, hook)]
        key = (tuple(id(s) for s in candidates), tuple(script_callbacks.prioritized(category)))
        cached = self._ordered.get(hook)
        if cached is None or cached[0] != key:
            if len(candidates) < 2:
                ordered = candidates
            else:
                ordered = script_callbacks.sort_by_rules(candidates, lambda sc: script_callback_name(sc, hook), category)
            cached = self._ordered[hook] = (key, ordered)
        return cached[1]

    # One dispatch method per hook; each calls `_dispatch` with A1111's arguments.
    def _dispatch(self, hook: str, p: Any, *extra: Any, **kwargs: Any) -> None:
        """Call `hook` on every AlwaysVisible script that overrides it, with its own args."""
        script_args = getattr(p, "script_args", None) or ()
        for script in self.ordered_scripts(hook):
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
postprocessing_scripts_data: list[ScriptClassData] = []
"""`ScriptPostprocessing` subclasses found while loading (the Extras tab's scripts)."""
scripts_txt2img = ScriptRunner(is_img2img=False)
scripts_img2img = ScriptRunner(is_img2img=True)
scripts_postproc: Any = None
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
    # Registered under its name, so code that resolves a class's module at definition or later
    # (dataclasses with string annotations, pydantic models, pickle) finds it.
    sys.modules[name] = module
    sys.path.insert(0, basedir)
    previous, current_basedir = current_basedir, basedir
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(name) is module:
            del sys.modules[name]
        raise
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
    previous = {os.path.realpath(d.path) for d in scripts_data + postprocessing_scripts_data}
    if previous:
        script_callbacks.script_unloaded_callback()
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
    from modules import scripts_postprocessing
    # Filled file by file, as A1111 does: an extension's script may look for another script's module
    # (xyz_grid.py's axis_options) in `scripts_data` while it is itself being imported.
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    for file in files:
        try:
            module = _import_file(file.path, file.basedir)
        except Exception:
            errors.report(f"Error loading script: {file.path}", exc_info=True)
            continue
        for obj in vars(module).values():
            if not isinstance(obj, type):
                continue
            if issubclass(obj, Script) and obj is not Script:
                scripts_data.append(ScriptClassData(obj, file.path, file.basedir, module))
            elif issubclass(obj, scripts_postprocessing.ScriptPostprocessing) \
                    and obj is not scripts_postprocessing.ScriptPostprocessing:
                postprocessing_scripts_data.append(ScriptClassData(obj, file.path, file.basedir, module))
    # Settings and before_ui callbacks run before any script's ui() (A1111's order), so options an
    # extension adds exist when its UI reads them.
    script_callbacks.ui_settings_callback()
    script_callbacks.add_order_options(ScriptRunner.HOOKS)
    script_callbacks.before_ui_callback()
    _rebuild_runners()
    global scripts_postproc
    scripts_postproc = scripts_postprocessing.ScriptPostprocessingRunner()
    return list(scripts_data)


def _rebuild_runners() -> None:
    """Fresh txt2img and img2img runners with every script's `ui()` built in a throwaway Blocks,
    which lays out the argument arrays (A1111 builds these UI objects in API-only mode too), after
    hidden stand-ins of the tab's own controls (see `build_main_control_standins`)."""
    import gradio as gr
    global scripts_txt2img, scripts_img2img
    scripts_txt2img = ScriptRunner(is_img2img=False)
    scripts_img2img = ScriptRunner(is_img2img=True)

    def build() -> None:
        global scripts_current
        with gr.Blocks(analytics_enabled=False):
            for runner in (scripts_txt2img, scripts_img2img):
                runner.initialize_scripts(scripts_data)
                previous, scripts_current = scripts_current, runner
                try:
                    build_main_control_standins("img2img" if runner.is_img2img else "txt2img")
                finally:
                    scripts_current = previous
                runner.setup_ui()

    from modules.gradio_extensions import build_detached
    build_detached(build)  # also when called from a UI event (Extensions tab: Apply and restart)


MAIN_CONTROL_STANDINS = (
    ("prompt", "Textbox", {"label": "Prompt", "value": ""}),
    ("neg_prompt", "Textbox", {"label": "Negative prompt", "value": ""}),
    ("sampling", "Dropdown", {"label": "Sampling method", "choices": ["Euler"], "value": "Euler"}),
    ("steps", "Slider", {"label": "Sampling steps", "minimum": 1, "maximum": 150, "value": 20, "step": 1}),
    ("width", "Slider", {"label": "Width", "minimum": 64, "maximum": 2048, "value": 512, "step": 8}),
    ("height", "Slider", {"label": "Height", "minimum": 64, "maximum": 2048, "value": 512, "step": 8}),
    ("batch_count", "Slider", {"label": "Batch count", "minimum": 1, "maximum": 100, "value": 1, "step": 1}),
    ("batch_size", "Slider", {"label": "Batch size", "minimum": 1, "maximum": 8, "value": 1, "step": 1}),
    ("cfg_scale", "Slider", {"label": "CFG Scale", "minimum": 1.0, "maximum": 30.0, "value": 7.0, "step": 0.5}),
    ("seed", "Number", {"label": "Seed", "value": -1, "precision": 0}),
)
"""(elem_id suffix, Gradio class, arguments) of the tab controls that A1111 builds before any script's
`ui()`; the browser UI (modules/ui.py) builds the real ones with the same elem_ids."""


def build_main_control_standins(tabname: str) -> list:
    """Hidden stand-ins for the tab's own controls, built in the API's throwaway Blocks before the
    scripts' `ui()`.

    In A1111 a script's `ui()` always runs after the tab's prompt, size, seed … exist, and many
    extensions keep the ones their `after_component` saw (`txt2img_width` …) to wire buttons to them.
    Without the stand-ins such a `ui()` would find None in API-only layout and lose its controls.
    The component hooks fire for them as for the real ones; they are never shown or read.
    """
    import gradio as gr

    from modules import gradio_extensions
    gradio_extensions.install()  # the component hooks
    return [getattr(gr, cls)(visible=False, elem_id=f"{tabname}_{suffix}", **kwargs)
            for suffix, cls, kwargs in MAIN_CONTROL_STANDINS]
