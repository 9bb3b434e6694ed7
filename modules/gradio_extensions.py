"""Gradio 3.41 idioms, as A1111 extensions write them, made to work on Gradio 6.

`install()` (idempotent) patches Gradio in place. Every patch only adds or translates, so code
written for Gradio 6 (Serena's own UI) behaves exactly as before:

- component constructors accept Gradio 3 keyword arguments: the ones with a Gradio 6 meaning are
  translated (`source="upload"` → `sources=["upload"]`, float `scale` → int, `type="file"` →
  `"filepath"`, `show_copy_button` → `buttons`, ...), the others are dropped with a debug line;
- `Component.update(...)` / `Row.update(...)` (class methods in Gradio 3) return `gr.update(...)`
  with translated keys, and so do plain `gr.update(...)` dicts when Gradio applies them;
- `.style(...)` on any block sets what has a Gradio 6 equivalent and returns the block;
- event listeners (`.click`, `.change`, ..., `.then`, `Blocks.load`) accept `_js=` (→ `js=`),
  `_preprocess`/`_postprocess`, `api_name=False`, and drop Gradio 3-only arguments;
- `gr.Image(tool="sketch" | "color-sketch")` becomes `SketchImage`, a drawable image editor whose
  handler value is Gradio 3's (`{"image", "mask"}` or the drawn-on image);
- an extension's plain component subclass (`class MyButton(gr.Button)`) is drawn by its Gradio
  base's frontend with all the base's props, and Gradio writes no `.pyi` stub beside it;
- the removed names `gr.Box`, `gr.Variable`, `gr.components.IOComponent`, `gr.inputs`/`gr.outputs`;
- around each component's construction, A1111's hooks fire: the script runner being built
  (`modules.scripts.scripts_current.before_component/after_component`) and
  `script_callbacks.before_component_callback/after_component_callback`, with the constructor's
  keyword arguments (not for components Gradio builds while running an event); `tooltip=` is
  stored as `component.webui_tooltip`, and each block gets A1111's `gradio-<kind>` CSS class.

The translation tables and functions are pure and testable alone; `install()` only wires them in.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import types
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio import blocks as gr_blocks, component_meta, events as gr_events, image_utils  # noqa: E402
from gradio.blocks import Block, BlockContext  # noqa: E402
from gradio.components.base import Component  # noqa: E402
from PIL import Image, ImageChops  # noqa: E402

log = logging.getLogger(__name__)

_MARK = "_serena_gradio3"
"""Attribute set on every function this module installs, so `install()` never wraps twice."""

# --- constructor arguments ------------------------------------------------------------------------------

MEDIA_SOURCES: dict[str, dict[str, list[str] | None]] = {
    "Image": {"upload": ["upload"], "webcam": ["webcam"], "clipboard": ["clipboard"], "canvas": None},
    "ImageEditor": {"upload": ["upload"], "webcam": ["webcam"], "clipboard": ["clipboard"], "canvas": None},
    "Video": {"upload": ["upload"], "webcam": ["webcam"]},
    "Audio": {"upload": ["upload"], "microphone": ["microphone"]},
}
"""Gradio 3 `source=` per media class → Gradio 6 `sources=` (None: no equivalent, Gradio's default)."""

FILE_TYPES = {"file": "filepath"}
"""Gradio 3 `type=` of File/UploadButton → Gradio 6 (a path instead of a temp-file object)."""


def _media_kind(cls: type) -> str | None:
    """The MEDIA_SOURCES key of `cls` (its nearest Gradio media base class), if any."""
    for base in cls.__mro__:
        if base.__module__.startswith("gradio.") and base.__name__ in MEDIA_SOURCES:
            return base.__name__
    return None


def _choice_values(choices: Any) -> list[Any]:
    """The values of a Dropdown's `choices` (plain values or (label, value) pairs)."""
    values = []
    for choice in choices or []:
        values.append(choice[1] if isinstance(choice, (tuple, list)) and len(choice) == 2 else choice)
    return values


def _int_scale(scale: Any) -> Any:
    """Gradio 6 wants an int `scale`; Gradio 3 extensions pass floats (0.5, 2.0)."""
    if isinstance(scale, float):
        return max(1, round(scale)) if scale > 0 else 0
    return scale


def translate_component_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 constructor / update arguments for `cls` rewritten with Gradio 6 names and values.

    Arguments unknown to Gradio 6 are left in place; `accepted_kwargs` drops them.
    """
    out = dict(kwargs)
    kind = _media_kind(cls)
    if "default" in out and "value" not in out and not _accepts(cls, "default"):
        out["value"] = out.pop("default")  # gr.inputs.* (Gradio 3's legacy classes) named the value `default`
    if "source" in out:
        source = out.pop("source")  # wins over `sources`: an update merged into constructor args
        if kind is not None:
            if isinstance(source, (list, tuple)):
                out["sources"] = list(source)
            elif source in MEDIA_SOURCES[kind] and MEDIA_SOURCES[kind][source] is not None:
                out["sources"] = MEDIA_SOURCES[kind][source]
            else:
                log.debug("gradio 3 compat: %s(source=%r) has no Gradio 6 equivalent, dropped", cls.__name__, source)
    if "scale" in out:
        out["scale"] = _int_scale(out["scale"])
    if out.get("type") in FILE_TYPES and issubclass(cls, (gr.File, gr.UploadButton)):
        out["type"] = FILE_TYPES[out["type"]]
    if "show_copy_button" in out:
        if out.pop("show_copy_button") and "buttons" not in out and issubclass(cls, (gr.Textbox, gr.Code)):
            out["buttons"] = ["copy"]
    if "mirror_webcam" in out:
        mirror = out.pop("mirror_webcam")
        if "webcam_options" not in out and kind in ("Image", "Video", "ImageEditor"):
            out["webcam_options"] = gr.WebcamOptions(mirror=bool(mirror))
    if kind == "ImageEditor" and ("brush_radius" in out or "brush_color" in out) and "brush" not in out:
        radius, color = out.pop("brush_radius", None), out.pop("brush_color", None)
        out["brush"] = gr.Brush(default_size=int(radius) if radius else "auto",
                                colors=[color] if color else None, default_color=color or None)
    if issubclass(cls, gr.Dropdown) and "value" in out and "allow_custom_value" not in out and "choices" in out:
        # Gradio 3 took any value; Gradio 6 rejects a submitted value not among the choices
        value, values = out["value"], _choice_values(out["choices"])
        wanted = value if isinstance(value, list) else [value]
        if values and not callable(value) and any(v is not None and v not in values for v in wanted):
            out["allow_custom_value"] = True
    return out


@functools.lru_cache(maxsize=None)
def init_parameters(init: Callable) -> tuple[frozenset[str], bool]:
    """(named parameters, takes **kwargs) of a constructor."""
    params = inspect.signature(init).parameters.values()
    names = frozenset(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


@functools.lru_cache(maxsize=None)
def named_parameters(cls: type) -> frozenset[str]:
    """Every named constructor parameter along `cls`'s bases (a subclass may take `**kwargs`)."""
    names: set[str] = set()
    for base in cls.__mro__:
        init = base.__dict__.get("__init__")
        if base is object or init is None:
            continue
        try:
            names |= init_parameters(init)[0]
        except (TypeError, ValueError):  # a constructor without a signature
            continue
    return frozenset(names)


def accepted_kwargs(owner: str, init: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` without the names `init` cannot take (each dropped name is logged at debug level)."""
    names, open_ended = init_parameters(init)
    if open_ended:
        return kwargs
    dropped = [k for k in kwargs if k not in names]
    if dropped:
        log.debug("gradio 3 compat: %s ignores %s (no Gradio 6 equivalent)", owner, ", ".join(sorted(dropped)))
    return {k: v for k, v in kwargs.items() if k in names}


def _translating_init(cls: type, init: Callable) -> Callable:
    """`cls.__init__` that first translates Gradio 3 arguments, then drops the unknown ones."""
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs = accepted_kwargs(cls.__name__, init, translate_component_kwargs(cls, kwargs))
        init(self, *args, **kwargs)

    setattr(__init__, _MARK, True)
    return __init__


# --- gr.Image(tool="sketch") ------------------------------------------------------------------------------

SKETCH_TOOLS = ("sketch", "color-sketch")
"""Gradio 3 `gr.Image(tool=...)` values that drew on the image (Gradio 6: an image editor)."""


def _sketch_class(cls: type, kwargs: dict[str, Any]) -> type:
    """The class to build for `cls(**kwargs)`: Gradio 3's drawing Image becomes `SketchImage`."""
    if cls is gr.Image and (kwargs.get("tool") in SKETCH_TOOLS or kwargs.get("source") == "canvas"):
        return SketchImage
    return cls


def sketch_mask(size: tuple[int, int], layers: list[Image.Image]) -> Image.Image:
    """Gradio 3's sketch mask: white wherever any drawn layer is opaque, black elsewhere ("L")."""
    mask = Image.new("L", size, 0)
    for layer in layers:
        alpha = layer.getchannel("A") if "A" in layer.getbands() else layer.convert("L")
        if alpha.size != size:
            alpha = alpha.resize(size)
        mask = ImageChops.lighter(mask, alpha)
    return mask.point(lambda a: 255 if a else 0)


_write_pyi = component_meta.create_or_modify_pyi
component_meta.create_or_modify_pyi = lambda *args, **kwargs: None  # no stub for the class below


class SketchImage(gr.ImageEditor):
    """Gradio 3's `gr.Image(tool="sketch" | "color-sketch")` (or `source="canvas"`) as an image editor.

    The handler receives what Gradio 3 passed: with `tool="sketch"` on an uploaded or webcam image,
    `{"image": ..., "mask": ...}` (the mask white where the user drew); otherwise the image with the
    drawing on it. Both follow Gradio 3's `type` ("numpy" by default) and `image_mode`.
    """

    is_template = True

    def __init__(self, value: Any = None, *, tool: str = "sketch", type: str = "numpy",  # noqa: A002
                 image_mode: str | None = "RGB", source: str | None = None, **kwargs: Any) -> None:
        self.tool = tool
        self.gradio3_type, self.gradio3_image_mode = type, image_mode
        self.returns_mask = tool == "sketch" and source != "canvas"
        super().__init__(_editor_value(value), type="pil", image_mode="RGBA", source=source, **kwargs)

    def _gradio3_image(self, image: Image.Image, flatten: bool = True) -> Any:
        """`image` in this component's Gradio 3 `image_mode` and `type`."""
        mode = self.gradio3_image_mode
        if flatten and "A" in image.getbands() and mode not in ("RGBA", "LA", "PA", None):
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        if mode:
            image = image.convert(mode)
        return image_utils.format_image(image, self.gradio3_type, self.GRADIO_CACHE, format="png")

    def preprocess(self, payload: Any) -> Any:
        value = super().preprocess(payload)
        if value is None:
            return None
        image = value["background"] or value["composite"]
        if image is None:
            return None
        if not self.returns_mask:
            return self._gradio3_image(value["composite"] or image)
        mask = sketch_mask(image.size, value["layers"])
        return {"image": self._gradio3_image(image), "mask": self._gradio3_image(mask, flatten=False)}

    def postprocess(self, value: Any) -> Any:
        return super().postprocess(_editor_value(value))


component_meta.create_or_modify_pyi = _write_pyi


def _editor_value(value: Any) -> Any:
    """A Gradio 3 sketch value (an image, or {"image", "mask"}) as an image editor's value."""
    if isinstance(value, dict) and "image" in value and "background" not in value:
        return value["image"]
    return value


# --- update() and style() ---------------------------------------------------------------------------------

def update_kwargs(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a Gradio 3 `Cls.update(...)` as Gradio 6 update keys (first positional: value,
    or `visible` for layouts)."""
    out = dict(kwargs)
    if args:
        out.setdefault("visible" if issubclass(cls, BlockContext) else "value", args[0])
    return translate_component_kwargs(cls, out)


def _update(cls: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Gradio 3's `Component.update(**props)`: a `gr.update(...)` dict for an event's output."""
    return gr.update(**update_kwargs(cls, args, kwargs))


STYLE_RENAMES = {"grid": "columns"}
"""Gradio 3 `.style()` keys whose Gradio 6 constructor argument has another name."""


def style_kwargs(cls: type, style: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 `.style(**style)` as Gradio 6 constructor arguments of `cls`; the rest dropped."""
    out: dict[str, Any] = {}
    for key, value in style.items():
        name = STYLE_RENAMES.get(key, key)
        if name == "columns" and isinstance(value, (list, tuple)):
            value = value[-1] if value else None  # Gradio 3: one column count per screen width
        if key == "full_width" and issubclass(cls, (gr.Button, gr.UploadButton)):
            name, value = "scale", (1 if value else 0)
        if key == "show_copy_button":
            out.update(translate_component_kwargs(cls, {key: value}))
            continue
        out[name] = value
    names = named_parameters(cls)
    dropped = sorted(k for k in out if k not in names)
    if dropped:
        log.debug("gradio 3 compat: %s.style ignores %s", cls.__name__, ", ".join(dropped))
    return {k: _int_scale(v) if k == "scale" else v for k, v in out.items() if k in names}


def _style(self: Block, **style: Any) -> Block:
    """Gradio 3's `.style(...)`: set what has a Gradio 6 equivalent, return the block itself."""
    props = style_kwargs(type(self), style)
    for name, value in props.items():
        setattr(self, name, value)
    recorded = getattr(self, "_constructor_args", None)
    if recorded:
        recorded[0].update(props)  # an update() rebuilds the block from these
    return self


def _translated_postprocess_update_dict(original: Callable) -> Callable:
    """Gradio's update applier, translating Gradio 3 keys (`source`, ...) of a `gr.update` dict."""
    @functools.wraps(original)
    def postprocess_update_dict(block: Any, update_dict: dict, postprocess: bool = True) -> dict:
        translated = update_kwargs(type(block), (), update_dict)
        return original(block=block, update_dict=translated, postprocess=postprocess)

    setattr(postprocess_update_dict, _MARK, True)
    return postprocess_update_dict


# --- event listeners -------------------------------------------------------------------------------------

EVENT_RENAMES = {"_js": "js", "_preprocess": "preprocess", "_postprocess": "postprocess"}
"""Gradio 3 event-listener arguments whose Gradio 6 name differs."""


def translate_event_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 event-listener arguments rewritten for Gradio 6 (unknown ones are left in place)."""
    out = dict(kwargs)
    for old, new in EVENT_RENAMES.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    if out.get("api_name") is False:  # Gradio 3: no API endpoint for this event
        out.pop("api_name")
        out.setdefault("api_visibility", "private")
    if "queue" in out and out["queue"] is None:
        out.pop("queue")
    return out


def _event_targets(args: tuple, kwargs: dict[str, Any]) -> list[Any]:
    """The `inputs` and `outputs` of an event-listener call (keywords or positions 1 and 2)."""
    targets = []
    for position, name in ((1, "inputs"), (2, "outputs")):
        value = kwargs[name] if name in kwargs else (args[position] if len(args) > position else None)
        if isinstance(value, (list, tuple, set)):
            targets.extend(value)
    return targets


def check_event_targets(args: tuple, kwargs: dict[str, Any]) -> None:
    """Refuse an event whose `inputs`/`outputs` list holds None, at once, as Gradio 3 did.

    Gradio 3 raised `AttributeError` (no `_id` on None) inside the listener call, so the error stayed
    in the `ui()` that made it (A1111 logs that script and goes on; extensions even suppress it).
    Gradio 6 accepts the list and fails later, when the whole Blocks is closed, losing every UI.
    """
    if any(target is None for target in _event_targets(args, kwargs)):
        raise AttributeError("an event's inputs/outputs hold None instead of a component "
                             "('NoneType' object has no attribute '_id')")


def _translating_listener(listener: Callable) -> Callable:
    """An event-listener method accepting Gradio 3 arguments."""
    if getattr(listener, _MARK, False):
        return listener

    @functools.wraps(listener)
    def event_listener(block: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs = accepted_kwargs(f"event {getattr(listener, '__name__', '?')}", listener,
                                 translate_event_kwargs(kwargs))
        check_event_targets(args, kwargs)
        return listener(block, *args, **kwargs)

    setattr(event_listener, _MARK, True)
    return event_listener


def _translating_setup(original: Callable) -> Callable:
    """`EventListener._setup` whose listeners accept Gradio 3 arguments (new classes, `.then`)."""
    def _setup(*args: Any, **kwargs: Any) -> Callable:
        return _translating_listener(original(*args, **kwargs))

    setattr(_setup, _MARK, True)
    return _setup


EVENT_ALIASES = {"edit": "change"}
"""Gradio 3 events that Gradio 6 media components no longer have, and the event that replaces them."""


def _add_event_aliases() -> None:
    """`image.edit(...)` (Gradio 3) listens to `change` where Gradio 6 has no `edit` event."""
    for cls in (gr.Image, gr.ImageEditor, gr.Audio, gr.Video):
        for old, new in EVENT_ALIASES.items():
            if not hasattr(cls, old) and hasattr(cls, new):
                setattr(cls, old, getattr(cls, new))


def _event_names(cls: type) -> list[str]:
    """Names of the event-listener methods `cls` itself defines."""
    names = [str(e) for e in cls.__dict__.get("EVENTS", [])]
    if issubclass(cls, gr.Blocks):
        names += [str(e) for e in getattr(sys.modules["gradio.blocks_events"], "BLOCKS_EVENTS", [])]
    return [n for n in names if callable(cls.__dict__.get(n))]


# --- before/after component hooks --------------------------------------------------------------------------

def _in_request() -> bool:
    """True while Gradio runs an event (components built there are updates, not UI)."""
    from gradio.context import LocalContext
    return bool(LocalContext.in_event_listener.get(False)) or LocalContext.blocks.get(None) is not None


HOOK_DEFAULTS = {"elem_id": None, "elem_classes": None, "label": None, "visible": True, "interactive": None}
"""Keys every Gradio 3 component's base constructor received, so hooks may index them."""


def hook_kwargs(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments A1111's component hooks receive: the Gradio base class's defaults
    (`elem_id`, `label`, `visible`, ...) overlaid with what the caller passed, positionals named."""
    defaults, positional = _hook_signature(cls)
    out = dict(defaults)
    out.update(zip(positional, args))
    out.update(kwargs)
    return out


@functools.lru_cache(maxsize=None)
def _hook_signature(cls: type) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(default hook kwargs, names of the positional parameters) for components of `cls`."""
    defaults: dict[str, Any] = dict(HOOK_DEFAULTS)
    base = next((c for c in cls.__mro__ if c.__module__.startswith("gradio.")), cls)
    for param in list(inspect.signature(base.__init__).parameters.values())[1:]:
        if param.default is not param.empty:
            defaults[param.name] = param.default
    positional = tuple(p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                       if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return defaults, positional


def _call_hook(hook: Callable | None, component: Any, kwargs: dict[str, Any]) -> None:
    if hook is None:
        return
    try:
        hook(component, **kwargs)
    except Exception:
        log.exception("error in component hook %s for elem_id=%r", getattr(hook, "__qualname__", hook),
                       kwargs.get("elem_id"))


def fire_component_hooks(stage: str, component: Any, kwargs: dict[str, Any]) -> None:
    """Run A1111's `before`/`after` component hooks for `component` (never raises).

    Order as in A1111: the script runner's hook first on the way in, last on the way out.
    """
    scripts = sys.modules.get("modules.scripts")
    callbacks = sys.modules.get("modules.script_callbacks")
    runner = getattr(scripts, "scripts_current", None) if scripts is not None else None
    runner_hook = getattr(runner, f"{stage}_component", None) if runner is not None else None
    callback_hook = getattr(callbacks, f"{stage}_component_callback", None) if callbacks is not None else None
    hooks = [runner_hook, callback_hook] if stage == "before" else [callback_hook, runner_hook]
    for hook in hooks:
        _call_hook(hook, component, kwargs)


def _accepts(cls: type, name: str) -> bool:
    """True when some constructor along `cls`'s bases has a parameter `name`."""
    return name in named_parameters(cls)


def add_classes_to_gradio_component(component: Block) -> None:
    """A1111's CSS hooks: `gradio-<kind>` on every block (and `multiselect` on such dropdowns)."""
    classes = component.elem_classes or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    wanted = [f"gradio-{component.get_block_name()}"]
    if getattr(component, "multiselect", False):
        wanted.append("multiselect")
    component.elem_classes = classes + [c for c in wanted if c not in classes]


def _component_call(cls: type, *args: Any, **kwargs: Any) -> Any:
    """`ComponentMeta.__call__`: build the block, with A1111's hooks around a component's build."""
    cls = _sketch_class(cls, kwargs)
    tooltip = kwargs.pop("tooltip", None) if not _accepts(cls, "tooltip") else kwargs.get("tooltip")
    if not issubclass(cls, Component) or _in_request():
        block = type.__call__(cls, *args, **kwargs)
    else:
        block = cls.__new__(cls)
        hook_args = hook_kwargs(cls, args, kwargs)
        block.webui_tooltip = tooltip
        fire_component_hooks("before", block, hook_args)
        if isinstance(block, cls):
            block.__init__(*args, **kwargs)
        fire_component_hooks("after", block, hook_args)
    if isinstance(block, Block):
        block.webui_tooltip = tooltip
        try:
            add_classes_to_gradio_component(block)
        except Exception:  # a block without elem_classes
            log.debug("gradio 3 compat: no css classes for %s", cls.__name__, exc_info=True)
    return block


setattr(_component_call, _MARK, True)


def _gradio_only_pyi(original: Callable) -> Callable:
    """Gradio's `.pyi` stub writer, skipped for component classes defined outside Gradio.

    Gradio 6 writes a stub next to the source of every component class it sees defined (and
    fails when there is no source file); an extension's `class MyButton(gr.Button)` needs none.
    """
    @functools.wraps(original)
    def create_or_modify_pyi(component_class: type, *args: Any, **kwargs: Any) -> Any:
        if not component_class.__module__.startswith("gradio."):
            return None
        return original(component_class, *args, **kwargs)

    setattr(create_or_modify_pyi, _MARK, True)
    return create_or_modify_pyi


def _config_with_base_props(original: Callable) -> Callable:
    """`Block.get_config` that also reports the Gradio base class's props for a subclass whose
    constructor takes `**kwargs` (Gradio reads props from the subclass's signature only, so an
    extension's `class ToolButton(gr.Button)` would lose `variant`, `size`, ... in the page)."""
    @functools.wraps(original)
    def get_config(self: Block, cls: type | None = None) -> dict[str, Any]:
        config = original(self, cls)
        own = cls or type(self)
        if own.__module__.startswith("gradio.") or not init_parameters(own.__init__)[1]:
            return config
        base = _gradio_base(own)
        if base is None:
            return config
        return {**original(self, base), **config}

    setattr(get_config, _MARK, True)
    return get_config


def _gradio_base(cls: type) -> type | None:
    """The nearest class of Gradio's own that `cls` derives from (None for the abstract bases)."""
    base = next((c for c in cls.__mro__ if c.__module__.startswith("gradio.")), None)
    return None if base in (None, Block, BlockContext, Component) else base


def _has_own_frontend(cls: type) -> bool:
    """True for a Gradio custom component (a package shipping its `templates/` frontend)."""
    try:
        return (os.path.isdir(os.path.join(os.path.dirname(inspect.getfile(cls)), "templates")))
    except (TypeError, OSError):
        return False


def _base_frontend_name(original: Callable) -> Callable:
    """`get_block_name`/`get_block_class` naming the Gradio base class for a plain subclass.

    An extension's `class MyButton(gr.Button)` has no frontend of its own; Gradio 3 rendered it
    through its base's frontend when it said so, Gradio 6 would look for a "mybutton" one. A
    template (`is_template`) is named after its direct base, which is right only when that base is
    Gradio's: an extension's `class ARButton(ToolButton)` inherits the flag and would be "toolbutton".
    """
    @functools.wraps(original)
    def block_name(self: Block) -> str:
        cls = type(self)
        direct_template = hasattr(self, "is_template") and cls.__base__.__module__.startswith("gradio.")
        if cls.__module__.startswith("gradio.") or direct_template or _has_own_frontend(cls):
            return original(self)
        base = _gradio_base(cls)
        return base.__name__.lower() if base is not None else original(self)

    setattr(block_name, _MARK, True)
    return block_name


# --- removed names -----------------------------------------------------------------------------------------

def _legacy_namespace(name: str) -> types.ModuleType:
    """`gr.inputs` / `gr.outputs` (removed in Gradio 4): the same component classes by name."""
    module = types.ModuleType(f"gradio.{name}", f"Gradio 3's gr.{name}, mapped to Gradio 6 components.")
    for attr in ("Textbox", "Number", "Slider", "Checkbox", "CheckboxGroup", "Radio", "Dropdown", "Image",
                 "Video", "Audio", "File", "Dataframe", "Timeseries", "State", "Label", "HTML", "JSON",
                 "Gallery", "Chatbot", "Model3D", "Plot", "HighlightedText", "Carousel", "Markdown"):
        if hasattr(gr, attr):
            setattr(module, attr, getattr(gr, attr))
    return module


def _add_removed_names() -> None:
    """Gradio 3 names extensions still use, pointing at their Gradio 6 counterparts."""
    aliases = {"Box": gr.Group, "Variable": gr.State}
    for name, target in aliases.items():
        if not hasattr(gr, name):
            setattr(gr, name, target)
    if not hasattr(gr.layouts, "Box"):
        gr.layouts.Box = gr.Group
    if not hasattr(gr.components, "IOComponent"):
        gr.components.IOComponent = Component
    if not hasattr(gr.components, "FormComponent"):
        gr.components.FormComponent = Component
    for name in ("inputs", "outputs"):
        if not hasattr(gr, name):
            module = _legacy_namespace(name)
            setattr(gr, name, module)
            sys.modules.setdefault(module.__name__, module)


# --- install ------------------------------------------------------------------------------------------------

def _block_classes() -> list[type]:
    """Every Block subclass defined so far (Gradio's own and any defined since)."""
    seen: list[type] = []
    stack = [Block]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def _patch_class(cls: type) -> None:
    """Translating event listeners on one class, and a translating constructor on Gradio's own
    classes (subclasses defined elsewhere reach it through `super().__init__`)."""
    init = cls.__dict__.get("__init__")
    if cls.__module__.startswith("gradio.") and init is not None and not getattr(init, _MARK, False):
        setattr(cls, "__init__", _translating_init(cls, init))
    for name in _event_names(cls):
        listener = cls.__dict__[name]
        if not getattr(listener, _MARK, False):
            setattr(cls, name, _translating_listener(listener))


_installed = False


def install() -> None:
    """Make the Gradio 3.41 idioms A1111 extensions use work on Gradio 6 (idempotent)."""
    global _installed
    if _installed:
        return
    for cls in _block_classes():
        _patch_class(cls)
    listener_setup = gr_events.EventListener.__dict__["_setup"].__func__
    if not getattr(listener_setup, _MARK, False):
        gr_events.EventListener._setup = staticmethod(_translating_setup(listener_setup))
    if not getattr(gr_blocks.postprocess_update_dict, _MARK, False):
        gr_blocks.postprocess_update_dict = _translated_postprocess_update_dict(gr_blocks.postprocess_update_dict)
    if not getattr(component_meta.ComponentMeta.__dict__.get("__call__"), _MARK, False):
        component_meta.ComponentMeta.__call__ = _component_call
    update = classmethod(_update)
    for cls in (Component, BlockContext, gr.Row):
        cls.update = update
    if not getattr(component_meta.create_or_modify_pyi, _MARK, False):
        component_meta.create_or_modify_pyi = _gradio_only_pyi(component_meta.create_or_modify_pyi)
    if not getattr(Block.get_config, _MARK, False):
        Block.get_config = _config_with_base_props(Block.get_config)
    for name in ("get_block_name", "get_block_class"):
        if not getattr(getattr(Block, name), _MARK, False):
            setattr(Block, name, _base_frontend_name(getattr(Block, name)))
    if not hasattr(Block, "style"):
        Block.style = _style
    _add_event_aliases()
    _add_removed_names()
    _installed = True


def build_detached(build: Callable[[], Any]) -> Any:
    """Run `build` (which makes a throw-away `gr.Blocks`) outside any Gradio context.

    Inside an event handler Gradio renders new components into the running event (its context
    variables say so), which breaks a Blocks built for another purpose (script argument layouts
    rebuilt after a reload, Extras script controls made on first use). A fresh, empty
    `contextvars.Context` gives `build` none of that state.
    """
    import contextvars
    return contextvars.Context().run(build)
