"""`./webui.sh generate`: one txt2img or img2img run in-process, from a request file and/or flags.

The request holds the same fields as a `/sdapi/v1/txt2img` (or, with `init_images`, `img2img`)
request and goes through the same validation and resolution as the API (`modules.runtime.jobs`),
hence through `process_images` and the runner. `init_images` and `mask` may be file paths.
Images are saved, with their infotext, to the outputs folders or to `--outdir`.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
from typing import Any

from pydantic import ValidationError

from modules import errors


def _request_fields() -> dict[str, Any]:
    """Every request field of txt2img and img2img: name → pydantic FieldInfo."""
    from modules.api import models
    fields = dict(models.StableDiffusionTxt2ImgProcessingAPI.model_fields)
    fields.update(models.StableDiffusionImg2ImgProcessingAPI.model_fields)
    return fields


def build_parser() -> argparse.ArgumentParser:
    """`--request`, `--outdir`, and one `--field-name` flag per request field."""
    parser = argparse.ArgumentParser(prog="webui.sh generate", description=__doc__.splitlines()[0],
                                     epilog="Other flags (e.g. --ckpt, --data-dir, --use-cpu) are webui flags.")
    parser.add_argument("--request", help="JSON file with /sdapi/v1/txt2img or img2img fields")
    parser.add_argument("--outdir", help="save images here instead of the outputs folders")
    group = parser.add_argument_group("request fields (JSON for lists and objects)")
    for name in _request_fields():
        group.add_argument("--" + name.replace("_", "-"), dest="field_" + name, metavar="VALUE", default=None)
    return parser


def _flag_value(raw: str, annotation: Any) -> Any:
    """Flags arrive as text: lists and objects are JSON; pydantic converts numbers and booleans."""
    text = str(annotation)
    if ("list" in text or "dict" in text) and raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise errors.InvalidParameter(f"not valid JSON: {raw!r} ({e})") from e
    return raw


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def _file_to_base64(value: str, base_dir: str, field: str) -> str:
    """A path (relative to the request file, then to the current folder) becomes base64.

    Anything else is left to the API's decoder (base64, with or without a `data:` prefix).
    """
    if len(value) >= 4096 or value.startswith("data:"):
        return value
    for path in (value, os.path.join(base_dir, value)) if not os.path.isabs(value) else (value,):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return base64.b64encode(f.read()).decode("ascii")
    if value.lower().endswith(IMAGE_SUFFIXES):
        raise errors.InvalidImage(f"{field}: no such file {value!r} (relative paths are taken from {base_dir} "
                                  f"or the current folder)", field=field)
    return value


def load_request(ns: argparse.Namespace) -> dict[str, Any]:
    """Merge the request file and the field flags (flags win); resolve image paths."""
    request: dict[str, Any] = {}
    base_dir = os.getcwd()
    if ns.request:
        with open(ns.request, encoding="utf8") as f:
            request = json.load(f)
        if not isinstance(request, dict):
            raise errors.InvalidParameter(f"{ns.request} must hold a JSON object", field="request")
        base_dir = os.path.dirname(os.path.abspath(ns.request))
    fields = _request_fields()
    for name, info in fields.items():
        raw = getattr(ns, "field_" + name)
        if raw is not None:
            request[name] = _flag_value(raw, info.annotation)
    return resolve_image_paths(request, base_dir)


def resolve_image_paths(request: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """Replace file paths in `init_images` / `mask` by the files' base64 content."""
    out = dict(request)
    if isinstance(out.get("init_images"), list):
        out["init_images"] = [_file_to_base64(x, base_dir, f"init_images[{i}]") if isinstance(x, str) else x
                              for i, x in enumerate(out["init_images"])]
    if isinstance(out.get("mask"), str):
        out["mask"] = _file_to_base64(out["mask"], base_dir, "mask")
    return out


class ProgressBar:
    """A console progress bar fed by polling `shared.state` (processing is not touched)."""

    def __init__(self, state) -> None:
        self.state = state
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "ProgressBar":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _loop(self) -> None:
        from tqdm import tqdm
        bar, key = None, None
        while not self.done.wait(0.1):
            st = self.state
            if st.sampling_steps <= 0:
                continue
            if (st.job_no, st.sampling_steps) != key:
                if bar is not None:
                    bar.close()
                key = (st.job_no, st.sampling_steps)
                label = f"job {st.job_no + 1}/{max(st.job_count, 1)}"
                bar = tqdm(total=st.sampling_steps, desc=label, unit="step", file=sys.stderr)
            bar.update(max(0, min(st.sampling_step, bar.total) - bar.n))
        if bar is not None:
            bar.update(bar.total - bar.n)
            bar.close()


def run(request: dict[str, Any], outdir: str | None = None):
    """Validate `request` as the API does, run it, and return the `Processed` (images saved).

    With `outdir`, files go straight into that folder (no date sub-folder). The paths written are
    in the returned object's `saved_files`.
    """
    from modules import script_callbacks
    from modules.api import models
    from modules.runtime import jobs as generation
    is_img2img = bool(request.get("init_images"))
    model = models.StableDiffusionImg2ImgProcessingAPI if is_img2img else models.StableDiffusionTxt2ImgProcessingAPI
    fields = {**request, "save_images": True}
    if outdir:
        fields["override_settings"] = {"save_to_dirs": False, "grid_save_to_dirs": False,
                                       **(request.get("override_settings") or {})}
    req = model.model_validate(fields)
    run_fn = generation.run_img2img if is_img2img else generation.run_txt2img
    saved: list[str] = []

    def record(params) -> None:
        saved.append(params.filename)

    script_callbacks.on_image_saved(record, name="cli")
    try:
        processed = run_fn(req, outdir=outdir)
    finally:
        script_callbacks.remove_callbacks_for_function(record)
    processed.saved_files = saved
    return processed


def main(argv: list[str]) -> int:
    """Entry point of `./webui.sh generate …`; returns the process exit code."""
    import webui
    from modules import cmd_args, launch_utils, shared
    parser = build_parser()
    ns, webui_flags = parser.parse_known_args(argv)
    try:
        flags = cmd_args.parse(webui_flags)
        launch_utils.setup_logging(getattr(flags, "loglevel", None))
        webui.initialize(flags)
        request = load_request(ns)
        with ProgressBar(shared.state):
            processed = run(request, outdir=ns.outdir)
    except ValidationError as e:
        for err in e.errors():
            print(f"error: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    except (errors.SerenaError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in processed.saved_files:
        print(path)
    print(processed.infotexts[0] if processed.infotexts else "", file=sys.stderr)
    return 0
