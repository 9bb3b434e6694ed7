"""A1111's `on_*` callback API (spec §2.5) over a fixed list of hook points.

Extensions register with `on_X(callback, name=None)`; Serena's own code fires a hook with the
matching `X_callback(...)` function. A failing callback is reported and the others still run,
as in A1111: an extension bug never aborts a generation.
"""
from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class ImageSaveParams:
    """What `on_before_image_saved` / `on_image_saved` receive; callbacks may change fields."""

    image: Any
    p: Any
    filename: str
    pnginfo: dict


@dataclass
class ExtraNoiseParams:
    """Extra img2img/hires noise (option `img2img_extra_noise`); `noise` may be replaced."""

    noise: Any
    x: Any
    xi: Any


@dataclass
class CFGDenoiserParams:
    """The denoiser's inputs before each model call; callbacks may change x, conds and sigma."""

    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """The model output of one step, before classifier-free guidance is combined."""

    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass
class AfterCFGCallbackParams:
    """The latent of one step after guidance is combined; `x` may be replaced."""

    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class UiTrainTabParams:
    """What `on_ui_train_tabs` callbacks receive."""

    txt2img_preview_params: Any


@dataclass
class ImageGridLoopParams:
    """A grid about to be drawn; callbacks may change images, columns and rows."""

    imgs: list
    cols: int
    rows: int


@dataclass
class BeforeTokenCounterParams:
    """A prompt about to be counted by the UI token counter."""

    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclass
class ScriptCallback:
    """One registered callback: the file that registered it, the function, and its name."""

    script: str
    callback: Callable
    name: str | None = None


HOOKS: tuple[str, ...] = (
    "app_started", "before_reload", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings",
    "before_image_saved", "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg",
    "before_component", "after_component", "image_grid", "infotext_pasted", "script_unloaded",
    "before_ui", "list_optimizers", "list_unets", "before_token_counter",
)

callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{hook}": [] for hook in HOOKS}


def _caller_filename(depth: int) -> str:
    """The file `depth` frames above the caller, used to unregister a script's callbacks."""
    frame = inspect.currentframe()
    for _ in range(depth + 1):
        if frame is None or frame.f_back is None:
            break
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "unknown file"


def callback_name(filename: str, category: str, name: str | None = None) -> str:
    """A1111's callback name: `<extension or 'base'>/<file>/<category>[/<name>]`.

    metadata.ini `[callbacks/<name>]` sections and the `prioritized_callbacks_*` options refer to
    callbacks by this name.
    """
    from modules import extensions
    extension = extensions.find_extension(filename)
    prefix = extension.canonical_name if extension is not None else "base"
    text = f"{prefix}/{os.path.basename(filename)}/{category}"
    return f"{text}/{name}" if name is not None else text


def unique_name(name: str, taken: list[str]) -> str:
    """`name`, or `name-1`, `name-2`, … if a callback of the category already has it."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def add_callback(hook: str, callback: Callable, *, name: str | None = None, filename: str | None = None) -> None:
    """Register `callback` for `hook` (one of :data:`HOOKS`), named as A1111 names it."""
    if hook not in HOOKS:
        raise ValueError(f"unknown callback hook {hook!r}; known: {', '.join(HOOKS)}")
    filename = filename or _caller_filename(2)
    callbacks = callback_map[f"callbacks_{hook}"]
    full_name = unique_name(callback_name(filename, hook, name), [c.name for c in callbacks])
    callbacks.append(ScriptCallback(filename, callback, full_name))


def order_instructions() -> dict[str, tuple[list[str], list[str]]]:
    """Every active extension's metadata.ini `[callbacks/<name>]` rules: name → (Before, After)."""
    from modules import extensions
    rules: dict[str, tuple[list[str], list[str]]] = {}
    for ext in extensions.active():
        for name, before, after in ext.metadata.list_callback_order_instructions():
            rules[name] = (before, after)
    return rules


def prioritized(category: str) -> list[str]:
    """The user's `prioritized_callbacks_<category>` option: names that go first, in that order."""
    from modules import shared
    value = shared.opts.data.get(f"prioritized_callbacks_{category}") or []
    return [str(x) for x in value] if isinstance(value, (list, tuple)) else []


def sort_by_rules(items: list, name_of: Callable[[Any], str], category: str) -> list:
    """`items` (callbacks or scripts) in load order, moved by the metadata.ini `[callbacks/…]` rules
    (Before/After other names), then the user's prioritized names moved to the front."""
    from modules.scripts import topological_sort
    names = [name_of(x) for x in items]
    by_name = dict(zip(names, items))
    rules = order_instructions()
    after: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        before_list, after_list = rules.get(n, ([], []))
        after[n].extend(a for a in after_list if a in after)
        for b in before_list:
            if b in after:
                after[b].append(n)
    ordered = topological_sort(after) if rules else names
    front = [n for n in prioritized(category) if n in by_name]
    ordered = front + [n for n in ordered if n not in front]
    return [by_name[n] for n in ordered]


def add_order_options(script_hooks: tuple[str, ...] = ()) -> None:
    """The "Callbacks" settings: `prioritized_callbacks_<category>`, one per callback hook and per
    script hook (`script_<hook>`), each a list of callback names that run first, in that order.
    Added once the scripts are loaded, so each option's choices are the callbacks that exist."""
    from modules import shared
    from modules.options import OptionInfo
    categories = list(HOOKS) + [f"script_{h}" for h in script_hooks]
    for category in categories:
        names = [c.name for c in callback_map.get(f"callbacks_{category}", [])]
        info = OptionInfo([], f"{category} callback priority", None,
                          {"choices": names, "multiselect": True}, section=("callbacks", "Callbacks"))
        shared.opts.add_option(f"prioritized_callbacks_{category}", info)


def ordered_callbacks(category: str, unordered: list[ScriptCallback] | None = None) -> list[ScriptCallback]:
    """The callbacks of `category` in the order they run (A1111's `ordered_callbacks`)."""
    callbacks = list(unordered if unordered is not None else callback_map.get(f"callbacks_{category}", []))
    if len(callbacks) < 2:
        return callbacks
    return sort_by_rules(callbacks, lambda c: c.name or "", category)


def clear_callbacks() -> None:
    """Drop every registered callback (tests, UI reload)."""
    for callbacks in callback_map.values():
        callbacks.clear()


def remove_current_script_callbacks() -> None:
    """Drop every callback registered from the calling file."""
    filename = _caller_filename(1)
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.script != filename]


def remove_callbacks_for_function(callback_func: Callable) -> None:
    """Drop every registration of `callback_func`, whatever file made it."""
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.callback != callback_func]


def _run(hook: str, *args: Any, **kwargs: Any) -> list[Any]:
    """Call every callback of `hook` in order; failures are logged, the rest still run."""
    results = []
    for entry in ordered_callbacks(hook):
        try:
            results.append(entry.callback(*args, **kwargs))
        except Exception:
            log.exception("error running callback %s (%s)", entry.name, entry.script)
    return results


# --- firing (used by Serena's code): `X_callback(...)` runs every callback of hook X ------------------
def app_started_callback(demo: Any, app: Any) -> None:
    _run("app_started", demo, app)


def before_reload_callback() -> None:
    _run("before_reload")


def model_loaded_callback(sd_model: Any) -> None:
    _run("model_loaded", sd_model)


def ui_tabs_callback() -> list:
    return [tab for tabs in _run("ui_tabs") if tabs for tab in tabs]


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    _run("ui_train_tabs", params)


def ui_settings_callback() -> None:
    _run("ui_settings")


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _run("extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("cfg_after_cfg", params)


def before_component_callback(component: Any, **kwargs: Any) -> None:
    _run("before_component", component, **kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    _run("after_component", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict) -> None:
    _run("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("script_unloaded")


def before_ui_callback() -> None:
    _run("before_ui")


def list_optimizers_callback() -> list:
    found: list = []
    _run("list_optimizers", found)
    return found


def list_unets_callback() -> list:
    found: list = []
    _run("list_unets", found)
    return found


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _run("before_token_counter", params)


# --- registering (A1111's public API) ------------------------------------------------------------
def on_app_started(callback: Callable, *, name: str | None = None) -> None:
    """Called with (gradio demo or None, FastAPI app) once the server is built."""
    add_callback("app_started", callback, name=name)


def on_before_reload(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `before_reload` hook (spec §2.5)."""
    add_callback("before_reload", callback, name=name)


def on_model_loaded(callback: Callable, *, name: str | None = None) -> None:
    """Called with the model after each checkpoint load."""
    add_callback("model_loaded", callback, name=name)


def on_ui_tabs(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `ui_tabs` hook (spec §2.5)."""
    add_callback("ui_tabs", callback, name=name)


def on_ui_train_tabs(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `ui_train_tabs` hook (spec §2.5)."""
    add_callback("ui_train_tabs", callback, name=name)


def on_ui_settings(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `ui_settings` hook (spec §2.5)."""
    add_callback("ui_settings", callback, name=name)


def on_before_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """Called with ImageSaveParams before an image is written; fields may be changed."""
    add_callback("before_image_saved", callback, name=name)


def on_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `image_saved` hook (spec §2.5)."""
    add_callback("image_saved", callback, name=name)


def on_extra_noise(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `extra_noise` hook (spec §2.5)."""
    add_callback("extra_noise", callback, name=name)


def on_cfg_denoiser(callback: Callable, *, name: str | None = None) -> None:
    """Called with CFGDenoiserParams each step before the model runs."""
    add_callback("cfg_denoiser", callback, name=name)


def on_cfg_denoised(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `cfg_denoised` hook (spec §2.5)."""
    add_callback("cfg_denoised", callback, name=name)


def on_cfg_after_cfg(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `cfg_after_cfg` hook (spec §2.5)."""
    add_callback("cfg_after_cfg", callback, name=name)


def on_before_component(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `before_component` hook (spec §2.5)."""
    add_callback("before_component", callback, name=name)


def on_after_component(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `after_component` hook (spec §2.5)."""
    add_callback("after_component", callback, name=name)


def on_image_grid(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `image_grid` hook (spec §2.5)."""
    add_callback("image_grid", callback, name=name)


def on_infotext_pasted(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `infotext_pasted` hook (spec §2.5)."""
    add_callback("infotext_pasted", callback, name=name)


def on_script_unloaded(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `script_unloaded` hook (spec §2.5)."""
    add_callback("script_unloaded", callback, name=name)


def on_before_ui(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `before_ui` hook (spec §2.5)."""
    add_callback("before_ui", callback, name=name)


def on_list_optimizers(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `list_optimizers` hook (spec §2.5)."""
    add_callback("list_optimizers", callback, name=name)


def on_list_unets(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `list_unets` hook (spec §2.5)."""
    add_callback("list_unets", callback, name=name)


def on_before_token_counter(callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for the `before_token_counter` hook (spec §2.5)."""
    add_callback("before_token_counter", callback, name=name)
