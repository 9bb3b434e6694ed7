"""`modules.sd_hijack` as extensions import it: `model_hijack` and a few module-level helpers.

A1111 patches LDM's modules at load time ("hijacking" them) and keeps the state of that patching
in `model_hijack`. Serena builds its models from diffusers/transformers parts and has nothing to
patch, so `hijack` / `undo_hijack` are accepted and do nothing. What extensions actually read from
`model_hijack` is real: the textual-inversion database (`embedding_db`), the prompt token counter
(`get_prompt_lengths`), the per-job `comments` / `extra_generation_params`, and circular padding
(`apply_circular`, over `modules.sd_tiling`).

`comments` and `extra_generation_params` work as in A1111: `process_images_inner` clears them when
a job starts, and after each batch's conditioning (`p.setup_conds()`) `processing.merge_hijack_notes`
copies the parameters into `p.extra_generation_params` (hence the infotext) and the comments into
the job's comments.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class StableDiffusionModelHijack:
    """The object behind `model_hijack`, with A1111's attribute names."""

    fixes = None
    layers = None
    circular_enabled = False
    clip = None

    def __init__(self) -> None:
        self.comments: list[str] = []
        self.extra_generation_params: dict[str, Any] = {}
        self._circular_restore: list = []

    # --- textual inversion ------------------------------------------------------------------------
    @property
    def embedding_db(self) -> Any:
        """The process's textual-inversion database (`textual_inversion.embedding_db`)."""
        from modules.textual_inversion import textual_inversion
        return textual_inversion.embedding_db

    # --- patching: nothing to do on diffusers models ----------------------------------------------
    def hijack(self, m: Any) -> None:
        """Accepted for compatibility; Serena's models need no patching."""

    def undo_hijack(self, m: Any) -> None:
        """Accepted for compatibility; see `hijack`."""
        if self.circular_enabled:
            self.apply_circular(False)

    def redo_hijack(self, m: Any) -> None:
        self.undo_hijack(m)
        self.hijack(m)

    @property
    def optimization_method(self) -> str | None:
        """The attention implementation the loaded model uses (`sd_attention` name), None with no model."""
        from modules import sd_attention, sd_models
        return sd_attention.current(sd_models.model_data.sd_model)

    def apply_optimizations(self, option: Any = None) -> str:
        """Set the attention implementation `option` (default: the `cross_attention_optimization`
        option and the flags) on the loaded model; see the module-level `apply_optimizations`."""
        return apply_optimizations(option)

    def convert_sdxl_to_ssd(self, m: Any) -> None:
        raise NotImplementedError("SSD-1B conversion is not supported by Serena")

    # --- per-job notes ------------------------------------------------------------------------------
    def clear_comments(self) -> None:
        self.comments = []
        self.extra_generation_params = {}

    # --- tiling -------------------------------------------------------------------------------------
    def apply_circular(self, enable: bool) -> None:
        """Switch the current model's convolutions to circular padding (seamless tiling) or back."""
        enable = bool(enable)
        if self.circular_enabled == enable:
            return
        from modules import sd_models, sd_tiling
        if enable:
            model = sd_models.model_data.sd_model
            if model is None:
                return
            self._circular_restore = sd_tiling.set_tiling(model, True)
        else:
            for layer, mode in self._circular_restore:
                layer.padding_mode = mode
            self._circular_restore = []
        self.circular_enabled = enable

    # --- token counting -----------------------------------------------------------------------------
    def get_prompt_lengths(self, text: str) -> tuple[Any, Any]:
        """`(token count, target count)` of `text` with the current model's tokenizer, as the UI's
        token counter shows them (target: whole chunks of 75). `("-", "-")` with no model loaded."""
        from modules import sd_models, shared
        model = sd_models.model_data.sd_model
        if model is None:
            return "-", "-"
        conditioner = model.cond_stage_model
        if hasattr(conditioner, "get_prompt_token_count"):
            return conditioner.get_prompt_token_count(
                text, emphasis=shared.opts.emphasis, comma_padding_backtrack=int(shared.opts.comma_padding_backtrack))
        _, count = conditioner.tokenize_line(text)
        return count, conditioner.get_target_prompt_token_count(count)


model_hijack = StableDiffusionModelHijack()


optimizers: list = []
"""Cross-attention optimizations offered through `on_list_optimizers`, highest `priority` first."""
current_optimizer = None


def list_optimizers() -> list:
    """Ask `on_list_optimizers` callbacks for optimizations and keep them in `optimizers`.

    Serena's built-in ones are `sd_attention.names()` (not listed here: the settings add them); an
    extension's optimization is offered in the settings but not applied (`apply_optimizations`).
    """
    from modules import script_callbacks
    found = script_callbacks.list_optimizers_callback()
    optimizers[:] = sorted(found, key=lambda x: getattr(x, "priority", 0), reverse=True)
    return optimizers


def apply_optimizations(option: Any = None) -> str:
    """Set the built-in attention implementation `option` names (else the option
    `cross_attention_optimization`, else the flags: `sd_attention.choose`) on the loaded model, and
    return its name; "" for plain attention ("None"), as A1111 returns for no optimization. An
    extension's optimization (`list_optimizers`) is listed in the settings but not applied: Serena's
    models are diffusers modules, which A1111 optimizations do not patch."""
    from modules import sd_attention, sd_models, shared
    name = sd_attention.choose(shared.cmd_opts, option or getattr(shared.opts, "cross_attention_optimization",
                                                                  sd_attention.AUTOMATIC))
    model = sd_models.model_data.sd_model
    if model is not None:
        name = sd_attention.apply(model, name)
    return "" if name == sd_attention.NONE else name


def undo_optimizations() -> None:
    pass


def fix_checkpoint() -> None:
    """Kept for extensions that call it; there is nothing to fix."""
