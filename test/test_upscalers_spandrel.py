"""Model upscalers through spandrel: the torchvision stand-in, demo files read back by spandrel's
detection, discovery and naming, loading checks, tiling, the upscale loop, extras and hires fix."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from modules import (demo_upscalers, errors, paths, shared, spandrel_loader, upscaler_spandrel, upscaler_tiling,
                     upscaling)
from test_processing_helpers import env, max_diff  # noqa: F401  (fixture)
from test_safe_load import _WritesAFile

DEMOS = {d.filename: d for d in demo_upscalers.DEMO_FILES}


def _image(width: int = 64, height: int = 64) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], -1).astype(np.uint8))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory) -> str:
    """A models folder holding every demo upscaler file."""
    models = str(tmp_path_factory.mktemp("upscaler-data") / "models")
    demo_upscalers.write_demo_upscalers(models)
    return models


@pytest.fixture()
def models_dir(demo_models, monkeypatch) -> str:
    """Serena's models folder pointed at `demo_models` for one test (the upscaler list follows it)."""
    monkeypatch.setattr(shared, "data_paths", paths.DataPaths(os.path.dirname(demo_models), demo_models))
    upscaler_spandrel.clear_cache()
    yield demo_models
    upscaler_spandrel.clear_cache()


@pytest.fixture()
def scratch_models(tmp_path, monkeypatch) -> str:
    """An empty models folder for one test."""
    models = str(tmp_path / "models")
    os.makedirs(models)
    monkeypatch.setattr(shared, "data_paths", paths.DataPaths(str(tmp_path), models))
    upscaler_spandrel.clear_cache()
    yield models
    upscaler_spandrel.clear_cache()


def _path(models: str, demo: demo_upscalers.DemoFile) -> str:
    return os.path.join(models, demo.folder, demo.filename)


# --- spandrel without torchvision -------------------------------------------------------------------
def test_spandrel_imports_without_leaving_a_torchvision_behind():
    spandrel = spandrel_loader.import_spandrel()
    assert spandrel.__version__ == "0.4.2"
    assert {"ESRGAN", "Compact", "SwinIR", "DAT", "HAT", "SCUNet", "LaMa", "RestoreFormer"} <= {
        a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures()}
    try:
        import torchvision  # noqa: F401
    except Exception:
        assert "torchvision" not in sys.modules and "torchvision.transforms.functional" not in sys.modules


def test_a_broken_torchvision_counts_as_missing_and_leaves_nothing_behind(monkeypatch):
    """A CUDA torchvision beside the CPU torch fails with RuntimeError while importing."""
    class BrokenFinder:
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision":
                sys.modules["torchvision._half_done"] = object()
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenFinder(), *sys.meta_path])
    assert spandrel_loader._torchvision_importable() is False
    assert not [n for n in sys.modules if n.startswith("torchvision")]


def test_normalize_stand_in_matches_the_formula():
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = spandrel_loader.normalize(x, [0.5, 0.4, 0.3], [0.5, 0.25, 0.1])
    expected = (x - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 0.25, 0.1]).view(3, 1, 1)
    assert torch.allclose(out, expected) and not torch.equal(out, x)
    with pytest.raises(ValueError, match="zero"):
        spandrel_loader.normalize(x, [0, 0, 0], [1, 0, 1])


def test_lama_stand_in_says_what_is_missing():
    import importlib
    spandrel_loader.import_spandrel()
    lama = importlib.import_module("spandrel.architectures.LaMa.__arch.LaMa")
    if lama.rotate is not spandrel_loader._lama_only:
        pytest.skip("a real torchvision is installed")
    with pytest.raises(NotImplementedError, match="LaMa"):
        lama.rotate(torch.zeros(1, 3, 4, 4), 90)
    with pytest.raises(NotImplementedError, match="LaMa"):
        lama.InterpolationMode.BILINEAR


# --- demo files, read back by spandrel's detection ----------------------------------------------------
@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_file_is_detected_by_spandrel(demo_models, name):
    demo = DEMOS[name]
    path = _path(demo_models, demo)
    descriptor = spandrel_loader.load_descriptor(upscaler_spandrel.read_state_dict(path), path)
    assert (descriptor.architecture.id, descriptor.scale) == (demo.architecture, demo.scale)
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)


def test_demo_key_layouts_are_the_published_ones(demo_models):
    old = torch.load(_path(demo_models, DEMOS["demo-esrgan-old-4x.pth"]), weights_only=True)
    assert {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.1.sub.1.weight", "model.3.weight",
            "model.6.weight", "model.8.weight", "model.10.weight"} <= set(old)
    new = safetensors.torch.load_file(_path(demo_models, DEMOS["demo-esrgan-new-4x.safetensors"]))
    assert {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "upconv1.weight",
            "upconv2.weight", "HRconv.weight", "conv_last.weight"} <= set(new)
    rrdb = torch.load(_path(demo_models, DEMOS["demo-realesrgan-rrdb-4x.pth"]), weights_only=True)
    assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight"} <= set(
        rrdb["params_ema"])
    compact = torch.load(_path(demo_models, DEMOS["demo-realesrgan-compact-4x.pth"]), weights_only=True)
    assert sorted(compact["params_ema"])[:3] == ["body.0.bias", "body.0.weight", "body.1.weight"]


def test_demo_files_are_deterministic(tmp_path, demo_models):
    for demo in (DEMOS["demo-esrgan-old-2x.pth"], DEMOS["demo-swinir-2x.pth"]):
        again = demo_upscalers.write_demo_file(str(tmp_path), demo)
        a = torch.load(again, weights_only=True)
        b = torch.load(_path(demo_models, demo), weights_only=True)
        flat_a, flat_b = demo_upscalers._flat(a), demo_upscalers._flat(b)
        assert list(flat_a) == list(flat_b) and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)


# --- discovery and naming ----------------------------------------------------------------------------
def test_listing_names_files_by_stem_after_the_builtins(models_dir):
    listed = upscaling.list_upscalers()
    names = [u["name"] for u in listed]
    stems = sorted((os.path.splitext(n)[0] for n in DEMOS), key=str.lower)
    assert names == ["None", "Lanczos", "Nearest", *stems]
    by_name = {u["name"]: u for u in listed}
    assert by_name["demo-esrgan-old-4x"] == {
        "name": "demo-esrgan-old-4x", "model_name": "ESRGAN_4x", "scale": 4, "model_url": None,
        "model_path": os.path.join(models_dir, "ESRGAN", "demo-esrgan-old-4x.pth")}
    assert by_name["demo-dat-2x"]["scale"] is None and by_name["demo-swinir-2x"]["model_name"] == "SwinIR 4x"
    assert upscaling.upscaler_names() == names


def test_unknown_name_lists_model_upscalers(models_dir):
    with pytest.raises(errors.InvalidParameter, match=r"'nope'.*Nearest, demo-dat-2x"):
        upscaling.find_upscaler("nope")


def test_new_file_is_listed_without_a_restart(scratch_models):
    assert upscaling.upscaler_names() == ["None", "Lanczos", "Nearest"]
    demo_upscalers.write_demo_file(scratch_models, DEMOS["demo-realesrgan-compact-4x.pth"])
    assert upscaling.upscaler_names()[3:] == ["demo-realesrgan-compact-4x"]


def test_known_real_esrgan_file_takes_a1111_name_when_enabled(scratch_models, monkeypatch):
    path = demo_upscalers.write_demo_file(scratch_models, DEMOS["demo-realesrgan-compact-4x.pth"])
    os.rename(path, os.path.join(os.path.dirname(path), "RealESRGAN_x4plus.pth"))
    assert upscaling.upscaler_names()[3:] == ["R-ESRGAN 4x+"]  # A1111's default enables it
    found = upscaler_spandrel.discover(scratch_models, {"realesrgan_enabled_models": []})
    assert found == []
    assert upscaler_spandrel.list_realesrgan_models(scratch_models) == [
        {"name": "R-ESRGAN 4x+", "path": os.path.join(scratch_models, "RealESRGAN", "RealESRGAN_x4plus.pth"),
         "scale": 4}]


def test_known_dat_file_is_listed_twice_as_in_a1111(scratch_models):
    path = demo_upscalers.write_demo_file(scratch_models, DEMOS["demo-dat-2x.pth"])
    os.rename(path, os.path.join(os.path.dirname(path), "DAT_x2.pth"))
    found = upscaler_spandrel.discover(scratch_models, {"dat_enabled_models": ["DAT x2"]})
    assert [(m.name, m.scale) for m in found] == [("DAT x2", 2), ("DAT_x2", None)]


def test_same_stem_in_two_folders_keeps_the_first(scratch_models):
    for folder in ("ESRGAN", "HAT"):
        os.makedirs(os.path.join(scratch_models, folder))
    demo_upscalers.write_demo_file(scratch_models, DEMOS["demo-esrgan-old-2x.pth"])
    os.link(os.path.join(scratch_models, "ESRGAN", "demo-esrgan-old-2x.pth"),
            os.path.join(scratch_models, "HAT", "demo-esrgan-old-2x.pth"))
    upscaler = upscaling.find_upscaler("demo-esrgan-old-2x")
    assert upscaler.model_path == os.path.join(scratch_models, "ESRGAN", "demo-esrgan-old-2x.pth")
    assert upscaling.upscaler_names().count("demo-esrgan-old-2x") == 1


# --- upscaling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,scale,size", [
    ("demo-esrgan-old-4x", 2, (128, 128)),   # one 4x pass, then Lanczos down to the target
    ("demo-esrgan-old-2x", 4, (256, 256)),   # two 2x passes
    ("demo-esrgan-old-2x", 3, (192, 192)),   # two passes, then Lanczos to exactly 3x
    ("demo-esrgan-new-4x", 4, (256, 256)),
    ("demo-realesrgan-rrdb-4x", 2, (128, 128)),
    ("demo-realesrgan-compact-4x", 4, (256, 256)),
    ("demo-swinir-2x", 2, (128, 128)),
    ("demo-dat-2x", 2, (128, 128)),
    ("demo-hat-2x", 2, (128, 128)),
])
def test_model_upscale_size(models_dir, name, scale, size):
    out = upscaling.upscale_image(_image(), name, scale=scale)
    assert out.size == size and out.mode == "RGB"
    assert max_diff(out, _image().resize(size, Image.Resampling.LANCZOS)) > 0  # the model ran


def test_upscale_is_deterministic_across_loads(models_dir):
    first = upscaling.upscale_image(_image(), "demo-esrgan-old-2x", scale=2).tobytes()
    upscaler_spandrel.clear_cache()
    assert upscaling.upscale_image(_image(), "demo-esrgan-old-2x", scale=2).tobytes() == first


def test_one_x_restoration_model_runs_once(models_dir, monkeypatch):
    calls = []
    real = upscaler_spandrel.run_model
    monkeypatch.setattr(upscaler_spandrel, "run_model", lambda *a: calls.append(1) or real(*a))
    out = upscaling.upscale_image(_image(), "demo-scunet-1x", scale=1)
    assert out.size == (64, 64) and calls == [1] and max_diff(out, _image()) > 0


def test_exact_size_goes_through_the_model(models_dir):
    assert upscaling.upscale_image(_image(), "demo-realesrgan-compact-4x", size=(100, 60)).size == (100, 60)


def test_model_is_cached_until_the_file_changes(models_dir):
    folder = upscaler_spandrel.FOLDERS_BY_NAME["ESRGAN"]
    path = os.path.join(models_dir, "ESRGAN", "demo-esrgan-old-2x.pth")
    first = upscaler_spandrel.load_model(path, folder)
    assert upscaler_spandrel.load_model(path, folder) is first
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert upscaler_spandrel.load_model(path, folder) is not first


def test_model_runs_in_float32_on_the_cpu(models_dir):
    descriptor = upscaler_spandrel.load_model(os.path.join(models_dir, "SwinIR", "demo-swinir-2x.pth"),
                                              upscaler_spandrel.FOLDERS_BY_NAME["SwinIR"])
    assert {(p.dtype, p.device.type) for p in descriptor.model.parameters()} == {(torch.float32, "cpu")}


def test_bgr_conversion_round_trips():
    image = _image(7, 5)
    tensor = upscaler_spandrel.image_to_tensor(image)
    assert tensor.shape == (1, 3, 5, 7)
    assert torch.allclose(tensor[0, 0], torch.from_numpy(np.asarray(image)[:, :, 2] / 255).float())  # blue first
    assert upscaler_spandrel.tensor_to_image(tensor).tobytes() == image.tobytes()


# --- tiling ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,tile,overlap,starts", [
    (64, 0, 8, [0]), (64, 64, 8, [0]), (64, 192, 8, [0]), (64, 32, 8, [0, 16, 32]),
    (64, 32, 0, [0, 32]), (100, 32, 8, [0, 22, 45, 68]), (40, 32, 40, [0, 8]),
])
def test_tile_starts(length, tile, overlap, starts):
    assert upscaler_tiling.tile_starts(length, tile, overlap) == starts


def test_pointwise_model_tiles_exactly():
    x = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(1))

    def double(t):
        return t.repeat_interleave(2, -1).repeat_interleave(2, -2) * 0.5

    assert torch.allclose(upscaler_tiling.tiled_apply(x, double, 24, 6), double(x), atol=1e-6)


def test_tile_boundaries_are_blended():
    """Each tile answers a different constant: across an overlap the output ramps between them."""
    values = iter(range(100))
    out = upscaler_tiling.tiled_apply(torch.zeros(1, 1, 8, 40), lambda t: torch.full_like(t, float(next(values))),
                                      tile=16, overlap=8)
    row = out[0, 0, 0]
    steps = (row[1:] - row[:-1]).abs()
    assert float(row[0]) == 0 and float(row[-1]) == 3  # four tiles across
    assert float(steps.max()) <= 0.25  # no seam (a hard edge would step by 1): ramps of 1/9 per pixel
    assert int((steps > 0).sum()) >= 3 * 8


@pytest.mark.parametrize("name", [n for n, d in DEMOS.items() if d.architecture != "SCUNet"])
def test_tiled_matches_untiled(demo_models, name):
    demo = DEMOS[name]
    descriptor = upscaler_spandrel.load_model(_path(demo_models, demo), upscaler_spandrel.FOLDERS_BY_NAME[demo.folder])
    whole = _pixels(upscaler_spandrel.run_model(descriptor, _image(), 0, 0))
    tiled = _pixels(upscaler_spandrel.run_model(descriptor, _image(), 32, 16))
    assert whole.shape == tiled.shape
    diff = np.abs(whole - tiled)
    assert diff.mean() < 1.0 and diff.max() <= 12, (diff.mean(), diff.max())


def test_tile_options_are_read_per_folder(models_dir, monkeypatch):
    seen = []
    real = upscaler_spandrel.run_model
    monkeypatch.setattr(upscaler_spandrel, "run_model", lambda d, im, t, o: seen.append((t, o)) or real(d, im, t, o))
    shared.opts.data.update(ESRGAN_tile=32, ESRGAN_tile_overlap=4, SWIN_tile=48, SWIN_tile_overlap=12)
    try:
        upscaling.upscale_image(_image(), "demo-hat-2x", scale=2)  # HAT uses the ESRGAN options, as in A1111
        upscaling.upscale_image(_image(), "demo-swinir-2x", scale=2)
    finally:
        for key in ("ESRGAN_tile", "ESRGAN_tile_overlap", "SWIN_tile", "SWIN_tile_overlap"):
            shared.opts.data.pop(key, None)
    assert seen == [(32, 4), (48, 12)]


# --- bad files ----------------------------------------------------------------------------------------
def _broken(scratch: str, kind: str) -> str:
    """A file in models/ESRGAN that must be refused; returns its path."""
    folder = os.path.join(scratch, "ESRGAN")
    os.makedirs(folder, exist_ok=True)
    if kind == "truncated-pth":
        path = demo_upscalers.write_demo_file(scratch, DEMOS["demo-esrgan-old-2x.pth"])
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == "truncated-safetensors":
        path = demo_upscalers.write_demo_file(scratch, DEMOS["demo-esrgan-new-4x.safetensors"])
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 100)
    elif kind == "wrong-architecture":
        path = os.path.join(folder, "swinir-in-esrgan.pth")
        torch.save(demo_upscalers.swinir(), path)
    elif kind == "not-a-model":
        path = os.path.join(folder, "not-a-model.pth")
        torch.save({"foo": torch.ones(3)}, path)
    else:  # edited: an ESRGAN whose trunk lost a tensor
        state = demo_upscalers.esrgan_old(scale=2)
        del state["model.1.sub.0.RDB2.conv3.0.weight"]
        path = os.path.join(folder, "edited.pth")
        torch.save(state, path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("truncated-pth", "corrupt or truncated"),
    ("truncated-safetensors", "corrupt or truncated"),
    ("wrong-architecture", "is a SwinIR model .*models/ESRGAN holds ESRGAN, Compact"),
    ("not-a-model", "not a model architecture spandrel recognises"),
    ("edited", "cannot build a model"),
])
def test_bad_file_is_refused_naming_it_and_the_next_upscale_works(scratch_models, kind, message):
    path = _broken(scratch_models, kind)
    name = os.path.splitext(os.path.basename(path))[0]
    with pytest.raises(errors.CheckpointLoadError, match=message) as info:
        upscaling.upscale_image(_image(), name, scale=2)
    assert os.path.basename(path) in str(info.value)
    demo_upscalers.write_demo_file(scratch_models, DEMOS["demo-realesrgan-compact-4x.pth"])
    assert upscaling.upscale_image(_image(), "demo-realesrgan-compact-4x", scale=2).size == (128, 128)


def test_pickled_code_payload_is_refused_and_never_runs(scratch_models, tmp_path):
    marker = str(tmp_path / "pwned.txt")
    os.makedirs(os.path.join(scratch_models, "ESRGAN"))
    payload = {"params_ema": demo_upscalers.esrgan_old(scale=2), "x": _WritesAFile(marker)}
    torch.save(payload, os.path.join(scratch_models, "ESRGAN", "evil.pth"))
    with pytest.raises(errors.CheckpointLoadError, match="evil.pth.*pickled objects"):
        upscaling.upscale_image(_image(), "evil", scale=2)
    assert not os.path.exists(marker)


def test_face_model_purpose_is_refused():
    class Descriptor:
        architecture = type("A", (), {"id": "ESRGAN"})()
        purpose = "FaceSR"
        scale, input_channels, output_channels = 1, 3, 3

    with pytest.raises(errors.CheckpointLoadError, match="f.pth.*FaceSR model, not an image upscaler"):
        upscaler_spandrel.check_descriptor(Descriptor(), "f.pth", upscaler_spandrel.FOLDERS_BY_NAME["ESRGAN"])


# --- extras -------------------------------------------------------------------------------------------
def test_extras_with_two_model_upscalers(models_dir):
    image, html = upscaling.run_extras(_image(), upscaling_resize=2, upscaler_1="demo-esrgan-old-2x",
                                       upscaler_2="demo-swinir-2x", extras_upscaler_2_visibility=0.5)
    assert image.size == (128, 128)
    assert "Postprocess upscaler: demo-esrgan-old-2x, Postprocess upscaler 2: demo-swinir-2x" in html
    alone, _ = upscaling.run_extras(_image(), upscaling_resize=2, upscaler_1="demo-esrgan-old-2x")
    assert max_diff(image, alone) > 0


# --- hires fix ----------------------------------------------------------------------------------------
@pytest.fixture()
def hires_env(env):
    """The processing environment (demo checkpoint loaded) with demo upscalers in its models folder."""
    from modules import processing  # noqa: F401  (loads the processing stack before the job)
    models = shared.data_paths.models_path
    for name in ("demo-esrgan-old-2x.pth", "demo-realesrgan-compact-4x.pth"):
        demo_upscalers.write_demo_file(models, DEMOS[name])
    shared.state.begin("test")
    yield models
    shared.state.end()
    shared.state.reset()


def _hires(**kwargs):
    """A 64x64 txt2img job with hires fix ×2 on the demo checkpoint."""
    from modules import processing
    base = dict(prompt="a red cube", seed=5, steps=2, width=64, height=64, sampler_name="Euler", enable_hr=True,
                hr_scale=2.0, denoising_strength=0.5, do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.process_images(processing.StableDiffusionProcessingTxt2Img(**base))


def test_hires_fix_with_an_esrgan_model(hires_env):
    res = _hires(hr_upscaler="demo-esrgan-old-2x", hr_second_pass_steps=2)
    assert res.images[0].size == (128, 128)
    assert "Hires steps: 2, Hires upscaler: demo-esrgan-old-2x" in res.infotexts[0]
    lanczos = _hires(hr_upscaler="Lanczos", hr_second_pass_steps=2)
    assert max_diff(res.images[0], lanczos.images[0]) > 0


def test_hires_fix_with_a_broken_model_fails_then_the_next_job_runs(hires_env):
    path = os.path.join(hires_env, "ESRGAN", "broken.pth")
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    try:
        with pytest.raises(errors.CheckpointLoadError, match="broken.pth"):
            _hires(hr_upscaler="broken", hr_second_pass_steps=1)
        shared.state.reset()
        shared.state.begin("test")
        assert _hires(hr_upscaler="demo-realesrgan-compact-4x", hr_second_pass_steps=1).images[0].size == (128, 128)
    finally:
        os.remove(path)
