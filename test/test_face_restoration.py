"""Face restoration: RetinaFace maths against written-out formulas, the real file layouts (read back
strictly and by spandrel), alignment and paste-back on a detector driven to one known face, the job
path (restore_faces, infotext, the next job untouched), extras blending, and missing/broken files."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from face_helpers import CODEFORMER, DETECTOR, GFPGAN, PARSENET, demo_models, linked
from job_helpers import image_bytes, job
from modules import demo_faces, errors, face_detection, face_parsing, face_restoration, shared, upscaling
from test_processing_helpers import env, fresh_state  # noqa: F401  (fixtures)


# --- NMS, priors, decoding ------------------------------------------------------------------------
def _nms_oracle(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS written out in numpy: +1-pixel areas, drop IoU above the threshold."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        survivors = []
        for j in order:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
            area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
            iou = w * h / (area(boxes[i]) + area(boxes[j]) - w * h)
            if iou <= threshold:
                survivors.append(j)
        order = survivors
    return keep


def test_nms_by_hand_and_against_the_oracle():
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 9, 4]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (top half of box 0) wins; IoU(3, 0) = 50/100 > 0.4 drops 0; IoU(3, 1) = 36/(50+100-36) keeps 1
    assert face_detection.nms(boxes, scores, 0.4) == [3, 1, 2]
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    many = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    many_scores = rng.uniform(0, 1, 60).astype(np.float32)
    for threshold in (0.2, 0.4, 0.7):
        assert face_detection.nms(torch.from_numpy(many), torch.from_numpy(many_scores), threshold) == \
            _nms_oracle(many, many_scores, threshold)


def test_prior_boxes_follow_the_written_out_layout():
    priors = face_detection.prior_boxes(640, 640)
    assert priors.shape == (16800, 4)  # (80² + 40² + 20²) cells × 2 sizes
    assert torch.allclose(priors[0], torch.tensor([4, 4, 16, 16]) / 640)
    assert torch.allclose(priors[1], torch.tensor([4, 4, 32, 32]) / 640)
    assert torch.allclose(priors[2], torch.tensor([12, 4, 16, 16]) / 640)  # next column first
    assert torch.allclose(priors[2 * 80], torch.tensor([4, 12, 16, 16]) / 640)  # next row
    assert torch.allclose(priors[2 * 6400], torch.tensor([8, 8, 64, 64]) / 640)
    assert torch.allclose(priors[-1], torch.tensor([624, 624, 512, 512]) / 640)
    h, w = 100, 70  # non-square, not a multiple of the steps: ceil(size / step) cells
    tall = face_detection.prior_boxes(h, w)
    cells = [math.ceil(h / s) * math.ceil(w / s) for s in (8, 16, 32)]
    assert tall.shape[0] == 2 * sum(cells)
    i, j = 3, 5  # level 1, row 3, column 5, second size
    index = 2 * (i * math.ceil(w / 8) + j) + 1
    assert torch.allclose(tall[index], torch.tensor([(j + 0.5) * 8 / w, (i + 0.5) * 8 / h, 32 / w, 32 / h]))


def test_box_and_landmark_decoding_formulas():
    g = torch.Generator().manual_seed(3)
    priors = torch.rand(7, 4, generator=g) * 0.5 + 0.1
    loc = torch.randn(7, 4, generator=g)
    land = torch.randn(7, 10, generator=g)
    boxes = face_detection.decode_boxes(loc, priors)
    points = face_detection.decode_landmarks(land, priors)
    for n in range(7):
        cx, cy, pw, ph = priors[n].tolist()
        x = cx + loc[n, 0].item() * 0.1 * pw
        y = cy + loc[n, 1].item() * 0.1 * ph
        w = pw * math.exp(loc[n, 2].item() * 0.2)
        h = ph * math.exp(loc[n, 3].item() * 0.2)
        assert boxes[n].tolist() == pytest.approx([x - w / 2, y - h / 2, x + w / 2, y + h / 2], rel=1e-5)
        for k in range(5):
            assert points[n, 2 * k].item() == pytest.approx(cx + land[n, 2 * k].item() * 0.1 * pw, rel=1e-5)
            assert points[n, 2 * k + 1].item() == pytest.approx(cy + land[n, 2 * k + 1].item() * 0.1 * ph, rel=1e-5)


def test_alignment_maps_the_landmarks_onto_the_template():
    template = face_restoration.FFHQ_TEMPLATE_512
    angle = math.radians(20)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = (template @ rotation.T) * 0.3 + np.array([40.0, 25.0])
    matrix = face_restoration.alignment_matrix(landmarks)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - template).max() < 1e-4  # OpenCV refines in single precision
    assert face_restoration.detection_scale(64, 80) == 10 and face_restoration.detection_scale(800, 900) == 1
    # facexlib's filter: |(left-eye y - right-eye y, right-eye x - nose x)|
    points = np.array([[10.0, 20.0], [30.0, 23.0], [26.0, 30.0], [0, 0], [0, 0]])
    assert face_restoration.eye_distance(points) == pytest.approx(5.0)


# --- the real layouts -----------------------------------------------------------------------------
def test_demo_detector_loads_strictly_with_the_real_sizes():
    path = os.path.join(demo_models(), *DETECTOR)
    net = face_detection.load_retinaface(path)
    assert sum(p.numel() for p in net.parameters()) == 27_293_600
    state = face_detection.strip_module_prefix({f"module.{k}": v for k, v in net.state_dict().items()})
    assert set(state) == set(net.state_dict())  # the multi-GPU "module." prefix of the published file
    with torch.inference_mode():
        boxes, scores, landmarks = net(torch.zeros(1, 3, 64, 96))
    expected = face_detection.prior_boxes(64, 96).shape[0]
    assert expected == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    assert boxes.shape == (1, expected, 4) and scores.shape == (1, expected, 2) and landmarks.shape == (1, expected, 10)
    assert float(scores[..., 1].max()) < 0.01  # the demo's heads say "no face" everywhere


def test_demo_parser_loads_strictly_with_the_real_sizes():
    net = face_parsing.load_parsenet(os.path.join(demo_models(), *PARSENET))
    assert sum(p.numel() for p in net.parameters()) == 21_303_254
    with torch.inference_mode():
        logits, image = net(torch.zeros(1, 3, 64, 48))
    assert logits.shape == (1, 19, 64, 48) and image.shape == (1, 3, 64, 48)
    assert face_parsing.face_classes(net, np.zeros((32, 32, 3), np.uint8)).shape == (32, 32)


def test_parse_mask_keeps_the_face_classes_and_drops_the_border():
    face = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15}  # A1111's colour map: 255 for these, 0 for the rest
    for c in range(19):
        mask = face_parsing.parse_mask(np.full((512, 512), c))
        assert mask[256, 256] == pytest.approx(1.0 if c in face else 0.0, abs=1e-9)
        assert not mask[:10].any() and not mask[-10:].any() and not mask[:, :10].any() and not mask[:, -10:].any()
    half = np.zeros((512, 512), dtype=np.int64)
    half[:, 256:] = 1
    mask = face_parsing.parse_mask(half)
    assert mask[256, 100] < 1e-6 and mask[256, 400] == pytest.approx(1.0) and 0.4 < mask[256, 256] < 0.6


def test_square_paste_mask_is_inside_the_warped_square():
    canvas = np.full((100, 120, 3), 50, dtype=np.float32)
    landmarks = face_restoration.FFHQ_TEMPLATE_512 * 0.1 + np.array([30.0, 20.0])  # square x 30..81, y 20..71
    matrix = face_restoration.alignment_matrix(landmarks)
    out = face_restoration.paste_face(canvas, np.full((512, 512, 3), 250, np.uint8), matrix)
    ys, xs = np.mgrid[0:100, 0:120]
    outside = (xs < 29) | (xs > 83) | (ys < 19) | (ys > 73)
    assert (out[outside] == 50).all()
    assert np.allclose(out[44:48, 54:58], 250, atol=0.5)
    assert 50 < out[45, 33, 0] < 250  # the soft edge


def test_demo_restorers_are_detected_by_spandrel():
    from modules import spandrel_loader, upscaler_spandrel
    spandrel_loader.install_extra_architectures()
    spandrel = spandrel_loader.import_spandrel()
    for (folder, name), arch in ((GFPGAN, "GFPGAN"), (CODEFORMER, "CodeFormer")):
        state = upscaler_spandrel.read_state_dict(os.path.join(demo_models(), folder, name))
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        assert (descriptor.architecture.id, descriptor.purpose, descriptor.scale) == (arch, "FaceSR", 1)


def test_wrong_and_truncated_files_name_the_file(tmp_path):
    wrong = tmp_path / "detection_Resnet50_Final.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(errors.CheckpointLoadError, match="detection_Resnet50_Final.pth.*not a RetinaFace"):
        face_detection.load_retinaface(str(wrong))
    truncated = tmp_path / "GFPGANv1.4.pth"
    truncated.write_bytes(open(os.path.join(demo_models(), *GFPGAN), "rb").read(4096))
    with pytest.raises(errors.CheckpointLoadError, match="GFPGANv1.4.pth"):
        face_restoration.load_restorer(face_restoration.spec_for("GFPGAN"), str(truncated))
    with pytest.raises(errors.CheckpointLoadError, match="is a GFPGAN model; CodeFormer needs"):
        face_restoration.load_restorer(face_restoration.spec_for("CodeFormer"), os.path.join(demo_models(), *GFPGAN))


# --- a detector driven to one face ----------------------------------------------------------------
FACE_SCALE, FACE_OFFSET = demo_faces.ONE_FACE_SCALE, np.array(demo_faces.ONE_FACE_OFFSET)  # x 8..54, y 6..52


def _driven_detector(landmarks_640: np.ndarray) -> face_detection.RetinaFace:
    """The demo detector driven to one face with its landmarks at ``landmarks_640``."""
    net = face_detection.RetinaFace()
    net.load_state_dict(demo_faces.retinaface_one_face_state_dict(landmarks_640), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def one_face():
    """The helper run once on a 64×64 image whose one face the detector is driven to; a fake restorer
    (white face) records what it was given, a fake parser marks the face's middle as skin."""
    landmarks = face_restoration.FFHQ_TEMPLATE_512 * FACE_SCALE + FACE_OFFSET
    detector = _driven_detector(landmarks * 10)  # 64 px → 640 px for detection
    image = (np.random.default_rng(9).uniform(0, 255, (64, 64, 3))).astype(np.uint8)
    given = []

    def fake_white_restorer(face: torch.Tensor) -> torch.Tensor:
        given.append(face.clone())
        return torch.ones_like(face)

    def fake_parser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class 1 (skin) on the face's inner 400×400, background elsewhere."""
        logits = torch.zeros(1, 19, 512, 512)
        logits[0, 0] = 1
        logits[0, 1, 56:456, 56:456] = 2
        return logits, x

    out = face_restoration.restore_with_face_helper(image, detector, fake_white_restorer, fake_parser)
    return image, landmarks, given, out


def test_the_driven_face_is_found_aligned_and_restored(one_face):
    image, landmarks, given, _ = one_face
    assert len(given) == 1
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    matrix = face_restoration.alignment_matrix(landmarks)
    expected = face_restoration.face_to_tensor(face_restoration.crop_face(bgr, matrix))
    assert given[0].shape == (1, 3, 512, 512)
    assert float((given[0] - expected).abs().mean()) < 0.01


def test_paste_back_changes_only_the_face_region(one_face):
    image, _, _, out = one_face
    assert out.shape == image.shape and out.dtype == np.uint8
    lo, hi = FACE_OFFSET - 1, FACE_OFFSET + 512 * FACE_SCALE + 1
    ys, xs = np.mgrid[0:64, 0:64]
    outside = (xs < lo[0]) | (xs > hi[0]) | (ys < lo[1]) | (ys > hi[1])
    assert (out[outside] == image[outside]).all()
    centre = out[28:31, 30:33]
    assert (centre >= 250).all()  # the fake restorer's white face, fully blended in the middle
    assert (out[~outside] != image[~outside]).mean() > 0.5


def test_no_face_leaves_the_image_unchanged():
    net = face_detection.load_retinaface(os.path.join(demo_models(), *DETECTOR))
    image = np.full((40, 48, 3), 120, dtype=np.uint8)
    out = face_restoration.restore_with_face_helper(image, net, lambda x: pytest.fail("no face to restore"))
    assert out.tobytes() == image.tobytes()


# --- the job path ---------------------------------------------------------------------------------
def test_restore_faces_job_writes_infotext_and_the_next_job_is_untouched(env, monkeypatch):
    root = shared.data_paths.models_path
    before = job()
    calls = []
    real = face_restoration.restore_with_face_helper
    monkeypatch.setattr(face_restoration, "restore_with_face_helper",
                        lambda *a: calls.append(a[0].shape) or real(*a))
    shared.opts.data.update(face_restoration_model="GFPGAN", save_images_before_face_restoration=True)
    try:
        with linked(root, (DETECTOR, GFPGAN)):
            restored = job(restore_faces=True, do_not_save_samples=False)
    finally:
        shared.opts.data.pop("face_restoration_model")
        shared.opts.data.pop("save_images_before_face_restoration")
    assert calls == [(64, 64, 3)]
    saved = [f for _, _, files in os.walk(shared.data_paths.data_path) for f in files if f.endswith(".png")]
    assert len([f for f in saved if f.endswith("-before-face-restoration.png")]) == 1
    assert "Face restoration: GFPGAN" in restored.infotexts[0]
    assert restored.restore_faces and restored.face_restoration_model == "GFPGAN"
    assert image_bytes(restored) == image_bytes(before)  # the demo detector finds no face in it
    after = job()
    assert image_bytes(after) == image_bytes(before) and "Face restoration" not in after.infotexts[0]


def test_restore_faces_without_files_is_skipped_with_a_comment_naming_them(env):
    root = shared.data_paths.models_path
    with linked(root, (GFPGAN,)):
        shared.opts.data["face_restoration_model"] = "GFPGAN"
        try:
            res = job(restore_faces=True)
        finally:
            shared.opts.data.pop("face_restoration_model")
    assert "Face restoration" not in res.infotexts[0]
    assert f"detection_Resnet50_Final.pth (RetinaFace-ResNet50) in {os.path.join(root, 'GFPGAN')}" in res.comments
    assert "skipped" in res.comments
    res = job(restore_faces=True)  # default CodeFormer: its weights are missing too
    assert f"codeformer-v0.1.0.pth, or another CodeFormer .pth/.safetensors file) in " \
           f"{os.path.join(root, 'Codeformer')}" in res.comments


def test_missing_files_message_names_each_file_and_folder(tmp_path):
    with pytest.raises(face_restoration.FaceRestorerUnavailable) as e:
        face_restoration.check_available("CodeFormer", str(tmp_path))
    text = str(e.value)
    assert "codeformer-v0.1.0.pth" in text and str(tmp_path / "Codeformer") in text
    assert "detection_Resnet50_Final.pth" in text and str(tmp_path / "GFPGAN") in text
    assert e.value.status_code == 404
    with pytest.raises(errors.InvalidParameter, match="'RestoreFormer'.*CodeFormer, GFPGAN"):
        face_restoration.check_available("RestoreFormer", str(tmp_path))


def test_model_file_choice(tmp_path):
    folder = tmp_path / "GFPGAN"
    folder.mkdir()
    for name in ("detection_Resnet50_Final.pth", "parsing_parsenet.pth", "notes.txt"):
        (folder / name).write_bytes(b"x")
    spec = face_restoration.spec_for("GFPGAN")
    assert face_restoration.find_model_file(spec, str(tmp_path)) is None
    (folder / "aaa.pth").write_bytes(b"x")
    (folder / "my-GFPGANv1.3.safetensors").write_bytes(b"x")
    assert face_restoration.find_model_file(spec, str(tmp_path)) == str(folder / "my-GFPGANv1.3.safetensors")
    (folder / "GFPGANv1.4.pth").write_bytes(b"x")
    assert face_restoration.find_model_file(spec, str(tmp_path)) == str(folder / "GFPGANv1.4.pth")


# --- extras ---------------------------------------------------------------------------------------
def test_extras_blend_each_restorer_by_its_visibility(env, monkeypatch):
    seen = []

    def fake_restore(np_image, name, codeformer_weight=0.5, models_path=None):
        seen.append((name, codeformer_weight))
        return 255 - np_image if name == "GFPGAN" else np.zeros_like(np_image)

    monkeypatch.setattr(face_restoration, "check_available", lambda *a, **k: None)
    monkeypatch.setattr(face_restoration, "restore", fake_restore)
    image = Image.radial_gradient("L").resize((32, 32)).convert("RGB")
    out, html = upscaling.run_extras(image, gfpgan_visibility=0.25, codeformer_visibility=0.5, codeformer_weight=0.7)
    inverted = Image.fromarray(255 - np.asarray(image))
    expected = Image.blend(Image.blend(image, inverted, 0.25), Image.new("RGB", (32, 32)), 0.5)
    assert out.tobytes() == expected.tobytes()
    assert [n for n, _ in seen] == ["GFPGAN", "CodeFormer"] and seen[1] == ("CodeFormer", 0.7)  # GFPGAN has no weight
    assert "GFPGAN visibility: 0.25, CodeFormer visibility: 0.5, CodeFormer weight: 0.7" in html
    out, html = upscaling.run_extras(image, gfpgan_visibility=1)
    assert out.tobytes() == inverted.tobytes() and "CodeFormer" not in html
    with pytest.raises(errors.InvalidParameter, match="gfpgan_visibility"):
        upscaling.run_extras(image, gfpgan_visibility=1.5)


def test_extras_with_the_demo_files_runs_the_real_path(env):
    root = shared.data_paths.models_path
    image = Image.radial_gradient("L").resize((48, 48)).convert("RGB")
    with linked(root, (DETECTOR, CODEFORMER, PARSENET)):
        out, html = upscaling.run_extras(image, codeformer_visibility=1, codeformer_weight=0.3)
        names = [r.name() for r in face_restoration.face_restorers()]
    assert out.tobytes() == image.tobytes()  # no face found by the demo detector
    assert "CodeFormer visibility: 1" in html and "CodeFormer weight: 0.3" in html
    assert names == ["CodeFormer"]


def test_restorers_are_called_as_a1111_calls_them():
    class FakeNetwork:
        """Records the keyword arguments and returns (x, extra) as both real networks do."""

        def __init__(self) -> None:
            self.kwargs: dict = {}

        def __call__(self, x, **kwargs):
            self.kwargs = kwargs
            return x * 0.5, None

    descriptor = type("FakeDescriptor", (), {})()
    descriptor.model = FakeNetwork()
    x = torch.ones(1, 3, 4, 4)
    gfpgan = face_restoration.restore_function(face_restoration.spec_for("GFPGAN"), descriptor, 0.3)
    assert torch.equal(gfpgan(x), x * 0.5)
    assert descriptor.model.kwargs == {"return_rgb": False, "randomize_noise": False}
    codeformer = face_restoration.restore_function(face_restoration.spec_for("CodeFormer"), descriptor, 0.3)
    codeformer(x)
    assert descriptor.model.kwargs == {"weight": 0.3, "adain": True}


def test_a1111_module_names_report_missing_files(env):
    from modules import codeformer_model, gfpgan_model
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(face_restoration.FaceRestorerUnavailable, match="GFPGANv1.4.pth"):
        gfpgan_model.gfpgan_fix_faces(image)
    with pytest.raises(face_restoration.FaceRestorerUnavailable, match="codeformer-v0.1.0.pth"):
        codeformer_model.restore(image)
    listed = face_restoration.face_restorers(installed_only=False)
    assert [(r.name(), r.cmd_dir) for r in listed] == [
        ("CodeFormer", os.path.join(shared.data_paths.models_path, "Codeformer")),
        ("GFPGAN", os.path.join(shared.data_paths.models_path, "GFPGAN"))]
    with pytest.raises(face_restoration.FaceRestorerUnavailable, match="detection_Resnet50_Final.pth"):
        listed[1].restore(image)
    assert face_restoration.face_restorers() == []
