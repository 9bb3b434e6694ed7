"""CLIP text conditioning with A1111's prompt semantics: 75-token chunks, BREAK, comma backtrack,
attention weights (emphasis modes) and clip skip.

A prompt is parsed into weighted runs (`prompt_parser.parse_prompt_attention`), tokenized without
special tokens, and cut into chunks of 75 tokens; each chunk becomes `[BOS] + 75 tokens + [EOS]`
(77), padded with the end-of-text id. Every chunk is encoded on its own and the results are
concatenated along the token axis, giving `[B, 77*k, D]`. Prompts of one batch are padded to the
same chunk count with empty chunks (`BOS` followed by `EOS` padding).

Textual-inversion embeddings (`embedding_db`, an `EmbeddingDatabase`) are found on token ids: a
run of tokens spelling an embedding's name becomes one placeholder token per vector, carrying the
run's weight; an embedding that does not fit in the current chunk starts the next one (A1111). The
placeholders' token vectors are replaced by the embedding's vectors inside the encoder. Unlike
A1111, a comma backtrack that moves an embedding to the next chunk moves its vectors with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from modules import prompt_parser
from modules.errors import InvalidParameter

CHUNK_LENGTH = 75
"""Prompt tokens per chunk; with the start and end tokens a chunk is 77 tokens."""


@dataclass
class PromptChunk:
    """Token ids of one chunk and the attention multiplier of each (77 of each once closed)."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list["PromptChunkFix"] = field(default_factory=list)


@dataclass
class PromptChunkFix:
    """An embedding's vectors go at `offset` of the chunk's prompt tokens (`offset + 1` once the
    start token is in front), as in A1111."""

    offset: int
    embedding: Any


# --------------------------------------------------------------------------------------------------
# Emphasis modes
# --------------------------------------------------------------------------------------------------


def emphasis_original(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Multiply each token's vector by its weight, then rescale so the mean of the batch is unchanged.

    With every weight 1.0 this is the identity, returned as such: the rescale would otherwise be
    0/0 for an output whose mean is exactly zero.
    """
    if bool((multipliers == 1.0).all()):
        return z
    z32 = z.float()
    original_mean = z32.mean()
    weighted = z32 * multipliers.float().unsqueeze(-1)
    return (weighted * (original_mean / weighted.mean())).to(z.dtype)


def emphasis_no_norm(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Multiply each token's vector by its weight."""
    return (z.float() * multipliers.float().unsqueeze(-1)).to(z.dtype)


def emphasis_none(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Leave the encoder output as it is."""
    return z


EMPHASIS_MODES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Original": emphasis_original,
    "No norm": emphasis_no_norm,
    "Ignore": emphasis_none,
    "None": emphasis_none,
}
"""A1111's emphasis option values. "None" also turns off bracket and BREAK parsing."""


def check_emphasis(emphasis: str) -> None:
    """Raise `InvalidParameter` unless `emphasis` is one of `EMPHASIS_MODES`."""
    if emphasis not in EMPHASIS_MODES:
        raise InvalidParameter(f"unknown emphasis mode {emphasis!r}; valid: {list(EMPHASIS_MODES)}", field="emphasis")


def check_unicode(text: str, field_name: str, label: str | None = None) -> None:
    """Raise `InvalidParameter` naming `field_name` unless `text` can be written as UTF-8.

    Only an unpaired surrogate (`"\\ud800"`, which JSON's `\\u` escapes can carry) fails: it is no
    character, so no tokenizer, file or response can hold it. `label` (default `field_name`) is how
    the message names the text, e.g. `prompt[2]` for an entry of a list.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidParameter(
            f"{label or field_name} is not valid Unicode: unpaired surrogate {text[error.start]!r} at position "
            f"{error.start}", field=field_name) from None


# --------------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------------


class _ChunkBuilder:
    """Fills chunks token by token, moving the tail after a recent comma to the next chunk."""

    def __init__(self, conditioner: "ClipConditioner", backtrack: int):
        self.conditioner = conditioner
        self.backtrack = backtrack
        self.chunks: list[PromptChunk] = []
        self.chunk = PromptChunk()
        self.token_count = 0
        self.last_comma = -1

    def close_chunk(self, is_last: bool = False) -> None:
        """Pad the current chunk to 75, add start/end tokens, and start a new one."""
        self.token_count += len(self.chunk.tokens) if is_last else CHUNK_LENGTH
        missing = CHUNK_LENGTH - len(self.chunk.tokens)
        end = self.conditioner.id_end
        self.chunk.tokens = [self.conditioner.id_start, *self.chunk.tokens, *[end] * missing, end]
        self.chunk.multipliers = [1.0, *self.chunk.multipliers, *[1.0] * missing, 1.0]
        self.chunks.append(self.chunk)
        self.chunk = PromptChunk()
        self.last_comma = -1

    def move_tail_after_comma(self) -> None:
        """Close the full chunk just after its last comma; the tokens after it start the next chunk."""
        cut = self.last_comma + 1
        tail = PromptChunk(self.chunk.tokens[cut:], self.chunk.multipliers[cut:],
                           [PromptChunkFix(f.offset - cut, f.embedding) for f in self.chunk.fixes if f.offset >= cut])
        del self.chunk.tokens[cut:], self.chunk.multipliers[cut:]
        self.chunk.fixes = [f for f in self.chunk.fixes if f.offset < cut]
        self.close_chunk()
        self.chunk = tail

    def make_room(self, token: int) -> None:
        """Before `token` (or an embedding named from it) goes in: comma bookkeeping, closing a full chunk."""
        full = len(self.chunk.tokens) == CHUNK_LENGTH
        if token == self.conditioner.comma_token:
            self.last_comma = len(self.chunk.tokens)
        elif (full and self.backtrack != 0 and self.last_comma != -1
              and len(self.chunk.tokens) - self.last_comma <= self.backtrack):
            self.move_tail_after_comma()
        if len(self.chunk.tokens) == CHUNK_LENGTH:
            self.close_chunk()

    def add(self, token: int, weight: float) -> None:
        """Append one token, closing the chunk first when it is full."""
        self.make_room(token)
        self.chunk.tokens.append(token)
        self.chunk.multipliers.append(weight)

    def add_embedding(self, first_token: int, embedding: Any, weight: float) -> None:
        """Append an embedding's placeholders (token 0, one per vector); start a new chunk when they
        would not fit in this one."""
        self.make_room(first_token)
        count = int(embedding.vectors)
        if len(self.chunk.tokens) + count > CHUNK_LENGTH:
            self.close_chunk()
        self.chunk.fixes.append(PromptChunkFix(len(self.chunk.tokens), embedding))
        self.chunk.tokens += [0] * count
        self.chunk.multipliers += [weight] * count

    def finish(self) -> tuple[list[PromptChunk], int]:
        """Close the last chunk (also when the prompt is empty); return the chunks and the token count."""
        if self.chunk.tokens or not self.chunks:
            self.close_chunk(is_last=True)
        return self.chunks, self.token_count


def _substitute_vectors(chunks: list[PromptChunk], vector_key: str | None = None) -> Callable:
    """A forward hook for the token embedding that puts each chunk's embedding vectors in place.

    An SDXL embedding holds one tensor per text encoder (`vec` a dict: `clip_l`, `clip_g`);
    `vector_key` picks this encoder's.
    """
    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, chunk in enumerate(chunks):
            for fix in chunk.fixes:
                start = fix.offset + 1
                vec = fix.embedding.vec
                if isinstance(vec, dict):
                    vec = vec[vector_key]
                count = min(output.shape[1] - start, vec.shape[0])  # A1111: up to the last position
                output[row, start:start + count] = vec[:count].to(device=output.device, dtype=output.dtype)
        return output
    return hook


# --------------------------------------------------------------------------------------------------
# The conditioner
# --------------------------------------------------------------------------------------------------


class ClipConditioner:
    """Turns prompts into CLIP text-encoder hidden states the way A1111's SD1 conditioner does.

    Args:
        tokenizer: a Hugging Face CLIP tokenizer (`bos_token_id`, `eos_token_id`, `pad_token_id`,
            `get_vocab()`, callable on a list of texts).
        text_encoder: a transformers `CLIPTextModel` on any device and dtype; the output has its dtype.
    """

    chunk_length = CHUNK_LENGTH
    embedding_db: Any = None
    """The textual-inversion database (`find_embedding_at_position`, `ids_lookup`), or None."""
    vector_key: str | None = None
    """Which tensor of a multi-encoder (SDXL) embedding this encoder takes; None: the embedding's `vec`."""

    def __init__(self, tokenizer: Any, text_encoder: Any, id_pad: int | None = None):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.id_start: int = tokenizer.bos_token_id
        self.id_end: int = tokenizer.eos_token_id
        pad = getattr(tokenizer, "pad_token_id", None) if id_pad is None else id_pad
        self.id_pad: int = self.id_end if pad is None else pad
        self.comma_token: int | None = tokenizer.get_vocab().get(",</w>")

    # ---- text → chunks ----

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without start/end tokens and without truncation.

        Raises:
            InvalidParameter: a text that is not valid Unicode (an unpaired surrogate such as
                `"\\ud800"`, which the tokenizer cannot take).
        """
        if not texts:
            return []
        for text in texts:
            check_unicode(text, "prompt")
        return self.tokenizer(list(texts), truncation=False, add_special_tokens=False)["input_ids"]

    def tokenize_line(self, line: str, *, emphasis: str = "Original",
                      comma_padding_backtrack: int = 20) -> tuple[list[PromptChunk], int]:
        """Cut one prompt into 77-token chunks.

        Returns:
            `(chunks, token_count)`: the token count is 75 per closed chunk plus the length of the last.
        """
        check_emphasis(emphasis)
        runs = [[line, 1.0]] if emphasis == "None" else prompt_parser.parse_prompt_attention(line)
        builder = _ChunkBuilder(self, comma_padding_backtrack)
        for tokens, (text, weight) in zip(self.tokenize([text for text, _ in runs]), runs):
            if emphasis != "None" and text == "BREAK" and weight == -1:
                builder.close_chunk()
                continue
            self._add_tokens(builder, tokens, weight)
        return builder.finish()

    def _add_tokens(self, builder: _ChunkBuilder, tokens: list[int], weight: float) -> None:
        """Feed one weighted run's tokens to `builder`; a run of ids spelling an embedding's name
        (longest name first, as A1111 matches) goes in as that embedding."""
        database = self.embedding_db
        if database is None or not database.ids_lookup:
            for token in tokens:
                builder.add(token, weight)
            return
        position = 0
        while position < len(tokens):
            embedding, length = database.find_embedding_at_position(tokens, position)
            if embedding is None:
                builder.add(tokens[position], weight)
                position += 1
            else:
                builder.add_embedding(tokens[position], embedding, weight)
                position += length

    def process_texts(self, texts: Sequence[str], *, emphasis: str = "Original",
                      comma_padding_backtrack: int = 20) -> tuple[list[list[PromptChunk]], int]:
        """`tokenize_line` for each text (identical texts once); return the chunks and the largest count."""
        cache: dict[str, tuple[list[PromptChunk], int]] = {}
        for text in texts:
            if text not in cache:
                cache[text] = self.tokenize_line(text, emphasis=emphasis,
                                                 comma_padding_backtrack=comma_padding_backtrack)
        return [cache[text][0] for text in texts], max((cache[text][1] for text in texts), default=0)

    def empty_chunk(self) -> PromptChunk:
        """The chunk of an empty prompt: start token, then end tokens."""
        return PromptChunk([self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))

    @staticmethod
    def get_target_prompt_token_count(token_count: int) -> int:
        """The token capacity shown next to a count: whole chunks of 75, at least one."""
        return math.ceil(max(token_count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH

    def get_prompt_token_count(self, text: str, *, emphasis: str = "Original",
                               comma_padding_backtrack: int = 20) -> tuple[int, int]:
        """`(token count, target count)` of one prompt, as the UI's token counter shows them."""
        _, count = self.tokenize_line(text, emphasis=emphasis, comma_padding_backtrack=comma_padding_backtrack)
        return count, self.get_target_prompt_token_count(count)

    # ---- chunks → tensors ----

    def to(self, *args: Any, **kwargs: Any) -> "ClipConditioner":
        """Move the text encoder (A1111 extensions call `sd_model.cond_stage_model.to(device)`)."""
        if self.text_encoder is not None:
            self.text_encoder.to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def final_layer_norm(self) -> torch.nn.Module:
        """The encoder's final layer norm (transformers 5 puts it on the model, 4 on `.text_model`)."""
        norm = getattr(self.text_encoder, "final_layer_norm", None)
        return norm if norm is not None else self.text_encoder.text_model.final_layer_norm

    def check_clip_skip(self, clip_skip: int) -> None:
        """Raise `InvalidParameter` unless 1 <= clip_skip <= the encoder's layer count."""
        layers = self.text_encoder.config.num_hidden_layers
        if not isinstance(clip_skip, int) or not 1 <= clip_skip <= layers:
            raise InvalidParameter(f"clip skip {clip_skip!r} is outside 1..{layers}", field="CLIP_stop_at_last_layers")

    def encode_tokens(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        """Hidden states `[B, 77, D]`: the last layer's output, or for clip_skip n > 1 the output of
        layer -n passed through the final layer norm."""
        if clip_skip == 1:
            return self.text_encoder(input_ids=tokens).last_hidden_state
        outputs = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        return self.final_layer_norm()(outputs.hidden_states[-clip_skip])

    encode_with_transformers = encode_tokens
    """A1111's name for `encode_tokens`."""

    def pad_after_end(self, tokens: torch.Tensor) -> torch.Tensor:
        """Replace tokens after the first end token by the pad id, where the two differ (SD2-style)."""
        if self.id_pad == self.id_end:
            return tokens
        at_or_after_end = (tokens == self.id_end).int().cumsum(dim=1) > 0
        after_end = torch.zeros_like(at_or_after_end)
        after_end[:, 1:] = at_or_after_end[:, :-1]
        return tokens.masked_fill(after_end, self.id_pad)

    def encode_tokens_pooled(self, tokens: torch.Tensor, clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(hidden states, pooled embedding or None)`; only encoders that give a pooled output override it."""
        return self.encode_tokens(tokens, clip_skip), None

    def encode_chunks(self, chunks: list[PromptChunk], *, clip_skip: int,
                      emphasis: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode one chunk per prompt: `([B, 77, D] with emphasis applied, pooled [B, P] or None)`.

        Emphasis changes the hidden states only, never the pooled embedding (as in A1111).
        """
        device = self.device
        tokens = self.pad_after_end(torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=device))
        if any(c.fixes for c in chunks):
            hook = self.text_encoder.get_input_embeddings().register_forward_hook(
                _substitute_vectors(chunks, self.vector_key))
            try:
                z, pooled = self.encode_tokens_pooled(tokens, clip_skip)
            finally:
                hook.remove()
        else:
            z, pooled = self.encode_tokens_pooled(tokens, clip_skip)
        multipliers = torch.tensor([c.multipliers for c in chunks], dtype=torch.float32, device=z.device)
        return EMPHASIS_MODES[emphasis](z, multipliers), pooled

    def encode_with_pooled(self, texts: Sequence[str], *, clip_skip: int = 1, emphasis: str = "Original",
                           comma_padding_backtrack: int = 20) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`([B, 77*k, D], pooled of the first chunk or None)`, k the largest chunk count in the batch.

        Raises:
            InvalidParameter: no texts, an unknown emphasis mode, or a clip skip outside the layers.
        """
        if len(texts) == 0:
            raise InvalidParameter("no prompts to encode", field="prompt")
        check_emphasis(emphasis)
        self.check_clip_skip(clip_skip)
        batch_chunks, _ = self.process_texts(texts, emphasis=emphasis, comma_padding_backtrack=comma_padding_backtrack)
        chunk_count = max(len(chunks) for chunks in batch_chunks)
        encoded, first_pooled = [], None
        with torch.no_grad():
            for i in range(chunk_count):
                column = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
                z, pooled = self.encode_chunks(column, clip_skip=clip_skip, emphasis=emphasis)
                encoded.append(z)
                first_pooled = pooled if i == 0 else first_pooled
        return torch.cat(encoded, dim=1), first_pooled

    def __call__(self, texts: Sequence[str], *, clip_skip: int = 1, emphasis: str = "Original",
                 comma_padding_backtrack: int = 20) -> torch.Tensor:
        """Encode a batch of prompts into `[B, 77*k, D]`, k being the largest chunk count in the batch.

        Raises:
            InvalidParameter: no texts, an unknown emphasis mode, or a clip skip outside the layers.
        """
        return self.encode_with_pooled(texts, clip_skip=clip_skip, emphasis=emphasis,
                                       comma_padding_backtrack=comma_padding_backtrack)[0]


OPEN_CLIP_PAD = 0
"""OpenCLIP pads a prompt after its end token with token id 0 (`!`), where CLIP ViT-L repeats the end token."""


class OpenClipConditioner(ClipConditioner):
    """SD2.x's OpenCLIP ViT-H text conditioning as A1111 gives it: padding with id 0, and the
    penultimate layer's output through the final layer norm. A1111 applies no clip skip to this
    encoder: the option is accepted and has no effect."""

    def __init__(self, tokenizer: Any, text_encoder: Any):
        super().__init__(tokenizer, text_encoder, id_pad=OPEN_CLIP_PAD)

    def encode_tokens(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        outputs = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        return self.final_layer_norm()(outputs.hidden_states[-2])

    encode_with_transformers = encode_tokens


class SdxlClipLConditioner(ClipConditioner):
    """SDXL's first text encoder (CLIP ViT-L): the penultimate layer's output, without the final
    layer norm; with the option `sdxl_clip_l_skip`, layer -clip_skip instead (A1111)."""

    vector_key = "clip_l"

    def __init__(self, tokenizer: Any, text_encoder: Any, use_clip_skip: Callable[[], bool] = lambda: False):
        super().__init__(tokenizer, text_encoder)
        self.use_clip_skip = use_clip_skip

    def encode_tokens(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        outputs = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        return outputs.hidden_states[-clip_skip if self.use_clip_skip() else -2]

    encode_with_transformers = encode_tokens


class SdxlOpenClipConditioner(ClipConditioner):
    """SDXL's OpenCLIP ViT-bigG encoder: padding with id 0, the penultimate layer's output without
    the final layer norm, and the pooled, projected embedding of the end token. No clip skip (A1111)."""

    vector_key = "clip_g"

    def __init__(self, tokenizer: Any, text_encoder: Any):
        super().__init__(tokenizer, text_encoder, id_pad=OPEN_CLIP_PAD)

    def encode_tokens_pooled(self, tokens: torch.Tensor, clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        return outputs.hidden_states[-2], outputs.text_embeds

    def encode_tokens(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        return self.encode_tokens_pooled(tokens, clip_skip)[0]

    encode_with_transformers = encode_tokens
