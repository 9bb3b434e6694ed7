"""Extras postprocessing script "Auto focal point crop" (order 4000).

Crops the image to the target size another script announced (Upscale's ``pp.shared.target_*``),
centred on a focal point, as A1111's ``autocrop`` does: the image is first scaled so it covers
the target along its shorter dimension, then three detectors each propose points of interest and
their centroids are averaged with the weights the user gives:

- **edges** ("Focal point edges weight"): up to 100 strong corners (OpenCV ``goodFeaturesToTrack``,
  quality 0.04, minimum distance 6% of the short side), ignoring the bottom tenth (watermarks);
- **entropy** ("Focal point entropy weight"): the centre of the target-sized window, slid in 4 px
  steps along the long side, whose black-and-white histogram scores highest;
- **faces** ("Focal point face weight"): OpenCV's YuNet face detector, **only when its model file
  is already in** ``models/opencv/face_detection_yunet_2023mar.onnx`` (A1111 downloads it;
  Serena downloads nothing). Without it faces add no point and the other two decide. A1111's
  Haar-cascade fallback needs cascade files this OpenCV build does not ship, so it is not used.

"Create debug image" adds the scaled image with the points and the crop drawn on it as an extra
image (nametag ``focal-crop-debug``; later scripts leave it alone).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from modules import scripts_postprocessing
from modules.scripts_postprocessing import PostprocessedImage

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
COLORS = {"edges": "#00F", "entropy": "#ff0", "faces": "#F00", "crop": "#0F0"}


@dataclasses.dataclass
class PointOfInterest:
    x: float
    y: float
    weight: float = 1.0
    size: float = 10

    def bounding(self, size: float) -> list[float]:
        """The box of side ``size`` centred on the point."""
        half = size // 2
        return [self.x - half, self.y - half, self.x + half, self.y + half]


@dataclasses.dataclass
class CropSettings:
    crop_width: int
    crop_height: int
    face_points_weight: float = 0.9
    entropy_points_weight: float = 0.15
    corner_points_weight: float = 0.5
    annotate_image: bool = False
    dnn_model_path: str | None = None


def cover_scale(width: int, height: int, crop_width: int, crop_height: int) -> float:
    """The factor that makes the image's shorter dimension (or, for a square, the target's longer
    one) match the target, so the target fits inside."""
    if width > height:
        return crop_height / height
    if height > width:
        return crop_width / width
    return crop_height / height if crop_height > crop_width else crop_width / width


def corner_points(image: Image.Image) -> list[PointOfInterest]:
    """Strong corners of the grayscale image, the bottom tenth painted flat first."""
    import cv2
    gray = image.convert("L")
    ImageDraw.Draw(gray).rectangle([0, image.height * 0.9, image.width, image.height], fill="#999")
    found = cv2.goodFeaturesToTrack(np.array(gray), maxCorners=100, qualityLevel=0.04,
                                    minDistance=min(gray.width, gray.height) * 0.06, useHarrisDetector=False)
    if found is None:
        return []
    return [PointOfInterest(float(x), float(y), weight=1 / len(found), size=4) for x, y in found.reshape(-1, 2)]


def histogram_score(image: Image.Image) -> float:
    """A1111's entropy score: minus the summed log2 frequencies of the black/white pixel histogram."""
    band = np.asarray(image.convert("1"), dtype=np.uint8)
    counts = np.bincount(band.ravel(), minlength=2)
    counts = counts[counts > 0]
    return float(-np.log2(counts / counts.sum()).sum())


def entropy_points(image: Image.Image, crop_width: int, crop_height: int) -> list[PointOfInterest]:
    """The centre of the highest-scoring target-sized window along the long side (none for a square)."""
    if image.width == image.height:
        return []
    horizontal = image.width > image.height
    limit = image.width if horizontal else image.height
    box = [0, 0, crop_width, crop_height]
    best, best_score = list(box), 0.0
    while box[2 if horizontal else 3] < limit:
        score = histogram_score(image.crop(tuple(box)))
        if score > best_score:
            best, best_score = list(box), score
        axis = 0 if horizontal else 1
        box[axis] += 4
        box[axis + 2] += 4
    return [PointOfInterest(int(best[0] + crop_width / 2), int(best[1] + crop_height / 2), size=25)]


def face_points(image: Image.Image, model_path: str | None) -> list[PointOfInterest]:
    """Faces found by YuNet (focus a third down from the top of each face); none without the model."""
    if not model_path or not os.path.isfile(model_path):
        return []
    import cv2
    detector = cv2.FaceDetectorYN.create(model_path, "", (image.width, image.height), 0.9, 0.3, 5000)
    _, faces = detector.detect(np.array(image))
    if faces is None:
        return []
    return [PointOfInterest(int(f[0] + f[2] * 0.5), int(f[1] + f[3] * 0.33), weight=1 / len(faces), size=f[2])
            for f in faces]


def centroid(points: list[PointOfInterest]) -> PointOfInterest:
    return PointOfInterest(sum(p.x for p in points) / len(points), sum(p.y for p in points) / len(points))


def focal_point(image: Image.Image, settings: CropSettings,
                draw: ImageDraw.ImageDraw | None = None) -> PointOfInterest:
    """The weighted average of the detectors' centroids (each weight over the sum of those that found points)."""
    groups = {
        "edges": (corner_points(image) if settings.corner_points_weight > 0 else [],
                  settings.corner_points_weight),
        "entropy": (entropy_points(image, settings.crop_width, settings.crop_height)
                    if settings.entropy_points_weight > 0 else [], settings.entropy_points_weight),
        "faces": (face_points(image, settings.dnn_model_path) if settings.face_points_weight > 0 else [],
                  settings.face_points_weight),
    }
    found = {name: (points, weight) for name, (points, weight) in groups.items() if points}
    total = sum(weight for _, weight in found.values())
    centres = []
    for name, (points, weight) in found.items():
        centre = centroid(points)
        centre.weight = weight / total
        centres.append(centre)
        if draw is not None:
            _annotate(draw, name, centre, points, min(image.width, image.height) * 0.07)
    weight_sum = sum(c.weight for c in centres)
    x = round(weight_sum and sum(c.x * c.weight for c in centres) / weight_sum)
    y = round(weight_sum and sum(c.y * c.weight for c in centres) / weight_sum)
    average = PointOfInterest(x, y)
    if draw is not None:
        draw.ellipse(average.bounding(min(image.width, image.height) * 0.07), outline=COLORS["crop"])
    return average


def _annotate(draw: ImageDraw.ImageDraw, name: str, centre: PointOfInterest, points: list[PointOfInterest],
              max_size: float) -> None:
    color = COLORS[name]
    box = centre.bounding(max_size * centre.weight)
    draw.text((box[0], box[1] - 15), f"{name.capitalize()}: {centre.weight:.02f}", fill=color)
    draw.ellipse(box, outline=color)
    if len(points) > 1:
        for point in points:
            draw.rectangle(point.bounding(4), outline=color)


def _crop_start(start: int, length: int, limit: int) -> int:
    """``start`` moved back inside ``0..limit`` (the start wins when the crop is longer than the image)."""
    if start < 0:
        return 0
    return limit - length if start + length > limit else start


def crop_image(image: Image.Image, settings: CropSettings) -> list[Image.Image]:
    """The crop around the focal point, then (with ``annotate_image``) the annotated debug image."""
    scale = cover_scale(image.width, image.height, settings.crop_width, settings.crop_height)
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    debug = image.copy() if settings.annotate_image else None
    focus = focal_point(image, settings, ImageDraw.Draw(debug) if debug is not None else None)
    x1 = _crop_start(focus.x - settings.crop_width // 2, settings.crop_width, image.width)
    y1 = _crop_start(focus.y - settings.crop_height // 2, settings.crop_height, image.height)
    box = (x1, y1, x1 + settings.crop_width, y1 + settings.crop_height)
    results = [image.crop(box)]
    if debug is not None:
        ImageDraw.Draw(debug).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=COLORS["crop"])
        results.append(debug)
    return results


def yunet_model_path() -> str:
    """Where the YuNet face model is looked for (``models/opencv``)."""
    from modules import shared
    return os.path.join(shared.data_paths.models_path, "opencv", YUNET_FILE)


class ScriptPostprocessingFocalCrop(scripts_postprocessing.ScriptPostprocessing):
    name = "Auto focal point crop"
    order = 4000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="Auto focal point crop") as enable:
            face_weight = gr.Slider(label="Focal point face weight", value=0.9, minimum=0.0, maximum=1.0, step=0.05,
                                    elem_id="postprocess_focal_crop_face_weight",
                                    info="needs models/opencv/" + YUNET_FILE)
            entropy_weight = gr.Slider(label="Focal point entropy weight", value=0.15, minimum=0.0, maximum=1.0,
                                       step=0.05, elem_id="postprocess_focal_crop_entropy_weight")
            edges_weight = gr.Slider(label="Focal point edges weight", value=0.5, minimum=0.0, maximum=1.0,
                                     step=0.05, elem_id="postprocess_focal_crop_edges_weight")
            debug = gr.Checkbox(label="Create debug image", elem_id="train_process_focal_crop_debug")
        return {"enable": enable, "face_weight": face_weight, "entropy_weight": entropy_weight,
                "edges_weight": edges_weight, "debug": debug}

    def process(self, pp: PostprocessedImage, enable: Any = None, face_weight: Any = 0.9,
                entropy_weight: Any = 0.15, edges_weight: Any = 0.5, debug: Any = False) -> None:
        if not enable:
            return
        width, height = pp.shared.target_width, pp.shared.target_height
        if not width or not height:
            return
        settings = CropSettings(int(width), int(height), face_points_weight=face_weight or 0,
                                entropy_points_weight=entropy_weight or 0, corner_points_weight=edges_weight or 0,
                                annotate_image=bool(debug), dnn_model_path=yunet_model_path())
        result, *others = crop_image(pp.image, settings)
        pp.image = result
        pp.extra_images = [pp.create_copy(x, nametags=["focal-crop-debug"], disable_processing=True) for x in others]
