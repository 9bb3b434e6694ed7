"""Saving (spec §8): folders, counters, pattern tags, sanitisation, atomic writes; grids and resizing."""
from __future__ import annotations

import datetime
import hashlib
import os
from types import SimpleNamespace

import pytest
from PIL import Image

from modules import errors, images, infotext_utils, shared
from modules.shared import opts


def make_p(**kw):
    base = dict(steps=20, cfg_scale=7.0, sampler_name="Euler a", scheduler="Automatic", styles=["Fancy", "None"],
                prompt="a cat", negative_prompt="ugly", batch_size=1, n_iter=1, batch_index=0, iteration=0,
                all_seeds=[10, 11, 12], denoising_strength=None, user="ann", sd_model_hash="abcdef0123",
                sd_model_name="my model", job_timestamp="20260101000000")
    base.update(kw)
    return SimpleNamespace(**base)


IMG = Image.new("RGB", (16, 8), (10, 20, 30))


# --- sanitisation ------------------------------------------------------------------------------------
def test_sanitize_default_mode():
    assert images.sanitize_filename_part('  a b#<>:"/\\|?*\n\r\tc. . ', replace_spaces=False) == "a b" + "_" * 13 + "c"
    assert images.sanitize_filename_part("  a b. ") == "__a_b._"
    assert images.sanitize_filename_part("  a b: c ..", replace_spaces=False) == "a b_ c"
    assert images.sanitize_filename_part(None) is None


def test_sanitize_unix_mode_and_length(monkeypatch):
    monkeypatch.setattr(shared.cmd_opts, "unix_filenames_sanitization", True, raising=False)
    assert images.sanitize_filename_part('a:b/c?', replace_spaces=False) == "a:b_c?"
    monkeypatch.setattr(shared.cmd_opts, "unix_filenames_sanitization", False, raising=False)
    assert len(images.sanitize_filename_part("x" * 300)) == 128
    monkeypatch.setattr(shared.cmd_opts, "filenames_max_length", 5, raising=False)
    assert images.sanitize_filename_part("abcd efgh") == "abcd_"
    assert images.sanitize_filename_part("abc  efgh", replace_spaces=False) == "abc"


# --- pattern tags ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,expected", [
    ("[seed]", "42"),
    ("[seed_first]-[seed_last]", "42"),
    ("[steps]_[cfg]_[width]x[height]", "20_7.0_16x8"),
    ("[styles]", "Fancy"),
    ("[sampler]", "Euler a"),
    ("[scheduler]", "Automatic"),
    ("[sampler_scheduler]", "Euler a Automatic"),
    ("[model_hash]-[model_name]", "abcdef0123-my model"),
    ("[prompt]", "a_cat,_very_long__prompt_with_many_words_here_and_more"),
    ("[prompt_spaces]", "a cat, very long_ prompt with many words here and more"),
    ("[prompt_words]", "a cat very long prompt with many words"),
    ("[prompt_hash]", hashlib.sha256(b"a cat, very long: prompt with many words here and more").hexdigest()[:8]),
    ("[prompt_hash<4>]", hashlib.sha256(b"a cat, very long: prompt with many words here and more").hexdigest()[:4]),
    ("[negative_prompt_hash]", hashlib.sha256(b"ugly").hexdigest()[:8]),
    ("[full_prompt_hash<6>]", hashlib.sha256(b"a cat, very long: prompt with many words here and more ugly").hexdigest()[:6]),
    ("[seed]-[batch_number]", "42"),
    ("[seed]-g[generation_number]-x", "42-x"),
    ("a-[denoising]", ""),
    ("[batch_size]", "1"),
    ("[hasprompt<cat><dog|nodog>]", "catnodog"),
    ("[user]", "ann"),
    ("[job_timestamp]", "20260101000000"),
    ("[none]", ""),
    ("[basename]", "img"),
    ("[clip_skip]", "1"),
    ("[unknown_tag] and [other<1>]", "[unknown_tag] and [other]"),
    ("[datetime<%Y>]", lambda: str(datetime.datetime.now().year)),
    ("[datetime<%H><UTC>]", lambda: f"{datetime.datetime.now(datetime.timezone.utc).hour:02}"),
    ("[image_hash<10>]", hashlib.sha256(IMG.tobytes()).hexdigest()[:10]),
    ("[SEED]", "42"),
])
def test_pattern_tags(pattern, expected):
    prompt = "a cat, very long: prompt with many words here and more"
    gen = images.FilenameGenerator(make_p(prompt=prompt), 42, prompt, IMG)
    if callable(expected):  # a clock value: read it around the call, so an hour/year change can't fail it
        before, got, after = expected(), gen.apply(pattern), expected()
        assert got in (before, after)
    else:
        assert gen.apply(pattern) == expected


def test_batch_tags_when_applicable():
    p = make_p(batch_size=3, n_iter=2, batch_index=1, iteration=1, denoising_strength=0.5)
    gen = images.FilenameGenerator(p, 11, "x", IMG)
    assert gen.apply("[seed_first]-[seed_last]-b[batch_number]-g[generation_number]-d[denoising]") == "10-12-b2-g5-d0.5"
    assert images.FilenameGenerator(p, 11, "x", IMG, zip=True).apply("[seed]-[batch_number]") == "11"


def test_tags_without_p_are_left_or_expanded():
    gen = images.FilenameGenerator(None, 5, "a dog", IMG)
    assert gen.apply("[seed]-[steps]-[prompt_words]-[seed_last]-[batch_number]") == \
        "5-[steps]-a dog-[seed_last]-[batch_number]"
    assert images.FilenameGenerator(None, None, None, IMG).apply("[seed]-[prompt_words]") == "-empty"


def test_prompt_words_option():
    with opts.override({"directories_max_prompt_words": 2}):
        assert images.FilenameGenerator(None, 1, "one two three", IMG).apply("[prompt_words]") == "one two"


def test_next_sequence_number(tmp_path):
    assert images.get_next_sequence_number(str(tmp_path / "missing"), "") == 0
    for name in ("00003-1.png", "00010-x.jpg", "abc.png", "grid-0007.png", "00002.txt"):
        (tmp_path / name).write_bytes(b"")
    assert images.get_next_sequence_number(str(tmp_path), "") == 11
    assert images.get_next_sequence_number(str(tmp_path), "grid") == 8


# --- save_image --------------------------------------------------------------------------------------
def test_save_default_layout_and_counter(tmp_path):
    info = "a cat\nSteps: 20, Seed: 42, Size: 16x8"
    fn, txt = images.save_image(IMG, str(tmp_path), "", 42, "a cat", "png", info=info, p=make_p())
    day = datetime.date.today().strftime("%Y-%m-%d")
    assert fn == str(tmp_path / day / "00000-42.png") and txt is None
    fn2, _ = images.save_image(IMG, str(tmp_path), "", 43, "a cat", "png", info=info)
    assert os.path.basename(fn2) == "00001-43.png"
    assert infotext_utils.read_info_from_image(Image.open(fn))[0] == info
    assert sorted(os.listdir(tmp_path / day)) == ["00000-42.png", "00001-43.png"]


def test_save_without_dirs_uses_seed_prompt_pattern(tmp_path):
    with opts.override({"save_to_dirs": False}):
        fn, _ = images.save_image(IMG, str(tmp_path), "", 7, "a: cat?", "png")
    assert os.path.basename(fn) == "00000-7-a_ cat_.png"


def test_save_custom_patterns_and_no_number(tmp_path):
    with opts.override({"directories_filename_pattern": "[model_name]/[seed]", "samples_filename_pattern": "[steps]-[seed]",
                        "save_images_add_number": False}):
        fn, _ = images.save_image(IMG, str(tmp_path), "", 9, "p", "png", p=make_p())
    assert fn == str(tmp_path / "my model" / "9" / "20-9.png")


@pytest.mark.parametrize("option, pattern", [
    ("directories_filename_pattern", "../../escaped"),
    ("directories_filename_pattern", "/tmp/escaped-abs"),
    ("samples_filename_pattern", "x/../../../escaped-[seed]"),
])
def test_patterns_cannot_leave_the_output_folder(tmp_path, option, pattern):
    out = tmp_path / "a" / "b" / "out"
    settings = {option: pattern, "save_to_dirs": option == "directories_filename_pattern"}
    with opts.override(settings), pytest.raises(errors.InvalidParameter, match=option):
        images.save_image(IMG, str(out), "", 3, "p", "png")
    created = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert created in ([], ["a", "a/b", "a/b/out"])  # at most the output folder itself, left empty


def test_grid_naming_and_forced_name(tmp_path):
    fn, _ = images.save_image(IMG, str(tmp_path), "grid", 1, "p", grid=True, short_filename=True, save_to_dirs=False)
    assert os.path.basename(fn) == "grid-0000.png"
    fn, _ = images.save_image(IMG, str(tmp_path), "grid", 1, "p", grid=True, short_filename=True, save_to_dirs=False)
    assert os.path.basename(fn) == "grid-0001.png"
    fn, _ = images.save_image(IMG, str(tmp_path), "", forced_filename="fixed", save_to_dirs=False)
    assert fn == str(tmp_path / "fixed.png")


def test_suffix_and_p_none(tmp_path):
    # the pattern follows the option save_to_dirs (on), not the argument, as in A1111
    fn, _ = images.save_image(IMG, str(tmp_path), "", 3, "p", suffix="-before-highres-fix", save_to_dirs=False, p=None)
    assert os.path.basename(fn) == "00000-3-before-highres-fix.png"


def test_save_txt_sidecar(tmp_path):
    with opts.override({"save_txt": True}):
        fn, txt = images.save_image(IMG, str(tmp_path), "", 1, "p", info="p\nSteps: 1", save_to_dirs=False)
    assert txt == fn[:-4] + ".txt"
    assert open(txt, encoding="utf8").read() == "p\nSteps: 1\n"


@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_save_lossy_with_exif(tmp_path, ext):
    info = "ünï, cat\nSteps: 1, Seed: 2, Size: 16x8"
    fn, _ = images.save_image(Image.new("RGBA", (16, 8)), str(tmp_path), "", 2, "p", ext, info=info, save_to_dirs=False)
    assert fn.endswith("." + ext)
    assert infotext_utils.read_info_from_image(Image.open(fn))[0] == info


def test_pnginfo_disabled_and_existing_info(tmp_path):
    fn, _ = images.save_image(IMG, str(tmp_path), "", 1, "p", info="x", existing_info={"extra": "y"}, save_to_dirs=False)
    assert Image.open(fn).info == {"extra": "y", "parameters": "x"}
    with opts.override({"enable_pnginfo": False}):
        fn, _ = images.save_image(IMG, str(tmp_path), "", 1, "p", info="x", save_to_dirs=False)
    assert "parameters" not in Image.open(fn).info


def test_unknown_extension(tmp_path):
    with pytest.raises(errors.InvalidParameter, match="'tiff'"):
        images.save_image(IMG, str(tmp_path), "", 1, "p", "tiff", save_to_dirs=False)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def half_write(self, fp, format=None, **kw):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        images.save_image(IMG, str(tmp_path), "", 1, "p", info="x", save_to_dirs=False)
    assert os.listdir(tmp_path) == []


def test_4chan_copy(tmp_path):
    big = Image.new("RGB", (80, 40), "green")
    with opts.override({"target_side_length": 32}):
        fn, _ = images.save_image(big, str(tmp_path), "", 1, "p", info="x", save_to_dirs=False)
    copy = fn[:-4] + ".jpg"
    assert Image.open(copy).size == (32, 16)
    assert infotext_utils.read_info_from_image(Image.open(copy))[0] == "x"
    with opts.override({"target_side_length": 32, "export_for_4chan": False}):
        fn, _ = images.save_image(big, str(tmp_path), "", 1, "p", save_to_dirs=False)
    assert not os.path.exists(fn[:-4] + ".jpg")
    with opts.override({"img_downscale_threshold": 0.0}):
        fn, _ = images.save_image(IMG, str(tmp_path), "", 1, "p", save_to_dirs=False)
    assert Image.open(fn[:-4] + ".jpg").size == (16, 8)


def test_replace_action_adds_suffix(tmp_path):
    images.save_image(IMG, str(tmp_path), "", forced_filename="f", save_to_dirs=False)
    with opts.override({"save_images_replace_action": "Add number suffix"}):
        fn, _ = images.save_image(IMG, str(tmp_path), "", forced_filename="f", save_to_dirs=False)
    assert fn == str(tmp_path / "f-1.png")


def test_before_image_saved_callback_can_rename(tmp_path):
    from modules import script_callbacks

    def rename(params):
        params.filename = os.path.join(os.path.dirname(params.filename), "renamed.png")
        params.pnginfo["parameters"] = "changed"
    seen = []

    def record(params):
        seen.append(params.filename)
    script_callbacks.on_before_image_saved(rename)
    script_callbacks.on_image_saved(record)
    try:
        fn, _ = images.save_image(IMG, str(tmp_path), "", 1, "p", info="x", save_to_dirs=False)
    finally:
        script_callbacks.remove_callbacks_for_function(rename)
        script_callbacks.remove_callbacks_for_function(record)
    assert fn == str(tmp_path / "renamed.png") and seen == [fn]
    assert Image.open(fn).info["parameters"] == "changed"


# --- grids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,n_rows,batch,prevent,expected", [
    (4, -1, 1, False, (2, 2)), (2, -1, 1, False, (1, 2)), (3, -1, 1, False, (2, 2)), (6, -1, 1, False, (2, 3)),
    (6, 0, 3, False, (3, 2)), (6, 3, 1, False, (3, 2)), (5, 9, 1, False, (5, 1)), (6, -1, 1, True, (2, 3)),
    (7, -1, 1, True, (1, 7)),
])
def test_grid_rows(n, n_rows, batch, prevent, expected):
    with opts.override({"n_rows": n_rows, "grid_prevent_empty_spots": prevent}):
        grid = images.image_grid([Image.new("RGB", (4, 2))] * n, batch_size=batch)
    rows, cols = expected
    assert grid.size == (cols * 4, rows * 2)


def test_grid_background_and_centering():
    big, small = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (2, 2), "blue")
    with opts.override({"grid_background_color": "#00ff00"}):
        grid = images.image_grid([big, small], rows=1)
    assert grid.size == (8, 4)
    assert grid.getpixel((4, 0)) == (0, 255, 0) and grid.getpixel((5, 1)) == (0, 0, 255)
    with pytest.raises(errors.InvalidParameter):
        images.image_grid([])


# --- resize / flatten / fix ---------------------------------------------------------------------------
def test_resize_modes():
    wide = Image.new("RGB", (100, 50), "white")
    assert images.resize_image(0, wide, 64, 64).size == (64, 64)
    crop = images.resize_image(1, wide, 64, 64)
    assert crop.size == (64, 64) and crop.getpixel((0, 0)) == (255, 255, 255)


def test_resize_and_fill_stretches_edges():
    wide = Image.new("RGB", (128, 32), (128, 128, 128))
    wide.paste((255, 0, 0), (0, 0, 128, 2))
    wide.paste((0, 0, 255), (0, 30, 128, 32))
    out = images.resize_image(2, wide, 64, 64)
    assert out.size == (64, 64)
    top, bottom = out.getpixel((32, 2)), out.getpixel((32, 61))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    tall = Image.new("RGB", (16, 64), (0, 255, 0))
    out = images.resize_image(2, tall, 64, 64)
    assert out.getpixel((1, 32))[1] > 200 and out.getpixel((62, 32))[1] > 200


def test_resize_force_rgba_keeps_alpha_and_skips_the_upscaler():
    """A1111's `force_RGBA` (soft inpainting, outpainting): an RGBA canvas, plain Lanczos resizing."""
    rgba = Image.new("RGBA", (32, 16), (255, 0, 0, 128))
    for mode in (0, 1, 2):
        out = images.resize_image(mode, rgba, 64, 64, upscaler_name="Bogus", force_RGBA=True)
        assert out.mode == "RGBA" and out.size == (64, 64) and out.getpixel((32, 32))[3] == 128
    assert images.resize_image(1, Image.new("RGB", (32, 16)), 64, 64).mode == "RGB"


def test_resize_with_upscaler_and_errors():
    small = Image.new("RGB", (16, 16), "white")
    assert images.resize_image(0, small, 40, 24, upscaler_name="Nearest").size == (40, 24)
    with pytest.raises(errors.InvalidParameter, match="resize_mode"):
        images.resize_image(4, small, 8, 8)
    with pytest.raises(errors.InvalidParameter, match="Bogus"):
        images.resize_image(0, small, 64, 64, upscaler_name="Bogus")


def test_flatten():
    im = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    im.putpixel((1, 0), (0, 0, 255, 255))
    out = images.flatten(im, "#00ff00")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 255, 0) and out.getpixel((1, 0)) == (0, 0, 255)
    assert images.flatten(Image.new("L", (1, 1)), "#fff").mode == "RGB"


def test_fix_image_orientation_and_transparency(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "o.jpg"
    Image.new("RGB", (20, 10)).save(path, exif=exif.tobytes())
    assert images.fix_image(Image.open(path)).size == (10, 20)
    p = Image.new("P", (2, 2))
    p.info["transparency"] = b"\x00"
    assert images.fix_image(p).mode == "RGBA"
    assert images.fix_image(None) is None


def _fake_samplers(monkeypatch):
    import sys

    import modules
    configs = {"DPM++ 2M": SimpleNamespace(options={"scheduler": "karras"}), "Euler a": SimpleNamespace(options={})}
    fake = SimpleNamespace(find_sampler_config=configs.get)
    monkeypatch.setitem(sys.modules, "modules.sd_samplers", fake)
    monkeypatch.setattr(modules, "sd_samplers", fake, raising=False)


@pytest.mark.parametrize("sampler,scheduler,expected", [
    ("DPM++ 2M", "Automatic", "DPM++ 2M Karras|Karras"),
    ("Euler a", "Automatic", "Euler a Automatic|Automatic"),
    ("Euler a", "sgm_uniform", "Euler a Sgm_uniform|Sgm_uniform"),
])
def test_sampler_scheduler_tags(monkeypatch, sampler, scheduler, expected):
    _fake_samplers(monkeypatch)
    gen = images.FilenameGenerator(make_p(sampler_name=sampler, scheduler=scheduler), 1, "x", IMG)
    assert gen.apply("[sampler_scheduler]|[scheduler]") == expected


def test_prompt_no_styles(monkeypatch):
    styles = {"Fancy": "{prompt}, masterpiece", "Dark": "dark"}
    fake = SimpleNamespace(get_style_prompts=lambda names: [styles[n] for n in names if n in styles])
    monkeypatch.setattr(shared, "prompt_styles", fake, raising=False)
    gen = images.FilenameGenerator(make_p(styles=["Fancy", "Dark"]), 1, "a cat, masterpiece, dark", IMG)
    assert gen.apply("[prompt_no_styles]") == "a cat"


def test_vae_filename_and_bad_timezone(monkeypatch):
    import sys

    import modules
    gen = images.FilenameGenerator(make_p(), 1, "x", IMG)
    fake = SimpleNamespace(loaded_vae_file="/models/VAE/.hidden.vae.pt")
    monkeypatch.setitem(sys.modules, "modules.sd_vae", fake)
    monkeypatch.setattr(modules, "sd_vae", fake, raising=False)
    assert gen.apply("[vae_filename]") == "hidden"
    fake.loaded_vae_file = "/models/VAE/kl-f8.safetensors"
    assert gen.apply("[vae_filename]") == "kl-f8"
    fake.loaded_vae_file = None
    assert gen.apply("[vae_filename]") == "NoneType"
    assert gen.apply("[datetime<%Y><No/Such_Zone>]") == str(datetime.datetime.now().year)


def test_split_and_combine_grid_round_trip():
    im = Image.effect_noise((200, 150), 50).convert("RGB")
    grid = images.split_grid(im, tile_w=64, tile_h=64, overlap=16)
    assert [y for y, _, _ in grid.tiles] == [0, 43, 86]
    assert [x for x, _, _ in grid.tiles[0][2]] == [0, 45, 90, 136]
    assert all(tile.size == (64, 64) for _, _, row in grid.tiles for _, _, tile in row)
    assert images.combine_grid(grid).tobytes() == im.tobytes()
    single = images.split_grid(Image.new("RGB", (64, 64)), 64, 64, 8)
    assert len(single.tiles) == 1 and len(single.tiles[0][2]) == 1
    with pytest.raises(errors.InvalidParameter, match="overlap"):
        images.split_grid(im, 32, 32, 32)


def test_combine_grid_cross_fades_overlap():
    black, white = Image.new("RGB", (32, 16), "black"), Image.new("RGB", (32, 16), "white")
    grid = images.Grid([[0, 16, [[0, 32, black], [16, 32, white]]]], 32, 16, 48, 16, 16)
    out = images.combine_grid(grid)
    ramp = [out.getpixel((x, 5))[0] for x in range(16, 32)]
    assert ramp == sorted(ramp) and ramp[0] == 0 and ramp[-1] > 230
    assert out.getpixel((40, 5)) == (255, 255, 255)


def test_read_info_reexported():
    assert images.read_info_from_image is infotext_utils.read_info_from_image
