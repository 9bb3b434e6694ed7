"""Textual-inversion formats and families (`modules.textual_inversion`): embeddings stored in images
as A1111 stores them (PNG text chunk, data in the pixels, WebP), SDXL pairs and wrong widths skipped
on the SD1 demo model with their shape, and unreadable files skipped with a logged reason."""
from __future__ import annotations

import base64
import logging
import os
import types
import zlib

import pytest
import torch
from PIL import Image

from modules import demo_checkpoint, demo_embeddings, shared
from modules.textual_inversion import image_embedding, textual_inversion
from job_helpers import empty_folder, image_bytes, job
from test_processing_helpers import env  # noqa: F401  (fixture)

DEMO = demo_checkpoint.demo_embedding_vectors


# --- the formats, without a model ----------------------------------------------------------------

def test_a1111_lcg_stream():
    """The first values of A1111's LCG (published with its own test of this format)."""
    assert image_embedding.lcg_bytes(10).tolist() == [253, 242, 127, 44, 157, 27, 239, 133, 38, 79]
    g = image_embedding.lcg()
    assert [next(g) for _ in range(10)] == [253, 242, 127, 44, 157, 27, 239, 133, 38, 79]


def test_text_chunk_encoding_round_trips():
    data = demo_embeddings.demo_embedding_data("x", vectors=2)
    encoded = image_embedding.embedding_to_b64(data)
    assert b"TORCHTENSOR" in base64.b64decode(encoded)
    back = image_embedding.embedding_from_b64(encoded)
    assert back["name"] == "x" and back["step"] == 100
    assert torch.equal(back["string_to_param"]["*"].float(), DEMO(2))


def test_pixel_data_round_trips_and_keeps_the_picture():
    data = demo_embeddings.demo_embedding_data("x", vectors=3)
    picture = demo_embeddings.demo_picture()
    image = image_embedding.insert_image_data_embed(picture, data)
    assert image.size[1] == picture.size[1] and image.size[0] > picture.size[0] + 2
    back = image_embedding.extract_image_data_embed(image)
    assert torch.equal(back["string_to_param"]["*"].float(), DEMO(3))
    low_width = (image.size[0] - picture.size[0] - 2) // 2
    inner = image.crop((low_width + 1, 0, low_width + 1 + picture.size[0], picture.size[1]))
    assert inner.tobytes() == picture.tobytes()
    assert image_embedding.extract_image_data_embed(picture) is None        # a plain picture


def test_non_numeric_tensor_json_is_refused():
    with pytest.raises(ValueError, match="numbers"):
        image_embedding.decode_json('{"a": {"TORCHTENSOR": [["x", "y"]]}}')


def test_family_decision_reads_the_widths():
    sd1 = types.SimpleNamespace(text_encoder=types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=768)))
    sdxl = types.SimpleNamespace(text_encoder=sd1.text_encoder, text_encoder_2=types.SimpleNamespace(
        config=types.SimpleNamespace(hidden_size=1280)))
    sd2 = types.SimpleNamespace(text_encoder=types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=1024)),
                                text_encoder_2=None)
    widths = {k: textual_inversion.model_widths(m) for k, m in (("sd1", sd1), ("sdxl", sdxl), ("sd2", sd2))}
    assert widths == {"sd1": (768, None), "sdxl": (768, 1280), "sd2": (1024, None)}
    plain768 = textual_inversion.create_embedding_from_data({"emb_params": torch.zeros(2, 768)}, "a", "a")
    plain1024 = textual_inversion.create_embedding_from_data({"emb_params": torch.zeros(2, 1024)}, "b", "b")
    pair = textual_inversion.create_embedding_from_data(demo_embeddings.demo_sdxl_vectors(2), "c", "c")
    fits = {name: [textual_inversion.fits_model(e, widths[k]) for k in ("sd1", "sd2", "sdxl")]
            for name, e in (("768", plain768), ("1024", plain1024), ("pair", pair))}
    assert fits == {"768": [True, False, False], "1024": [False, True, False], "pair": [False, False, True]}
    assert (pair.shape, pair.vectors) == (768 + 1280, 2)
    assert set(pair.vec) == {"clip_l", "clip_g"} and pair.vec["clip_g"].dtype == torch.float32
    assert torch.equal(pair.vec["clip_l"], demo_embeddings.demo_sdxl_vectors(2)["clip_l"])


def test_sdxl_pair_with_different_vector_counts_is_refused():
    with pytest.raises(ValueError, match="clip_l has 2 vectors but clip_g 3"):
        textual_inversion.create_embedding_from_data(
            {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)}, "x", "x.safetensors")


# --- loading on the demo model -------------------------------------------------------------------

@pytest.fixture()
def folder(env):
    with empty_folder(textual_inversion.embeddings_dir()) as path:
        yield path
    load()


def load() -> textual_inversion.EmbeddingDatabase:
    database = textual_inversion.embedding_db
    database.load_textual_inversion_embeddings(shared.sd_model, force_reload=True)
    return database


def test_image_embeddings_load_equal_to_what_was_written(folder):
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "textemb.png"), vectors=2, store="text")
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "pixemb.png"), vectors=3, store="pixels")
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "sub", "bothemb.png"), vectors=1, store="both")
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "webpfile.webp"), vectors=2, store="pixels",
                                               name="webpemb")
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "skipme.preview.png"), store="text")
    demo_embeddings.demo_picture().save(os.path.join(folder, "justapicture.png"))
    database = load()
    assert list(database.word_embeddings) == ["bothemb", "pixemb", "textemb", "webpemb"]
    expected = {"textemb": 2, "pixemb": 3, "bothemb": 1, "webpemb": 2}
    for name, vectors in expected.items():
        embedding = database.word_embeddings[name]
        assert torch.equal(embedding.vec, DEMO(vectors)), name
        assert (embedding.shape, embedding.vectors, embedding.step) == (64, vectors, 100)
    assert database.word_embeddings["webpemb"].filename == os.path.join(folder, "webpfile.webp")
    assert database.failed == {} and database.skipped_embeddings == {}


def test_an_image_embedding_conditions_like_the_same_vectors_in_a_file(folder):
    demo_embeddings.write_demo_image_embedding(os.path.join(folder, "pngemb.png"), vectors=2, store="pixels")
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "stemb.safetensors"), vectors=2)
    load()
    cond = shared.sd_model.cond_stage_model
    assert torch.equal(cond(["a pngemb cube"]), cond(["a stemb cube"]))
    assert not torch.equal(cond(["a pngemb cube"]), cond(["a cube"]))


def test_sdxl_and_wrong_width_embeddings_are_skipped_with_their_shape(folder):
    plain = job(prompt="a red cube xlemb wideemb")
    demo_embeddings.write_demo_sdxl_embedding(os.path.join(folder, "xlemb.safetensors"), vectors=2)
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "wideemb.safetensors"), width=768)
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "goodemb.safetensors"))
    database = load()
    assert set(database.word_embeddings) == {"goodemb"}
    skipped = {n: (e.shape, e.vectors) for n, e in database.skipped_embeddings.items()}
    assert skipped == {"xlemb": (768 + 1280, 2), "wideemb": (768, 1)}
    assert database.expected_shape == 64 and database.expected_widths == (64, None)
    res = job(prompt="a red cube xlemb wideemb")
    assert image_bytes(res) == image_bytes(plain) and "TI hashes" not in res.infotexts[0]


def test_truncated_files_are_skipped_with_a_logged_reason_and_the_job_goes_on(folder, caplog):
    plain = job(prompt="a red cube cutst cutpt cutpng")
    for name, write in (("cutst.safetensors", demo_checkpoint.write_demo_embedding),
                        ("cutpt.pt", demo_checkpoint.write_demo_embedding),
                        ("cutpng.png", lambda p: demo_embeddings.write_demo_image_embedding(p, store="text"))):
        path = write(os.path.join(folder, name))
        raw = open(path, "rb").read()
        open(path, "wb").write(raw[: len(raw) // 2])
    pixels = demo_embeddings.write_demo_image_embedding(os.path.join(folder, "cutpix.png"), vectors=3, store="pixels")
    image = Image.open(pixels).convert("RGB")
    width = image.size[0]
    image.crop((0, 0, width, image.size[1] // 2)).save(pixels)   # half the rows: the stream is cut
    with caplog.at_level(logging.ERROR, logger=textual_inversion.__name__):
        database = load()
    assert database.word_embeddings == {}
    assert set(database.failed) == {os.path.join(folder, n)
                                    for n in ("cutst.safetensors", "cutpt.pt", "cutpng.png", "cutpix.png")}
    for path, reason in database.failed.items():
        assert os.path.basename(path) in reason
        assert any(path in r.getMessage() for r in caplog.records), path
    res = job(prompt="a red cube cutst cutpt cutpng")
    assert image_bytes(res) == image_bytes(plain)


def test_zlib_cap_refuses_a_bomb(monkeypatch):
    monkeypatch.setattr(image_embedding, "MAX_DECOMPRESSED", 1000)
    with pytest.raises(ValueError, match="more than 1000"):
        image_embedding._inflate(zlib.compress(b"\0" * 5000, level=9))
    with pytest.raises(ValueError, match="truncated"):
        image_embedding._inflate(zlib.compress(b"abc" * 100)[:10])
