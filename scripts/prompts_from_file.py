"""Built-in script "Prompts from file or textbox" (A1111's title, arguments, line syntax and outputs).

Each non-empty line of the text is one job. A plain line is that job's prompt. A line that starts
with `--` sets fields of the job, with A1111's options and types, e.g.
`--prompt "a red fox" --negative_prompt blurry --steps 20 --seed 5 --sampler_name "Euler a"`;
`--prompt` / `--negative_prompt` take every word up to the next `--` option. An unknown option or
a value of the wrong type refuses the request, naming the line and the option (A1111 logs the
error and uses the whole line as a prompt instead).

Positional `script_args`, as API clients send them: checkbox_iterate (bool: the seed grows by
batch_size x n_iter after each line), checkbox_iterate_batch (bool: one random seed for every
line), prompt_position ("start" | "end": where a line's prompt goes relative to the request's own
prompt), prompt_txt (the lines).
"""
from __future__ import annotations

import copy
import os
import random
import shlex
from typing import Any, Callable

import gradio as gr

from modules import errors, processing, scripts, shared

PROMPT_POSITIONS = ("start", "end")


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    """A1111's rule: "true" is True, anything else False."""
    return value == "true"


def _text(value: str) -> str:
    return value


def _checkpoint(value: str) -> str:
    """A checkpoint title, hash or name → its registered name."""
    from modules import sd_models
    info = sd_models.get_closet_checkpoint_match(value)
    if info is None:
        raise ValueError(f"unknown checkpoint {value!r}")
    return info.name


def _sampler(value: str) -> str:
    """A sampler name or alias (any case) → its display name."""
    from modules import sd_samplers
    name = sd_samplers.samplers_map.get(value.lower())
    if name is None:
        raise ValueError(f"unknown sampler {value!r}; known: {', '.join(x.name for x in sd_samplers.all_samplers)}")
    return name


def _folder(value: str) -> str:
    """An output folder inside the data folder (any folder with --allow-outside-data-dir)."""
    base = os.path.abspath(shared.data_paths.data_path)
    target = os.path.abspath(value if os.path.isabs(value) else os.path.join(base, value))
    if os.path.commonpath([base, target]) != base and not getattr(shared.cmd_opts, "allow_outside_data_dir", False):
        raise ValueError(f"{value!r} is outside the data folder (start the server with --allow-outside-data-dir)")
    return value


def _styles(value: str) -> list[str]:
    """One style name (A1111 stores the bare string, which the prompt styler cannot use)."""
    return [value]


OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": _checkpoint,
    "outpath_samples": _folder,
    "outpath_grids": _folder,
    "prompt_for_display": _text,
    "prompt": _text,
    "negative_prompt": _text,
    "styles": _styles,
    "seed": _int,
    "subseed_strength": _float,
    "subseed": _int,
    "seed_resize_from_h": _int,
    "seed_resize_from_w": _int,
    "sampler_index": _int,
    "sampler_name": _sampler,
    "batch_size": _int,
    "n_iter": _int,
    "steps": _int,
    "cfg_scale": _float,
    "width": _int,
    "height": _int,
    "restore_faces": _bool,
    "tiling": _bool,
    "do_not_save_samples": _bool,
    "do_not_save_grid": _bool,
}
"""A1111's `--` options of a line and how each value is read."""

MULTI_WORD = ("prompt", "negative_prompt")


def parse_options(line: str) -> dict[str, Any]:
    """The fields one `--option value ...` line sets.

    Raises:
        ValueError: bad quoting, a word that is not an option, an option without a value, an
            unknown option, or a value its option cannot read.
    """
    words = shlex.split(line)
    fields: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        option = words[pos]
        if not option.startswith("--"):
            raise ValueError(f"expected an option starting with '--', got {option!r}")
        if pos + 1 >= len(words):
            raise ValueError(f"option {option} has no value")
        name = option[2:]
        if name in MULTI_WORD:
            end = pos + 2
            while end < len(words) and not words[end].startswith("--"):
                end += 1
            fields[name] = " ".join(words[pos + 1:end])
            pos = end
            continue
        read = OPTIONS.get(name)
        if read is None:
            raise ValueError(f"unknown option {option}; known: {', '.join('--' + k for k in OPTIONS)}")
        try:
            fields[name] = read(words[pos + 1])
        except ValueError as e:
            raise ValueError(f"option {option}: {e}") from e
        pos += 2
    return fields


def parse_jobs(text: str) -> list[dict[str, Any]]:
    """One job (the fields it sets) per non-empty line of `text`.

    Raises:
        errors.InvalidParameter: a `--` line that cannot be read, naming the line.
    """
    jobs = []
    lines = [x for x in (line.strip() for line in text.splitlines()) if x]
    for number, line in enumerate(lines, start=1):
        if not line.startswith("--"):
            jobs.append({"prompt": line})
            continue
        try:
            jobs.append(parse_options(line))
        except ValueError as e:
            raise errors.InvalidParameter(f"Prompts from file: line {number} ({line!r}): {e}",
                                          field="script_args") from e
    return jobs


def check_arguments(prompt_position: Any, prompt_txt: Any) -> None:
    if prompt_position not in PROMPT_POSITIONS:
        raise errors.InvalidParameter(
            f"Prompts from file: prompt_position must be one of {list(PROMPT_POSITIONS)}, got {prompt_position!r}",
            field="script_args")
    if not isinstance(prompt_txt, str):
        raise errors.InvalidParameter(f"Prompts from file: prompt_txt must be text, got {prompt_txt!r:.100}",
                                      field="script_args")


def check_image_count(p: Any, jobs: list[dict[str, Any]]) -> None:
    """All lines together may make at most `api_max_batch_images` images (as one request's batch)."""
    total = sum(int(job.get("batch_size", p.batch_size)) * int(job.get("n_iter", p.n_iter)) for job in jobs)
    limit = int(shared.opts.api_max_batch_images)
    if total > limit:
        raise errors.InvalidParameter(
            f"Prompts from file: {len(jobs)} lines make {total} images; api_max_batch_images={limit}",
            field="script_args")


def joined(line_text: str, own_text: str, position: str) -> str:
    """A line's prompt placed at the start or end of the request's own prompt (space-separated)."""
    return f"{line_text} {own_text}" if position == "start" else f"{own_text} {line_text}"


def job_processing(p: Any, fields: dict[str, Any], prompt_position: str) -> Any:
    """A copy of `p` with one line's fields set; the dictionaries a job writes to are its own."""
    job = copy.copy(p)
    job.override_settings = dict(p.override_settings or {})
    job.extra_generation_params = dict(p.extra_generation_params or {})
    job.comments = dict(p.comments or {})
    for name, value in fields.items():
        if name == "sd_model":
            job.override_settings["sd_model_checkpoint"] = value
        else:
            setattr(job, name, value)
    for name in MULTI_WORD:
        if fields.get(name) and getattr(p, name):
            setattr(job, name, joined(fields[name], getattr(p, name), prompt_position))
    return job


def _load_prompt_file(file: bytes | None) -> tuple[None, Any]:
    """An uploaded file's lines into the textbox (the file input is cleared)."""
    if file is None:
        return None, gr.update()
    return None, "\n".join(x.strip() for x in file.decode("utf8", errors="ignore").split("\n"))


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list:
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(list(PROMPT_POSITIONS), label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", value="", lines=2, elem_id=self.elem_id("prompt_txt"))
        file = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        from gradio.context import Context
        if Context.root_block is not None:  # events exist only in a Blocks being built
            file.upload(fn=_load_prompt_file, inputs=[file], outputs=[file, prompt_txt], show_progress=False)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p: Any, checkbox_iterate: Any, checkbox_iterate_batch: Any, prompt_position: Any,
            prompt_txt: Any) -> processing.Processed:
        """One `process_images` per line; the images and infotexts of all lines, in order."""
        check_arguments(prompt_position, prompt_txt)
        jobs = parse_jobs(prompt_txt)
        check_image_count(p, jobs)
        p.do_not_save_grid = True
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))
        state = shared.state
        state.job_count = sum(int(job.get("n_iter", p.n_iter)) for job in jobs)

        images, all_prompts, infotexts = [], [], []
        for fields in jobs:
            state.job = f"{state.job_no + 1} out of {state.job_count}"
            processed = processing.process_images(job_processing(p, fields, prompt_position))
            images += processed.images
            all_prompts += processed.all_prompts
            infotexts += processed.infotexts
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
            if state.interrupted or state.stopping_generation:
                break
        return processing.Processed(p, images, p.seed, infotexts[0] if infotexts else "", all_prompts=all_prompts,
                                    infotexts=infotexts)
