"""A1111's ``modules.gfpgan_model`` names, for extensions that import them; the work is in
`modules.face_restoration` (GFPGAN weights from ``models/GFPGAN``, loaded through spandrel)."""
from __future__ import annotations

import numpy as np

from modules import face_restoration

model_dir = "GFPGAN"


def gfpgan_fix_faces(np_image: np.ndarray) -> np.ndarray:
    """Every face of an RGB uint8 image restored with GFPGAN (A1111's helper of the same name)."""
    return face_restoration.restore(np_image, "GFPGAN")


def setup_model(dirname: str | None = None) -> None:
    """A1111 registers the restorer here; Serena lists it from `face_restoration.face_restorers`."""
