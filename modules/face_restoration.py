"""Face restoration (GFPGAN, CodeFormer) as A1111 v1.10 does it, without facexlib or torchvision.

A1111 restores faces with facexlib's ``FaceRestoreHelper`` (``use_parse=True``): detect faces with
RetinaFace on the image scaled up so its short side is 640, drop faces whose "eye distance" (see
:func:`eye_distance`) is under 5 pixels, align each to the 512×512 FFHQ template by its five
landmarks (a similarity transform, ``cv2.estimateAffinePartial2D`` with LMEDS; grey
``(135, 133, 132)`` outside the image), run the restorer on the crop (RGB in ``[-1, 1]``), warp the
result back and blend it in with a soft mask.

Serena does the same steps here (`modules.face_detection` is the detector). The paste-back mask
is A1111's ParseNet face-parsing mask (`modules.face_parsing`) when ``parsing_parsenet.pth`` is in
``models/GFPGAN``; without that file (A1111 would download it) it is facexlib's ``use_parse=False``
mask instead — the warped face square, eroded by 2 px and then by ``2 * w_edge``, Gaussian-blurred
(``w_edge = sqrt(area) // 20``) — so the parser file is optional.

Weight files are never downloaded; they are looked up in A1111's folders:

- ``models/GFPGAN``: the GFPGAN model (``GFPGANv1.4.pth`` first, else any ``.pth``/``.safetensors``
  with "gfpgan" in its name, else any other model file there) and the detector
  ``detection_Resnet50_Final.pth`` (A1111 keeps facexlib's weights in this folder);
- ``models/Codeformer``: ``codeformer-v0.1.0.pth`` first, else any model file.

A missing file is a `FaceRestorerUnavailable` naming the file and the folder it goes in. Models are
read by `modules.safe_load` (no pickled code runs), detected by spandrel (`modules.spandrel_loader`;
CodeFormer comes from ``spandrel_extra_arches``) and cached by path, modification time and size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
import torch

from modules import errors
from modules.fileio import FileModelCache

FACE_SIZE = 512
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
BORDER_GREY = (135, 133, 132)
DETECTION_SHORT_SIDE = 640
EYE_DISTANCE_MIN = 5.0
DETECTOR_FOLDER = "GFPGAN"
DETECTOR_FILE = "detection_Resnet50_Final.pth"
MODEL_EXTENSIONS = (".pth", ".safetensors")

RestoreFace = Callable[[torch.Tensor], torch.Tensor]


class FaceRestorerUnavailable(errors.NotFound):
    """A face restorer's weight file (or the face detector's) is not in its folder."""


# --- geometry (pure) ------------------------------------------------------------------------------
def detection_scale(height: int, width: int, short_side: int = DETECTION_SHORT_SIDE) -> float:
    """How much the image is enlarged for detection: short side up to ``short_side``, never down."""
    return max(1.0, short_side / min(height, width))


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The 2×3 similarity transform taking five face landmarks onto the 512×512 FFHQ template."""
    matrix = cv2.estimateAffinePartial2D(np.asarray(landmarks, dtype=np.float64), FFHQ_TEMPLATE_512,
                                         method=cv2.LMEDS)[0]
    if matrix is None:
        raise ValueError(f"no similarity transform fits the landmarks {np.asarray(landmarks).tolist()}")
    return matrix


def crop_face(bgr: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512×512 face (grey where the transform reaches outside the image)."""
    return cv2.warpAffine(bgr, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_GREY)


def soft_mask(inverse: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hard, soft)`` masks of the face square warped back: eroded 2 px, and the blurred inner part."""
    square = np.ones((FACE_SIZE, FACE_SIZE), dtype=np.float32)
    hard = cv2.erode(cv2.warpAffine(square, inverse, (width, height)), np.ones((2, 2), np.uint8))
    edge = int(float(hard.sum()) ** 0.5) // 20
    inner = cv2.erode(hard, np.ones((edge * 2, edge * 2), np.uint8)) if edge > 0 else hard
    return hard, cv2.GaussianBlur(inner, (edge * 2 + 1, edge * 2 + 1), 0)


def paste_face(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray,
               parsing: np.ndarray | None = None) -> np.ndarray:
    """``canvas`` (float, BGR) with the restored 512×512 ``face`` blended back where it was cropped.

    Args:
        parsing: the face's ``[512, 512]`` soft parsing mask (`face_parsing.parse_mask`), or None
            for the square mask of :func:`soft_mask`.
    """
    height, width = canvas.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    warped = cv2.warpAffine(face, inverse, (width, height)).astype(np.float32)
    if parsing is not None:
        soft = cv2.warpAffine(parsing, inverse, (width, height), flags=cv2.INTER_AREA)[:, :, None]
        return soft * warped + (1 - soft) * canvas
    hard, soft = soft_mask(inverse, height, width)
    soft = soft[:, :, None]
    return soft * (hard[:, :, None] * warped) + (1 - soft) * canvas


def face_to_tensor(face_bgr: np.ndarray) -> torch.Tensor:
    """An aligned BGR uint8 face as the restorers take it: ``[1, 3, 512, 512]`` RGB in ``[-1, 1]``."""
    rgb = (np.ascontiguousarray(face_bgr[:, :, ::-1]) / 255.0).astype(np.float32)  # divided in float64, as A1111
    return (torch.from_numpy(rgb.transpose(2, 0, 1))[None] - 0.5) / 0.5


def tensor_to_face(tensor: torch.Tensor) -> np.ndarray:
    """The inverse of :func:`face_to_tensor` (clamped; truncated to 8 bits as A1111 does)."""
    rgb = ((tensor[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy().transpose(1, 2, 0)
    return np.ascontiguousarray((rgb[:, :, ::-1] * 255.0).astype(np.uint8))


# --- the helper pipeline --------------------------------------------------------------------------
def find_landmarks(detector: Any, bgr: np.ndarray) -> list[np.ndarray]:
    """Five landmarks ``[5, 2]`` (original pixels) of each face found, best score first."""
    from modules import face_detection
    height, width = bgr.shape[:2]
    scale = detection_scale(height, width)
    image = bgr if scale == 1 else cv2.resize(bgr, (int(width * scale), int(height * scale)),
                                               interpolation=cv2.INTER_LINEAR)
    found = []
    for face in face_detection.detect(detector, image):
        points = face.landmarks / scale
        if eye_distance(points) >= EYE_DISTANCE_MIN:
            found.append(points)
    return found


def eye_distance(points: np.ndarray) -> float:
    """The "eye distance" facexlib 0.3 filters small and side faces by.

    Its formula reads the flat landmark row one place off: the norm of (left-eye y − right-eye y,
    right-eye x − nose x), about half the true eye distance on a frontal face. Kept, so the same
    faces are skipped as in A1111.
    """
    return float(np.hypot(points[0, 1] - points[1, 1], points[1, 0] - points[2, 0]))


def restore_with_face_helper(np_image: np.ndarray, detector: Any, restore_face: RestoreFace,
                             parser: Any = None) -> np.ndarray:
    """A1111's ``restore_with_face_helper``: every face of an RGB uint8 image restored and pasted back.

    Args:
        np_image: ``[H, W, 3]`` RGB uint8.
        detector: a `modules.face_detection.RetinaFace`.
        restore_face: takes and returns a ``[1, 3, 512, 512]`` RGB tensor in ``[-1, 1]``.
        parser: a `modules.face_parsing.ParseNet` for the paste mask (A1111's ``use_parse=True``),
            or None for the square mask.
    """
    from modules import face_parsing
    bgr = np.ascontiguousarray(np_image[:, :, ::-1])
    faces = find_landmarks(detector, bgr)
    if not faces:
        return np.array(np_image, copy=True)
    canvas = bgr.astype(np.float32)
    for landmarks in faces:
        matrix = alignment_matrix(landmarks)
        with torch.inference_mode():
            restored = restore_face(face_to_tensor(crop_face(bgr, matrix)))
        face = tensor_to_face(restored)
        parsing = None if parser is None else face_parsing.parse_mask(face_parsing.face_classes(parser, face))
        canvas = paste_face(canvas, face, matrix, parsing)
    return np.ascontiguousarray(canvas.astype(np.uint8)[:, :, ::-1])


# --- restorers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestorerSpec:
    """A face restorer A1111 lists: its name, folder under ``models/``, default file and spandrel id."""

    name: str
    folder: str
    default_file: str
    architecture: str
    name_hint: str


SPECS: tuple[RestorerSpec, ...] = (  # A1111's order in shared.face_restorers
    RestorerSpec("CodeFormer", "Codeformer", "codeformer-v0.1.0.pth", "CodeFormer", ""),
    RestorerSpec("GFPGAN", "GFPGAN", "GFPGANv1.4.pth", "GFPGAN", "gfpgan"),
)
NOT_RESTORERS = {DETECTOR_FILE.lower(), "parsing_parsenet.pth", "parsing_bisenet.pth",  # facexlib's files
                 "detection_mobilenet0.25_final.pth"}


def _models_path() -> str:
    from modules import shared
    return shared.data_paths.models_path


def find_model_file(spec: RestorerSpec, models_path: str) -> str | None:
    """The weight file ``spec`` would load from its folder, or None (see the module docstring)."""
    folder = os.path.join(models_path, spec.folder)
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(MODEL_EXTENSIONS)
                       and n.lower() not in NOT_RESTORERS and os.path.isfile(os.path.join(folder, n)))
    except OSError:
        return None
    if spec.default_file in names:
        return os.path.join(folder, spec.default_file)
    hinted = [n for n in names if spec.name_hint and spec.name_hint in n.lower()]
    chosen = (hinted or names or [None])[0]
    return None if chosen is None else os.path.join(folder, chosen)


def missing_files(spec: RestorerSpec, models_path: str) -> list[str]:
    """What ``spec`` still needs, each as a sentence naming the file and its folder (empty: ready)."""
    out = []
    if find_model_file(spec, models_path) is None:
        out.append(f"{spec.name} needs its weights ({spec.default_file}, or another {spec.name} .pth/.safetensors "
                   f"file) in {os.path.join(models_path, spec.folder)}")
    if not os.path.isfile(os.path.join(models_path, DETECTOR_FOLDER, DETECTOR_FILE)):
        out.append(f"face detection needs {DETECTOR_FILE} (RetinaFace-ResNet50) in "
                   f"{os.path.join(models_path, DETECTOR_FOLDER)}")
    return out


def spec_for(name: str | None) -> RestorerSpec:
    """The restorer named ``name`` (A1111's display names "CodeFormer", "GFPGAN").

    Raises:
        errors.InvalidParameter: an unknown name, listing the known ones.
    """
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise errors.InvalidParameter(f"unknown face restoration model {name!r}; known: "
                                  f"{', '.join(s.name for s in SPECS)}", field="face_restoration_model")


def check_available(name: str | None, models_path: str | None = None, field: str | None = None) -> RestorerSpec:
    """``name``'s spec when all its files are present.

    Raises:
        FaceRestorerUnavailable: naming each missing file and the folder it goes in (A1111 would
            download it; Serena downloads nothing).
        errors.InvalidParameter: an unknown name.
    """
    spec = spec_for(name)
    missing = missing_files(spec, models_path or _models_path())
    if missing:
        raise FaceRestorerUnavailable(f"face restoration is not available: {'; '.join(missing)} "
                                      f"(Serena downloads nothing)", field=field)
    return spec


_cache = FileModelCache(size=2)


def load_restorer(spec: RestorerSpec, path: str) -> Any:
    """The spandrel descriptor of ``path`` (float32, CPU, eval), cached by path, mtime and size.

    Raises:
        errors.CheckpointNotFound, errors.CheckpointLoadError: naming ``path`` (unreadable, pickled
            code, or not a ``spec.architecture`` model).
    """
    def load() -> Any:
        from modules import spandrel_loader, upscaler_spandrel
        spandrel_loader.install_extra_architectures()
        descriptor = spandrel_loader.load_descriptor(upscaler_spandrel.read_state_dict(path), path)
        if descriptor.architecture.id != spec.architecture:
            raise errors.CheckpointLoadError(f"{path!r} is a {descriptor.architecture.id} model; "
                                             f"{spec.name} needs a {spec.architecture} model")
        descriptor.to(torch.device("cpu"))
        descriptor.to(torch.float32)
        return descriptor.eval()

    return _cache.get(path, load, extra_key=spec.architecture, missing=lambda e: errors.CheckpointNotFound(
        f"face restoration model file not found: {path!r}"))


def restore_function(spec: RestorerSpec, descriptor: Any, codeformer_weight: float) -> RestoreFace:
    """How A1111 calls each network on an aligned face (GFPGAN with its stored noise: deterministic)."""
    model = descriptor.model
    if spec.architecture == "GFPGAN":
        return lambda x: model(x, return_rgb=False, randomize_noise=False)[0]
    return lambda x: model(x, weight=float(codeformer_weight), adain=True)[0]


def restore(np_image: np.ndarray, name: str, codeformer_weight: float = 0.5,
            models_path: str | None = None) -> np.ndarray:
    """Faces of an RGB uint8 image restored with the restorer ``name`` (files checked first).

    Raises:
        FaceRestorerUnavailable, errors.CheckpointLoadError: see :func:`check_available`, :func:`load_restorer`.
    """
    from modules import face_detection, face_parsing
    root = models_path or _models_path()
    spec = check_available(name, root)
    descriptor = load_restorer(spec, find_model_file(spec, root))
    detector = face_detection.cached_detector(os.path.join(root, DETECTOR_FOLDER, DETECTOR_FILE))
    parser = face_parsing.cached_parser(os.path.join(root, DETECTOR_FOLDER, face_parsing.PARSENET_FILE))
    return restore_with_face_helper(np_image, detector, restore_function(spec, descriptor, codeformer_weight), parser)


def restore_faces(np_image: np.ndarray) -> np.ndarray:
    """A1111's ``modules.face_restoration.restore_faces``: the restorer the options name, their weight."""
    from modules import shared
    opts = shared.opts
    return restore(np_image, opts.face_restoration_model, float(opts.code_former_weight))


def clear_cache() -> None:
    """Drop the loaded restorers and detector."""
    from modules import face_detection, face_parsing
    _cache.clear()
    face_detection.clear_cache()
    face_parsing.clear_cache()


# --- A1111's listing ------------------------------------------------------------------------------
class FaceRestoration:
    """A1111's face restorer interface: ``name()`` and ``restore(np_image)``."""

    def __init__(self, spec: RestorerSpec, models_path: str) -> None:
        self.spec = spec
        self.cmd_dir = os.path.join(models_path, spec.folder)
        self.models_path = models_path

    def name(self) -> str:
        return self.spec.name

    def restore(self, np_image: np.ndarray, w: float | None = None) -> np.ndarray:
        """Restore every face (``w``: CodeFormer weight, the option ``code_former_weight`` when None)."""
        from modules import shared
        weight = float(shared.opts.code_former_weight if w is None else w)
        return restore(np_image, self.spec.name, weight, self.models_path)


def face_restorers(models_path: str | None = None, installed_only: bool = True) -> list[FaceRestoration]:
    """A1111's ``shared.face_restorers`` (CodeFormer, then GFPGAN).

    A1111 lists both always and downloads a missing file on first use; Serena downloads nothing,
    so by default only restorers whose files (model and detector) are present are listed.
    """
    root = models_path or _models_path()
    return [FaceRestoration(spec, root) for spec in SPECS
            if not installed_only or not missing_files(spec, root)]
