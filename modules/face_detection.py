"""RetinaFace (ResNet-50) face detection, as A1111 runs it through facexlib, written in plain torch.

A1111 finds faces with facexlib's ``retinaface_resnet50`` detector (weights
``detection_Resnet50_Final.pth``, kept in ``models/GFPGAN``). facexlib imports torchvision for its
ResNet-50 and for nothing else; Serena cannot install torchvision beside its CPU torch, so the
network is rebuilt here with the same module names, so that the published file loads strictly:

- ``body.*``: torchvision's ResNet-50 up to ``layer4`` (``conv1``, ``bn1``, ``layer1``…``layer4``,
  bottlenecks with the stride on the 3×3 convolution and a ``downsample`` 1×1 conv + BN);
- ``fpn.output{1,2,3}`` (1×1 conv + BN + ReLU) and ``fpn.merge{1,2}`` (3×3 conv + BN + ReLU) over
  ``layer2``…``layer4`` (512, 1024, 2048 channels → 256), nearest-neighbour top-down merging;
- ``ssh{1,2,3}``: 3×3 (128 ch) and chained 3×3s (64 + 64 ch), concatenated, ReLU;
- ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1``: 2 anchors per cell, 2/4/10 values each.

Post-processing follows facexlib's ``detect_faces``: BGR input minus the mean (104, 117, 123),
prior boxes for steps 8/16/32 and sizes [[16, 32], [64, 128], [256, 512]], box and landmark
decoding with variances (0.1, 0.2), a confidence threshold (0.8), then NMS at IoU 0.4 with the
"+1 pixel" box areas of the reference implementation (written in torch here: no torchvision).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules import errors
from modules.fileio import FileModelCache

MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCES: tuple[float, float] = (0.1, 0.2)
MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 123.0)
ANCHORS_PER_CELL = 2
FPN_CHANNELS = 256
RESNET50_LAYERS: tuple[int, ...] = (3, 4, 6, 3)


# --- the network ----------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, kernel: int, relu: bool) -> nn.Sequential:
    """Conv (no bias) + BN (+ ReLU): the ``N.0`` / ``N.1`` key layout of the reference blocks."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: the stride sits on the 3×3 convolution)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Body(nn.Module):
    """ResNet-50 without pooling head; returns the outputs of ``layer2``, ``layer3``, ``layer4``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (blocks, width) in enumerate(zip(RESNET50_LAYERS, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            layer = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
            cin = width * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    """Top-down feature pyramid over the three body outputs."""

    def __init__(self, in_channels: tuple[int, int, int], out: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1, relu=True)
        self.output2 = _conv_bn(in_channels[1], out, 1, relu=True)
        self.output3 = _conv_bn(in_channels[2], out, 1, relu=True)
        self.merge1 = _conv_bn(out, out, 3, relu=True)
        self.merge2 = _conv_bn(out, out, 3, relu=True)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Single-stage headless context module: 3×3, "5×5" and "7×7" branches (stacked 3×3s)."""

    def __init__(self, cin: int, out: int) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, out // 2, 3, relu=False)
        self.conv5X5_1 = _conv_bn(cin, out // 4, 3, relu=True)
        self.conv5X5_2 = _conv_bn(out // 4, out // 4, 3, relu=False)
        self.conv7X7_2 = _conv_bn(out // 4, out // 4, 3, relu=True)
        self.conv7x7_3 = _conv_bn(out // 4, out // 4, 3, relu=False)  # lower-case x: the published key name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.conv5X5_1(x)
        branches = [self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))]
        return F.relu(torch.cat(branches, dim=1))


class Head(nn.Module):
    """One 1×1 prediction head: ``values`` numbers per anchor, flattened to ``[B, H*W*anchors, values]``."""

    def __init__(self, cin: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, ANCHORS_PER_CELL * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace-ResNet50; ``forward`` returns ``(box deltas, class softmax, landmark deltas)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN((512, 1024, 2048), FPN_CHANNELS)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(FPN_CHANNELS, FPN_CHANNELS) for _ in range(3))
        self.ClassHead = nn.ModuleList(Head(FPN_CHANNELS, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(FPN_CHANNELS, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(FPN_CHANNELS, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        feats = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, feats)], dim=1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, feats)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, feats)], dim=1)
        return boxes, F.softmax(scores, dim=-1), landmarks


# --- priors, decoding, NMS (pure) -----------------------------------------------------------------
def prior_boxes(height: int, width: int) -> torch.Tensor:
    """Anchors ``[N, 4]`` as ``(cx, cy, w, h)`` relative to the image, in the heads' output order.

    For each level (step 8, 16, 32) the feature map is ``ceil(size / step)``; cells go row by row
    and each cell has one anchor per min size of its level, centred at ``(j + 0.5) * step``.
    """
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * step / width
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [torch.stack([grid_x, grid_y, torch.full_like(grid_x, s / width),
                                 torch.full_like(grid_y, s / height)], dim=-1) for s in sizes]
        out.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(out, dim=0)


def decode_boxes(deltas: torch.Tensor, priors: torch.Tensor,
                 variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Box deltas → ``(x1, y1, x2, y2)`` relative to the image (SSD encoding)."""
    centre = priors[:, :2] + deltas[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(deltas[:, 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(deltas: torch.Tensor, priors: torch.Tensor,
                     variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Landmark deltas ``[N, 10]`` → five ``(x, y)`` points relative to the image, flattened."""
    points = deltas.view(-1, 5, 2) * variances[0] * priors[:, None, 2:] + priors[:, None, :2]
    return points.reshape(-1, 10)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first.

    Areas count the end pixel (``x2 - x1 + 1``), and a box is dropped when its IoU with a kept box
    is above ``threshold``, as the reference ``py_cpu_nms`` does. Equal scores keep the lower index
    first (a stable order; the reference's order among exact ties is unspecified).
    """
    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep: list[int] = []
    while order.numel() > 0:
        i, rest = int(order[0]), order[1:]
        keep.append(i)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return keep


# --- loading and detection ------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """One face: box ``(x1, y1, x2, y2)`` and five landmarks ``[5, 2]`` in pixels, and its score."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that multi-GPU training left on the published file's keys."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_retinaface(path: str) -> RetinaFace:
    """The detector from ``path`` (read by `modules.safe_load`: no pickled code runs), float32, eval.

    Raises:
        errors.CheckpointNotFound: no such file.
        errors.CheckpointLoadError: truncated, not a RetinaFace-ResNet50 file (the message names
            ``path`` and the first missing/unexpected keys or mismatched shapes).
    """
    return load_network_file(path, RetinaFace(), "a RetinaFace-ResNet50 face detector")


def load_network_file(path: str, net: torch.nn.Module, what: str) -> torch.nn.Module:
    """`net` (float32, eval) with the weights of the pickled/safetensors file `path`, whose keys and
    shapes must match exactly (a `module.` prefix and BatchNorm step counters are ignored).

    Raises:
        errors.CheckpointLoadError: naming `path`, `what` it should be, and the first missing,
            unexpected or mis-shaped keys.
    """
    from modules import safe_load
    state = strip_module_prefix(safe_load.load_state_dict(path))
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    wrong = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise errors.CheckpointLoadError(
            f"{path!r} is not {what}: {len(missing)} missing keys ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}), "
            f"{len(wrong)} with other shapes ({', '.join(wrong[:3])})")
    net.load_state_dict({k: v.float() for k, v in given.items()}, strict=False)
    return net.float().eval()


def detect(net: RetinaFace, bgr: np.ndarray, conf_threshold: float = 0.8,
           nms_threshold: float = 0.4) -> list[Detection]:
    """Faces in an ``[H, W, 3]`` BGR image (0–255) at its own size, best score first."""
    height, width = bgr.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(bgr, dtype=np.float32)).permute(2, 0, 1)[None]
    x = x - torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
    with torch.inference_mode():
        deltas, scores, landmark_deltas = net(x)
    priors = prior_boxes(height, width)
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(deltas[0].float(), priors) * scale.repeat(2)
    points = decode_landmarks(landmark_deltas[0].float(), priors) * scale.repeat(5)
    face_scores = scores[0, :, 1].float()
    chosen = torch.nonzero(face_scores > conf_threshold).flatten()
    boxes, points, face_scores = boxes[chosen], points[chosen], face_scores[chosen]
    keep = nms(boxes, face_scores, nms_threshold)
    return [Detection(boxes[i].numpy().astype(np.float64), float(face_scores[i]),
                      points[i].view(5, 2).numpy().astype(np.float64)) for i in keep]


_cache = FileModelCache(size=1)


def cached_detector(path: str) -> RetinaFace:
    """:func:`load_retinaface`, cached by path, modification time and size."""
    return _cache.get(path, lambda: load_retinaface(path),
                      missing=lambda e: errors.CheckpointNotFound(f"face detector file not found: {path!r}"))


def clear_cache() -> None:
    """Drop the loaded detector."""
    _cache.clear()
