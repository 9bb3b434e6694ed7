"""clip_tokenizer: building the HF files from an open_clip-style wheel (a synthetic one: no network),
the hub-cache shortcut, idempotence, and the real vocabulary written at setup time."""
from __future__ import annotations

import gzip
import json
import os
import zipfile

import pytest

from modules import clip_tokenizer as ct
from modules.errors import ConfigError


def synthetic_table() -> str:
    """A BPE table shaped like open_clip's: a header line, then more merge lines than CLIP uses."""
    symbols = ct.byte_symbols()
    pairs = [f"{a} {b}" for a in symbols for b in symbols][:ct.MERGE_COUNT + 100]
    return "\n".join(['"bpe_simple_vocab_16e6.txt#version: 0.2', *pairs, ""])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("wheel") / "open_clip_torch-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(ct.BPE_MEMBER, gzip.compress(synthetic_table().encode("utf8")))
    return str(path)


def test_byte_symbols_are_256_distinct_printables():
    symbols = ct.byte_symbols()
    assert len(set(symbols)) == 256 and symbols[0] == "!" and symbols[-1] == chr(256 + 67)
    assert not any(s.isspace() for s in symbols)


def test_vocab_layout():
    merges = ct.merges_from_bpe_table(synthetic_table())
    vocab = ct.build_vocab(merges)
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["".join(merges[0])] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_short_table_is_rejected():
    with pytest.raises(ConfigError, match="usable merges"):
        ct.merges_from_bpe_table("header\na b\n")


def test_ensure_vocab_from_wheel_is_complete_and_idempotent(tmp_path, wheel):
    target = str(tmp_path / "tok")
    assert ct.ensure_vocab(target, wheel_path=wheel) == target
    with open(os.path.join(target, "merges.txt"), encoding="utf8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + 48894
    with open(os.path.join(target, "vocab.json"), encoding="utf8") as f:
        assert len(json.load(f)) == 49408
    with open(os.path.join(target, "tokenizer_config.json"), encoding="utf8") as f:
        assert json.load(f)["model_max_length"] == 77
    stamp = os.stat(os.path.join(target, "vocab.json")).st_mtime_ns
    ct.ensure_vocab(target, wheel_path=wheel)
    assert os.stat(os.path.join(target, "vocab.json")).st_mtime_ns == stamp
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no staging folder left


def test_ensure_vocab_leaves_nothing_on_failure(tmp_path):
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(ConfigError, match="bpe_simple_vocab"):
        ct.ensure_vocab(str(tmp_path / "tok"), wheel_path=str(bad))
    assert os.listdir(tmp_path) == ["bad.whl"]


def test_ensure_vocab_uses_hub_cache_copy(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / ct.HUB_REPO_FOLDER / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "vocab.json").write_text('{"a": 0}')
    (snapshot / "merges.txt").write_text("#version: 0.2\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    target = tmp_path / "tok"
    ct.ensure_vocab(str(target))
    assert (target / "vocab.json").read_text() == '{"a": 0}' and (target / "special_tokens_map.json").is_file()


def test_load_tokenizer_without_files_raises(tmp_path):
    with pytest.raises(ConfigError, match="modules.clip_tokenizer"):
        ct.load_tokenizer(str(tmp_path))


def test_real_vocabulary_tokenizes_like_openai_clip():
    folder = ct.default_target_dir()
    if not ct.has_vocab(folder):
        pytest.skip(f"no CLIP vocabulary in {folder}: run `python -m modules.clip_tokenizer` (launch.py does)")
    tokenizer = ct.load_tokenizer(folder)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77 and len(tokenizer) == 49408
    assert tokenizer.get_vocab()[",</w>"] == 267


def test_download_failure_reports_pip_output(tmp_path, monkeypatch):
    class Done:
        returncode, stderr = 1, "ERROR: No matching distribution found"

    seen = []
    monkeypatch.setattr(ct.subprocess, "run", lambda command, **kw: seen.append(command) or Done())
    with pytest.raises(ConfigError, match="No matching distribution"):
        ct.download_wheel(str(tmp_path))
    assert seen[0][1:5] == ["-m", "pip", "download", "--no-deps"] and f"open-clip-torch=={ct.OPEN_CLIP_VERSION}" in seen[0]


def test_downloaded_wheel_is_used_and_removed(tmp_path, monkeypatch, wheel):
    used = []

    def fake_download(folder):
        used.append(folder)
        return wheel

    monkeypatch.setattr(ct, "download_wheel", fake_download)
    target = tmp_path / "tok"
    ct.ensure_vocab(str(target), use_hub_cache=False)
    assert ct.has_vocab(str(target)) and not os.path.exists(used[0])


def test_main_reports_ready_folder(tmp_path, wheel, capsys):
    target = ct.ensure_vocab(str(tmp_path / "tok"), wheel_path=wheel)
    assert ct.main([target]) == 0
    assert "49408 tokens" in capsys.readouterr().out
