"""Built-in script "Loopback" (img2img only; A1111's title, arguments and outputs).

Each loop's output is the next loop's init image, with the seed one higher and the denoising
strength moving from the request's value to `final_denoising_strength` along the chosen curve.
With a batch count (n_iter) above 1 every batch starts again from the request's init image and
only each batch's last image is kept. The images come back after a one-row grid of them; each
image carries its own infotext (its seed and denoising strength), the grid the first loop's.

Positional `script_args`, as API clients send them: loops (1..32, 4), final_denoising_strength
(0..1, 0.5), denoising_curve ("Aggressive" | "Linear" | "Lazy"), append_interrogation ("None";
"CLIP" and "DeepBooru" need interrogation models Serena does not have and are refused).
"""
from __future__ import annotations

import math
from typing import Any

import gradio as gr

from modules import errors, images, processing, scripts, shared

CURVES = ("Aggressive", "Linear", "Lazy")
INTERROGATORS = ("None", "CLIP", "DeepBooru")
MAX_LOOPS = 32


def curve_progress(curve: str, progress: float) -> float:
    """How far along (0..1) the strength is at `progress` (0..1) of the loops.

    Aggressive moves fast first (a sine quarter), Lazy slow first (one minus a cosine quarter).
    """
    if curve == "Aggressive":
        return math.sin(progress * math.pi * 0.5)
    if curve == "Lazy":
        return 1 - math.cos(progress * math.pi * 0.5)
    return progress


def denoising_strengths(initial: float, final: float, loops: int, curve: str) -> list[float]:
    """The denoising strength of each loop: `initial` first, `final` last (one loop: `initial`)."""
    if loops == 1:
        return [initial]
    return [initial + (final - initial) * curve_progress(curve, i / (loops - 1)) for i in range(loops)]


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == int(value)


def check_arguments(p: Any, loops: Any, final_denoising_strength: Any, denoising_curve: Any,
                    append_interrogation: Any) -> None:
    """Refuse arguments outside the UI's ranges and choices, and interrogation Serena cannot do."""
    def refuse(message: str) -> None:
        raise errors.InvalidParameter(f"Loopback: {message}", field="script_args")

    if not _whole(loops) or not 1 <= loops <= MAX_LOOPS:
        refuse(f"loops must be a whole number in 1..{MAX_LOOPS}, got {loops!r}")
    limit = int(shared.opts.api_max_batch_images)
    if loops * p.n_iter > limit:
        refuse(f"loops x n_iter = {int(loops)}x{p.n_iter} exceeds api_max_batch_images={limit}")
    if isinstance(final_denoising_strength, bool) or not isinstance(final_denoising_strength, (int, float)) \
            or not 0 <= final_denoising_strength <= 1:
        refuse(f"final_denoising_strength must be a number in 0..1, got {final_denoising_strength!r}")
    if denoising_curve not in CURVES:
        refuse(f"denoising_curve must be one of {list(CURVES)}, got {denoising_curve!r}")
    if append_interrogation not in INTERROGATORS:
        refuse(f"append_interrogation must be one of {list(INTERROGATORS)}, got {append_interrogation!r}")
    if append_interrogation != "None":
        refuse(f"append_interrogation {append_interrogation!r} needs an interrogation model (CLIP or DeepBooru), "
               "which Serena does not have; use 'None'")
    if not getattr(p, "init_images", None):
        refuse("needs an init image")
    if isinstance(p.denoising_strength, bool) or not isinstance(p.denoising_strength, (int, float)):
        refuse(f"needs the request's denoising_strength as the first loop's, got {p.denoising_strength!r}")


class Script(scripts.Script):
    def title(self) -> str:
        return "Loopback"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        loops = gr.Slider(minimum=1, maximum=MAX_LOOPS, step=1, label="Loops", value=4, elem_id=self.elem_id("loops"))
        final_denoising_strength = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength",
                                             value=0.5, elem_id=self.elem_id("final_denoising_strength"))
        denoising_curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear")
        append_interrogation = gr.Dropdown(label="Append interrogated prompt at each iteration",
                                           choices=list(INTERROGATORS), value="None")
        return [loops, final_denoising_strength, denoising_curve, append_interrogation]

    def run(self, p: Any, loops: Any, final_denoising_strength: Any, denoising_curve: Any,
            append_interrogation: Any) -> processing.Processed:
        """`n_iter` chains of `loops` jobs; the grid of the kept images first."""
        check_arguments(p, loops, final_denoising_strength, denoising_curve, append_interrogation)
        loops = int(loops)
        processing.fix_seed(p)
        batch_count = p.n_iter
        save_grid = shared.opts.grid_save and not p.do_not_save_grid
        p.extra_generation_params.update({"Final denoising strength": final_denoising_strength,
                                          "Denoising curve": denoising_curve})
        p.batch_size, p.n_iter, p.do_not_save_grid = 1, 1, True
        strengths = denoising_strengths(p.denoising_strength, final_denoising_strength, loops, denoising_curve)
        original_init_images, original_fill = p.init_images, p.inpainting_fill
        color_target = processing.setup_color_correction(p.init_images[0])
        state = shared.state
        state.job_count = loops * batch_count

        kept: list = []  # (image, infotext) of every image returned after the grid
        first: processing.Processed | None = None
        for n in range(batch_count):
            p.init_images, p.inpainting_fill = original_init_images, original_fill
            made, chain_first = self.run_chain(p, strengths, color_target, f"batch {n + 1}/{batch_count}")
            first = first or chain_first
            if batch_count == 1:
                kept += made
            elif made and not (state.skipped or state.interrupted):
                kept.append(made[-1])
            if state.interrupted or state.stopping_generation:
                break
        p.inpainting_fill = original_fill
        return self.result(p, kept, first, save_grid)

    @staticmethod
    def run_chain(p: Any, strengths: list[float], color_target: Any,
                  label: str) -> tuple[list, processing.Processed | None]:
        """One batch: a job per loop, each from the previous output with the next seed and strength.

        Returns (image, infotext) of every finished loop and the first loop's `Processed`; stops
        early when the job is interrupted, stopped or skipped.
        """
        state = shared.state
        made: list = []
        first = None
        for i, strength in enumerate(strengths):
            p.denoising_strength = strength
            if shared.opts.img2img_color_correction:
                p.color_corrections = [color_target]  # match the request's init image, not the last loop's
            state.job = f"Iteration {i + 1}/{len(strengths)}, {label}"
            processed = processing.process_images(p)
            if state.interrupted or state.stopping_generation or not processed.images:
                break
            first = first or processed
            p.seed = processed.seed + 1
            if state.skipped:
                break
            index = processed.index_of_first_image
            made.append((processed.images[index], processed.infotexts[index]))
            p.init_images = [processed.images[index]]
            p.inpainting_fill = 1  # later loops keep the masked area's content ("original")
        return made, first

    @staticmethod
    def result(p: Any, kept: list, first: processing.Processed | None, save_grid: bool) -> processing.Processed:
        """The kept images and their infotexts, after their one-row grid when there are several."""
        seed = first.seed if first is not None else p.seed
        info = first.info if first is not None else ""
        out_images, infotexts = [image for image, _ in kept], [text for _, text in kept]
        if len(kept) > 1:
            grid = images.image_grid(out_images, rows=1)
            if save_grid:
                images.save_image(grid, p.outpath_grids, "grid", seed, p.prompt, shared.opts.grid_format, info=info,
                                  short_filename=not shared.opts.grid_extended_filename, grid=True, p=p)
            if shared.opts.return_grid:
                out_images.insert(0, grid)
                infotexts.insert(0, info)
        return processing.Processed(p, out_images, seed, info, infotexts=infotexts or None,
                                    index_of_first_image=len(out_images) - len(kept))
