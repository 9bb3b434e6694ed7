"""Built-in script "Prompt matrix" (A1111's title, arguments and outputs).

The prompt is split on `|`: the first part is in every image, each later part is optional, and
one image is made for every combination of the optional parts (2^n images for n parts). The
images come back after a grid that labels each column and row with the parts it holds (struck
through where they are left out); the grid carries the first image's infotext.

Positional `script_args`, as API clients send them: put_at_start (bool, False), different_seeds
(bool, False), prompt_type ("positive" | "negative"), variations_delimiter ("comma" | "space"),
margin_size (pixels between grid cells, 0..500).
"""
from __future__ import annotations

import contextlib
from typing import Any

import gradio as gr

from modules import errors, images, processing, scripts, shared

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}
MAX_MARGIN = 500


def matrix_prompts(parts: list[str], put_at_start: bool, delimiter: str) -> list[str]:
    """One prompt per combination of the optional parts `parts[1:]`.

    Combination i holds optional part n when bit n of i is set, so prompt 0 is the first part
    alone. Optional parts lose surrounding spaces and commas; the first part is kept as written
    and goes first, or last with `put_at_start`.
    """
    optional = parts[1:]
    prompts = []
    for combination in range(1 << len(optional)):
        chosen = [text.strip().strip(",") for n, text in enumerate(optional) if combination & (1 << n)]
        ordered = chosen + [parts[0]] if put_at_start else [parts[0]] + chosen
        prompts.append(delimiter.join(ordered))
    return prompts


def grid_rows(parts: list[str]) -> int:
    """Rows of the matrix grid: the optional parts past the first half (rounded up) go down the rows."""
    return 1 << ((len(parts) - 1) // 2)


def check_arguments(prompt_type: Any, variations_delimiter: Any, margin_size: Any) -> int:
    """Refuse arguments outside the UI's choices; returns the margin as an int."""
    if prompt_type not in PROMPT_TYPES:
        raise errors.InvalidParameter(
            f"Prompt matrix: prompt_type must be one of {list(PROMPT_TYPES)}, got {prompt_type!r}", field="script_args")
    if variations_delimiter not in DELIMITERS:
        raise errors.InvalidParameter(
            f"Prompt matrix: variations_delimiter must be one of {list(DELIMITERS)}, got {variations_delimiter!r}",
            field="script_args")
    if isinstance(margin_size, bool) or not isinstance(margin_size, (int, float)) or margin_size != int(margin_size) \
            or not 0 <= margin_size <= MAX_MARGIN:
        raise errors.InvalidParameter(
            f"Prompt matrix: margin_size must be a whole number of pixels in 0..{MAX_MARGIN}, got {margin_size!r}",
            field="script_args")
    return int(margin_size)


def check_image_count(optional_parts: int) -> None:
    """A matrix makes 2^n images: refuse more than `api_max_batch_images` (as for batch_size x n_iter)."""
    limit = int(shared.opts.api_max_batch_images)
    if optional_parts >= 63 or (1 << optional_parts) > limit:
        raise errors.InvalidParameter(
            f"Prompt matrix: {optional_parts} '|' parts make 2^{optional_parts} images; "
            f"api_max_batch_images={limit}", field="prompt")


def _layout(block: type) -> Any:
    """`block()` (a Row or Column) inside a Blocks being built; nothing outside one."""
    from gradio.context import Context
    return block() if Context.root_block is not None else contextlib.nullcontext()


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list:
        gr.HTML("<br />")
        with _layout(gr.Row):
            with _layout(gr.Column):
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with _layout(gr.Column):
                prompt_type = gr.Radio(list(PROMPT_TYPES), label="Select prompt", value="positive",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(list(DELIMITERS), label="Select joining char", value="comma",
                                                elem_id=self.elem_id("variations_delimiter"))
            with _layout(gr.Column):
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=MAX_MARGIN, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p: Any, put_at_start: Any, different_seeds: Any, prompt_type: Any, variations_delimiter: Any,
            margin_size: Any) -> processing.Processed:
        """Make every combination as one job, then put the labelled grid first."""
        margin = check_arguments(prompt_type, variations_delimiter, margin_size)
        processing.fix_seed(p)
        field = "prompt" if prompt_type == "positive" else "negative_prompt"
        prompt = getattr(p, field)
        original_prompt = prompt[0] if isinstance(prompt, list) else prompt
        parts = original_prompt.split("|")
        check_image_count(len(parts) - 1)
        all_prompts = matrix_prompts(parts, bool(put_at_start), DELIMITERS[variations_delimiter])

        save_grid = shared.opts.grid_save and not p.do_not_save_grid
        p.prompt_for_display = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        setattr(p, field, all_prompts)
        p.n_iter = -(-len(all_prompts) // p.batch_size)
        p.do_not_save_grid = True
        p.seed = [int(p.seed) + (i if different_seeds else 0) for i in range(len(all_prompts))]
        processed = processing.process_images(p)
        if not processed.images:
            return processed

        first = processed.images[0]
        grid = images.image_grid(processed.images, p.batch_size, rows=grid_rows(parts))
        grid = images.draw_prompt_matrix(grid, first.width, first.height, parts, margin)
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, processed.infotexts[0])
        processed.index_of_first_image = 1
        if save_grid:
            images.save_image(grid, p.outpath_grids, "prompt_matrix", seed=processed.seed, prompt=original_prompt,
                              extension=shared.opts.grid_format, info=processed.infotexts[0], grid=True, p=p)
        return processed
