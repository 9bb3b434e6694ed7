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


def add_callback(hook: str, callback: Callable, *, name: str | None = None) -> None:
    """Register `callback` for `hook` (one of :data:`HOOKS`)."""
    if hook not in HOOKS:
        raise ValueError(f"unknown callback hook {hook!r}; known: {', '.join(HOOKS)}")
    filename = _caller_filename(2)
    if name is None:
        name = f"{os.path.basename(filename)}/{hook}"
    callback_map[f"callbacks_{hook}"].append(ScriptCallback(filename, callback, name))


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


def _run(hook: str, *args: Any) -> list[Any]:
    """Call every callback of `hook`; failures are logged, the rest still run."""
    results = []
    for entry in list(callback_map[f"callbacks_{hook}"]):
        try:
            results.append(entry.callback(*args))
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
    for entry in list(callback_map["callbacks_before_component"]):
        try:
            entry.callback(component, **kwargs)
        except Exception:
            log.exception("error running callback %s", entry.name)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    for entry in list(callback_map["callbacks_after_component"]):
        try:
            entry.callback(component, **kwargs)
        except Exception:
            log.exception("error running callback %s", entry.name)


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
