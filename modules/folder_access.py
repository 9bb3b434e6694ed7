"""Folders typed into the page: confined to the data folder, and the images they hold.

Extras' "Batch from Directory" and img2img's "Batch" tab both read images from, and write images
to, folders a user names. A client may only name folders inside the data folder, unless the server
runs with ``--allow-outside-data-dir``; this module is the one place that rule is applied to such
folders (option folders are checked by `options.check_location_option`).
"""
from __future__ import annotations

import os
import re

from modules import errors, shared

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")
"""File name endings taken as images (lower case)."""


def _allow_outside() -> bool:
    """Whether the server was started with ``--allow-outside-data-dir``."""
    return bool(getattr(shared.cmd_opts, "allow_outside_data_dir", False))


def confined_folder(path: str, label: str, field: str | None = None) -> str:
    """``path`` (relative: under the data folder) as an absolute path.

    Args:
        path: what the user typed.
        label: how messages name the folder (e.g. ``output directory``).
        field: the error's field; ``label`` when None.

    Raises:
        errors.InvalidParameter: the folder lies outside the data folder and the server was not
            started with ``--allow-outside-data-dir``.
    """
    base = os.path.abspath(shared.data_paths.data_path)
    target = os.path.abspath(path if os.path.isabs(path) else os.path.join(base, path))
    if not _allow_outside() and os.path.commonpath([base, target]) != base:
        raise errors.InvalidParameter(
            f"{label} {path!r} is outside the data folder (start the server with --allow-outside-data-dir "
            "to allow other folders)", field=field or label)
    return target


def _natural_key(name: str) -> list:
    """Sort key putting ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_files(folder: str, recursive: bool = False) -> list[str]:
    """Image files in ``folder``: sorted by name, or walked with subfolders in natural order."""
    if not recursive:
        return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                      if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n)))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort(key=_natural_key)
        found += [os.path.join(root, n) for n in sorted(files, key=_natural_key)
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def directory_images(input_dir: str, label: str = "input directory", field: str = "input_dir", *,
                     missing: str = "Batch from Directory: enter an input directory",
                     recursive: bool = False) -> list[str]:
    """The image files inside ``input_dir`` (confined), sorted by name.

    Args:
        input_dir: what the user typed.
        label: how messages name the folder (e.g. ``img2img batch: input directory``).
        field: the errors' field (the page's control).
        missing: the message when no folder was entered.
        recursive: include subfolders (walked in natural order), as A1111's img2img batch does.

    Raises:
        errors.InvalidParameter: empty name, outside the data folder, not a folder, or no images.
    """
    if not (input_dir or "").strip():
        raise errors.InvalidParameter(missing, field=field)
    folder = confined_folder(input_dir.strip(), label, field)
    if not os.path.isdir(folder):
        raise errors.InvalidParameter(f"{label} {input_dir!r} does not exist", field=field)
    found = image_files(folder, recursive)
    if not found:
        raise errors.InvalidParameter(f"{label} {input_dir!r} holds no images", field=field)
    return found
