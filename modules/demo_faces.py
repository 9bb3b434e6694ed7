"""Deterministic random-weight face restoration files in the real layouts, for tests and demos.

- ``detection_Resnet50_Final.pth`` (``models/GFPGAN``): RetinaFace-ResNet50 with the published
  key names, spelled out here key by key from torchvision's ResNet-50 layout and the RetinaFace
  FPN/SSH/heads (independently of `modules.face_detection`, whose strict load is the check).
  The full topology is needed for the names, so it has the real 27.3 M parameters, stored as
  float16 (55 MB). Its prediction heads are zero with a "background" bias, so it finds no face in
  any image; tests that need a face set the head biases themselves.
- ``GFPGANv1.4.pth`` (``models/GFPGAN``): spandrel builds GFPGAN at one fixed size (512 px,
  channel multiplier 2), so the demo has the real 86 M parameters (float16, 173 MB), from
  spandrel's own class with a seeded generator, wrapped in ``{"params_ema": …}`` as published.
- ``parsing_parsenet.pth`` (``models/GFPGAN``): facexlib's ParseNet, also spelled out key by key
  (``encoder/body/decoder`` residual blocks, ``conv2d``, ``norm.norm``), 21.3 M parameters (float16,
  43 MB); with random weights its parsing map is noise.
- ``codeformer-v0.1.0.pth`` (``models/Codeformer``): spandrel_extra_arches' CodeFormer with the
  smallest transformer its detection reads back (64-wide, one layer, 64 codes); the fixed VQ
  auto-encoder around it keeps it at 74 M parameters (float16, 148 MB).

The big files take seconds to write; tests write them once per session into a temporary folder.
"""
from __future__ import annotations

import os
import zlib
from typing import Any

import torch

SEED = 20251203
RETINAFACE_FILE = "detection_Resnet50_Final.pth"
GFPGAN_FILE = "GFPGANv1.4.pth"
CODEFORMER_FILE = "codeformer-v0.1.0.pth"
PARSENET_FILE = "parsing_parsenet.pth"
BACKGROUND_BIAS = 6.0  # class logits (background, face) = (+6, -6) for every anchor: no face


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + zlib.crc32(name.encode()))


def _conv(state: dict, key: str, cin: int, cout: int, k: int, bias: bool = False) -> None:
    std = (2.0 / (cin * k * k)) ** 0.5 * 0.5
    state[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=_generator(key)) * std
    if bias:
        state[f"{key}.bias"] = torch.zeros(cout)


def _bn(state: dict, key: str, channels: int) -> None:
    state[f"{key}.weight"] = torch.ones(channels)
    state[f"{key}.bias"] = torch.zeros(channels)
    state[f"{key}.running_mean"] = torch.zeros(channels)
    state[f"{key}.running_var"] = torch.ones(channels)
    state[f"{key}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)


def _conv_bn(state: dict, key: str, cin: int, cout: int, k: int) -> None:
    _conv(state, f"{key}.0", cin, cout, k)
    _bn(state, f"{key}.1", cout)


def _resnet50_body(state: dict) -> None:
    """torchvision's ResNet-50 keys under ``body.`` (conv1/bn1, layer1–4 bottlenecks, downsample)."""
    _conv(state, "body.conv1", 3, 64, 7)
    _bn(state, "body.bn1", 64)
    cin = 64
    for layer, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for block in range(blocks):
            key = f"body.layer{layer}.{block}"
            _conv(state, f"{key}.conv1", cin, width, 1)
            _bn(state, f"{key}.bn1", width)
            _conv(state, f"{key}.conv2", width, width, 3)
            _bn(state, f"{key}.bn2", width)
            _conv(state, f"{key}.conv3", width, width * 4, 1)
            _bn(state, f"{key}.bn3", width * 4)
            if block == 0:
                _conv(state, f"{key}.downsample.0", cin, width * 4, 1)
                _bn(state, f"{key}.downsample.1", width * 4)
            cin = width * 4


def retinaface_state_dict() -> dict[str, torch.Tensor]:
    """The demo detector's tensors (float16), keyed as ``detection_Resnet50_Final.pth`` is."""
    state: dict[str, torch.Tensor] = {}
    _resnet50_body(state)
    for i, cin in enumerate((512, 1024, 2048), start=1):
        _conv_bn(state, f"fpn.output{i}", cin, 256, 1)
    for i in (1, 2):
        _conv_bn(state, f"fpn.merge{i}", 256, 256, 3)
    for s in (1, 2, 3):
        _conv_bn(state, f"ssh{s}.conv3X3", 256, 128, 3)
        _conv_bn(state, f"ssh{s}.conv5X5_1", 256, 64, 3)
        _conv_bn(state, f"ssh{s}.conv5X5_2", 64, 64, 3)
        _conv_bn(state, f"ssh{s}.conv7X7_2", 64, 64, 3)
        _conv_bn(state, f"ssh{s}.conv7x7_3", 64, 64, 3)
    for head, values in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for level in range(3):
            key = f"{head}.{level}.conv1x1"
            state[f"{key}.weight"] = torch.zeros(2 * values, 256, 1, 1)
            state[f"{key}.bias"] = torch.zeros(2 * values)
    for level in range(3):
        state[f"ClassHead.{level}.conv1x1.bias"] = torch.tensor([BACKGROUND_BIAS, -BACKGROUND_BIAS] * 2)
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def retinaface_one_face_state_dict(landmarks_640: "Any") -> dict[str, torch.Tensor]:
    """The demo detector driven to one face (float32): the coarsest level's first anchor (256 px)
    fires everywhere with huge boxes, so NMS keeps the first prior (centred at 16, 16), and its
    five landmarks land on `landmarks_640` ([5, 2], pixels of the 640-px detection image)."""
    import math

    state = {k: v.float() for k, v in retinaface_state_dict().items()}
    state["ClassHead.2.conv1x1.bias"] = torch.tensor([-BACKGROUND_BIAS, BACKGROUND_BIAS, BACKGROUND_BIAS,
                                                      -BACKGROUND_BIAS])
    big = math.log(8000 / 256) / 0.2
    state["BboxHead.2.conv1x1.bias"] = torch.tensor([0.0, 0.0, big, big, 0, 0, 0, 0])
    deltas = (torch.as_tensor(landmarks_640, dtype=torch.float32) - 16.0) / (0.1 * 256)
    state["LandmarkHead.2.conv1x1.bias"] = torch.cat([deltas.reshape(-1), torch.zeros(10)])
    return state


ONE_FACE_SCALE, ONE_FACE_OFFSET = 0.09, (8.0, 6.0)
"""Where `write_retinaface_one_face` puts the face in a 64×64 image: the FFHQ template scaled by
0.09 and moved by (8, 6), i.e. the square x 8..54, y 6..52."""


def one_face_landmarks_64() -> torch.Tensor:
    """The five landmarks (pixels of a 64×64 image) of the face the driven detector finds."""
    from modules import face_restoration
    template = torch.as_tensor(face_restoration.FFHQ_TEMPLATE_512, dtype=torch.float32)
    return template * ONE_FACE_SCALE + torch.tensor(ONE_FACE_OFFSET)


def write_retinaface_one_face(path: str) -> str:
    """A detector file that finds one face in any 64×64 image (see `one_face_landmarks_64`)."""
    return _save(retinaface_one_face_state_dict(one_face_landmarks_64() * 10), path)


def _parse_conv(state: dict, key: str, cin: int, cout: int, norm: bool) -> None:
    """A ParseNet ConvLayer: ``conv2d`` (biased unless BatchNorm follows) and ``norm.norm``."""
    _conv(state, f"{key}.conv2d", cin, cout, 3, bias=not norm)
    if norm:
        _bn(state, f"{key}.norm.norm", cout)


def _parse_block(state: dict, key: str, cin: int, cout: int, resized: bool) -> None:
    if resized or cin != cout:
        _parse_conv(state, f"{key}.shortcut_func", cin, cout, norm=False)
    _parse_conv(state, f"{key}.conv1", cin, cout, norm=True)
    _parse_conv(state, f"{key}.conv2", cout, cout, norm=True)


def parsenet_state_dict() -> dict[str, torch.Tensor]:
    """The demo face parser's tensors (float16), keyed as ``parsing_parsenet.pth`` is."""
    state: dict[str, torch.Tensor] = {}
    _parse_conv(state, "encoder.0", 3, 64, norm=False)
    down = ((64, 128), (128, 256), (256, 256), (256, 256))
    for i, (cin, cout) in enumerate(down, start=1):
        _parse_block(state, f"encoder.{i}", cin, cout, resized=True)
    for i in range(10):
        _parse_block(state, f"body.{i}", 256, 256, resized=False)
    for i, (cin, cout) in enumerate(((256, 256), (256, 256), (256, 128), (128, 64))):
        _parse_block(state, f"decoder.{i}", cin, cout, resized=True)
    _parse_conv(state, "out_img_conv", 64, 3, norm=False)
    _parse_conv(state, "out_mask_conv", 64, 19, norm=False)
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def _from_class(build, seed_name: str) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + zlib.crc32(seed_name.encode()))
        model = build()
    return {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}


def gfpgan_state_dict() -> dict[str, torch.Tensor]:
    """spandrel's GFPGAN (v1 clean, 512 px, channel multiplier 2) with seeded random weights."""
    from modules import spandrel_loader
    arch = spandrel_loader.architecture_module("GFPGAN").GFPGAN
    return _from_class(lambda: arch(out_size=512, channel_multiplier=2, num_mlp=8, different_w=True,
                                    narrow=1, sft_half=True, input_is_latent=True), "gfpgan")


def codeformer_state_dict() -> dict[str, torch.Tensor]:
    """spandrel_extra_arches' CodeFormer with the smallest transformer (64 wide, 1 layer, 64 codes)."""
    from modules import spandrel_loader
    spandrel_loader.install_extra_architectures()
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    return _from_class(lambda: CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256),
                       "codeformer")


def write_retinaface(folder: str) -> str:
    """``<folder>/detection_Resnet50_Final.pth``; returns its path."""
    return _save(retinaface_state_dict(), os.path.join(folder, RETINAFACE_FILE))


def write_parsenet(folder: str) -> str:
    """``<folder>/parsing_parsenet.pth``; returns its path."""
    return _save(parsenet_state_dict(), os.path.join(folder, PARSENET_FILE))


def write_gfpgan(folder: str) -> str:
    """``<folder>/GFPGANv1.4.pth`` as published (``{"params_ema": …}``); returns its path."""
    return _save({"params_ema": gfpgan_state_dict()}, os.path.join(folder, GFPGAN_FILE))


def write_codeformer(folder: str) -> str:
    """``<folder>/codeformer-v0.1.0.pth`` as published (``{"params_ema": …}``); returns its path."""
    return _save({"params_ema": codeformer_state_dict()}, os.path.join(folder, CODEFORMER_FILE))


def _save(obj: dict, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path
