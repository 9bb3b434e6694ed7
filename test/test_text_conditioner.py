"""ClipConditioner on the real CLIP tokenizer and a tiny randomly initialised CLIPTextModel."""
from __future__ import annotations


import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from modules.errors import InvalidParameter
from modules.text_conditioner import CHUNK_LENGTH, ClipConditioner

BOS, EOS, CAT, DOG, COMMA = 49406, 49407, 2368, 1929, 267


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=1, max_position_embeddings=77)
    return CLIPTextModel(config).eval()


@pytest.fixture(scope="module")
def cond(tokenizer, encoder):
    return ClipConditioner(tokenizer, encoder)


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


# ---- chunking -----------------------------------------------------------------------------------

def test_short_prompt_is_one_padded_chunk(cond):
    chunks, count = cond.tokenize_line("a photo of a cat")
    assert count == 5 and len(chunks) == 1
    assert chunks[0].tokens == [BOS, 320, 1125, 539, 320, CAT] + [EOS] * 71
    assert chunks[0].multipliers == [1.0] * 77
    assert cond.get_prompt_token_count("a photo of a cat") == (5, 75)


def test_empty_prompt_is_the_empty_chunk(cond):
    chunks, count = cond.tokenize_line("")
    assert count == 0 and chunks == [cond.empty_chunk()]
    assert cond.get_prompt_token_count("") == (0, 75)


def test_long_prompt_spans_chunks(cond):
    chunks, count = cond.tokenize_line(words("cat", 80))
    assert count == 80 and [len(c.tokens) for c in chunks] == [77, 77]
    assert chunks[1].tokens[:7] == [BOS] + [CAT] * 5 + [EOS]
    assert cond.get_prompt_token_count(words("cat", 80)) == (80, 150)


def test_break_pads_the_chunk(cond):
    chunks, count = cond.tokenize_line("cat BREAK dog")
    assert len(chunks) == 2 and count == CHUNK_LENGTH + 1
    assert chunks[0].tokens[:3] == [BOS, CAT, EOS] and chunks[1].tokens[:3] == [BOS, DOG, EOS]


def test_emphasis_none_keeps_brackets_and_break_literal(cond):
    chunks, count = cond.tokenize_line("(cat) BREAK dog", emphasis="None")
    assert len(chunks) == 1 and count > 3
    assert cond.tokenize_line("(cat)", emphasis="None")[0][0].tokens[1] != CAT


def test_weights_become_multipliers(cond):
    chunk = cond.tokenize_line("(cat:1.5) [dog]")[0][0]
    assert chunk.tokens[1:3] == [CAT, DOG]
    assert chunk.multipliers[:4] == [1.0, 1.5, 1 / 1.1, 1.0]


def test_comma_backtrack_moves_words_after_comma(cond):
    prompt = words("cat", 70) + " , " + words("dog", 10)
    first, second = cond.tokenize_line(prompt)[0]
    assert first.tokens[1:72] == [CAT] * 70 + [COMMA] and first.tokens[72:] == [EOS] * 5
    assert second.tokens[1:11] == [DOG] * 10
    no_backtrack = cond.tokenize_line(prompt, comma_padding_backtrack=0)[0]
    assert no_backtrack[0].tokens[72:76] == [DOG] * 4


def test_comma_too_far_back_is_not_used(cond):
    prompt = words("cat", 40) + " , " + words("dog", 40)
    first, _ = cond.tokenize_line(prompt, comma_padding_backtrack=20)[0]
    assert first.tokens[75] == DOG


# ---- encoding -----------------------------------------------------------------------------------

def test_plain_prompt_matches_the_encoder_on_tokenizer_padding(cond, tokenizer, encoder):
    ids = tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder(input_ids=ids).last_hidden_state
    got = cond(["a photo of a cat"])
    assert got.shape == (1, 77, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_chunks_are_encoded_separately_and_concatenated(cond):
    prompt = words("cat", 80)
    chunks, _ = cond.tokenize_line(prompt)
    got = cond([prompt])
    assert got.shape == (1, 154, 64)
    with torch.no_grad():
        second = cond.encode_tokens(torch.tensor([chunks[1].tokens]))
    torch.testing.assert_close(got[:, 77:], second)


def test_batch_pads_shorter_prompts_with_empty_chunks(cond):
    got = cond(["cat", words("dog", 80)])
    assert got.shape == (2, 154, 64)
    torch.testing.assert_close(got[0, 77:], cond([""])[0])
    torch.testing.assert_close(got[0, :77], cond(["cat"])[0])


def test_emphasis_original_rescales_to_the_original_mean(cond):
    plain = cond(["cat dog"])
    weighted = cond(["(cat:1.5) dog"])
    multipliers = torch.ones(1, 77)
    multipliers[0, 1] = 1.5
    scaled = plain * multipliers.unsqueeze(-1)
    torch.testing.assert_close(weighted, scaled * (plain.mean() / scaled.mean()))
    torch.testing.assert_close(weighted.mean(), plain.mean())


def test_emphasis_no_norm_and_ignore(cond):
    plain = cond(["cat dog"])
    no_norm = cond(["(cat:1.5) dog"], emphasis="No norm")
    torch.testing.assert_close(no_norm[0, 1], plain[0, 1] * 1.5)
    torch.testing.assert_close(no_norm[0, 2], plain[0, 2])
    torch.testing.assert_close(cond(["(cat:1.5) dog"], emphasis="Ignore"), plain)


def test_clip_skip_uses_earlier_layer_through_final_norm(cond, encoder):
    ids = torch.tensor([cond.tokenize_line("cat dog")[0][0].tokens])
    with torch.no_grad():
        hidden = encoder(input_ids=ids, output_hidden_states=True).hidden_states
        expected = encoder.final_layer_norm(hidden[-2])
    got = cond(["cat dog"], clip_skip=2)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, cond(["cat dog"]))


def test_output_follows_encoder_dtype(tokenizer):
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=1, max_position_embeddings=77)
    model = CLIPTextModel(config).eval().to(torch.bfloat16)
    got = ClipConditioner(tokenizer, model)(["(cat:1.2) dog"])
    assert got.dtype == torch.bfloat16 and got.device == next(model.parameters()).device


def test_pad_after_first_end_when_pad_differs(tokenizer, encoder):
    conditioner = ClipConditioner(tokenizer, encoder)
    conditioner.id_pad = 0
    tokens = torch.tensor([[BOS, CAT, EOS, EOS, EOS]])
    assert conditioner.pad_after_end(tokens).tolist() == [[BOS, CAT, EOS, 0, 0]]


@pytest.mark.parametrize("kwargs, field", [({"emphasis": "Loud"}, "emphasis"), ({"clip_skip": 4}, "CLIP_stop_at_last_layers"),
                                           ({"clip_skip": 0}, "CLIP_stop_at_last_layers")])
def test_bad_arguments_raise_with_value(cond, kwargs, field):
    with pytest.raises(InvalidParameter) as caught:
        cond(["cat"], **kwargs)
    assert caught.value.field == field and str(list(kwargs.values())[0]) in str(caught.value)


def test_no_texts_raises(cond):
    with pytest.raises(InvalidParameter):
        cond([])


@pytest.mark.parametrize("text", ["a \ud800 cat", "\udfff", "cat\udc00"])
def test_text_that_is_not_valid_unicode_raises_naming_the_prompt(cond, text):
    with pytest.raises(InvalidParameter, match="not valid Unicode: unpaired surrogate") as caught:
        cond(["cat", text])
    assert caught.value.field == "prompt"
    with pytest.raises(InvalidParameter):
        cond.get_prompt_token_count(text)


def test_valid_astral_characters_are_tokenized(cond):
    assert cond.get_prompt_token_count("a cat \U0001F431")[0] > 2
