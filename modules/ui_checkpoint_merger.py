"""The Checkpoint Merger tab: A1111 v1.10's form over `modules.extras.run_modelmerger`.

Models A, B and C are picked from the checkpoint list (each with 🔄), merged by the chosen
interpolation method, and written into the checkpoint folder; the new file is registered, so it
appears in the merger's dropdowns at once (and in the page's other checkpoint lists on refresh).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules import extras
from modules.ui_common import create_refresh_button, plaintext_to_html
from modules.ui_progress import GENERATION_CONCURRENCY

log = logging.getLogger("serena.ui.merger")


@dataclass
class MergerTab:
    """The merger form's components (A1111's attribute names)."""

    primary_model_name: Any = None
    secondary_model_name: Any = None
    tertiary_model_name: Any = None
    custom_name: Any = None
    interp_amount: Any = None
    interp_method: Any = None
    checkpoint_format: Any = None
    save_as_half: Any = None
    config_source: Any = None
    bake_in_vae: Any = None
    discard_weights: Any = None
    save_metadata: Any = None
    add_merge_recipe: Any = None
    copy_metadata_fields: Any = None
    metadata_json: Any = None
    read_metadata: Any = None
    merge: Any = None
    result: Any = None


def checkpoint_choices() -> list[str]:
    from modules import sd_models
    return sd_models.checkpoint_tiles()


def vae_choices() -> list[str]:
    """"None", then every VAE file's name (rescanned)."""
    from modules import sd_vae
    sd_vae.refresh_vae_list()
    return ["None", *sd_vae.vae_dict]


def _refresh_checkpoints() -> None:
    from modules import sd_models
    sd_models.list_models()


def merge(primary: str | None, secondary: str | None, tertiary: str | None, interp_method: str,
          multiplier: float, save_as_half: bool, custom_name: str, checkpoint_format: str, config_source: int,
          bake_in_vae: str | None, discard_weights: str, save_metadata: bool, add_merge_recipe: bool,
          copy_metadata_fields: bool, metadata_json: str) -> list[Any]:
    """The Merge button: `extras.run_modelmerger` under the job lock.

    Returns:
        Updates for the A, B and C dropdowns (the refreshed list, new checkpoint included) and the
        result line ("Checkpoint saved to …").

    Raises:
        gr.Error: a user's mistake (no model A, unknown model, bad metadata JSON, file exists …).
    """
    from modules import call_queue, ui_handlers as h
    if not primary:
        raise h.user_error("Checkpoint Merger: choose a primary model (A)")
    with h.user_errors(), call_queue.queue_lock:
        outputs = extras.run_modelmerger(None, primary, secondary or None, tertiary or None, interp_method,
                                         float(multiplier), bool(save_as_half), custom_name or "", checkpoint_format,
                                         int(config_source or 0), bake_in_vae, discard_weights or "",
                                         bool(save_metadata), bool(add_merge_recipe), bool(copy_metadata_fields),
                                         metadata_json or "{}")
    log.info("%s", outputs[-1])
    choices = checkpoint_choices()
    return [gr.update(choices=choices) for _ in range(3)] + [plaintext_to_html(outputs[-1])]


def read_metadata(primary: str | None, secondary: str | None, tertiary: str | None) -> str:
    """The "Read metadata" button: the safetensors metadata of the chosen models, as JSON text
    (``{}`` when none carries any), for the metadata box."""
    import safetensors

    from modules import sd_models
    found: dict[str, Any] = {}
    for name in (primary, secondary, tertiary):
        info = sd_models.get_closet_checkpoint_match(name) if name else None
        if info is None or not info.filename.endswith(".safetensors"):
            continue
        try:
            with safetensors.safe_open(info.filename, "pt") as f:
                found.update({k: _json_or_text(v) for k, v in (f.metadata() or {}).items()})
        except (OSError, safetensors.SafetensorError) as e:
            log.warning("Checkpoint Merger: cannot read metadata of %s: %s", info.filename, e)
    return json.dumps(found, indent=4, ensure_ascii=False)


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def create_checkpoint_merger_tab() -> MergerTab:
    """The merger form over `modules.extras.run_modelmerger` (A1111's layout and elem_ids)."""
    tab = MergerTab()
    choices = checkpoint_choices()
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            gr.HTML("<p>The merged checkpoint is written to your checkpoint directory and listed at once.</p>",
                    elem_id="modelmerger_description")
            with gr.Row(elem_id="modelmerger_models"):
                tab.primary_model_name = gr.Dropdown(choices, value=None, label="Primary model (A)",
                                                     elem_id="modelmerger_primary_model_name")
                create_refresh_button(tab.primary_model_name, _refresh_checkpoints,
                                      lambda: {"choices": checkpoint_choices()}, "refresh_checkpoint_A")
                tab.secondary_model_name = gr.Dropdown(choices, value=None, label="Secondary model (B)",
                                                       elem_id="modelmerger_secondary_model_name")
                create_refresh_button(tab.secondary_model_name, _refresh_checkpoints,
                                      lambda: {"choices": checkpoint_choices()}, "refresh_checkpoint_B")
                tab.tertiary_model_name = gr.Dropdown(choices, value=None, label="Tertiary model (C)",
                                                      elem_id="modelmerger_tertiary_model_name")
                create_refresh_button(tab.tertiary_model_name, _refresh_checkpoints,
                                      lambda: {"choices": checkpoint_choices()}, "refresh_checkpoint_C")
            tab.custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            tab.interp_amount = gr.Slider(minimum=0.0, maximum=1.0, step=0.05, value=0.3,
                                          label="Multiplier (M) - set to 0 to get model A",
                                          elem_id="modelmerger_interp_amount")
            tab.interp_method = gr.Radio(list(extras.INTERP_METHODS), value=extras.WEIGHTED_SUM,
                                         label="Interpolation Method", elem_id="modelmerger_interp_method")
            with gr.Row():
                tab.checkpoint_format = gr.Radio(list(extras.CHECKPOINT_FORMATS), value="safetensors",
                                                 label="Checkpoint format", elem_id="modelmerger_checkpoint_format")
                tab.save_as_half = gr.Checkbox(False, label="Save as float16", elem_id="modelmerger_save_as_half")
            tab.config_source = gr.Radio(list(extras.CONFIG_SOURCES), value=extras.CONFIG_SOURCES[0], type="index",
                                         label="Copy config from", elem_id="modelmerger_config_method")
            with gr.Row():
                tab.bake_in_vae = gr.Dropdown(vae_choices(), value="None", label="Bake in VAE",
                                              elem_id="modelmerger_bake_in_vae")
                create_refresh_button(tab.bake_in_vae, lambda: None, lambda: {"choices": vae_choices()},
                                      "modelmerger_refresh_bake_in_vae")
            tab.discard_weights = gr.Textbox(value="", label="Discard weights with matching name",
                                             elem_id="modelmerger_discard_weights")
            with gr.Accordion("Metadata", open=False):
                with gr.Row():
                    tab.save_metadata = gr.Checkbox(True, label="Save metadata", elem_id="modelmerger_save_metadata")
                    tab.add_merge_recipe = gr.Checkbox(True, label="Add merge recipe metadata",
                                                       elem_id="modelmerger_add_recipe")
                    tab.copy_metadata_fields = gr.Checkbox(True, label="Copy metadata from merged models",
                                                           elem_id="modelmerger_copy_metadata")
                tab.metadata_json = gr.TextArea("{}", label="Metadata in JSON format",
                                                elem_id="modelmerger_metadata_json")
                tab.read_metadata = gr.Button("Read metadata from selected checkpoints",
                                              elem_id="modelmerger_read_metadata")
            tab.merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            tab.result = gr.HTML(elem_id="modelmerger_result", show_label=False)
    models = [tab.primary_model_name, tab.secondary_model_name, tab.tertiary_model_name]
    tab.read_metadata.click(read_metadata, inputs=models, outputs=tab.metadata_json, show_progress="hidden")
    tab.merge.click(merge, inputs=[*models, tab.interp_method, tab.interp_amount, tab.save_as_half, tab.custom_name,
                                   tab.checkpoint_format, tab.config_source, tab.bake_in_vae, tab.discard_weights,
                                   tab.save_metadata, tab.add_merge_recipe, tab.copy_metadata_fields,
                                   tab.metadata_json],
                    outputs=[*models, tab.result], concurrency_id="generate",
                    concurrency_limit=GENERATION_CONCURRENCY)
    return tab
