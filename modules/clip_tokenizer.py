"""The CLIP ViT-L/14 tokenizer files, made available offline.

SD1.x checkpoints carry the text encoder's weights but not its tokenizer. A1111 downloads
`openai/clip-vit-large-patch14` from the Hugging Face hub at first start; Serena instead builds the
same `vocab.json` / `merges.txt` once, at setup time, from the BPE table shipped inside the MIT-licensed
`open-clip-torch` wheel on PyPI (the wheel is only read as a zip file, never installed or imported).
A copy already present in the local Hugging Face hub cache is used instead when there is one.

`ensure_vocab` is the only function here that may touch the network; `load_tokenizer` never does.

Entry point: `python -m modules.clip_tokenizer [target_dir]`.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from modules.errors import ConfigError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

OPEN_CLIP_VERSION = "2.32.0"
"""The pinned `open-clip-torch` release whose wheel carries the BPE table."""

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
HUB_REPO_FOLDER = "models--openai--clip-vit-large-patch14"
MODEL_MAX_LENGTH = 77

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408
MERGE_COUNT = 49152 - 256 - 2
"""CLIP uses the first 48894 merges of the table: 49152 BPE entries less 256 bytes and 2 specials."""

REQUIRED_FILES = ("vocab.json", "merges.txt")

TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": MODEL_MAX_LENGTH,
    "do_lower_case": True,
    "errors": "replace",
    "add_prefix_space": False,
    "bos_token": BOS_TOKEN,
    "eos_token": EOS_TOKEN,
    "unk_token": EOS_TOKEN,
    "pad_token": EOS_TOKEN,
}
SPECIAL_TOKENS_MAP = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}


def default_target_dir() -> str:
    """`models/tokenizers/clip-vit-large-patch14` in the install (git-ignored, written at setup)."""
    from modules import paths

    return os.path.join(paths.tokenizers_dir, "clip-vit-large-patch14")


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE, in vocabulary order.

    Bytes that are printable and not whitespace (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves
    and come first; the other 68 bytes, in ascending order, get code points 256, 257, ….
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def merges_from_bpe_table(table: str) -> list[tuple[str, str]]:
    """The first `MERGE_COUNT` merge pairs of an open_clip BPE table (its first line is a header)."""
    lines = table.split("\n")[1:MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    bad = [m for m in merges if len(m) != 2]
    if len(merges) != MERGE_COUNT or bad:
        raise ConfigError(f"BPE table has {len(merges)} usable merges (expected {MERGE_COUNT}); "
                          f"malformed lines: {bad[:3]!r}")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's token → id table: bytes, bytes + `</w>`, one entry per merge, then the two specials."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[BOS_TOKEN] != BOS_ID or vocab[EOS_TOKEN] != EOS_ID:
        raise ConfigError(f"built a vocabulary of {len(vocab)} entries (expected {VOCAB_SIZE}) "
                          f"with ids {vocab.get(BOS_TOKEN)}/{vocab.get(EOS_TOKEN)} for the specials")
    return vocab


def write_tokenizer_files(folder: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Write the Hugging Face CLIP tokenizer files into `folder` (which must exist)."""
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    write_configs(folder)


def write_configs(folder: str) -> None:
    """Write `tokenizer_config.json` and `special_tokens_map.json` into `folder`."""
    for name, content in (("tokenizer_config.json", TOKENIZER_CONFIG), ("special_tokens_map.json", SPECIAL_TOKENS_MAP)):
        with open(os.path.join(folder, name), "w", encoding="utf8") as f:
            json.dump(content, f, indent=2)


def has_vocab(folder: str) -> bool:
    """True when `folder` holds both `vocab.json` and `merges.txt`."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in REQUIRED_FILES)


def hub_cache_dirs() -> list[Path]:
    """Candidate Hugging Face hub cache folders, from the environment and the default location."""
    found = []
    if os.environ.get("HF_HUB_CACHE"):
        found.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        found.append(Path(os.environ["HF_HOME"]) / "hub")
    found.append(Path.home() / ".cache" / "huggingface" / "hub")
    return found


def find_hub_copy() -> Path | None:
    """A snapshot folder of `openai/clip-vit-large-patch14` in the hub cache with both files, if any."""
    for cache in hub_cache_dirs():
        snapshots = cache / HUB_REPO_FOLDER / "snapshots"
        if not snapshots.is_dir():
            continue
        for snapshot in sorted(snapshots.iterdir()):
            if has_vocab(str(snapshot)):
                return snapshot
    return None


def read_bpe_table_from_wheel(wheel_path: str) -> str:
    """The decompressed BPE table text from an `open-clip-torch` wheel."""
    with zipfile.ZipFile(wheel_path) as wheel:
        if BPE_MEMBER not in wheel.namelist():
            raise ConfigError(f"{wheel_path!r} has no {BPE_MEMBER!r}")
        return gzip.decompress(wheel.read(BPE_MEMBER)).decode("utf8")


def download_wheel(folder: str) -> str:
    """`pip download` the pinned `open-clip-torch` wheel (no dependencies) into `folder`; return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"open-clip-torch=={OPEN_CLIP_VERSION}", "-d", folder]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = [name for name in os.listdir(folder) if name.endswith(".whl")]
    if done.returncode != 0 or not wheels:
        raise ConfigError(f"could not download open-clip-torch=={OPEN_CLIP_VERSION} "
                          f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return os.path.join(folder, wheels[0])


def fill_from_hub_copy(snapshot: Path, folder: str) -> None:
    """Copy the tokenizer files of a hub snapshot into `folder`, adding configs it lacks."""
    for name in REQUIRED_FILES:
        shutil.copyfile(snapshot / name, os.path.join(folder, name))
    write_configs(folder)


def fill_from_wheel(folder: str, wheel_path: str | None = None) -> None:
    """Build the tokenizer files in `folder` from an `open-clip-torch` wheel (downloaded if not given)."""
    if wheel_path is None:
        download_dir = tempfile.mkdtemp(prefix="serena-openclip-")
        try:
            fill_from_wheel(folder, download_wheel(download_dir))
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)
        return
    merges = merges_from_bpe_table(read_bpe_table_from_wheel(wheel_path))
    write_tokenizer_files(folder, build_vocab(merges), merges)


def ensure_vocab(target_dir: str | None = None, *, wheel_path: str | None = None, use_hub_cache: bool = True) -> str:
    """Make sure `target_dir` holds the CLIP ViT-L/14 tokenizer files; return the folder.

    Idempotent: a folder that already has `vocab.json` and `merges.txt` is left untouched. Otherwise
    the files are taken from the Hugging Face hub cache (if `use_hub_cache` and a copy exists), or
    built from the `open-clip-torch` wheel at `wheel_path` (downloaded with pip when None). Files are
    written into a temporary sibling folder that is renamed into place, so the target is either
    absent or complete.

    Raises:
        ConfigError: the wheel could not be downloaded or does not hold the expected table.
    """
    target = os.path.abspath(target_dir or default_target_dir())
    if has_vocab(target):
        return target
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tokenizer-", dir=parent)
    try:
        snapshot = find_hub_copy() if use_hub_cache and wheel_path is None else None
        if snapshot is not None:
            fill_from_hub_copy(snapshot, staging)
        else:
            fill_from_wheel(staging, wheel_path)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the final folder should not be
        if has_vocab(target):  # another process finished first: keep its folder
            return target
        if os.path.isdir(target):  # an incomplete folder left by hand: replace it
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(target_dir: str | None = None) -> CLIPTokenizer:
    """Load the CLIP tokenizer from `target_dir` offline, with `model_max_length=77`.

    Raises:
        ConfigError: the folder lacks the tokenizer files (run `python -m modules.clip_tokenizer`).
    """
    from transformers import CLIPTokenizer

    folder = os.path.abspath(target_dir or default_target_dir())
    if not has_vocab(folder):
        raise ConfigError(f"no CLIP tokenizer files in {folder!r}; run `python -m modules.clip_tokenizer {folder}`")
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=MODEL_MAX_LENGTH)


def main(argv: list[str]) -> int:
    """Command line: `python -m modules.clip_tokenizer [target_dir]`."""
    target = ensure_vocab(argv[0] if argv else None)
    tokenizer = load_tokenizer(target)
    print(f"CLIP tokenizer ready in {target} ({len(tokenizer)} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
