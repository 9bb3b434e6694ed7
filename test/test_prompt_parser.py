"""prompt_parser: one test group per row of the spec's §4 syntax table, then scheduling options,
comments, extra networks, and the conditioning helpers (with a fake model behind the model interface)."""
from __future__ import annotations

import pytest
import torch

from modules import prompt_parser as pp
from modules.errors import InvalidParameter


def schedule(prompt: str, steps: int = 10, hires_steps: int | None = None, old: bool = False) -> list[list]:
    return pp.get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]


# ---- `(text)`: weight ×1.1 per level -------------------------------------------------------------

def test_round_brackets_multiply_by_1_1_per_level():
    assert pp.parse_prompt_attention("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert pp.parse_prompt_attention("((x))") == [["x", 1.1 * 1.1]]
    assert pp.parse_prompt_attention("(unnecessary)(parens)") == [["unnecessaryparens", 1.1]]


# ---- `[text]`: weight ÷1.1 per level -------------------------------------------------------------

def test_square_brackets_divide_by_1_1_per_level():
    assert pp.parse_prompt_attention("a [b]") == [["a ", 1.0], ["b", 1 / 1.1]]
    assert pp.parse_prompt_attention("[[b]]") == [["b", (1 / 1.1) * (1 / 1.1)]]


# ---- `(text:1.5)`: explicit weight ---------------------------------------------------------------

def test_explicit_weight_and_nesting_matches_a1111_floats():
    result = pp.parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert result == [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1],
                      ["hill", 0.55], [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]


@pytest.mark.parametrize("text, weight", [("(x:1.5)", 1.5), ("(x:-0.5)", -0.5), ("(x:+2)", 2.0),
                                          ("(x: 1.5 )", 1.5), ("(x:.5)", 0.5)])
def test_explicit_weight_forms(text, weight):
    assert pp.parse_prompt_attention(text) == [["x", weight]]


def test_weight_without_open_bracket_is_text():
    assert pp.parse_prompt_attention("a:1.5) b") == [["a:1.5) b", 1.0]]


def test_malformed_weight_raises_with_value():
    with pytest.raises(InvalidParameter, match="1.2.3"):
        pp.parse_prompt_attention("(x:1.2.3)")


# ---- escapes ------------------------------------------------------------------------------------

def test_escaped_brackets_are_literal():
    assert pp.parse_prompt_attention(r"\(literal\]") == [["(literal]", 1.0]]
    assert pp.parse_prompt_attention(r"a \\ b") == [["a \\ b", 1.0]]
    assert pp.parse_prompt_attention(r"(\))") == [[")", 1.1]]


def test_lone_backslash_is_literal():
    assert pp.parse_prompt_attention("a\\b") == [["a\\b", 1.0]]


# ---- unbalanced openers -------------------------------------------------------------------------

def test_unbalanced_openers_apply_to_end():
    assert pp.parse_prompt_attention("(unbalanced") == [["unbalanced", 1.1]]
    assert pp.parse_prompt_attention("a [b") == [["a ", 1.0], ["b", 1 / 1.1]]
    assert pp.parse_prompt_attention("a) b]") == [["a) b]", 1.0]]


def test_empty_prompt_gives_one_empty_run():
    assert pp.parse_prompt_attention("") == [["", 1.0]]


# ---- BREAK --------------------------------------------------------------------------------------

def test_break_is_its_own_run():
    assert pp.parse_prompt_attention("a BREAK b") == [["a", 1.0], ["BREAK", -1.0], ["b", 1.0]]
    assert pp.parse_prompt_attention("(a BREAK b)") == [["a", 1.1], ["BREAK", -1.0], ["b", 1.1]]


def test_break_must_be_uppercase_whole_word():
    assert pp.parse_prompt_attention("a break b BREAKING") == [["a break b BREAKING", 1.0]]


def test_break_markers_never_merge_with_text():
    runs = pp.parse_prompt_attention("(a BREAK:-1)")
    assert ["BREAK", -1.0] in runs and ["a", -1.0] in runs


# ---- prompt editing -----------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, expected", [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [b:c:3]", [[3, "a b"], [10, "a c"]]),
    ("a [b::3] c", [[3, "a b c"], [10, "a  c"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("a [b:0.25] c", [[2, "a  c"], [10, "a b c"]]),
])
def test_prompt_editing_forms(prompt, expected):
    assert schedule(prompt) == expected


def test_fraction_vs_absolute_step():
    assert schedule("[a:b:1.0]") == [[10, "a"]]
    assert schedule("[a:b:1]") == [[1, "a"], [10, "b"]]
    assert schedule("[a:b:20]") == [[10, "a"]]
    assert schedule("[a:b:0]") == [[10, "b"]]


def test_prompt_editing_nests():
    assert schedule("a[b:[c:d:2]:1]e") == [[1, "abe"], [2, "ace"], [10, "ade"]]
    assert schedule("(x [a:b:3]:1.2)") == [[3, "(x a:1.2)"], [10, "(x b:1.2)"]]


@pytest.mark.parametrize("prompt", ["a [unbalanced", "a [{b|d{:.5] c", "a | [b:3]", "[a:3] trailing\\"])
def test_parse_failure_uses_the_prompt_literally(prompt):
    assert schedule(prompt) == [[10, prompt]]


def test_stray_brackets_at_top_level_stay_literal():
    assert schedule("((a][:b:c [d:3]") == [[3, "((a][:b:c "], [10, "((a][:b:c d"]]
    assert schedule("[a:b:c:3] [d:2]") == [[2, "[a:b:c:3] "], [10, "[a:b:c:3] d"]]


def test_schedule_reports_multiple_edits_in_step_order():
    prompt = "fantasy [mountain:lake:0.25] [ in snow::0.6]"
    assert schedule(prompt, 100) == [[25, "fantasy mountain  in snow"], [60, "fantasy lake  in snow"],
                                     [100, "fantasy lake "]]


# ---- alternation --------------------------------------------------------------------------------

def test_alternation_cycles_per_step():
    got = schedule("[a|(b:1.1)]", 4)
    assert got == [[1, "a"], [2, "(b:1.1)"], [3, "a"], [4, "(b:1.1)"]]


def test_alternation_allows_empty_items():
    assert schedule("[fe|]male", 4) == [[1, "female"], [2, "male"], [3, "female"], [4, "male"]]
    assert [t for _, t in schedule("[fe|||]male", 5)] == ["female", "male", "male", "male", "female"]


def test_alternation_with_schedule_inside():
    assert schedule("[a|[b:c:2]]", 4) == [[1, "a"], [2, "b"], [3, "a"], [4, "c"]]


# ---- hires pass and old scheduling --------------------------------------------------------------

def test_hires_pass_addresses_second_pass():
    assert schedule("a [b:.5] c", 10, hires_steps=10) == [[10, "a b c"]]
    assert schedule("a [b:1.5] c", 10, hires_steps=10) == [[5, "a  c"], [10, "a b c"]]
    assert schedule("[x:y:13]", 10, hires_steps=20) == [[3, "x"], [20, "y"]]
    assert schedule("[x:y:5]", 10, hires_steps=20) == [[20, "y"]]


def test_old_scheduling_treats_below_one_as_fraction():
    assert schedule("[x:y:0.5]", 10, old=True) == [[5, "x"], [10, "y"]]
    assert schedule("[x:y:2.0]", 10, old=True) == [[2, "x"], [10, "y"]]
    assert schedule("[x:y:1.5]", 10) == [[10, "x"]]
    assert schedule("[x:y:2.0]", 10, hires_steps=10, old=True) == [[2, "x"], [10, "y"]]


def test_identical_prompts_share_one_schedule():
    a, b = pp.get_learned_conditioning_prompt_schedules(["[x:y:2]", "[x:y:2]"], 4)
    assert a is b


# ---- AND ----------------------------------------------------------------------------------------

def test_and_splits_with_weights_and_dedupes():
    indexes, flat, index_of = pp.get_multicond_prompt_list(["a cat AND a dog :0.8 AND a cat", "x: -1.5 "])
    assert flat == ["a cat", " a dog", " a cat", "x"]
    assert indexes == [[(0, 1.0), (1, 0.8), (2, 1.0)], [(3, -1.5)]]
    assert index_of["x"] == 3


def test_and_must_be_a_whole_uppercase_word():
    _, flat, _ = pp.get_multicond_prompt_list(["SAND and ANDROID"])
    assert flat == ["SAND and ANDROID"]


def test_weight_inside_brackets_is_not_an_and_weight():
    assert pp.split_weighted_part("a (b:1.2)") == ("a (b:1.2)", 1.0)
    assert pp.split_weighted_part("a\nb:2") == ("a\nb", 2.0)


# ---- extra networks -----------------------------------------------------------------------------

def test_extra_network_tags_are_parsed_and_removed():
    text, found = pp.parse_prompt("a cat <lora:cute:0.5:te=1> <hypernet:h:0.2> <lora:b:1>")
    assert text == "a cat   "
    assert [p.items for p in found["lora"]] == [["cute", "0.5", "te=1"], ["b", "1"]]
    assert found["lora"][0].positional == ["cute", "0.5"] and found["lora"][0].named == {"te": "1"}
    assert found["hypernet"] == [pp.ExtraNetworkParams(["h", "0.2"])]


def test_extra_network_data_comes_from_first_prompt():
    texts, found = pp.parse_prompts(["a <lora:x:1>", "b <lora:y:1>"])
    assert texts == ["a ", "b "] and [p.items for p in found["lora"]] == [["x", "1"]]


def test_not_a_tag_is_kept():
    assert pp.parse_prompt("a <b> <c d:1>") == ("a <b> <c d:1>", {})


# ---- comments -----------------------------------------------------------------------------------

def test_strip_comments():
    assert pp.strip_comments("a\n# whole line\nb # tail\nc") == "a\nb \nc"
    assert pp.strip_comments("# only") == "\n"
    assert pp.strip_comments("no comment") == "no comment"


# ---- conditioning with a fake model -------------------------------------------------------------

class FakeConditioningModel:
    """Fake behind the model interface: text → [chunks*2, 3] tensor filled with a per-text code."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def get_learned_conditioning(self, texts):
        self.calls.append(list(texts))
        chunks = max(1 + t.count("+") for t in texts)
        return torch.stack([torch.full((2 * chunks, 3), float(len(t))) for t in texts])


def test_get_learned_conditioning_caches_identical_prompts():
    model = FakeConditioningModel()
    result = pp.get_learned_conditioning(model, ["[ab:abcd:2]", "x", "[ab:abcd:2]"], 4)
    assert model.calls == [["ab", "abcd"], ["x"]]
    assert result[0] is result[2]
    assert [e.end_at_step for e in result[0]] == [2, 4]
    assert result[0][1].cond[0, 0] == 4.0


def test_reconstruct_cond_batch_picks_step():
    model = FakeConditioningModel()
    conds = pp.get_learned_conditioning(model, ["[ab:abcd:2]", "xyz"], 4)
    assert pp.reconstruct_cond_batch(conds, 2)[:, 0, 0].tolist() == [2.0, 3.0]
    assert pp.reconstruct_cond_batch(conds, 3)[:, 0, 0].tolist() == [4.0, 3.0]


def test_multicond_batch_with_different_chunk_counts_pads_by_repeating_last_vector():
    model = FakeConditioningModel()
    c = pp.get_multicond_learned_conditioning(model, ["a AND bb+ :0.5", "a"], 4)
    assert c.shape == (2,)
    conds_list, tensor = pp.reconstruct_multicond_batch(c, 1)
    assert conds_list == [[(0, 1.0), (1, 0.5)], [(2, 1.0)]]
    assert tensor.shape == (3, 4, 3)
    assert torch.equal(tensor[0, 2:], tensor[0, 1:2].expand(2, 3))
    assert len(model.calls) == 2  # "a" encoded once


def test_reconstruct_cond_batch_pads_too():
    model = FakeConditioningModel()
    conds = pp.get_learned_conditioning(model, ["a+", "b"], 2)
    assert pp.reconstruct_cond_batch(conds, 1).shape == (2, 4, 3)


def test_sd_conditioning_keeps_fields():
    prompts = pp.SdConditioning(["a"], is_negative_prompt=True, width=64, height=32)
    _, flat, _ = pp.get_multicond_prompt_list(prompts)
    assert isinstance(flat, pp.SdConditioning) and flat.is_negative_prompt and (flat.width, flat.height) == (64, 32)


def test_escapes_survive_prompt_editing():
    assert schedule(r"a \(b\) [c:2]") == [[2, r"a \(b\) "], [10, r"a \(b\) c"]]
    assert schedule(r"\[a:3]") == [[10, r"\[a:3]"]]


def test_invalid_emphasis_groups_are_literal():
    assert schedule("(a:b:c) [d:2]") == [[2, "(a:b:c) "], [10, "(a:b:c) d"]]
    assert schedule("(a|b) [c:2]") == [[10, "(a|b) [c:2]"]]


def test_step_past_the_schedule_uses_the_first_entry_like_a1111():
    model = FakeConditioningModel()
    conds = pp.get_learned_conditioning(model, ["[ab:abcd:2]"], 4)
    assert pp.reconstruct_cond_batch(conds, 5)[0, 0, 0] == 2.0


def test_extra_network_params_repr_and_equality():
    params = pp.ExtraNetworkParams(["a", "k=v", "x=y=z"])
    assert params.named == {"k": "v"} and params.positional == ["a", "x=y=z"]
    assert repr(params) == "ExtraNetworkParams(items=['a', 'k=v', 'x=y=z'])"
    assert params != pp.ExtraNetworkParams(["a"]) and params != "a"


def test_many_unclosed_openers_parse_quickly():
    import time

    prompt = "(" * 3000 + "[a:b:2]"
    start = time.perf_counter()
    assert schedule(prompt) == [[10, prompt]]  # nested deeper than MAX_NESTING: literal
    shallow = "(" * 50 + "[a:b:2]" + "[x" * 40
    assert schedule(shallow)[0] == [2, "(" * 50 + "a" + "[x" * 40]
    assert time.perf_counter() - start < 2


def test_docstring_examples():
    import doctest

    assert doctest.testmod(pp).failed == 0


def test_extra_network_data_reads_unmentioned_networks_as_empty():
    _, found = pp.parse_prompts(["a"])
    assert found["lora"] == []


def test_token_counter_texts_expand_tags_and_and_schedules():
    assert pp.get_token_counter_texts("a <lora:x:1> [b:c:2] AND d", 4) == ["a  b", "a  c", " d"]
    assert pp.get_token_counter_texts("a AND b", 4, is_positive=False) == ["a AND b"]


# ---- bounds: weights, nesting depth, schedule steps (hardening) ---------------------------------

def a1111_product(*factors: float) -> float:
    """The weight A1111 computes: the factors multiplied one by one, innermost first."""
    weight = 1.0
    for factor in factors:
        weight *= factor
    return weight


def test_nesting_below_the_weight_bound_keeps_a1111_floats():
    assert pp.parse_prompt_attention("(" * 48 + "x" + ")" * 48) == [["x", a1111_product(*[1.1] * 48)]]
    assert pp.parse_prompt_attention("[" * 100 + "x" + "]" * 100) == [["x", a1111_product(*[1 / 1.1] * 100)]]
    assert pp.parse_prompt_attention("((x:90))") == [["x", a1111_product(90, 1.1)]]
    assert pp.parse_prompt_attention("((x:99.5))") == [["x", 100.0]]  # 109.45 is past the bound


def test_nesting_past_the_weight_bound_stops_at_the_bound():
    assert pp.MAX_ATTENTION_WEIGHT == 100.0
    assert pp.parse_prompt_attention("(" * 49 + "x" + ")" * 49) == [["x", 100.0]]
    assert pp.parse_prompt_attention("(" * 9999 + "x" + ")" * 9999) == [["x", 100.0]]
    assert pp.parse_prompt_attention("(" * 9999 + "x") == [["x", 100.0]]  # unclosed: to the end


@pytest.mark.parametrize("text, weight", [("(x:" + "9" * 400 + ")", 100.0), ("(x:-" + "9" * 400 + ")", -100.0),
                                          ("(x:1000)", 100.0), ("(x:-250.5)", -100.0), ("(x:100)", 100.0),
                                          ("(x:-100)", -100.0), ("(x:99.99)", 99.99)])
def test_explicit_weights_are_bounded(text, weight):
    assert pp.parse_prompt_attention(text) == [["x", weight]]


def test_weights_are_bounded_as_they_are_formed_so_no_product_is_nan():
    """inf * 0 would be NaN; bounded at each step it is 100 * 0 = 0."""
    assert pp.parse_prompt_attention("((x:" + "9" * 400 + "):0)") == [["x", 0.0]]
    assert pp.parse_prompt_attention("((x:1000):0.5)") == [["x", 50.0]]


def test_and_weights_are_bounded():
    assert pp.split_weighted_part("a cat :" + "9" * 400) == ("a cat", 100.0)
    assert pp.split_weighted_part("a cat :-1000") == ("a cat", -100.0)
    assert pp.split_weighted_part("a cat :99.5") == ("a cat", 99.5)


@pytest.mark.parametrize("text, depth", [("plain", 0), ("(a)", 1), ("((a) [b])", 2), ("[a:(b):2]", 2),
                                         (r"\(\(\(a\)", 0), ("(a:1.2) (b)", 1), (")))(((", 3), ("[[[a]]]", 3),
                                         ("(" * 101, 101), ("((a:2)(b:3))", 2)])
def test_bracket_depth_counts_as_the_parsers_read_brackets(text, depth):
    assert pp.bracket_depth(text) == depth


@pytest.mark.parametrize("when", ["1e999", "1.5e999", "99999999999999999999999"])
def test_schedule_step_past_the_float_range_never_switches(when):
    assert schedule(f"a [b:c:{when}]") == [[10, "a b"]]
    assert schedule(f"a [b:c:{when}]", hires_steps=5) == [[5, "a b"]]


def test_schedule_step_below_the_float_range_switches_at_once():
    assert schedule("a [b:c:-1e999]") == [[10, "a c"]]
    assert schedule("a [b:c:-1e999]", old=True) == [[10, "a c"]]


class FakeOverflowingModel(FakeConditioningModel):
    """Fake behind the model interface whose conditioning of any text holding "boom" is infinite."""

    def get_learned_conditioning(self, texts):
        conds = super().get_learned_conditioning(texts)
        for i, text in enumerate(texts):
            if "boom" in text:
                conds[i, 0, 0] = float("inf") if i % 2 else float("nan")
        return conds


@pytest.mark.parametrize("negative, hires, field", [(False, None, "prompt"), (True, None, "negative_prompt"),
                                                    (False, 5, "hr_prompt"), (True, 5, "hr_negative_prompt")])
def test_non_finite_conditioning_raises_naming_the_field(negative, hires, field):
    from modules.errors import NansDetected
    prompts = pp.SdConditioning(["fine", "a [calm:boom:3]"], is_negative_prompt=negative)
    with pytest.raises(NansDetected) as caught:
        pp.get_learned_conditioning(FakeOverflowingModel(), prompts, 10, hires)
    assert caught.value.field == field and "'a [calm:boom:3]'" in caught.value.message


def test_non_finite_conditioning_of_an_and_part_raises():
    from modules.errors import NansDetected
    with pytest.raises(NansDetected, match="boom"):
        pp.get_multicond_learned_conditioning(FakeOverflowingModel(), pp.SdConditioning(["calm AND boom :2"]), 10)
