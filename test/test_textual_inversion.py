"""Textual-inversion embeddings (`modules.textual_inversion`): files, triggering on token ids,
chunking, emphasis, negative prompts, infotext — through the real loading code and text encoder
of the demo checkpoint."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from modules import demo_checkpoint, infotext_utils, shared, text_conditioner
from modules.textual_inversion import textual_inversion
from job_helpers import empty_folder, image_bytes, job
from test_processing_helpers import env  # noqa: F401  (fixture)

NAME = "sernemb"        # 3 vectors
NEG = "negemb"          # 1 vector


@pytest.fixture()
def folder(env):
    """An empty `<data>/embeddings`, emptied again afterwards (the next load sees the change)."""
    with empty_folder(textual_inversion.embeddings_dir()) as path:
        yield path
    load()


def load(force: bool = False) -> textual_inversion.EmbeddingDatabase:
    database = textual_inversion.embedding_db
    database.load_textual_inversion_embeddings(shared.sd_model, force_reload=force)
    return database


def conditioner() -> text_conditioner.ClipConditioner:
    return shared.sd_model.cond_stage_model


def sha12(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]


def by_hand(pieces: list, clip_skip: int = 1) -> torch.Tensor:
    """The encoder's output for one chunk built by hand: `pieces` are texts or `[n, D]` tensors.

    Each tensor's rows go into the token-embedding table at spare ids (0, 1, …; restored afterwards),
    and those ids stand at the tensor's positions: the encoder itself does the rest.
    """
    cond = conditioner()
    table = shared.sd_model.text_encoder.get_input_embeddings().weight
    ids, saved, spare = [cond.id_start], {}, 0
    with torch.no_grad():
        for piece in pieces:
            if isinstance(piece, str):
                ids += cond.tokenize([piece])[0]
                continue
            for row in piece:
                saved[spare] = table[spare].clone()
                table[spare] = row.to(table.dtype)
                ids.append(spare)
                spare += 1
        ids += [cond.id_end] * (77 - len(ids))
        try:
            return cond.encode_tokens(torch.tensor([ids]), clip_skip)
        finally:
            for index, row in saved.items():
                table[index] = row


# --- files ---------------------------------------------------------------------------------------

def test_formats_load_recursively_and_list_their_fields(folder):
    pt = demo_checkpoint.write_demo_embedding(os.path.join(folder, "sub", "deeper", "ptemb.pt"), vectors=2)
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "stemb.safetensors"), vectors=3)
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "sub", "binemb.bin"))
    open(os.path.join(folder, "empty.pt"), "wb").close()
    open(os.path.join(folder, "notes.txt"), "w").write("not an embedding")
    database = load()
    assert set(database.word_embeddings) == {"ptemb", "stemb", "binemb"}
    pt_emb = database.word_embeddings["ptemb"]
    assert (pt_emb.vectors, pt_emb.shape, pt_emb.step) == (2, 64, 100)
    assert (pt_emb.sd_checkpoint, pt_emb.sd_checkpoint_name) == ("0123456789", "serena-demo-tiny")
    assert pt_emb.shorthash == sha12(pt) and pt_emb.filename == pt
    assert torch.equal(pt_emb.vec, demo_checkpoint.demo_embedding_vectors(2))
    st = database.word_embeddings["stemb"]
    assert (st.vectors, st.shape, st.step, st.sd_checkpoint) == (3, 64, None, None)
    assert torch.equal(database.word_embeddings["binemb"].vec, demo_checkpoint.demo_embedding_vectors(1))
    assert database.skipped_embeddings == {} and database.failed == {}


def test_demo_safetensors_embedding_has_fixed_bytes(tmp_path):
    a = demo_checkpoint.write_demo_embedding(str(tmp_path / "a.safetensors"), vectors=2)
    b = demo_checkpoint.write_demo_embedding(str(tmp_path / "b.safetensors"), vectors=2)
    assert open(a, "rb").read() == open(b, "rb").read()


def test_pickled_code_is_refused_and_never_runs(folder, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = os.path.join(folder, "evil.pt")
    torch.save({"string_to_param": {"*": torch.zeros(1, 64)}, "hook": Payload()}, path)
    database = load()
    assert not marker.exists()
    assert "evil" not in database.word_embeddings and "evil" not in database.skipped_embeddings
    assert "refused" in database.failed[path]
    assert torch.equal(conditioner()(["an evil cube"]), by_hand(["an evil cube"]))


def test_wrong_width_is_skipped_and_not_triggered(folder):
    before = conditioner()(["a wideemb cube"])
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "wideemb.safetensors"), width=1024)
    database = load()
    assert "wideemb" not in database.word_embeddings
    skipped = database.skipped_embeddings["wideemb"]
    assert (skipped.shape, skipped.vectors) == (1024, 1)
    assert torch.equal(conditioner()(["a wideemb cube"]), before)


# --- conditioning --------------------------------------------------------------------------------

def test_conditioning_equals_vectors_substituted_by_hand(folder):
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    load()
    vec = demo_checkpoint.demo_embedding_vectors(3)
    got = conditioner()([f"a photo of {NAME} cube"])
    assert got.shape == (1, 77, 64)
    assert torch.equal(got, by_hand(["a photo of", vec, "cube"]))
    assert not torch.equal(got, conditioner()(["a photo of cube"]))
    # clip skip goes through the same substitution
    assert torch.equal(conditioner()([f"{NAME}"], clip_skip=2), by_hand([vec], clip_skip=2))


def test_longest_name_matches_first(folder):
    demo_checkpoint.write_demo_embedding(os.path.join(folder, "sern.safetensors"), salt="short")
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    load()
    cond = conditioner()
    assert len(cond.tokenize([NAME])[0]) > len(cond.tokenize(["sern"])[0])
    (chunk,), count = cond.tokenize_line(f"{NAME} sern")
    assert [(f.offset, f.embedding.name) for f in chunk.fixes] == [(0, NAME), (3, "sern")]
    assert count == 4


def test_emphasis_weights_apply_to_the_embedding_vectors(folder):
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    load()
    (chunk,), count = conditioner().tokenize_line(f"a ({NAME}:1.5) cube")
    assert chunk.multipliers[1:6] == [1.0, 1.5, 1.5, 1.5, 1.0]
    assert chunk.tokens[2:5] == [0, 0, 0] and count == 5
    vec = demo_checkpoint.demo_embedding_vectors(3)
    z = by_hand(["a", vec, "cube"])
    expected = text_conditioner.emphasis_original(z, torch.tensor([chunk.multipliers]))
    assert torch.equal(conditioner()([f"a ({NAME}:1.5) cube"]), expected)


def test_an_embedding_that_does_not_fit_starts_the_next_chunk(folder):
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    load()
    cond = conditioner()
    assert len(cond.tokenize(["cat " * 73])[0]) == 73
    chunks, count = cond.tokenize_line("cat " * 73 + NAME)          # 73 + 3 > 75: moved whole
    assert len(chunks) == 2 and count == 75 + 3
    assert chunks[0].fixes == [] and chunks[0].tokens[74:] == [cond.id_end] * 3
    assert [f.offset for f in chunks[1].fixes] == [0] and chunks[1].tokens[1:4] == [0, 0, 0]
    chunks, count = cond.tokenize_line("cat " * 72 + NAME)          # 72 + 3 = 75: fits
    assert len(chunks) == 1 and count == 75 and chunks[0].fixes[0].offset == 72
    vec = demo_checkpoint.demo_embedding_vectors(3)
    got = cond(["cat " * 73 + NAME])
    assert torch.equal(got[:, 77:], by_hand([vec]))
    assert torch.equal(got[:, :77], by_hand(["cat " * 73]))


def test_comma_backtrack_moves_the_embedding_with_its_tokens(folder):
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NEG + ".safetensors"))
    load()
    cond = conditioner()
    chunks, _ = cond.tokenize_line("cat " * 70 + ", " + NEG + " cat cat cat cat")
    assert chunks[0].fixes == []
    assert [f.offset for f in chunks[1].fixes] == [0] and chunks[1].tokens[1] == 0


# --- jobs ----------------------------------------------------------------------------------------

def test_jobs_with_and_without_the_embedding(folder):
    before = image_bytes(job(prompt=f"a red cube {NAME}"))
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    with_it = job(prompt=f"a red cube {NAME}")   # picked up without a refresh: the folder changed
    assert image_bytes(with_it) != before
    assert image_bytes(job(prompt="a red cube")) != image_bytes(with_it)
    os.remove(os.path.join(folder, NAME + ".safetensors"))
    assert image_bytes(job(prompt=f"a red cube {NAME}")) == before


def test_unrelated_job_is_byte_identical_with_embeddings_present(folder):
    plain = job(prompt="a red cube")
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    again = job(prompt="a red cube")
    assert image_bytes(again) == image_bytes(plain)
    assert again.infotexts == plain.infotexts and "TI hashes" not in again.infotexts[0]


def test_negative_prompt_embedding_and_ti_hashes(folder):
    plain = job()
    pos = demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    neg = demo_checkpoint.write_demo_embedding(os.path.join(folder, NEG + ".pt"))
    res = job(prompt=f"a red cube ({NAME}:1.2)", negative_prompt=f"blurry {NEG}")
    assert image_bytes(res) != image_bytes(plain)
    assert f'TI hashes: "{NAME}: {sha12(pos)}, {NEG}: {sha12(neg)}"' in res.infotexts[0]
    parsed = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert parsed["TI hashes"] == f"{NAME}: {sha12(pos)}, {NEG}: {sha12(neg)}"
    only_neg = job(negative_prompt=f"blurry {NEG}")
    assert image_bytes(only_neg) != image_bytes(plain)
    assert f'TI hashes: "{NEG}: {sha12(neg)}"' in only_neg.infotexts[0]


def test_hires_prompt_embedding_is_reported(folder):
    pos = demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    res = job(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2,
              hr_prompt=f"a red cube {NAME}")
    assert f'TI hashes: "{NAME}: {sha12(pos)}"' in res.infotexts[0]


def test_do_not_reload_embeddings_keeps_the_loaded_set(folder):
    load()
    demo_checkpoint.write_demo_embedding(os.path.join(folder, NAME + ".safetensors"), vectors=3)
    res = job(prompt=f"a red cube {NAME}", do_not_reload_embeddings=True)
    assert "TI hashes" not in res.infotexts[0]
    assert "TI hashes" in job(prompt=f"a red cube {NAME}").infotexts[0]
