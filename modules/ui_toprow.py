"""The top row of the txt2img and img2img tabs (A1111's `Toprow`): prompt and negative prompt with
their token counters, Generate / Interrupt / Skip (keyboard and "generate forever" live in
`javascript/toprow.js`), ↙ paste infotext, 🗑️ clear, and the styles row (`modules.ui_prompt_styles`).

`create_toprow(tab)` builds and wires what needs only the top row; `wire_toprow(tab, field_order)`
wires ↙ paste, which writes into every field of the tab, once the tab's fields exist.
"""
from __future__ import annotations

import functools
import html
import logging
from typing import TYPE_CHECKING, Any, Sequence

import gradio as gr

from modules import shared, ui_prompt_styles
from modules.ui_prompt_styles import style_names  # noqa: F401 - modules.ui re-exports it

if TYPE_CHECKING:
    from modules.ui import GenerationTab

log = logging.getLogger("serena.ui")

paste_symbol = "\u2199\ufe0f"  # ↙
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
DEFAULT_STEPS = 20


# --- token counter ---------------------------------------------------------------------------------
def _opt(name: str, default: Any) -> Any:
    try:
        return getattr(shared.opts, name)
    except (AttributeError, KeyError):
        return default


def prompts_to_count(text: str, steps: int, is_positive: bool) -> list[str]:
    """The texts the model would encode for `text` (`prompt_parser.get_token_counter_texts`); a
    half-typed prompt that does not parse is counted as it stands (no message: the user is typing)."""
    from modules import prompt_parser
    try:
        return prompt_parser.get_token_counter_texts(text, steps, is_positive=is_positive) or [text]
    except Exception:  # noqa: BLE001 - see docstring
        return [text]


def count_tokens(text: str | None, steps: int | float | None = DEFAULT_STEPS, styles: Sequence[str] | None = None,
                 is_positive: bool = True) -> tuple[Any, Any]:
    """`(tokens, limit)` as A1111's counter shows them: `before_token_counter` callbacks first, the
    chosen styles included when `include_styles_into_token_counters` is on, and the longest of the
    texts the prompt becomes (`model_hijack.get_prompt_lengths`: chunks of 75, BREAK, embeddings)."""
    from modules import script_callbacks
    from modules.sd_hijack import model_hijack
    params = script_callbacks.BeforeTokenCounterParams(text or "", int(steps or DEFAULT_STEPS), list(styles or []),
                                                       is_positive=is_positive)
    script_callbacks.before_token_counter_callback(params)
    text = params.prompt or ""
    if _opt("include_styles_into_token_counters", True) and shared.prompt_styles is not None and params.styles:
        apply = (shared.prompt_styles.apply_styles_to_prompt if params.is_positive
                 else shared.prompt_styles.apply_negative_styles_to_prompt)
        text = apply(text, params.styles)
    lengths = [model_hijack.get_prompt_lengths(p) for p in prompts_to_count(text, max(int(params.steps), 1),
                                                                           params.is_positive)]
    numeric = [x for x in lengths if isinstance(x[0], int)]
    return max(numeric, key=lambda x: x[0]) if numeric else lengths[0]


def token_counter_html(text: str | None, steps: int | float | None = DEFAULT_STEPS,
                       styles: Sequence[str] | None = None, is_positive: bool = True) -> str:
    """The counter's HTML ("tokens/limit"); a failure shows "?" and is logged once, never raised."""
    try:
        tokens, limit = count_tokens(text, steps, styles, is_positive)
    except Exception as e:  # noqa: BLE001 - the counter must never break typing
        log.warning("token counter failed: %s", e)
        tokens, limit = "?", "?"
    return f"<span class='gr-box gr-text-input'>{html.escape(str(tokens))}/{html.escape(str(limit))}</span>"


# --- layout -----------------------------------------------------------------------------------------
def create_toprow(tab: "GenerationTab") -> None:
    """Prompts on the left; Generate / Interrupt / Skip, ↙ 🗑️ and styles on the right (A1111's top row).

    Sets `tab.fields["prompt"|"negative_prompt"|"styles"]`, `tab.generate/interrupt/skip`, and
    `tab.toprow` (a dict of the other components: paste, clear, token counters, styles UI)."""
    kind = tab.kind
    with gr.Row(equal_height=False, elem_id=f"{kind}_toprow", elem_classes="prompt-row"):
        with gr.Column(scale=6, elem_id=f"{kind}_prompt_container"):
            with gr.Row(elem_id=f"{kind}_prompt_row"):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{kind}_prompt", scale=8,
                                    placeholder="Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, "
                                                "Esc to interrupt)")
                counter = gr.HTML("<span class='gr-box gr-text-input'>0/75</span>", elem_id=f"{kind}_token_counter",
                                  elem_classes="token-counter", js_on_load=None)
            with gr.Row(elem_id=f"{kind}_neg_prompt_row"):
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{kind}_neg_prompt", scale=8,
                                      placeholder="Negative prompt\n(Press Ctrl+Enter to generate, Alt+Enter to "
                                                  "skip, Esc to interrupt)")
                neg_counter = gr.HTML("<span class='gr-box gr-text-input'>0/75</span>",
                                      elem_id=f"{kind}_negative_token_counter", elem_classes="token-counter",
                                      js_on_load=None)
        with gr.Column(scale=2, min_width=220, elem_id=f"{kind}_actions_column"):
            with gr.Row(elem_id=f"{kind}_generate_box", elem_classes="generate-box"):
                tab.generate = gr.Button("Generate", variant="primary", elem_id=f"{kind}_generate")
            with gr.Row():
                tab.interrupt = gr.Button("Interrupt", variant="stop", size="sm", elem_id=f"{kind}_interrupt")
                tab.skip = gr.Button("Skip", size="sm", elem_id=f"{kind}_skip")
            with gr.Row(elem_id=f"{kind}_tools"):
                paste = gr.Button(paste_symbol, elem_classes="serena-tool", scale=0, min_width=40,
                                  elem_id=f"{kind}_paste")
                clear = gr.Button(clear_prompt_symbol, elem_classes="serena-tool", scale=0, min_width=40,
                                  elem_id=f"{kind}_clear_prompt")
            styles_ui = ui_prompt_styles.create_styles_ui(kind, prompt, negative)
    tab.fields["prompt"], tab.fields["negative_prompt"], tab.fields["styles"] = prompt, negative, styles_ui.dropdown
    tab.toprow = {"paste": paste, "clear": clear, "token_counter": counter, "negative_token_counter": neg_counter,
                  "styles": styles_ui}
    _wire_counters(prompt, negative, styles_ui.dropdown, counter, neg_counter)
    clear.click(None, inputs=[prompt, negative], outputs=[prompt, negative], queue=False, show_progress="hidden",
                js="(p, n) => (window.opts && opts.confirm_clear_prompt === true && !confirm('Delete prompt?'))"
                   " ? [p, n] : ['', '']")


def _wire_counters(prompt: gr.Textbox, negative: gr.Textbox, styles: gr.Dropdown, counter: gr.HTML,
                   neg_counter: gr.HTML) -> None:
    """Counters follow typing (`trigger_mode="always_last"`: one update in flight, the last text wins)."""
    quick = dict(queue=False, show_progress="hidden", trigger_mode="always_last")
    positive = functools.partial(token_counter_html, is_positive=True)
    negative_count = functools.partial(token_counter_html, is_positive=False)
    gr.on([prompt.change, styles.change], lambda t, s: positive(t, DEFAULT_STEPS, s), inputs=[prompt, styles],
          outputs=counter, **quick)
    gr.on([negative.change, styles.change], lambda t, s: negative_count(t, DEFAULT_STEPS, s),
          inputs=[negative, styles], outputs=neg_counter, **quick)


def last_params_text() -> str:
    """`<data>/params.txt` (the last job's infotext), or "" when there is none."""
    import os
    path = os.path.join(shared.data_paths.data_path, "params.txt")
    try:
        with open(path, encoding="utf8") as f:
            return f.read()
    except OSError:
        return ""


def paste_from_prompt(text: str | None, names: Sequence[str], script_fields: Sequence[tuple[Any, Any]]) -> list[Any]:
    """↙: the infotext in the prompt box (or, with the box empty, the last job's `params.txt`, as
    A1111 does) as one update per field name, then per script field; "no change" for what it lacks.
    Text without generation parameters is a short message and changes nothing."""
    from modules import ui_handlers as h
    if not (text or "").strip():
        text = last_params_text()
    if "Steps: " not in (text or ""):
        log.warning("paste: the prompt box holds no generation parameters")
        gr.Warning("Paste generation parameters (an infotext with a 'Steps:' line) into the prompt box first")
        return [gr.update() for _ in (*names, *script_fields)]
    return [*h.paste_infotext(text, names), *h.paste_script_fields(text, script_fields)]


def wire_toprow(tab: "GenerationTab", field_order: Sequence[str]) -> None:
    """Wire ↙ paste (needs every field of the tab): call after the tab's fields and scripts exist."""
    names = [name for name in field_order if name in tab.fields]
    script_fields = list(getattr(tab, "script_paste_fields", []) or [])
    outputs = [*(tab.fields[n] for n in names), *(c for c, _ in script_fields)]
    tab.toprow["paste"].click(lambda text: paste_from_prompt(text, names, script_fields), inputs=tab.fields["prompt"],
                              outputs=outputs, queue=False, show_progress="hidden")
