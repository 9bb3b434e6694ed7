"""A1111's ``modules.codeformer_model`` names, for extensions that import them; the work is in
`modules.face_restoration` (CodeFormer weights from ``models/Codeformer``, loaded through spandrel
with ``spandrel_extra_arches``)."""
from __future__ import annotations

import numpy as np

from modules import face_restoration

model_dir = "Codeformer"


def restore(np_image: np.ndarray, w: float | None = None) -> np.ndarray:
    """Every face of an RGB uint8 image restored with CodeFormer (``w``: option ``code_former_weight``)."""
    from modules import shared
    weight = shared.opts.code_former_weight if w is None else w
    return face_restoration.restore(np_image, "CodeFormer", float(weight))


def setup_model(dirname: str | None = None) -> None:
    """A1111 registers the restorer here; Serena lists it from `face_restoration.face_restorers`."""
