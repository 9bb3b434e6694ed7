"""The browser UI: A1111's txt2img / img2img / PNG Info tabs and checkpoint dropdown, in Gradio 6.

Only layout and wiring live here; what each control does is in `modules.ui_handlers`, where every
generation becomes an API request and runs through `modules.runtime.jobs` (the one path to
`processing.process_images`). `webui.create_app()` calls :func:`mount` last, after the
`/sdapi/v1` routes exist, because routes added after a Gradio mount at "/" are shadowed.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from modules import (  # noqa: E402
    errors, shared, ui_extra_networks, ui_handlers as h, ui_img2img, ui_progress, ui_results, ui_toprow)
# Names extensions import from `modules.ui` (A1111 defines or re-exports them there).
from modules.call_queue import wrap_gradio_call, wrap_gradio_gpu_call, wrap_queued_call  # noqa: E402,F401
from modules.ui_common import (  # noqa: E402,F401
    apply_style_symbol, clear_prompt_symbol, create_refresh_button, detect_image_size_symbol, extra_networks_symbol,
    folder_symbol, paste_symbol, plaintext_to_html, random_symbol, refresh_symbol, restore_progress_symbol,
    reuse_symbol, save_style_symbol, switch_values_symbol)
from modules.ui_components import FormGroup, FormRow, ToolButton  # noqa: E402,F401

log = logging.getLogger("serena.ui")


def gr_show(visible: bool = True) -> dict:
    """A1111 helper: an update that shows (or hides) a component."""
    return gr.update(visible=visible)


from modules.ui_progress import GENERATION_CONCURRENCY, PROGRESS_INTERVAL_S  # noqa: E402,F401
from modules.ui_toprow import style_names  # noqa: E402,F401

CSS = """
.serena-progress { position: relative; height: 1.6em; border-radius: 6px; overflow: hidden;
                   background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.serena-progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft);
                       transition: width 0.3s; }
.serena-progress-text { position: relative; padding-left: 0.6em; font-size: 0.9em; line-height: 1.6em; }
.serena-tool { min-width: 2.6em !important; max-width: 2.6em !important; }
#serena-checkpoint-row { align-items: end; }
"""


@dataclass
class GenerationTab:
    """The components of one generation tab, by request-field name, plus its outputs."""

    kind: str
    fields: dict[str, gr.components.Component] = field(default_factory=dict)
    generate: gr.Button | None = None
    interrupt: gr.Button | None = None
    skip: gr.Button | None = None
    gallery: gr.Gallery | None = None
    infotext: gr.Textbox | None = None
    status: gr.HTML | None = None
    progress: gr.HTML | None = None
    script_inputs: list = field(default_factory=list)
    """The tab's script runner's flat argument controls (slot 0: the "Script" dropdown)."""
    extra_networks: Any = None
    script_layout: list = field(default_factory=list)
    """Where each script's values sit in `script_inputs`, as built (see ui_handlers.script_layout)."""
    script_paste_fields: list = field(default_factory=list)
    """The scripts' `infotext_fields`: (control, infotext key or function of the parsed infotext)."""
    results: Any = None
    """The buttons and boxes under the gallery (`modules.ui_results.ResultsPanel`)."""
    mode_tabs: Any = None
    """img2img: the input sub-tabs (img2img, Sketch, Inpaint, …)."""
    mode_tab_items: list = field(default_factory=list)
    image_targets: dict = field(default_factory=dict)
    """img2img: where "Send to img2img / inpaint" put an image: name → (component, sub-tab mode)."""
    inpaint_controls: Any = None
    """img2img: the inpaint options (shown on the inpaint sub-tabs)."""


# --- choices (read when the page is built) -------------------------------------------------------------
def sampler_names() -> list[str]:
    from modules import sd_samplers
    return sd_samplers.visible_sampler_names()


def scheduler_labels() -> list[str]:
    from modules import sd_schedulers
    return [s.label for s in sd_schedulers.schedulers]


def hires_upscaler_names() -> list[str]:
    """Latent modes first, then the pixel upscalers, as A1111's hires fix lists them."""
    from modules import upscaling
    return [*upscaling.latent_upscale_modes, *(u.name for u in upscaling.sd_upscalers)]


def _default(choices: list[str], wanted: str) -> str | None:
    return wanted if wanted in choices else (choices[0] if choices else None)


# --- building blocks of a generation tab ----------------------------------------------------------------
def _sampling_fields(tab: GenerationTab) -> None:
    samplers, schedulers = sampler_names(), scheduler_labels()
    with gr.Row():
        tab.fields["sampler_name"] = gr.Dropdown(samplers, value=_default(samplers, "DPM++ 2M"),
                                                 label="Sampling method", elem_id=f"{tab.kind}_sampling")
        tab.fields["scheduler"] = gr.Dropdown(schedulers, value=_default(schedulers, "Automatic"),
                                              label="Schedule type", elem_id=f"{tab.kind}_scheduler")
        tab.fields["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{tab.kind}_steps")


def _size_fields(tab: GenerationTab) -> gr.Button | None:
    """Width and height with ⇅ (swap); img2img also gets 📐 (detect the input image's size),
    which is returned for its handler to be wired."""
    detect = None
    with gr.Row():
        with gr.Column(scale=3):
            tab.fields["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{tab.kind}_width")
            tab.fields["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{tab.kind}_height")
        with gr.Column(scale=0, min_width=48):
            swap = gr.Button(switch_values_symbol, elem_classes="serena-tool", elem_id=f"{tab.kind}_res_switch_btn",
                             scale=0, min_width=40)
            if tab.kind == "img2img":
                detect = gr.Button(detect_image_size_symbol, elem_classes="serena-tool", scale=0, min_width=40,
                                   elem_id="img2img_detect_image_size_btn")
    swap.click(lambda w, hgt: (hgt, w), inputs=[tab.fields["width"], tab.fields["height"]],
               outputs=[tab.fields["width"], tab.fields["height"]], queue=False, show_progress="hidden")
    return detect


def _batch_and_cfg_fields(tab: GenerationTab) -> None:
    with gr.Row():
        tab.fields["n_iter"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab.kind}_batch_count")
        tab.fields["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab.kind}_batch_size")
    tab.fields["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{tab.kind}_cfg_scale")


def _seed_row(tab: GenerationTab) -> tuple[gr.Button, gr.Button]:
    """Seed box with 🎲 (random: -1) and ♻️ (reuse the shown image's seed) buttons, and A1111's
    "Extra" section: variation seed and strength, resize seed from width/height."""
    with gr.Row(equal_height=True):
        tab.fields["seed"] = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{tab.kind}_seed", scale=6)
        random_seed = gr.Button("🎲", elem_classes="serena-tool", elem_id=f"{tab.kind}_random_seed", scale=0)
        reuse_seed = gr.Button("♻️", elem_classes="serena-tool", elem_id=f"{tab.kind}_reuse_seed", scale=0)
        tab.fields["seed_extras"] = gr.Checkbox(False, label="Extra", elem_id=f"{tab.kind}_subseed_show", scale=1)
    with gr.Group(visible=False, elem_id=f"{tab.kind}_seed_extras") as extras:
        with gr.Row(equal_height=True):
            tab.fields["subseed"] = gr.Number(value=-1, precision=0, label="Variation seed",
                                              elem_id=f"{tab.kind}_subseed", scale=6)
            random_subseed = gr.Button("🎲", elem_classes="serena-tool", elem_id=f"{tab.kind}_random_subseed", scale=0)
            tab.fields["subseed_strength"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                                       elem_id=f"{tab.kind}_subseed_strength", scale=6)
        with gr.Row():
            tab.fields["seed_resize_from_w"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                                         elem_id=f"{tab.kind}_seed_resize_from_w")
            tab.fields["seed_resize_from_h"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                                         elem_id=f"{tab.kind}_seed_resize_from_h")
    tab.fields["seed_extras"].change(lambda on: gr.update(visible=bool(on)), inputs=tab.fields["seed_extras"],
                                     outputs=extras, queue=False, show_progress="hidden")
    random_subseed.click(lambda: -1, outputs=tab.fields["subseed"], queue=False, show_progress="hidden")
    return random_seed, reuse_seed


def _hires_fields(tab: GenerationTab) -> None:
    upscalers = hires_upscaler_names()
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr"):
        tab.fields["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix", elem_id="txt2img_enable_hr")
        with gr.Row():
            tab.fields["hr_upscaler"] = gr.Dropdown(upscalers, value=_default(upscalers, "Latent"), label="Upscaler",
                                                    elem_id="txt2img_hr_upscaler")
            tab.fields["hr_second_pass_steps"] = gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                                           elem_id="txt2img_hires_steps")
            tab.fields["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                                                         elem_id="txt2img_denoising_strength")
        with gr.Row():
            tab.fields["hr_scale"] = gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by",
                                               elem_id="txt2img_hr_scale")
            tab.fields["hr_resize_x"] = gr.Slider(0, 2048, value=0, step=8, label="Resize width to",
                                                  elem_id="txt2img_hr_resize_x")
            tab.fields["hr_resize_y"] = gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                                  elem_id="txt2img_hr_resize_y")
        with gr.Row(elem_id="txt2img_hires_fix_row3", visible=bool(shared.opts.hires_fix_show_sampler)):
            checkpoints = ["Use same checkpoint", *h.checkpoint_titles()]
            tab.fields["hr_checkpoint_name"] = gr.Dropdown(checkpoints, value=checkpoints[0], label="Hires checkpoint",
                                                           elem_id="txt2img_hr_checkpoint")
            samplers = ["Use same sampler", *sampler_names()]
            tab.fields["hr_sampler_name"] = gr.Dropdown(samplers, value=samplers[0], label="Hires sampling method",
                                                        elem_id="txt2img_hr_sampler")
            schedulers = ["Use same scheduler", *scheduler_labels()]
            tab.fields["hr_scheduler"] = gr.Dropdown(schedulers, value=schedulers[0], label="Hires schedule type",
                                                     elem_id="txt2img_hr_scheduler")
        with gr.Row(elem_id="txt2img_hires_fix_row4", visible=bool(shared.opts.hires_fix_show_prompts)):
            tab.fields["hr_prompt"] = gr.Textbox(label="Hires prompt", lines=2, placeholder="Leave empty to use the "
                                                 "same prompt as in first pass.", elem_id="txt2img_hr_prompt")
            tab.fields["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt", lines=2,
                                                          placeholder="Leave empty to use the same negative prompt "
                                                          "as in first pass.", elem_id="txt2img_hr_neg_prompt")


def _refiner_fields(tab: GenerationTab) -> None:
    """A1111's Refiner section: a second checkpoint takes over from `switch at` of the steps."""
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab.kind}_refiner"):
        tab.fields["enable_refiner"] = gr.Checkbox(False, label="Enable refiner", elem_id=f"{tab.kind}_enable_refiner")
        with gr.Row():
            checkpoints = h.checkpoint_titles()
            tab.fields["refiner_checkpoint"] = gr.Dropdown(checkpoints, value=None, label="Checkpoint",
                                                           elem_id=f"{tab.kind}_refiner_checkpoint")
            tab.fields["refiner_switch_at"] = gr.Slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                                                        elem_id=f"{tab.kind}_refiner_switch_at")


def _output_panel(tab: GenerationTab) -> None:
    tab.progress = gr.HTML("", elem_id=f"{tab.kind}_progress", js_on_load=None)
    tab.gallery = gr.Gallery(label="Output", format="png", columns=2, height=520, object_fit="contain",
                             interactive=False, elem_id=f"{tab.kind}_gallery")
    tab.results = ui_results.create_buttons(tab.kind)
    tab.infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, buttons=["copy"],
                              elem_id=f"{tab.kind}_infotext")
    tab.status = gr.HTML("", elem_id=f"{tab.kind}_status", js_on_load=None)
    ui_results.create_log(tab.results)


# --- wiring -------------------------------------------------------------------------------------------------
def _wire_seed(tab: GenerationTab, random_seed: gr.Button, reuse_seed: gr.Button) -> None:
    random_seed.click(lambda: -1, outputs=tab.fields["seed"], queue=False, show_progress="hidden")
    reuse_seed.click(h.seed_from_infotext, inputs=tab.infotext, outputs=tab.fields["seed"], queue=False,
                     show_progress="hidden")


def _scripts_section(tab: GenerationTab) -> None:
    """The tab's scripts: AlwaysVisible scripts' controls, then the "Script" dropdown and each
    selectable script's controls (shown when chosen). Their values follow the tab's fields into
    the handler, which turns them into the request's `script_name`/`script_args`/`alwayson_scripts`."""
    from modules import scripts
    runner = scripts.scripts_img2img if tab.kind == "img2img" else scripts.scripts_txt2img
    with gr.Column(elem_id=f"{tab.kind}_script_container"):
        runner.setup_ui()
    tab.script_inputs = [c for c in runner.inputs if isinstance(c, gr.components.Component)]
    tab.script_layout = h.script_layout(runner)
    tab.script_paste_fields = [(c, key) for c, key in runner.infotext_fields if isinstance(c, gr.components.Component)]
    if len(tab.script_inputs) != len(runner.inputs):  # an extension returned something that is no control
        log.warning("%s: some script controls are not Gradio components; the scripts get their defaults",
                    tab.kind)
        tab.script_inputs = []


@contextlib.contextmanager
def _current_scripts(kind: str) -> Iterator[None]:
    """While a tab is built, `scripts.scripts_current` is its runner: scripts' before/after_component
    hooks see the tab's components (A1111 extensions find controls by elem_id that way)."""
    from modules import scripts
    previous = scripts.scripts_current
    scripts.scripts_current = scripts.scripts_img2img if kind == "img2img" else scripts.scripts_txt2img
    try:
        yield
    finally:
        scripts.scripts_current = previous


# --- tabs ---------------------------------------------------------------------------------------------------
def txt2img_tab() -> GenerationTab:
    tab = GenerationTab("txt2img")
    ui_toprow.create_toprow(tab)
    tab.extra_networks = ui_extra_networks.create_ui(tab)  # 🎴 panel: cards add their tags to the prompt
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            _sampling_fields(tab)
            _size_fields(tab)
            _batch_and_cfg_fields(tab)
            seed_buttons = _seed_row(tab)
            _hires_fields(tab)
            _refiner_fields(tab)
            _scripts_section(tab)
        with gr.Column(scale=1):
            _output_panel(tab)
    ui_progress.wire_generation(tab, functools.partial(h.txt2img, layout=tab.script_layout), h.TXT2IMG_FIELDS)
    ui_toprow.wire_toprow(tab, h.TXT2IMG_FIELDS)  # ↙ paste: after the scripts section (their paste fields)
    _wire_seed(tab, *seed_buttons)
    return tab


def img2img_tab() -> GenerationTab:
    tab = GenerationTab("img2img")
    ui_toprow.create_toprow(tab)
    tab.extra_networks = ui_extra_networks.create_ui(tab)  # 🎴 panel: cards add their tags to the prompt
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            ui_img2img.create_input_tabs(tab)
            tab.fields["resize_mode"] = gr.Radio(list(h.RESIZE_MODES), value=h.RESIZE_MODES[0], type="index",
                                                 label="Resize mode", elem_id="resize_mode")
            _sampling_fields(tab)
            ui_img2img.create_size_section(tab, _size_fields)
            _batch_and_cfg_fields(tab)
            tab.fields["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                         elem_id="img2img_denoising_strength")
            seed_buttons = _seed_row(tab)
            _refiner_fields(tab)
            tab.inpaint_controls = ui_img2img.create_inpaint_controls(tab)
            _scripts_section(tab)
        with gr.Column(scale=1):
            _output_panel(tab)
    ui_img2img.wire_modes(tab, tab.inpaint_controls)
    ui_progress.wire_generation(tab, functools.partial(h.img2img, layout=tab.script_layout), h.IMG2IMG_FIELDS)
    ui_toprow.wire_toprow(tab, h.IMG2IMG_FIELDS)
    _wire_seed(tab, *seed_buttons)
    return tab


def checkpoint_row() -> gr.Dropdown:
    """A1111's "Stable Diffusion checkpoint" dropdown with its 🔄 refresh button."""
    with gr.Row(elem_id="serena-checkpoint-row"):
        titles = h.checkpoint_titles()
        dropdown = gr.Dropdown(titles, value=h.current_checkpoint(), label="Stable Diffusion checkpoint",
                               allow_custom_value=True, scale=0, min_width=420, elem_id="setting_sd_model_checkpoint")
        refresh = gr.Button("🔄", elem_classes="serena-tool", scale=0, elem_id="refresh_sd_model_checkpoint")
    dropdown.input(h.change_checkpoint, inputs=dropdown, outputs=dropdown, concurrency_id="generate",
                   concurrency_limit=GENERATION_CONCURRENCY, show_progress="full")
    refresh.click(h.refresh_checkpoints, outputs=dropdown, show_progress="hidden")
    return dropdown


def create_ui() -> gr.Blocks:
    """Build the whole page; choices (samplers, checkpoints, styles …) are read now."""
    from modules import (gradio_extensions, script_callbacks, ui_checkpoint_merger, ui_extensions, ui_loadsave,
                         ui_pnginfo, ui_postprocessing, ui_settings)
    gradio_extensions.install()
    extension_tabs = _extension_tabs(script_callbacks.ui_tabs_callback())
    with gr.Blocks(title="Serena", analytics_enabled=False) as blocks:
        checkpoint = checkpoint_row()
        ui_settings.create_quicksettings()
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"), _current_scripts("txt2img"):
                txt2img = txt2img_tab()
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"), _current_scripts("img2img"):
                img2img = img2img_tab()
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = ui_postprocessing.create_extras_tab()
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                ui_pnginfo.create_png_info_tab(tabs, [txt2img, img2img])
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger = ui_checkpoint_merger.create_checkpoint_merger_tab()
            for component, title, elem_id in extension_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    component.render()
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                ui_extensions.create_extensions_tab()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                ui_settings.create_settings_tab()
        send_targets = {"img2img": ui_results.generation_target(img2img, "img2img"),
                        "inpaint": ui_results.generation_target(img2img, "inpaint"),
                        "extras": ui_results.extras_target(extras)}
        for tab in (txt2img, img2img):
            ui_results.wire(tab, tabs, send_targets)
        blocks.load(h.checkpoint_dropdown, outputs=checkpoint, queue=False, show_progress="hidden")
        if merger is not None:  # a merged checkpoint appears in the checkpoint list at once
            merger.result.change(h.checkpoint_dropdown, outputs=checkpoint, show_progress="hidden")
    ui_loadsave.apply(blocks)  # ui-config.json: saved defaults, ranges and visibility; missing keys written
    return blocks


def _extension_tabs(entries: list) -> list[tuple[Any, str, str]]:
    """The (Blocks, title, elem_id) tabs `on_ui_tabs` callbacks returned; malformed entries are
    reported and left out."""
    tabs = []
    for entry in entries:
        try:
            component, title, elem_id = entry[0], str(entry[1]), str(entry[2])
        except (TypeError, IndexError, KeyError):
            errors.report(f"on_ui_tabs returned {entry!r}, not (component, title, elem_id); left out")
            continue
        if not hasattr(component, "render"):
            errors.report(f"on_ui_tabs tab {title!r}: {component!r} is not a Gradio Blocks; left out")
            continue
        tabs.append((component, title, elem_id))
    return tabs


# --- mounting ------------------------------------------------------------------------------------------------
def gradio_credentials(cmd_opts: argparse.Namespace) -> list[tuple[str, str]] | None:
    """`--gradio-auth "u:p,u2:p2"` plus the entries of `--gradio-auth-path` as (user, password) pairs.

    Raises:
        errors.ConfigError: an entry without a ':'.
    """
    entries: list[str] = []
    if getattr(cmd_opts, "gradio_auth", None):
        entries += cmd_opts.gradio_auth.split(",")
    path = getattr(cmd_opts, "gradio_auth_path", None)
    if path:
        with open(path, encoding="utf8") as f:
            entries += [x for line in f for x in line.strip().split(",")]
    pairs: list[tuple[str, str]] = []
    for n, entry in enumerate((x.strip() for x in entries), start=1):
        if not entry:
            continue
        if ":" not in entry:  # the entry itself is not echoed: it may be a password
            raise errors.ConfigError(f"gradio auth entry #{n} must be 'user:password'")
        user, password = entry.split(":", 1)
        pairs.append((user, password))
    return pairs or None


def _theme_js(cmd_opts: argparse.Namespace) -> str | None:
    """A1111's `--theme dark|light`: reload once with Gradio's `__theme` query parameter."""
    theme = getattr(cmd_opts, "theme", None)
    if theme not in ("dark", "light"):
        return None
    return ("() => { const u = new URL(window.location.href);"
            f" if (u.searchParams.get('__theme') !== '{theme}') {{ u.searchParams.set('__theme', '{theme}');"
            " window.location.replace(u.href); } }")


def mount(app: FastAPI, cmd_opts: argparse.Namespace | None = None, blocks: gr.Blocks | None = None) -> FastAPI:
    """Mount the UI at "/" on `app` (which already serves `/sdapi/v1`) and return the app.

    Args:
        app: the FastAPI app from `modules.api.app.build_app`.
        cmd_opts: flags (`--gradio-auth`, `--gradio-auth-path`, `--theme`); default `shared.cmd_opts`.
        blocks: the page from :func:`create_ui` (built now if not given).
    """
    cmd_opts = cmd_opts if cmd_opts is not None else shared.cmd_opts
    blocks = blocks if blocks is not None else create_ui()
    blocks.queue(default_concurrency_limit=1)
    credentials = gradio_credentials(cmd_opts)
    from modules import ui_head
    app = gr.mount_gradio_app(app, blocks, path="/", auth=credentials, ssr_mode=False, head=ui_head.head_html(),
                              theme=gr.themes.Default(primary_hue="orange"), css=CSS, js=_theme_js(cmd_opts),
                              show_error=True, footer_links=["api", "gradio"],
                              allowed_paths=list(getattr(cmd_opts, "gradio_allowed_path", None) or []))
    if credentials:
        _gate_gradio_mount(app)
    return app


def _gate_gradio_mount(app: FastAPI) -> None:
    """Wrap the Gradio app mounted at `/` in :class:`modules.ui_gate.LoginGate`."""
    from starlette.routing import Mount

    from modules.ui_gate import LoginGate
    for route in app.router.routes:
        if isinstance(route, Mount) and route.path == "" and hasattr(route.app, "tokens"):
            route.app = LoginGate(route.app)
            return
    raise errors.ConfigError("--gradio-auth: the mounted Gradio app was not found, so the UI cannot be guarded")
