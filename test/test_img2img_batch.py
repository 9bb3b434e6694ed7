"""img2img's Batch tab backend (`modules.img2img_batch`): a folder of images through the real
generation path on the demo checkpoint — files saved under the inputs' names with their infotext,
masks from a folder, PNG info from the inputs, folders confined to the data folder, one
`ProcessingRunner.run` per input, and Interrupt stopping the batch."""
from __future__ import annotations

import os
import re
import uuid

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules import errors
from modules.api import models as m
from modules.img2img_batch import BatchSpec, run_img2img_batch
from modules.runtime.runner import ProcessingRunner


@pytest.fixture(scope="module", autouse=True)
def checkpoints(serena):
    """The session's checkpoint registry (a module run before may have emptied it)."""
    from modules import sd_models
    if not sd_models.checkpoints_list:
        sd_models.list_models()
    yield


@pytest.fixture()
def folder(serena):
    """A fresh folder inside the data folder; returns a maker of its sub-folders (relative paths)."""
    root = os.path.join("img2img-batch-tests", uuid.uuid4().hex[:8])

    def make(name: str) -> str:
        os.makedirs(os.path.join(serena.data_paths.data_path, root, name), exist_ok=True)
        return os.path.join(root, name)
    return make


@pytest.fixture()
def runner_calls(serena, monkeypatch):
    """`(state.job, state.job_count)` at each `ProcessingRunner.run`, the real method still running."""
    calls = []
    original = ProcessingRunner.run

    def recording(self, request):
        calls.append((serena.state.job, serena.state.job_count))
        return original(self, request)
    monkeypatch.setattr(ProcessingRunner, "run", recording)
    return calls


def gradient(seed: int, size=(64, 64)) -> Image.Image:
    """A deterministic colourful image (different per `seed`)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 4 + seed * 40) % 256, (y * 4 + seed * 70) % 256, ((x + y) * 2) % 256], -1)
    return Image.fromarray(arr.astype(np.uint8))


def save(serena, rel: str, name: str, image: Image.Image, infotext: str | None = None) -> str:
    info = None
    if infotext is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
    path = os.path.join(serena.data_paths.data_path, rel, name)
    image.save(path, pnginfo=info)
    return path


def request(**kwargs) -> m.StableDiffusionImg2ImgProcessingAPI:
    fields = dict(prompt="oil painting", seed=11, steps=2, width=64, height=64, sampler_name="Euler",
                  denoising_strength=0.6, save_images=True)
    fields.update(kwargs)
    return m.StableDiffusionImg2ImgProcessingAPI(**fields)


def outputs(serena, rel: str) -> list[str]:
    return sorted(os.listdir(os.path.join(serena.data_paths.data_path, rel)))


def parameters(serena, rel: str, name: str) -> str:
    with Image.open(os.path.join(serena.data_paths.data_path, rel, name)) as image:
        return image.info.get("parameters", "")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# --- tests ---------------------------------------------------------------------------------------------
def test_every_input_is_saved_under_its_name_with_infotext_one_runner_call_each(serena, folder, runner_calls,
                                                                                  clean_state):
    inputs, out = folder("in"), folder("out")
    for n, name in enumerate(("apple.png", "pear.jpg")):
        gradient(n).save(os.path.join(serena.data_paths.data_path, inputs, name))
    res = run_img2img_batch(request(override_settings_restore_afterwards=False),
                            BatchSpec(input_dir=inputs, output_dir=out), ui=True)
    assert len(res.images) == 2 and len(res.infotexts) == 2
    assert (serena.opts.save_to_dirs, serena.opts.samples_filename_pattern) == (True, ""), \
        "the batch's file naming stays the batch's, even when a request keeps its overrides"
    assert runner_calls == [("1 out of 2", 2), ("2 out of 2", 2)]
    files = outputs(serena, out)
    assert len(files) == 2 and [re.sub(r"^\d{5}-", "", f) for f in files] == ["apple.png", "pear.png"], files
    for name, infotext in zip(files, res.infotexts):
        saved = parameters(serena, out, name)
        assert saved == infotext and saved.startswith("oil painting\n")
        assert "Steps: 2" in saved and "Seed: 11" in saved and "Denoising strength: 0.6" in saved


def test_mask_folder_changes_only_the_masked_area(serena, folder, clean_state):
    inputs, masks, out = folder("in"), folder("masks"), folder("out")
    originals = {name: gradient(n) for n, name in enumerate(("a.png", "b.png"))}
    for name, image in originals.items():
        save(serena, inputs, name, image)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    save(serena, masks, "a.png", mask)  # b has no mask of its own: it is changed everywhere
    save(serena, masks, "other.png", Image.new("L", (64, 64), 255))
    res = run_img2img_batch(request(denoising_strength=0.9, mask_blur=0, inpainting_fill=1, inpaint_full_res=False),
                            BatchSpec(input_dir=inputs, output_dir=out, inpaint_mask_dir=masks))
    outside = np.ones((64, 64), dtype=bool)
    outside[16:40, 16:40] = False
    with Image.open(os.path.join(serena.data_paths.data_path, out, outputs(serena, out)[0])) as saved_a:
        a = pixels(saved_a)
    original_a, b, original_b = pixels(originals["a.png"]), pixels(res.images[1]), pixels(originals["b.png"])
    assert (a[outside] == original_a[outside]).all(), "the original is kept outside a's mask"
    assert np.abs(a[20:36, 20:36] - original_a[20:36, 20:36]).mean() > 1
    assert np.abs(b[outside] - original_b[outside]).mean() > 1, "no mask for b: changed outside the box too"


def test_png_info_prompt_and_seed_come_from_each_input(serena, folder, clean_state):
    inputs = folder("in")
    save(serena, inputs, "1-with-info.png", gradient(0),
         "a lighthouse\nNegative prompt: fog\nSteps: 5, Sampler: Euler a, CFG scale: 4, Seed: 4242, Size: 64x64")
    save(serena, inputs, "2-plain.png", gradient(1))
    spec = BatchSpec(input_dir=inputs, output_dir=folder("out"), use_png_info=True, png_info_props=("Prompt", "Seed"))
    res = run_img2img_batch(request(negative_prompt="blurry"), spec)
    from modules import infotext_utils
    first, second = (infotext_utils.parse_generation_parameters(t) for t in res.infotexts)
    assert first["Prompt"] == "oil painting a lighthouse" and first["Seed"] == "4242"
    assert first["Negative prompt"] == "blurry", "only the chosen properties are taken"
    assert first["Steps"] == "2" and first["Sampler"] == "Euler" and first["CFG scale"] == "7.0"
    assert second["Prompt"] == "oil painting" and second["Seed"] == "11", "no infotext: the request as it is"


def test_resize_by_and_several_images_per_input_number_the_files(serena, folder, clean_state):
    inputs, out = folder("in"), folder("out")
    save(serena, inputs, "wide.png", gradient(2, (196, 130)))
    res = run_img2img_batch(request(batch_size=2, steps=1), BatchSpec(input_dir=inputs, output_dir=out, scale_by=0.5))
    assert [im.size for im in res.images[res.index_of_first_image:]] == [(96, 64), (96, 64)]
    assert [re.sub(r"^\d{5}-", "", f) for f in outputs(serena, out)] == ["wide-1.png", "wide-2.png"]


@pytest.mark.parametrize("spec,field,message", [
    (BatchSpec(input_dir="/"), "img2img_batch_input_dir", "img2img batch: input directory '/' is outside the data"),
    (BatchSpec(input_dir="no-such-folder"), "img2img_batch_input_dir", "does not exist"),
    (BatchSpec(input_dir=""), "img2img_batch_input_dir", "img2img batch: enter an input directory"),
    (None, "img2img_batch_output_dir", "img2img batch: output directory '/tmp' is outside the data folder"),
    (None, "img2img_batch_inpaint_mask_dir", "inpaint mask directory '/' is outside"),
    (None, "scale_by", "x.png resized by 0.25 is 16x16"),
])
def test_folders_outside_the_data_folder_or_missing_are_refused(serena, folder, runner_calls, spec, field, message):
    if spec is None:
        inputs = folder("in")
        save(serena, inputs, "x.png", gradient(0))
        spec = {"img2img_batch_output_dir": BatchSpec(input_dir=inputs, output_dir="/tmp"),
                "img2img_batch_inpaint_mask_dir": BatchSpec(input_dir=inputs, inpaint_mask_dir="/"),
                "scale_by": BatchSpec(input_dir=inputs, scale_by=0.25)}[field]
    with pytest.raises(errors.InvalidParameter, match=re.escape(message)) as caught:
        run_img2img_batch(request(), spec)
    assert caught.value.field == field
    if "outside" in message:
        assert "--allow-outside-data-dir" in caught.value.message
    assert runner_calls == []


def test_interrupt_stops_the_batch_after_the_current_image(serena, folder, monkeypatch, clean_state):
    inputs, out = folder("in"), folder("out")
    for n in range(3):
        save(serena, inputs, f"{n}.png", gradient(n))
    calls = []
    original = ProcessingRunner.run

    def interrupting(self, request):
        calls.append(request)
        result = original(self, request)
        serena.state.interrupt()  # as the Interrupt button does while the first image finishes
        return result
    monkeypatch.setattr(ProcessingRunner, "run", interrupting)
    res = run_img2img_batch(request(steps=1), BatchSpec(input_dir=inputs, output_dir=out))
    assert len(calls) == 1 and len(res.images) == 1
    assert [re.sub(r"^\d{5}-", "", f) for f in outputs(serena, out)] == ["0.png"]


def test_photo_orientation_is_applied_before_resize_by(serena, folder, clean_state):
    inputs, out = folder("in"), folder("out")
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF Orientation: rotate 90° clockwise to display
    gradient(3, (96, 64)).save(os.path.join(serena.data_paths.data_path, inputs, "photo.jpg"), exif=exif)
    res = run_img2img_batch(request(steps=1), BatchSpec(input_dir=inputs, output_dir=out, scale_by=1.0))
    assert [im.size for im in res.images] == [(64, 96)]


def test_png_info_values_as_a1111_applies_them(serena, folder):
    from modules import img2img_batch, sd_models
    from modules.runtime import jobs as generation
    from modules.processing import StableDiffusionProcessingImg2Img
    args = generation.processing_args(request(), StableDiffusionProcessingImg2Img)
    loaded = sd_models.model_data.get_sd_model().sd_checkpoint_info
    params = {"Prompt": "a boat", "Negative prompt": "rain", "Seed": "99", "CFG scale": "3.5", "Steps": "4",
              "Sampler": "Euler Karras", "Model hash": loaded.shorthash}
    out = img2img_batch.apply_png_info(args, params, "x.png")
    assert (out["prompt"], out["negative_prompt"], out["seed"], out["cfg_scale"], out["steps"]) == \
        ("oil painting a boat", " rain", 99, 3.5, 4)
    assert (out["sampler_name"], out["scheduler"]) == ("Euler", "Karras")
    assert out["override_settings"]["sd_model_checkpoint"] == loaded.name
    assert img2img_batch.apply_png_info(args, {"Model hash": "0000000000"}, "x.png") == args
    with pytest.raises(errors.InvalidParameter, match="PNG info of x.png"):
        img2img_batch.apply_png_info(args, {"Seed": "many"}, "x.png")
    # The infotext read from the same-named file in the PNG info folder, only the chosen properties:
    info_dir = folder("info")
    save(serena, info_dir, "in.png", gradient(0), "a boat\nSteps: 4, Sampler: Euler, CFG scale: 3, Seed: 5, Size: 64x64")
    spec = BatchSpec(input_dir="unused", use_png_info=True, png_info_props=("Seed", "Steps"))
    folder_path = os.path.join(serena.data_paths.data_path, info_dir)
    assert img2img_batch.png_info(gradient(1), "in/in.png", spec, folder_path) == {"Seed": "5", "Steps": "4"}
    assert img2img_batch.png_info(gradient(1), "in/other.png", spec, folder_path) == {}


def test_the_selected_script_runs_for_each_input(serena, folder, runner_calls, clean_state):
    inputs, out = folder("in"), folder("out")
    for n, name in enumerate(("p.png", "q.png")):
        save(serena, inputs, name, gradient(n))
    req = request(steps=1, script_name="Loopback", script_args=[2, 0.5, "Linear", "None"])
    res = run_img2img_batch(req, BatchSpec(input_dir=inputs, output_dir=out))
    assert len(runner_calls) == 4, "two loops for each of the two inputs"
    assert [re.sub(r"^\d{5}-", "", f) for f in outputs(serena, out)] == ["p.png", "p.png", "q.png", "q.png"]
    assert len(res.images) == 6  # each input: the loops' grid and its two images
