"""SDXL conditioning: two text encoders, the pooled embedding and the size/crop (and, for the
refiner, aesthetic-score) vector, as A1111 gives them to the SDXL UNet (module name A1111's).

A prompt batch becomes `{"crossattn": [B, 77*k, 768 + 1280], "vector": [B, 2816]}` for a base
model: the first encoder's (CLIP ViT-L) and the second's (OpenCLIP ViT-bigG) hidden states side
by side, and a vector of the second encoder's pooled embedding followed by sinusoidal embeddings
(256 channels per number, cosine half first) of the original size (height, width), the crop's top
left corner (options `sdxl_crop_top`, `sdxl_crop_left`) and the target size (height, width). The
refiner has only the second encoder and, instead of the target size, the aesthetic score
(`sdxl_refiner_high_aesthetic_score` for prompts, `…_low_…` for negative prompts): 2560 wide.
Sizes come from the prompt list (`prompt_parser.SdConditioning.width/height`; 1024 when absent).
A negative prompt batch of empty strings gives zeros for the text parts, as sgm's conditioner does.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from modules import text_conditioner

SIZE_EMBEDDING_DIM = 256
DEFAULT_SIZE = 1024


def size_embedding(values: torch.Tensor, dim: int = SIZE_EMBEDDING_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embeddings of `[B, n]` numbers → `[B, n*dim]` (cosines, then sines, for each number)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.reshape(-1, 1).float() * freqs[None]
    embedded = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return embedded.reshape(values.shape[0], -1)


class SdxlConditioner:
    """The conditioner of an SDXL base (`clip_l` and `clip_g`) or refiner (`clip_g` only) model.

    `embedders` lists the text conditioners in order; the first one answers the token-counting
    and tokenizing calls that the UI and scripts make on `sd_model.cond_stage_model`.
    """

    def __init__(self, clip_l: text_conditioner.ClipConditioner | None,
                 clip_g: text_conditioner.SdxlOpenClipConditioner, is_refiner: bool = False):
        self.clip_l = clip_l
        self.clip_g = clip_g
        self.is_refiner = is_refiner
        self.embedders = [e for e in (clip_l, clip_g) if e is not None]

    @property
    def embedding_db(self) -> Any:
        return self.embedders[0].embedding_db

    @embedding_db.setter
    def embedding_db(self, database: Any) -> None:
        for embedder in self.embedders:
            embedder.embedding_db = database

    def to(self, *args: Any, **kwargs: Any) -> "SdxlConditioner":
        """Move both text encoders (A1111 extensions call `sd_model.cond_stage_model.to(device)`)."""
        for embedder in self.embedders:
            embedder.to(*args, **kwargs)
        return self

    def __getattr__(self, name: str) -> Any:
        # tokenize_line, get_prompt_token_count, tokenizer, chunk_length, …: the first encoder's
        if name.startswith("__") or name in ("embedders", "clip_l", "clip_g"):
            raise AttributeError(name)
        return getattr(self.embedders[0], name)

    def text_parts(self, texts: Sequence[str], *, clip_skip: int, emphasis: str,
                   comma_padding_backtrack: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(crossattn [B, 77*k, D1 + D2], pooled [B, P])` of a prompt batch."""
        kwargs = dict(clip_skip=clip_skip, emphasis=emphasis, comma_padding_backtrack=comma_padding_backtrack)
        hidden, pooled = self.clip_g.encode_with_pooled(texts, **kwargs)
        if self.clip_l is not None:
            first = self.clip_l.encode_with_pooled(texts, **kwargs)[0]
            hidden = torch.cat([first.to(hidden.dtype), hidden], dim=-1)
        return hidden, pooled

    def __call__(self, texts: Sequence[str], *, clip_skip: int = 1, emphasis: str = "Original",
                 comma_padding_backtrack: int = 20, crop_top: int = 0, crop_left: int = 0,
                 aesthetic_score: tuple[float, float] = (6.0, 2.5)) -> dict[str, torch.Tensor]:
        """`{"crossattn", "vector"}` for a prompt batch (`prompt_parser.SdConditioning` or a list).

        `aesthetic_score` is (for prompts, for negative prompts); the refiner uses it.
        """
        from modules.prompt_parser import DictWithShape

        negative = bool(getattr(texts, "is_negative_prompt", False))
        width = int(getattr(texts, "width", None) or DEFAULT_SIZE)
        height = int(getattr(texts, "height", None) or DEFAULT_SIZE)
        hidden, pooled = self.text_parts(texts, clip_skip=clip_skip, emphasis=emphasis,
                                         comma_padding_backtrack=comma_padding_backtrack)
        if negative and all(text == "" for text in texts):
            hidden, pooled = torch.zeros_like(hidden), torch.zeros_like(pooled)
        batch = len(texts)
        device = pooled.device

        def numbers(*values: float) -> torch.Tensor:
            return torch.tensor([values], dtype=torch.float32, device=device).repeat(batch, 1)

        last = numbers(aesthetic_score[1] if negative else aesthetic_score[0]) if self.is_refiner \
            else numbers(height, width)
        vector = torch.cat([pooled.float(), size_embedding(numbers(height, width)),
                            size_embedding(numbers(crop_top, crop_left)), size_embedding(last)], dim=1)
        return DictWithShape({"crossattn": hidden, "vector": vector.to(hidden.dtype)})
