"""Demo face-restoration files shared by the face tests: written once into a temporary folder
(seconds: the detector and GFPGAN have their real sizes) and linked into a models folder."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

from modules import demo_faces, face_restoration

LAYOUT_VERSION = 1


def demo_models() -> str:
    """A folder with ``GFPGAN/`` (detector, GFPGAN) and ``Codeformer/`` demo files, made once."""
    root = os.path.join(tempfile.gettempdir(), f"serena-demo-faces-{demo_faces.SEED}-v{LAYOUT_VERSION}")
    writers = ((demo_faces.write_retinaface, "GFPGAN", demo_faces.RETINAFACE_FILE),
               (demo_faces.write_gfpgan, "GFPGAN", demo_faces.GFPGAN_FILE),
               (demo_faces.write_parsenet, "GFPGAN", demo_faces.PARSENET_FILE),
               (demo_faces.write_codeformer, "Codeformer", demo_faces.CODEFORMER_FILE))
    for write, folder, name in writers:
        if not os.path.isfile(os.path.join(root, folder, name)):
            write(os.path.join(root, folder))
    return root


@contextlib.contextmanager
def linked(models_path: str, files: tuple[tuple[str, str], ...]) -> Iterator[list[str]]:
    """The demo ``(folder, file)`` pairs symlinked into ``models_path`` for the block, removed after."""
    source, made = demo_models(), []
    try:
        for folder, name in files:
            os.makedirs(os.path.join(models_path, folder), exist_ok=True)
            target = os.path.join(models_path, folder, name)
            os.symlink(os.path.join(source, folder, name), target)
            made.append(target)
        yield made
    finally:
        for path in made:
            os.remove(path)
        face_restoration.clear_cache()


DETECTOR = ("GFPGAN", demo_faces.RETINAFACE_FILE)
GFPGAN = ("GFPGAN", demo_faces.GFPGAN_FILE)
CODEFORMER = ("Codeformer", demo_faces.CODEFORMER_FILE)
PARSENET = ("GFPGAN", demo_faces.PARSENET_FILE)
