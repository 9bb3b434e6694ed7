"""The Extras tab: A1111 v1.10's Single Image / Batch Process / Batch from Directory over the
postprocessing scripts (`modules.scripts_postprocessing`).

The scripts' controls come from the runner's `setup_ui()`; their values reach `run_postprocessing`
as one flat list, which the runner splits per script. Every image (and every extra image a script
makes) is saved into the Extras output folder (option ``outdir_samples``, else
``outdir_extras_samples``), or, for a directory batch, into the output directory given. Folders typed
into the page must stay inside the data folder unless the server runs with ``--allow-outside-data-dir``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from PIL import Image

from modules import errors, shared
from modules.folder_access import IMAGE_EXTENSIONS, _allow_outside, confined_folder, directory_images  # noqa: F401
from modules.ui_common import plaintext_to_html

log = logging.getLogger("serena.ui.extras")

MODES = ("Single Image", "Batch Process", "Batch from Directory")
"""The sub-tabs, by index: the handler's `mode` argument (A1111's ``extras_mode``)."""

@dataclass
class ExtrasTab:
    """The components of the Extras tab (the image input is what "Send to extras" fills)."""

    image: Any = None
    image_batch: Any = None
    input_dir: Any = None
    output_dir: Any = None
    show_results: Any = None
    mode: Any = None
    submit: Any = None
    gallery: Any = None
    html_info: Any = None
    html_log: Any = None
    script_inputs: list = field(default_factory=list)


built: ExtrasTab | None = None
"""The Extras tab of the page built last (PNG Info's "Send to extras" targets its image)."""


# --- folders ------------------------------------------------------------------------------------------
def default_output_folder() -> str:
    """Where Extras saves: option ``outdir_samples`` when set, else ``outdir_extras_samples``."""
    folder = shared.opts.outdir_samples or shared.opts.outdir_extras_samples
    return folder if os.path.isabs(folder) else os.path.join(shared.data_paths.data_path, folder)


# --- the operation ------------------------------------------------------------------------------------------
def _file_path(item: Any) -> str:
    """A Gradio upload (path string, FileData, or dict) as a path."""
    if isinstance(item, dict):
        return item.get("path") or item.get("name") or ""
    return str(getattr(item, "path", None) or getattr(item, "name", None) or item)


def _sources(mode: int, image: Any, image_batch: Any, input_dir: str) -> list[Any]:
    """What the chosen mode processes: the image itself (mode 0) or file paths (checked now, before
    any work).

    Raises:
        errors.InvalidParameter: no image, no uploads, or a bad input directory.
    """
    if mode == 0:
        if image is None:
            raise errors.InvalidParameter("Extras: choose an image first", field="image")
        return [image]
    if mode == 1:
        paths = [_file_path(x) for x in (image_batch or [])]
        if not paths:
            raise errors.InvalidParameter("Batch Process: upload one or more images first", field="image_batch")
        return paths
    return directory_images(input_dir)


def _opened(source: Any) -> tuple[Image.Image, str | None] | None:
    """``(image, source file name or None)``; None (and one log line) for a file that is no image."""
    if isinstance(source, Image.Image):
        return source, None
    try:
        with Image.open(source) as opened:
            opened.load()
            return opened.copy(), source
    except (OSError, ValueError) as e:  # the rest of the batch goes on
        log.warning("Extras: skipped %s: %s", source, e)
        return None


def _save(entry: Any, source: Image.Image, name: str | None, folder: str, used: dict[str, int]) -> str:
    """Save one processed image as A1111's Extras does; returns the file name written."""
    from modules import images, upscaling
    infotext = upscaling.extras_infotext(entry.info)
    suffix = entry.get_suffix(used)
    forced = None
    if name is not None and shared.opts.use_original_name_batch:
        forced = os.path.splitext(os.path.basename(name))[0] + suffix
    existing = {k: v for k, v in (source.info or {}).items() if isinstance(v, str)}
    fullfn, _ = images.save_image(entry.image, folder, "", extension=shared.opts.samples_format, info=infotext,
                                  short_filename=True, no_prompt=True, grid=False, pnginfo_section_name="extras",
                                  existing_info=existing, forced_filename=forced, suffix=suffix)
    if entry.caption:
        with open(os.path.splitext(fullfn)[0] + ".txt", "w", encoding="utf8") as f:
            f.write(entry.caption)
    return fullfn


def run_postprocessing(mode: int, image: Any, image_batch: Any, input_dir: str, output_dir: str,
                       show_results: bool, *script_args: Any) -> tuple[list[Image.Image], str, str]:
    """The Extras "Generate" button: run the postprocessing scripts on the mode's images and save them.

    Args:
        mode: 0 single image, 1 uploaded batch, 2 batch from directory (see `MODES`).
        image, image_batch, input_dir: the inputs of each mode.
        output_dir: directory mode's output folder (empty: the Extras output folder).
        show_results: directory mode: return the images to the gallery.
        script_args: the scripts' controls' values, flat (the runner's `setup_ui` order).

    Returns:
        ``(gallery images, html infotext of the last image, html log of the saved files)``.

    Raises:
        errors.InvalidParameter: missing input, a folder outside the data folder, no images, or
            a directory batch while the server runs with ``--hide-ui-dir-config``.
    """
    from modules import call_queue, scripts_postprocessing, upscaling
    mode = int(mode or 0)
    if mode == 2 and getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise errors.InvalidParameter("Batch from Directory is disabled (--hide-ui-dir-config)", field="input_dir")
    folder = default_output_folder()
    if mode == 2 and (output_dir or "").strip():
        folder = confined_folder(output_dir.strip(), "output directory")
    runner = scripts_postprocessing.current_runner()
    shown: list[Image.Image] = []
    saved: list[str] = []
    infotext = ""
    used: dict[str, int] = {}
    sources = _sources(mode, image, image_batch, input_dir)
    with call_queue.queued_job(call_queue.create_task_id("extras"), "extras") as ctx:
        state = ctx.state  # this job's own progress and cancellation
        state.job_count = len(sources)
        try:
            for source in sources:
                opened = _opened(source)
                if state.interrupted:
                    break
                if opened is None:
                    continue
                picture, name = opened
                entries = upscaling.postprocess_image(picture, list(script_args), runner)
                for entry in entries:
                    saved.append(_save(entry, picture, name, folder, used))
                    if mode != 2 or show_results:
                        shown.append(entry.image)
                infotext = upscaling.extras_infotext(entries[-1].info)
                state.nextjob()
        finally:
            interrupted = state.interrupted
            state.end()
    if not saved and not interrupted:
        raise errors.InvalidParameter("Extras: none of the files could be read as an image", field="image_batch")
    where = os.path.relpath(folder, shared.data_paths.data_path) if not _allow_outside() else folder
    log_line = f"Saved {len(saved)} image{'s' if len(saved) != 1 else ''} to {where}: " \
               + ", ".join(os.path.basename(f) for f in saved[:5]) + (" …" if len(saved) > 5 else "")
    return shown, plaintext_to_html(infotext), plaintext_to_html(log_line)


def run_from_page(mode: int, image: Any, image_batch: Any, input_dir: str, output_dir: str,
                  show_results: bool, *script_args: Any) -> tuple[list[Image.Image], str, str]:
    """`run_postprocessing` for the page: a user's mistake is a short message, not a traceback."""
    from modules import ui_handlers as h
    with h.user_errors():
        return run_postprocessing(mode, image, image_batch, input_dir, output_dir, show_results, *script_args)


# --- layout ---------------------------------------------------------------------------------------------
def create_extras_tab() -> ExtrasTab:
    """Single image, batch, batch from directory over the postprocessing scripts (A1111's elem_ids)."""
    global built
    from modules import scripts_postprocessing, ui_progress
    tab = ExtrasTab()
    tab.mode = gr.State(0)
    hide_dirs = bool(getattr(shared.cmd_opts, "hide_ui_dir_config", False))
    with gr.Row(equal_height=False, elem_id="extras_main_row"):
        with gr.Column(variant="compact"):
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab("Single Image", id="single_image", elem_id="extras_single_tab") as single:
                    tab.image = gr.Image(label="Source", type="pil", image_mode="RGBA", format="png", sources=["upload", "clipboard"],
                                         height=360, elem_id="extras_image")
                with gr.Tab("Batch Process", id="batch_process", elem_id="extras_batch_process_tab") as batch:
                    tab.image_batch = gr.Files(label="Batch Process", file_count="multiple", type="filepath",
                                               elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", id="batch_from_directory",
                            elem_id="extras_batch_directory_tab") as directory:
                    hint = "Disabled when launched with --hide-ui-dir-config." if hide_dirs else None
                    tab.input_dir = gr.Textbox(label="Input directory", interactive=not hide_dirs,
                                               placeholder=hint or "A folder inside the data folder.",
                                               elem_id="extras_batch_input_dir")
                    tab.output_dir = gr.Textbox(label="Output directory", interactive=not hide_dirs,
                                                placeholder=hint or "Leave blank to save images to the default "
                                                "path.", elem_id="extras_batch_output_dir")
                    tab.show_results = gr.Checkbox(True, label="Show result images",
                                                   elem_id="extras_show_extras_results")
            tab.submit = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            with gr.Column(elem_id="extras_scripts_container"):
                tab.script_inputs = scripts_postprocessing.current_runner().setup_ui()
        with gr.Column(variant="panel", elem_id="extras_results"):
            tab.gallery = gr.Gallery(label="Output", show_label=False, columns=4, type="pil", format="png",
                                     interactive=False, elem_id="extras_gallery")
            tab.html_info = gr.HTML(elem_id="html_info_extras", elem_classes="infotext")
            tab.html_log = gr.HTML(elem_id="html_log_extras")
    for index, sub_tab in enumerate((single, batch, directory)):
        sub_tab.select(lambda i=index: i, outputs=tab.mode, queue=False, show_progress="hidden")
    tab.image.change(_image_changed, queue=False, show_progress="hidden")
    tab.submit.click(run_from_page,
                     inputs=[tab.mode, tab.image, tab.image_batch, tab.input_dir, tab.output_dir, tab.show_results,
                             *tab.script_inputs],
                     outputs=[tab.gallery, tab.html_info, tab.html_log],
                     concurrency_id="generate", concurrency_limit=ui_progress.GENERATION_CONCURRENCY)
    built = tab
    return tab


def _image_changed() -> None:
    """A new source image: the scripts drop what they cached for the previous one."""
    from modules import scripts_postprocessing
    scripts_postprocessing.current_runner().image_changed()
