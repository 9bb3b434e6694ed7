"""Extras postprocessing scripts: A1111's `modules.scripts_postprocessing` surface.

The Extras tab (and ``/sdapi/v1/extra-single-image`` / ``extra-batch-images``) is a runner of
small scripts, each a `ScriptPostprocessing` subclass found in a ``scripts/`` folder of the webui
root or of an extension (`modules.scripts.load_scripts` collects them into
``scripts.postprocessing_scripts_data`` and sets ``scripts.scripts_postproc`` to a fresh
`ScriptPostprocessingRunner`). Each script declares its controls in ``ui()`` (a dict of
name → component); the runner lays the controls of every script end to end, so one flat argument
list carries every script's values and ``process(pp, **values)`` gets its own by name.

What A1111 v1.10 does, and Serena keeps:

- Order: the option ``postprocessing_operation_order`` first (its position), then ``order``, then
  ``name``, then load order. Scripts named in ``postprocessing_disable_in_extras``, the
  ``main_ui_only`` ones and "Simple Upscale" are left out of the Extras runner.
- A run calls ``process_firstpass`` of every script (so e.g. Upscale can announce the target size
  in ``pp.shared``), then ``process`` of each script on the image and on every extra image an
  earlier script made (a script may append images or `PostprocessedImage` copies to
  ``pp.extra_images``); copies made with ``disable_processing`` are not processed further. After
  the run ``pp.extra_images`` holds every extra image, in the order they were made.
- `ScriptPostprocessingRunner.create_args_for_run` turns ``{script name: {control name: value}}``
  into that flat list (what the API's old extras handler does); a script or control it does not
  name gets None, as in A1111.

Where Serena differs: scripts not named in ``postprocessing_operation_order`` always come after
the named ones (A1111 ranks them by the number of loaded scripts, so a long order list could put
a named script after unnamed ones); and while no postprocessing script is loaded at all (a
runtime that never loaded scripts), `current_runner` runs the built-in ones.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Any, Callable, Iterable

from modules import errors


@dataclasses.dataclass
class PostprocessedImageSharedInfo:
    """What the scripts of one run tell each other: the size the image is heading for (set by
    Upscale's first pass and read by e.g. Split oversized images and Auto focal point crop)."""

    target_width: int | None = None
    target_height: int | None = None


class PostprocessedImage:
    """One image going through the postprocessing scripts.

    Attributes:
        image: the current image (a script replaces it).
        info: ordered ``key -> value`` written as the extras infotext (None values are left out).
        shared: `PostprocessedImageSharedInfo`, shared with the copies made from this image.
        extra_images: images (or `PostprocessedImage` copies) a script adds next to this one.
        nametags: words joined into the saved file's suffix (see :meth:`get_suffix`).
        disable_processing: when True, later scripts leave this image alone.
        caption: text saved beside the image as ``.txt`` (the Caption script sets it).
    """

    def __init__(self, image: Any):
        self.image = image
        self.info: dict[str, Any] = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list[Any] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes: dict[str, int] | None = None) -> str:
        """``-tag1-tag2`` from the nametags, made unique among ``used_suffixes`` with ``-1``,
        ``-2`` … (the chosen suffix is recorded there)."""
        used = {} if used_suffixes is None else used_suffixes
        base = "".join(f"-{tag}" for tag in self.nametags)
        candidates = [base] + [f"{base}-{i}" for i in range(1, 100)]
        for suffix in candidates:
            if suffix not in used:
                used[suffix] = 1
                return suffix
        return base

    def create_copy(self, new_image: Any, *, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> "PostprocessedImage":
        """A new entry for ``new_image`` that shares this one's `shared` and copies its info and nametags."""
        copy = PostprocessedImage(new_image)
        copy.shared = self.shared
        copy.info = dict(self.info)
        copy.nametags = [*self.nametags, *(nametags or [])]
        copy.disable_processing = disable_processing
        return copy


class ScriptPostprocessing:
    """Base class of Extras postprocessing scripts; subclasses set `name` and override the hooks."""

    filename: str | None = None
    controls: dict[str, Any] | None = None
    args_from: int | None = None
    args_to: int | None = None

    extra_only: bool | None = None
    """True: only the Extras tab runs this script (not the txt2img/img2img postprocessing)."""
    main_ui_only: bool | None = None
    """True: only txt2img/img2img postprocessing runs it; the Extras runner leaves it out."""

    order = 1000
    """Scripts run (and show) in ascending `order` unless ``postprocessing_operation_order`` says otherwise."""

    name: str | None = None
    """The script's title; `create_args_for_run` and the options refer to scripts by it."""

    group: Any = None
    """The layout block holding the script's controls (set by `ScriptPostprocessingRunner.setup_ui`)."""

    tab_name = ""
    """Appended to element ids; ``_txt2img`` / ``_img2img`` when a main tab shows the script."""

    def ui(self) -> dict[str, Any] | None:
        """Build the controls; return ``{argument name: component}``. Their values reach `process`."""
        return None

    def process(self, pp: PostprocessedImage, **args: Any) -> None:
        """Change ``pp`` (its image, info, extra images); ``args`` are the `ui` controls' values by name."""

    def process_firstpass(self, pp: PostprocessedImage, **args: Any) -> None:
        """Called for every script before any `process`: look at the image, set ``pp.shared``."""

    def image_changed(self) -> None:
        """The Extras input image changed (drop what was cached for the previous one)."""

    def elem_id(self, item_id: str) -> str:
        """An element id ``extras_<script name>_<item_id>`` (+ `tab_name`), lower case, no spaces."""
        return self.elem_id_suffix(f"extras_{(self.name or '').lower()}_{item_id}")

    def elem_id_suffix(self, base_id: str) -> str:
        """``base_id`` cleaned to ``[a-z_0-9]`` (whitespace becomes ``_``) with `tab_name` appended."""
        cleaned = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", base_id))
        return f"{cleaned}{self.tab_name}"


def wrap_call(func: Callable[..., Any], filename: str | None, funcname: str, *args: Any,
              default: Any = None, **kwargs: Any) -> Any:
    """Call ``func``; an exception is reported (naming the script file and function) and ``default`` returned."""
    try:
        return func(*args, **kwargs)
    except Exception as e:
        errors.display(e, f"calling {filename}/{funcname}")
    return default


def preferred_order(scripts: Iterable[ScriptPostprocessing], operation_order: Iterable[str],
                    disabled: Iterable[str] = ()) -> list[ScriptPostprocessing]:
    """The scripts the Extras runner uses, in the order it runs them.

    Args:
        scripts: every loaded script, in load order.
        operation_order: names that come first, in this order (``postprocessing_operation_order``).
        disabled: names left out (``postprocessing_disable_in_extras``); "Simple Upscale" and the
            ``main_ui_only`` scripts are always left out.
    """
    ordered_names = list(operation_order or [])
    left_out = set(disabled or []) | {"Simple Upscale"}
    kept = [s for s in scripts if s.name not in left_out and not s.main_ui_only]

    def key(indexed: tuple[int, ScriptPostprocessing]) -> tuple:
        index, script = indexed
        rank = ordered_names.index(script.name) if script.name in ordered_names else len(ordered_names)
        return rank, script.order, script.name or "", index

    return [script for _, script in sorted(enumerate(kept), key=key)]


class ScriptPostprocessingRunner:
    """The Extras tab's postprocessing scripts, built from `scripts.postprocessing_scripts_data`."""

    def __init__(self) -> None:
        self._scripts: list[ScriptPostprocessing] | None = None
        self.ui_created = False

    @property
    def scripts(self) -> list[ScriptPostprocessing]:
        """Every loaded script, in load order (instances made on first use from
        ``scripts.postprocessing_scripts_data``, as A1111 does)."""
        if self._scripts is None:
            from modules import scripts
            self.initialize_scripts(scripts.postprocessing_scripts_data)
        return self._scripts or []

    @scripts.setter
    def scripts(self, value: list[ScriptPostprocessing] | None) -> None:
        self._scripts = value

    def initialize_scripts(self, scripts_data: Iterable[Any]) -> None:
        """One instance of each loaded class (`scripts.ScriptClassData` items), in load order."""
        instances = []
        for data in scripts_data:
            script = wrap_call(data.script_class, data.path, "__init__")
            if script is None:
                continue
            script.filename = data.path
            instances.append(script)
        self._scripts = instances

    def scripts_in_preferred_order(self) -> list[ScriptPostprocessing]:
        """The scripts the Extras runner uses, in run order (see `preferred_order`)."""
        from modules import shared
        return preferred_order(self.scripts, shared.opts.postprocessing_operation_order,
                               shared.opts.postprocessing_disable_in_extras)

    def create_script_ui(self, script: ScriptPostprocessing, inputs: list[Any]) -> None:
        """Build ``script``'s controls and append them to ``inputs``, recording its argument slice."""
        script.args_from = len(inputs)
        controls = wrap_call(script.ui, script.filename, "ui")
        script.controls = dict(controls) if isinstance(controls, dict) else {}
        for control in script.controls.values():
            try:
                control.custom_script_source = os.path.basename(script.filename or "")
            except AttributeError:  # a component that refuses new attributes keeps working without it
                pass
        inputs.extend(script.controls.values())
        script.args_to = len(inputs)

    def setup_ui(self) -> list[Any]:
        """Build every script's controls (each script in its own row) and return them, flat, in order.

        Call inside a Gradio Blocks context; `create_args_for_run` opens one when no UI exists.
        """
        import gradio as gr

        from modules import gradio_extensions
        gradio_extensions.install()
        inputs: list[Any] = []
        for script in self.scripts_in_preferred_order():
            with gr.Row() as group:
                self.create_script_ui(script, inputs)
            script.group = group
        self.ui_created = True
        return inputs

    def _ensure_ui(self) -> None:
        if not self.ui_created:
            from modules.gradio_extensions import build_detached

            def build() -> None:
                import gradio as gr
                with gr.Blocks(analytics_enabled=False):
                    self.setup_ui()

            build_detached(build)

    def _ready_scripts(self) -> list[ScriptPostprocessing]:
        """The scripts in run order whose controls exist (a script enabled after the UI was built
        has none until the UI is built again, as in A1111)."""
        self._ensure_ui()
        return [s for s in self.scripts_in_preferred_order() if s.controls is not None]

    def create_args_for_run(self, scripts_args: dict[str, dict[str, Any]]) -> list[Any]:
        """The flat argument list for `run` from ``{script name: {control name: value}}``.

        Builds the scripts' controls first if no UI did (inside a throw-away Blocks context, so
        it also works in API-only mode). Anything not named is None.
        """
        scripts = self._ready_scripts()
        args: list[Any] = [None] * max((s.args_to or 0 for s in scripts), default=0)
        for script in scripts:
            values = scripts_args.get(script.name or "")
            if values is None:
                continue
            for i, name in enumerate(script.controls or {}):
                args[script.args_from + i] = values.get(name)
        return args

    def run(self, pp: PostprocessedImage, args: list[Any]) -> None:
        """Run every script on ``pp`` (first passes, then processing); extra images end up in
        ``pp.extra_images``. A skip (``shared.state.skipped``) stops before the next script."""
        from modules import shared
        planned = [(script, self._script_args(script, args)) for script in self._ready_scripts()]
        for script, values in planned:
            script.process_firstpass(pp, **values)
        every_image = [pp]
        for script, values in planned:
            if shared.state.skipped:
                break
            shared.state.job = script.name
            for entry in list(every_image):
                if not entry.disable_processing:
                    script.process(entry, **values)
                every_image.extend(_as_entries(entry, entry.extra_images))
                entry.extra_images = []
        pp.extra_images = every_image[1:]

    @staticmethod
    def _script_args(script: ScriptPostprocessing, args: list[Any]) -> dict[str, Any]:
        values = list(args[script.args_from:script.args_to])
        values += [None] * (len(script.controls or {}) - len(values))
        return dict(zip(script.controls or {}, values))

    def image_changed(self) -> None:
        """Tell every script the input image changed."""
        for script in self.scripts_in_preferred_order():
            script.image_changed()


def _as_entries(parent: PostprocessedImage, extras: list[Any]) -> list[PostprocessedImage]:
    """Extra images as `PostprocessedImage` entries (a bare image becomes a copy of ``parent``)."""
    return [x if isinstance(x, PostprocessedImage) else parent.create_copy(x) for x in extras]


# --- the runner the Extras operation uses -------------------------------------------------------
_builtin_runner: ScriptPostprocessingRunner | None = None


def builtin_scripts_data() -> list[Any]:
    """The classes of the webui root's ``scripts/postprocessing_*.py``, imported now (load order)."""
    from modules import paths, scripts
    found = []
    for path in sorted(glob.glob(os.path.join(paths.script_path, "scripts", "postprocessing_*.py"))):
        module = scripts._import_file(path, paths.script_path)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, ScriptPostprocessing) and obj is not ScriptPostprocessing:
                found.append(scripts.ScriptClassData(obj, path, paths.script_path, module))
    return found


def current_runner() -> ScriptPostprocessingRunner:
    """``scripts.scripts_postproc`` once postprocessing scripts are loaded; while none is (scripts
    never loaded, or only folders without any), a runner of the built-in scripts, so the extras
    operation works in a runtime that loaded no scripts of its own."""
    global _builtin_runner
    from modules import scripts
    if scripts.scripts_postproc is not None and scripts.postprocessing_scripts_data:
        return scripts.scripts_postproc
    if _builtin_runner is None:
        runner = ScriptPostprocessingRunner()
        runner.initialize_scripts(builtin_scripts_data())
        _builtin_runner = runner
    return _builtin_runner
