"""SDXL conditioning (modules/sd_models_xl.py) and the conditioners of SD2 and SDXL's encoders,
checked against diffusers' and transformers' own computations of the same quantities."""
from __future__ import annotations

import pytest
import torch

from modules import prompt_parser, sd_models_xl, text_conditioner


def _clip_config(width: int, projection: bool):
    from transformers import CLIPTextConfig
    return CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=width * 2, num_hidden_layers=3,
                          num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu",
                          projection_dim=width if projection else width, bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=1)


@pytest.fixture(scope="module")
def encoders():
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(0)
    clip_l = CLIPTextModel(_clip_config(32, False)).eval()
    clip_g = CLIPTextModelWithProjection(_clip_config(48, True)).eval()
    return clip_l, clip_g


def conditioner(tokenizer, encoders, refiner=False):
    clip_l, clip_g = encoders
    first = None if refiner else text_conditioner.SdxlClipLConditioner(tokenizer, clip_l)
    return sd_models_xl.SdxlConditioner(first, text_conditioner.SdxlOpenClipConditioner(tokenizer, clip_g),
                                        is_refiner=refiner)


def test_size_embedding_equals_diffusers_time_ids_projection():
    from diffusers.models.embeddings import Timesteps
    values = torch.tensor([[1024.0, 768.0], [512.0, 64.0]])
    reference = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(values.flatten()).reshape(2, -1)
    assert torch.allclose(sd_models_xl.size_embedding(values), reference, atol=1e-5)


def test_base_vector_is_pooled_then_original_crop_and_target_size(tokenizer, encoders):
    texts = prompt_parser.SdConditioning(["a cat", "a dog, BREAK red"], width=768, height=512)
    cond = conditioner(tokenizer, encoders)(texts, crop_top=8, crop_left=16)
    assert isinstance(cond, prompt_parser.DictWithShape) and cond.shape == cond["crossattn"].shape
    assert cond["crossattn"].shape == (2, 154, 32 + 48)  # the BREAK gives both prompts two chunks
    assert cond["vector"].shape == (2, 48 + 3 * 512)
    sizes = torch.tensor([[512.0, 768.0], [8.0, 16.0], [512.0, 768.0]])
    expected = sd_models_xl.size_embedding(sizes.reshape(1, -1)).repeat(2, 1)
    assert torch.allclose(cond["vector"][:, 48:], expected)


def test_pooled_part_is_the_projected_end_token_of_the_first_chunk(tokenizer, encoders):
    _, clip_g = encoders
    cond = conditioner(tokenizer, encoders)(prompt_parser.SdConditioning(["a (red:1.4) cat"]))
    ids = [49406] + tokenizer(["a red cat"], add_special_tokens=False)["input_ids"][0] + [49407]
    tokens = torch.tensor([ids + [0] * (77 - len(ids))])  # OpenCLIP pads with 0 after the end token
    with torch.no_grad():
        out = clip_g(input_ids=tokens, output_hidden_states=True)
    assert torch.allclose(cond["vector"][:, :48], out.text_embeds, atol=1e-6)  # emphasis leaves it alone
    assert not torch.allclose(cond["crossattn"][:, :, 32:], out.hidden_states[-2], atol=1e-4)  # emphasis applied


def test_hidden_states_are_the_penultimate_layers_without_final_norm(tokenizer, encoders):
    clip_l, clip_g = encoders
    cond = conditioner(tokenizer, encoders)(prompt_parser.SdConditioning(["a cat"]))
    ids = [49406] + tokenizer(["a cat"], add_special_tokens=False)["input_ids"][0] + [49407]
    with torch.no_grad():
        first = clip_l(input_ids=torch.tensor([ids + [49407] * (77 - len(ids))]), output_hidden_states=True)
        second = clip_g(input_ids=torch.tensor([ids + [0] * (77 - len(ids))]), output_hidden_states=True)
    assert torch.allclose(cond["crossattn"][:, :, :32], first.hidden_states[-2], atol=1e-6)
    assert torch.allclose(cond["crossattn"][:, :, 32:], second.hidden_states[-2], atol=1e-6)


def test_sdxl_clip_l_skip_option_picks_the_layer(tokenizer, encoders):
    clip_l, _ = encoders
    skip = text_conditioner.SdxlClipLConditioner(tokenizer, clip_l, use_clip_skip=lambda: True)
    tokens = torch.tensor([[49406] + [49407] * 76])
    with torch.no_grad():
        hidden = clip_l(input_ids=tokens, output_hidden_states=True).hidden_states
        assert torch.equal(skip.encode_tokens(tokens, clip_skip=1), hidden[-1])
        assert torch.equal(skip.encode_tokens(tokens, clip_skip=3), hidden[-3])


def test_empty_negative_prompt_gives_zero_text_parts(tokenizer, encoders):
    cond = conditioner(tokenizer, encoders)(prompt_parser.SdConditioning(["", ""], is_negative_prompt=True))
    assert not cond["crossattn"].any() and not cond["vector"][:, :48].any()
    assert cond["vector"][:, 48:].any()  # the sizes stay
    positive = conditioner(tokenizer, encoders)(prompt_parser.SdConditioning([""]))
    assert positive["crossattn"].any()


def test_refiner_uses_the_big_encoder_and_the_aesthetic_score(tokenizer, encoders):
    refiner = conditioner(tokenizer, encoders, refiner=True)
    positive = refiner(prompt_parser.SdConditioning(["a cat"], width=64, height=64), aesthetic_score=(6.0, 2.5))
    negative = refiner(prompt_parser.SdConditioning(["ugly"], is_negative_prompt=True, width=64, height=64),
                       aesthetic_score=(6.0, 2.5))
    assert positive["crossattn"].shape == (1, 77, 48) and positive["vector"].shape == (1, 48 + 2 * 512 + 256)
    assert torch.allclose(positive["vector"][:, -256:], sd_models_xl.size_embedding(torch.tensor([[6.0]])))
    assert torch.allclose(negative["vector"][:, -256:], sd_models_xl.size_embedding(torch.tensor([[2.5]])))


def test_sdxl_embedding_vectors_go_to_each_encoder(tokenizer, encoders):
    class Embedding:
        vectors = 1
        vec = {"clip_l": torch.full((1, 32), 0.5), "clip_g": torch.full((1, 48), -0.5)}

    class Database:
        ids_lookup = {1: True}

        def find_embedding_at_position(self, tokens, position):
            return (Embedding(), 1) if tokens[position] == tokenizer.get_vocab()["cat</w>"] else (None, None)

    cond = conditioner(tokenizer, encoders)
    cond.embedding_db = Database()
    assert all(e.embedding_db is cond.embedding_db for e in cond.embedders)
    hooked = cond(prompt_parser.SdConditioning(["a cat"]))
    cond.embedding_db = None
    plain = cond(prompt_parser.SdConditioning(["a cat"]))
    assert not torch.allclose(hooked["crossattn"], plain["crossattn"])


def test_open_clip_conditioner_pads_with_zero_and_takes_the_normed_penultimate_layer(tokenizer):
    from transformers import CLIPTextModel
    torch.manual_seed(1)
    model = CLIPTextModel(_clip_config(32, False)).eval()
    sd2 = text_conditioner.OpenClipConditioner(tokenizer, model)
    z = sd2(["a cat"], clip_skip=2)
    same = sd2(["a cat"], clip_skip=1)
    ids = [49406] + tokenizer(["a cat"], add_special_tokens=False)["input_ids"][0] + [49407]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids + [0] * (77 - len(ids))]), output_hidden_states=True)
        expected = model.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(z, expected, atol=1e-6)
    assert torch.equal(z, same)  # A1111 applies no clip skip to OpenCLIP


def test_dict_conditionings_batch_pad_and_slice():
    a = {"crossattn": torch.ones(77, 4), "vector": torch.zeros(6)}
    b = {"crossattn": torch.full((154, 4), 2.0), "vector": torch.ones(6)}
    stacked = prompt_parser.stack_conds([a, b])
    assert stacked.shape == (2, 154, 4) and stacked["vector"].shape == (2, 6)
    assert torch.equal(stacked["crossattn"][0, 77:], torch.ones(77, 4))  # padded with its last token
    both = prompt_parser.catenate_conds([stacked, stacked])
    assert both["vector"].shape == (4, 6)
    assert torch.equal(prompt_parser.subscript_cond(both, 1, 2)["vector"], torch.ones(1, 6))
