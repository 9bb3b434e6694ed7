"""Infotext: format (spec §3), parsing with injected defaults, round trip, and storage in images."""
from __future__ import annotations

import io
import json
import struct

import pytest
from PIL import Image, PngImagePlugin

from modules import errors, infotext_utils as it
from modules.shared import opts


@pytest.fixture(autouse=True)
def _no_style_hook(monkeypatch):
    monkeypatch.setattr(it, "style_extractor", None)


BASE = {
    "Steps": 50, "Sampler": "Euler", "Schedule type": "Automatic", "CFG scale": 7.0, "Seed": 1234,
    "Size": "512x512", "Model hash": "0123456789", "Model": "mymodel", "Version": "v1.10.1",
}


# --- building ------------------------------------------------------------------------------------
def test_spec_example_is_reproduced_exactly():
    assert it.build_infotext("a cat", "", BASE) == (
        "a cat\nSteps: 50, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, "
        "Size: 512x512, Model hash: 0123456789, Model: mymodel, Version: v1.10.1")


def test_negative_line_only_when_non_empty_and_text_stripped():
    assert it.build_infotext("  a  ", "bad", {"Steps": 3}) == "a  \nNegative prompt: bad\nSteps: 3"
    assert it.build_infotext("", "", {"Steps": 3}) == "Steps: 3"
    assert it.build_infotext("", "n", {}) == "Negative prompt: n"


def test_none_omitted_bare_key_and_caller_order_kept():
    text = it.build_infotext("p", "", {"Zeta": 1, "Alpha": None, "Tiling": "Tiling", "Beta": True})
    assert text == "p\nZeta: 1, Tiling, Beta: True"


@pytest.mark.parametrize("value,written", [
    ("plain value", "plain value"),
    ("a, b", '"a, b"'),
    ("k: v", '"k: v"'),
    ("two\nlines", '"two\\nlines"'),
    ("ünï, cødé", '"ünï, cødé"'),
    ('say "hi", ok', '"say \\"hi\\", ok"'),
    (7.0, "7.0"),
    (False, "False"),
])
def test_quote(value, written):
    assert it.quote(value) == written


def test_unquote_passthrough_and_bad_json():
    assert it.unquote("abc") == "abc"
    assert it.unquote('"a\\"b"') == 'a"b'
    assert it.unquote('"bad \\x"') == '"bad \\x"'
    assert it.unquote("") == ""


# --- parsing ---------------------------------------------------------------------------------------
def test_parse_spec_example():
    text = it.build_infotext("a cat", "ugly", BASE)
    res = it.parse_generation_parameters(text, skip_fields=[])
    assert res["Prompt"] == "a cat" and res["Negative prompt"] == "ugly"
    assert res["Steps"] == "50" and res["CFG scale"] == "7.0" and res["Sampler"] == "Euler"
    assert (res["Size-1"], res["Size-2"]) == ("512", "512") and "Size" not in res
    # injected defaults with A1111's types
    assert res["Clip skip"] == "1" and res["RNG"] == "GPU" and res["Hires resize-1"] == 0
    assert res["Masked area padding"] == 32 and res["Schedule rho"] == 0
    assert res["Hires sampler"] == "Use same sampler" and res["Hires checkpoint"] == "Use same checkpoint"
    assert res["VAE Encoder"] == "Full" and res["FP8 weight"] == "Disable"
    assert res["Refiner switch by sampling steps"] is False
    assert "Cache FP16 weight for LoRA" not in res and "Emphasis" not in res
    assert "Downcast alphas_cumprod" not in res


def test_last_line_needs_three_pairs():
    res = it.parse_generation_parameters("a: b\nSteps: 3, Seed: 4", skip_fields=[])
    assert res["Prompt"] == "a: b\nSteps: 3, Seed: 4"
    assert "Steps" not in res


def test_multiline_prompts_and_negative():
    text = "line one\nline two\nNegative prompt: bad\nworse\nSteps: 1, Seed: 2, Size: 64x32"
    res = it.parse_generation_parameters(text, skip_fields=[])
    assert res["Prompt"] == "line one\nline two"
    assert res["Negative prompt"] == "bad\nworse"
    assert res["Size-1"] == "64" and res["Size-2"] == "32"


def test_a1111_style_text_with_empty_value_and_quotes():
    text = ('p\nSteps: 20, Lora hashes: "x: abc, y: def", Empty: , Hires upscaler: Latent, '
            'Note: "ünï \\"q\\""')
    res = it.parse_generation_parameters(text, skip_fields=[])
    assert res["Lora hashes"] == "x: abc, y: def"
    assert "Empty" not in res
    assert res["Hires upscaler"] == "Latent"
    assert res["Note"] == 'ünï "q"'


def test_emphasis_default_only_when_weighted():
    res = it.parse_generation_parameters("(cat:1.2)\nSteps: 1, Seed: 2, CFG scale: 3", skip_fields=[])
    assert res["Emphasis"] == "Original"
    res = it.parse_generation_parameters("cat\nSteps: 1, Seed: 2, CFG scale: 3", skip_fields=[])
    assert "Emphasis" not in res


def test_fp8_adds_cache_default():
    res = it.parse_generation_parameters("c\nSteps: 1, Seed: 2, FP8 weight: Enable for SDXL", skip_fields=[])
    assert res["Cache FP16 weight for LoRA"] is False


@pytest.mark.parametrize("version,prompt,sampler,expected", [
    ("v1.5.2", "[a:b:3]", "DDIM", {"Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod"}),
    ("v1.5.2", "a", "Euler", {"Downcast alphas_cumprod"}),
    ("v1.7.0-224-gabcdef12", "a", "DDIM", {"Downcast alphas_cumprod"}),
    ("v1.7.0-225-gabcdef12", "a", "DDIM", set()),
    ("v1.10.1", "[a]", "PLMS", set()),
    ("f2.0.1v1.10.1-previous-1-g", "[a]", "DDIM", set()),
])
def test_backcompat_flags(version, prompt, sampler, expected):
    text = f"{prompt}\nSteps: 1, Sampler: {sampler}, Seed: 2, Version: {version}"
    res = it.parse_generation_parameters(text, skip_fields=[])
    flags = {"Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod"}
    assert {k for k in flags if res.get(k) is True} == expected


def test_refiner_backcompat_and_auto_backcompat_off():
    text = "a\nSteps: 1, Seed: 2, Refiner: m, Version: v1.7.0"
    assert it.parse_generation_parameters(text, skip_fields=[])["Refiner switch by sampling steps"] is True
    with opts.override({"auto_backcompat": False}):
        res = it.parse_generation_parameters(text, skip_fields=[])
    assert res["Refiner switch by sampling steps"] is False and "Downcast alphas_cumprod" not in res


def test_first_pass_size_conversion():
    res = it.parse_generation_parameters("a\nSteps: 1, Size: 1024x768, First pass size: 0x0", skip_fields=[])
    assert (res["Size-1"], res["Size-2"]) == (640, 448)
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (1024, 768)


def test_hypernet_becomes_prompt_tag():
    res = it.parse_generation_parameters("a\nSteps: 1, Seed: 2, Hypernet: net, Hypernet strength: 0.5",
                                         skip_fields=[])
    assert res["Prompt"] == "a<hypernet:net:0.5>"


def test_skip_fields_and_option():
    text = it.build_infotext("a", "", BASE)
    assert "Seed" not in it.parse_generation_parameters(text, skip_fields=["Seed"])
    with opts.override({"infotext_skip_pasting": ["Model hash"]}):
        res = it.parse_generation_parameters(text)
    assert "Model hash" not in res and "Seed" in res


def test_style_hook(monkeypatch):
    def extract(prompt, negative):
        return (["Fancy"], prompt.replace(", masterpiece", ""), negative) if "masterpiece" in prompt else ([], prompt, negative)
    monkeypatch.setattr(it, "style_extractor", extract)
    res = it.parse_generation_parameters("cat, masterpiece\nSteps: 1, Seed: 2, CFG scale: 3", skip_fields=[])
    assert res["Prompt"] == "cat" and res["Styles array"] == ["Fancy"]
    with opts.override({"infotext_styles": "Ignore"}):
        res = it.parse_generation_parameters("cat, masterpiece\nSteps: 1, Seed: 2, CFG scale: 3", skip_fields=[])
    assert res["Prompt"] == "cat, masterpiece" and "Styles array" not in res


# --- round trip ------------------------------------------------------------------------------------
def _rebuild(params: dict, parsed: dict) -> dict:
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = parsed[key] if key in parsed else f"{parsed[key + '-1']}x{parsed[key + '-2']}"
    return out


ROUND_TRIP_CASES = [
    ("a cat", "", BASE),
    ("a cat\nwith two lines", "ugly\nblurry", BASE),
    ('photo of "Bob", age: 40', 'text: "no", watermark', {**BASE, "Denoising strength": 0.75}),
    ("日本語のプロンプト, ünïcödé ✓", "ネガティブ", {**BASE, "Hires prompt": "高解像度, detail"}),
    ("(masterpiece:1.2), [from:to:0.5], [a|b], <lora:x:0.8>", "(bad:1.4)",
     {**BASE, "Lora hashes": "x: 0123abcd", "TI hashes": "emb: 11aa, emb2: 22bb", "Emphasis": "No norm"}),
    ("trailing space ", "", {**BASE, "Hires upscaler": "Latent (nearest-exact)", "Hires upscale": 2.0,
                             "Hires steps": 10, "Denoising strength": 0.7}),
    ("", "only negative", BASE),
    ("Steps: 1, Seed: 2, Size: 3x4 looks like params", "", BASE),
    ("p", "", {**BASE, "Mask blur": 4, "Inpaint area": "Only masked", "Masked content": "latent noise",
               "Tiling": True, "RNG": "CPU", "Clip skip": 2, "ENSD": 31337, "Seed resize from": "128x64",
               "Variation seed": 5, "Variation seed strength": 0.3}),
    ("p", "", {**BASE, "Script note": 'has "quotes" inside', "Weird": '"wrapped"', "Spaces": "  padded ",
               "Empty": "", "Backslash": "C:\\path\\x", "Tab": "a\tb", "Bare": "Bare"}),
    ("p\n\nblank line inside", "n\n\nm", {**BASE, "Hires negative prompt": "neg\nmulti"}),
    ("a, b, c", "", {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.5,
                     "Seed": 4294967294, "Size": "64x64", "Version": "v1.10.1", "User": "ann"}),
]


@pytest.mark.parametrize("prompt,negative,params", ROUND_TRIP_CASES)
def test_round_trip(prompt, negative, params):
    text = it.build_infotext(prompt, negative, params)
    parsed = it.parse_generation_parameters(text, skip_fields=[])
    assert parsed["Prompt"] == prompt.lstrip()
    assert parsed["Negative prompt"] == negative
    for key, value in params.items():
        if key in parsed and value is not None:
            assert parsed[key] == str(value), key
    again = it.build_infotext(parsed["Prompt"], parsed["Negative prompt"], _rebuild(params, parsed))
    assert again == text


# --- images ----------------------------------------------------------------------------------------
TEXT = 'a "cat", ünï 世界\nNegative prompt: bad\nSteps: 20, Seed: 1, Size: 8x8'
LATIN = "a cat\nSteps: 20, Seed: 1, Size: 8x8"


def _png_chunk_types(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind, data[pos + 8:pos + 8 + min(length, 12)]))
        pos += 12 + length
    return out


def test_png_text_chunk_kinds():
    im = Image.new("RGB", (8, 8), "red")
    latin = it.image_to_bytes(im, "png", LATIN)
    uni = it.image_to_bytes(im, "PNG", TEXT)
    assert (b"tEXt", b"parameters\x00a") in _png_chunk_types(latin)
    assert any(kind == b"iTXt" and body.startswith(b"parameters") for kind, body in _png_chunk_types(uni))
    for data, text in ((latin, LATIN), (uni, TEXT)):
        info, items = it.read_info_from_image(Image.open(io.BytesIO(data)))
        assert info == text and "parameters" not in items


def test_png_keeps_other_string_items():
    im = Image.new("RGB", (8, 8))
    im.info["extra"] = "kept"
    im.info["number"] = 3
    back = Image.open(io.BytesIO(it.image_to_bytes(im, "png", "x")))
    info, items = it.read_info_from_image(back)
    assert info == "x" and items == {"extra": "kept"}


@pytest.mark.parametrize("fmt", ["jpg", "jpeg", "webp"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_exif_user_comment_unicode(fmt, mode):
    im = Image.new(mode, (8, 8))
    data = it.image_to_bytes(im, fmt, TEXT)
    assert b"UNICODE\x00" + TEXT.encode("utf-16-be") in data
    back = Image.open(io.BytesIO(data))
    assert back.format == ("WEBP" if fmt == "webp" else "JPEG") and back.mode == "RGB"
    assert it.read_info_from_image(back)[0] == TEXT


def test_jpeg_without_text_has_empty_comment():
    back = Image.open(io.BytesIO(it.image_to_bytes(Image.new("RGB", (8, 8)), "jpg", None)))
    assert it.read_info_from_image(back)[0] is None


def test_unknown_format_names_it():
    with pytest.raises(errors.InvalidParameter, match="'bmp'"):
        it.image_to_bytes(Image.new("RGB", (8, 8)), "bmp", "x")


def _handmade_exif(comment: bytes) -> bytes:
    """Little-endian TIFF written by hand (as other tools write it): IFD0 -> Exif IFD -> UserComment."""
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, 26) + struct.pack("<I", 0)
    exif_ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x9286, 7, len(comment), 44) + struct.pack("<I", 0)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd0 + exif_ifd + comment


@pytest.mark.parametrize("comment,expected", [
    (b"UNICODE\x00" + "héllo, 世界".encode("utf-16-be"), "héllo, 世界"),
    (b"ASCII\x00\x00\x00plain text", "plain text"),
])
def test_reads_handmade_exif(comment, expected):
    im = Image.new("RGB", (8, 8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=_handmade_exif(comment))
    assert it.read_info_from_image(Image.open(io.BytesIO(buf.getvalue())))[0] == expected


def test_gif_comment_and_ignored_keys():
    im = Image.new("P", (8, 8))
    buf = io.BytesIO()
    im.save(buf, "GIF", comment="gif params")
    info, items = it.read_info_from_image(Image.open(io.BytesIO(buf.getvalue())))
    assert info == "gif params" and "background" not in items


def test_novelai_conversion():
    im = Image.new("RGB", (64, 32))
    im.info.update({"Software": "NovelAI", "Description": "a girl",
                    "Comment": json.dumps({"uc": "bad", "steps": 28, "sampler": "k_euler", "scale": 11, "seed": 7})})
    info, _ = it.read_info_from_image(im)
    assert info == ("a girl\nNegative prompt: bad\nSteps: 28, Sampler: Euler, CFG scale: 11, Seed: 7, "
                    "Size: 64x32, Clip skip: 2, ENSD: 31337")


def test_pnginfo_written_by_pillow_directly_is_read():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", LATIN)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG", pnginfo=info)
    assert it.read_info_from_image(Image.open(io.BytesIO(buf.getvalue())))[0] == LATIN


def test_round_trip_fuzz():
    """Seeded random prompts and values over the characters that make the format delicate."""
    import random
    rng = random.Random(1234)
    alphabet = list("ab Z09") + [",", ":", '"', "\\", "\n", "\t", "(", ")", "[", "]", "<", ">", "|", "é", "世", "🙂",
                                 " ", "\r", "'", "{", "}", "=", "-", "/", "x"]

    def text(n):
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))

    for _ in range(400):
        prompt, negative = text(40), text(20)
        params = {"Steps": rng.randint(1, 150), "Sampler": "Euler a", "CFG scale": rng.choice([7.0, 3.5, 12]),
                  "Seed": rng.randint(0, 2**32), "Size": f"{rng.randint(1, 64) * 8}x{rng.randint(1, 64) * 8}",
                  "Hires prompt": text(15), "Script value": text(10), "Version": "v1.10.1"}
        built = it.build_infotext(prompt, negative, params)
        parsed = it.parse_generation_parameters(built, skip_fields=[])
        for key in ("Hires prompt", "Script value"):
            assert parsed[key] == params[key], (key, params[key], built)
        assert (parsed["Prompt"], parsed["Negative prompt"]) == (prompt.lstrip(), negative), built
        assert it.build_infotext(parsed["Prompt"], parsed["Negative prompt"], _rebuild(params, parsed)) == built


class _FakeStyles:
    """A styles database double: removes ", masterpiece" and reports style "Fancy"."""

    def extract_styles_from_prompt(self, prompt, negative):
        if prompt.endswith(", masterpiece"):
            return ["Fancy"], prompt[:-len(", masterpiece")], negative
        return [], prompt, negative


@pytest.mark.parametrize("hires,version,expected_prompt,expected_hires", [
    ("cat, masterpiece", "v1.10.1", "cat", ""),
    ("dog, masterpiece", "v1.10.1", "cat", "dog"),
    ("dog", "v1.10.1", "cat, masterpiece", "dog"),
    ("dog", "v1.8.0", "cat", "dog"),
])
def test_styles_from_shared_database_with_hires(monkeypatch, hires, version, expected_prompt, expected_hires):
    from modules import shared
    monkeypatch.setattr(shared, "prompt_styles", _FakeStyles(), raising=False)
    text = it.build_infotext("cat, masterpiece", "", {"Steps": 1, "Seed": 2, "Hires prompt": hires, "Version": version})
    res = it.parse_generation_parameters(text, skip_fields=[])
    assert res["Prompt"] == expected_prompt and res["Hires prompt"] == expected_hires
    assert ("Styles array" in res) == (expected_prompt == "cat")


def test_old_hires_width_height_option():
    with opts.override({"use_old_hires_fix_width_height": True}):
        res = it.parse_generation_parameters("a\nSteps: 1, Size: 512x512, Hires resize: 1024x768", skip_fields=[])
    assert (res["Size-1"], res["Size-2"]) == (1024, 768)


@pytest.mark.parametrize("data,expected", [
    (b"UNICODE\x00\xff\xfe" + "é".encode("utf-16-le"), "é"),
    (b"UNICODE\x00\xfe\xff" + "é".encode("utf-16-be"), "é"),
    (b"JIS\x00\x00\x00\x00\x00" + "日本".encode("shift_jis"), "日本"),
    (b"\x00" * 8 + b"abc\x00", "abc"),
    ("already text", "already text"),
])
def test_decode_user_comment(data, expected):
    assert it.decode_user_comment(data) == expected


def test_decode_user_comment_unknown_header():
    with pytest.raises(ValueError, match="BOGUS"):
        it.decode_user_comment(b"BOGUS\x00\x00\x00x")
    assert it.read_user_comment(b"not exif at all") is None


def test_novelai_malformed_is_ignored():
    im = Image.new("RGB", (8, 8))
    im.info.update({"Software": "NovelAI", "Description": "d", "Comment": "{not json"})
    assert it.read_info_from_image(im)[0] is None
