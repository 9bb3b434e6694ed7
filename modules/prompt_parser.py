"""Prompt syntax: prompt editing, alternation, AND, attention weights, comments, extra-network tags.

Everything here is pure text processing except `get_learned_conditioning` and friends, which call the
model's `get_learned_conditioning(list[str]) -> Tensor[B, 77*k, D]` and pick tensors per step. The
public names, signatures and result shapes are A1111's (`modules/prompt_parser.py`), because
extensions import them.

Prompt editing (`[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b]`) is parsed by a small
recursive-descent parser. Brackets that do not form a valid construct at the top level are kept as
literal text; a `|` outside an alternation, or a backslash at the very end, makes the prompt unparsable
and it is then used literally for every step, as A1111 does. A prompt such as

    "a [mountain:lake:0.25] [ in snow::0.6]"   (steps=100)

becomes the schedule `[[25, 'a mountain  in snow'], [60, 'a lake  in snow'], [100, 'a lake ']]`:
each entry is (last step at which the text applies, text).

Deliberate differences from A1111 (whose Earley grammar resolves ambiguous input in ways that are
hard to predict), all on malformed or extreme prompts:
- a construct directly followed by three or more stray `[`, `]`, `(`, `)`, `:` characters (as in
  `[a:b:2]]):`) is still honoured; A1111 then uses the whole prompt literally;
- brackets nested more than `MAX_NESTING` deep make the prompt literal (a job never gets here:
  `processing_validation` rejects such a prompt, naming the field; see `bracket_depth`);
- attention and AND weights are bounded to +-`MAX_ATTENTION_WEIGHT` (A1111 has no bound, so 9,999
  nested `(` reach an infinite weight and a NaN image);
- a schedule `when` beyond the float range (`[a:b:1e999]`) means "never" or "always" (A1111 fails);
- in attention parsing a lone backslash stays literal (A1111 drops it), and `BREAK` inside brackets
  still breaks (A1111 multiplies its -1 marker and then encodes the word "BREAK");
- `reconstruct_cond_batch` pads prompts of different chunk counts like `reconstruct_multicond_batch`
  (A1111 fails on them).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Union

from modules.errors import InvalidParameter, NansDetected

# --------------------------------------------------------------------------------------------------
# Prompt editing: parse tree
# --------------------------------------------------------------------------------------------------

NUMBER_PATTERN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
"""A whole `when` part: optional whitespace, a signed int/decimal with optional exponent, whitespace."""

SPECIAL_CHARS = "\\[]():|"


@dataclass
class Scheduled:
    """`[before:after:when]`; `before` is empty for the `[after:when]` form."""

    before: list["Node"]
    after: list["Node"]
    when: str


@dataclass
class Alternate:
    """`[a|b|c]`: option (step - 1) mod n is used at step `step`."""

    options: list[list["Node"]]


Node = Union[str, Scheduled, Alternate]


class _Unparsable(Exception):
    """The prompt (or the construct being tried) is not valid prompt-editing syntax."""


class _TooDeep(_Unparsable):
    """Brackets nest deeper than `MAX_NESTING`; the whole prompt is then used literally."""


MAX_NESTING = 100
"""The deepest bracket nesting a prompt may have. Deeper prompts are literal to the parser, and a job
whose prompt nests deeper is refused by `processing_validation` (see `bracket_depth`)."""


class _EditingParser:
    """Recursive-descent parser for prompt editing. Emphasis brackets are kept as literal text.

    A construct parses the same wherever it starts, so each start position's result (or failure) is
    memoised: retrying the openers of a failed construct as literal text stays linear in the length.
    """

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0
        self.memo: dict[int, tuple[list[Node], int] | None] = {}

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> list[Node]:
        """The whole prompt; stray brackets and colons at the top level are literal."""
        nodes: list[Node] = []
        while self.pos < len(self.text):
            char = self.peek()
            if char in "[(":
                start = self.pos
                try:
                    nodes.extend(self.construct())
                except _TooDeep:
                    raise
                except _Unparsable:
                    self.pos = start + 1
                    nodes.append(char)
            elif char in "]):":
                self.pos += 1
                nodes.append(char)
            else:
                nodes.append(self.plain())
        return nodes

    def plain(self) -> str:
        """A run of ordinary characters and `\\x` escapes (kept with their backslash)."""
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text) or self.text[self.pos + 1] == "\n":
                    raise _Unparsable(f"dangling backslash at {self.pos}")
                self.pos += 2
            elif char in SPECIAL_CHARS:
                break
            else:
                self.pos += 1
        if self.pos == start:
            raise _Unparsable(f"unexpected {self.peek()!r} at {self.pos}")
        return self.text[start:self.pos]

    def sequence(self) -> list[Node]:
        """Nested content: text and constructs up to the next `]`, `)`, `:` or `|` (not consumed)."""
        nodes: list[Node] = []
        while self.pos < len(self.text) and self.peek() not in "]):|":
            if self.peek() in "[(":
                nodes.extend(self.construct())
            else:
                nodes.append(self.plain())
        return nodes

    def construct(self) -> list[Node]:
        """A bracketed construct starting at the current `[` or `(`."""
        start = self.pos
        if start not in self.memo:
            self.memo[start] = self._construct_once()
        found = self.memo[start]
        if found is None:
            raise _Unparsable(f"no construct at {start}")
        self.pos = found[1]
        return found[0]

    def _construct_once(self) -> tuple[list[Node], int] | None:
        """Parse the construct at the current position: its nodes and end, or None if it is invalid."""
        if self.depth >= MAX_NESTING:
            raise _TooDeep(f"brackets nested deeper than {MAX_NESTING}")
        self.depth += 1
        try:
            nodes = self.square() if self.peek() == "[" else self.round()
            return nodes, self.pos
        except _TooDeep:
            raise
        except _Unparsable:
            return None
        finally:
            self.depth -= 1

    def delimited(self, closer: str) -> tuple[list[list[Node]], list[str]]:
        """Parts separated by `:` / `|` up to `closer` (consumed), with the separators seen."""
        self.pos += 1
        parts, separators = [self.sequence()], []
        while self.peek() and self.peek() in ":|":
            separators.append(self.peek())
            self.pos += 1
            parts.append(self.sequence())
        if self.peek() != closer:
            raise _Unparsable(f"expected {closer!r} at {self.pos}")
        self.pos += 1
        return parts, separators

    def round(self) -> list[Node]:
        """`(x)` or `(x:y)`: emphasis, kept literally (it may hold schedules)."""
        parts, separators = self.delimited(")")
        if "|" in separators or len(parts) > 2:
            raise _Unparsable("bad emphasis group")
        inner = parts[0] if len(parts) == 1 else [*parts[0], ":", *parts[1]]
        return ["(", *inner, ")"]

    def square(self) -> list[Node]:
        """`[x]` (kept literally), `[a|b…]`, or a schedule `[from:to:when]` / `[to:when]`."""
        parts, separators = self.delimited("]")
        if not separators:
            return ["[", *parts[0], "]"]
        if set(separators) == {"|"}:
            return [Alternate(parts)]
        if set(separators) == {":"} and len(parts) in (2, 3):
            when = parts[-1]
            if len(when) == 1 and isinstance(when[0], str) and NUMBER_PATTERN.fullmatch(when[0]):
                before = parts[0] if len(parts) == 3 else []
                return [Scheduled(before, parts[-2], NUMBER_PATTERN.fullmatch(when[0]).group(1))]
        raise _Unparsable("bad bracket group")


def parse_prompt_editing(prompt: str) -> list[Node] | None:
    """The prompt-editing tree of `prompt`, or None when it must be used literally."""
    try:
        return _EditingParser(prompt).parse()
    except _Unparsable:
        return None


# --------------------------------------------------------------------------------------------------
# Prompt editing: schedules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StepRule:
    """How `when` numbers map to steps for one pass (see `get_learned_conditioning_prompt_schedules`)."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0
    old_scheduling: bool = False

    def resolve(self, when: str) -> int:
        """The last step (in this pass) at which the "before" text applies."""
        value = float(when)
        if self.old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        return int(max(-1.0, min(float(self.steps), value)))  # bounded first: `1e999` is inf


def _walk(nodes: Iterable[Node]) -> Iterable[Node]:
    """Every node of a tree, depth first, including all branches."""
    for node in nodes:
        yield node
        if isinstance(node, Scheduled):
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, Alternate):
            for option in node.options:
                yield from _walk(option)


def _change_steps(nodes: list[Node], rule: _StepRule) -> list[int]:
    """Sorted steps at which the text may change; always ends with the pass's total steps."""
    found = {rule.steps}
    for node in _walk(nodes):
        if isinstance(node, Scheduled):
            step = rule.resolve(node.when)
            if step >= 1:
                found.add(step)
        elif isinstance(node, Alternate):
            found.update(range(1, rule.steps + 1))
    return sorted(found)


def _text_at(nodes: list[Node], step: int, rule: _StepRule) -> str:
    """The prompt text in effect at `step`."""
    pieces = []
    for node in nodes:
        if isinstance(node, str):
            pieces.append(node)
        elif isinstance(node, Scheduled):
            branch = node.before if step <= rule.resolve(node.when) else node.after
            pieces.append(_text_at(branch, step, rule))
        else:
            pieces.append(_text_at(node.options[(step - 1) % len(node.options)], step, rule))
    return "".join(pieces)


def get_learned_conditioning_prompt_schedules(prompts: list[str], base_steps: int, hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list]]:
    """Expand prompt editing and alternation into per-prompt schedules `[[end_at_step, text], …]`.

    `when` containing `.` is a fraction of the steps, otherwise an absolute step; the text before
    applies while step <= when. For the hires pass (`hires_steps` given) the steps are the hires
    steps and `when` addresses the second pass: integers count from `base_steps`, fractions from 1.0.
    `use_old_scheduling` restores the pre-1.6 rule (value < 1 is a fraction, else absolute, no
    hires offsets). Identical prompts are parsed once.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:3]"], 10)
    [[[3, 'a b'], [10, 'a c']]]
    """
    if hires_steps is None or use_old_scheduling:
        rule = _StepRule(base_steps, old_scheduling=use_old_scheduling)
    else:
        rule = _StepRule(hires_steps, int_offset=base_steps, float_offset=1.0)

    def schedule(prompt: str) -> list[list]:
        tree = parse_prompt_editing(prompt)
        if tree is None:
            return [[rule.steps, prompt]]
        return [[step, _text_at(tree, step, rule)] for step in _change_steps(tree, rule)]

    by_prompt = {prompt: schedule(prompt) for prompt in dict.fromkeys(prompts)}
    return [by_prompt[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------------
# Conditioning objects
# --------------------------------------------------------------------------------------------------


class ScheduledPromptConditioning(NamedTuple):
    """A conditioning tensor `[77*k, D]` used up to and including sampling step `end_at_step`."""

    end_at_step: int
    cond: Any


@dataclass
class ComposableScheduledPromptConditioning:
    """One `AND` part of a prompt: its schedule and its weight."""

    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass
class MulticondLearnedConditioning:
    """The composable conditioning of a batch: `batch[i]` holds the AND parts of prompt i.

    `shape` is `(batch size,)`; A1111 samplers read it.
    """

    shape: tuple
    batch: list[list[ComposableScheduledPromptConditioning]]


class SdConditioning(list):
    """A list of prompts for the conditioner, carrying A1111's extra fields (negative flag, size)."""

    def __init__(self, prompts: Iterable[str], is_negative_prompt: bool = False, width: int | None = None,
                 height: int | None = None, copy_from: Any = None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt: bool = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width: int | None = width or getattr(source, "width", None)
        self.height: int | None = height or getattr(source, "height", None)


def get_learned_conditioning(model: Any, prompts: list[str], steps: int, hires_steps: int | None = None,
                             use_old_scheduling: bool = False) -> list[list[ScheduledPromptConditioning]]:
    """Encode each prompt's schedule with `model.get_learned_conditioning`.

    Each distinct prompt costs one model call holding all of its schedule texts (so they share a
    chunk count); repeated prompts reuse the result.

    Returns:
        One list of `ScheduledPromptConditioning` per prompt, in step order.
    """
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    cache: dict[str, list[ScheduledPromptConditioning]] = {}
    result = []
    for prompt, schedule in zip(prompts, schedules):
        if prompt not in cache:
            texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
            conds = model.get_learned_conditioning(texts)
            check_finite(conds, prompt, _field_of(prompts, hires_steps))
            cache[prompt] = [ScheduledPromptConditioning(end, cond_row(conds, i)) for i, (end, _) in enumerate(schedule)]
        result.append(cache[prompt])
    return result


def _field_of(prompts: Any, hires_steps: int | None) -> str:
    """The request field that `prompts` came from, as far as their `SdConditioning` fields tell."""
    name = "negative_prompt" if getattr(prompts, "is_negative_prompt", False) else "prompt"
    return name if hires_steps is None else f"hr_{name}"


def check_finite(conds: Any, prompt: str, field_name: str = "prompt") -> None:
    """Raise `NansDetected` naming `field_name` when a conditioning tensor holds NaN or infinity.

    Weights are bounded (`MAX_ATTENTION_WEIGHT`), so this needs a model or precision that overflows
    anyway; the job then fails here, naming the prompt, instead of producing a NaN image.
    """
    import torch

    if isinstance(conds, dict):
        for value in conds.values():
            check_finite(value, prompt, field_name)
        return
    if isinstance(conds, torch.Tensor) and conds.is_floating_point() and not bool(torch.isfinite(conds).all()):
        raise NansDetected(f"the text conditioning of {field_name} {prompt[:200]!r} holds NaN or infinite values; "
                           f"lower its extreme attention weights or use a higher-precision text encoder",
                           field=field_name)


# --------------------------------------------------------------------------------------------------
# AND (composable diffusion)
# --------------------------------------------------------------------------------------------------

AND_PATTERN = re.compile(r"\bAND\b")
WEIGHTED_PART_PATTERN = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)
"""A part of an AND prompt: its text (trailing whitespace dropped) and an optional `:weight`."""


def split_weighted_part(part: str) -> tuple[str, float]:
    """`"a cat :0.8"` → `("a cat", 0.8)`; without a weight the weight is 1.0.

    The weight is bounded to +-`MAX_ATTENTION_WEIGHT`, as attention weights are.
    """
    match = WEIGHTED_PART_PATTERN.match(part)
    text, weight = match.group(1), match.group(2)
    return text, bound_weight(float(weight)) if weight is not None else 1.0


CondIndexes = list[list[tuple[int, float]]]
"""For each prompt, `(index, weight)` of each of its AND parts."""


def get_multicond_prompt_list(prompts: list[str]) -> tuple[CondIndexes, SdConditioning, dict[str, int]]:
    """Split every prompt on `AND` and collect the distinct parts.

    Returns:
        `(indexes, flat_list, index_of)`: for each prompt a list of `(index into flat_list, weight)`;
        the distinct part texts (an `SdConditioning` that keeps the fields of `prompts`); and the
        text → index map.
    """
    flat_list = SdConditioning([], copy_from=prompts)
    index_of: dict[str, int] = {}
    all_indexes = []
    for prompt in prompts:
        indexes = []
        for part in AND_PATTERN.split(prompt):
            text, weight = split_weighted_part(part)
            if text not in index_of:
                index_of[text] = len(flat_list)
                flat_list.append(text)
            indexes.append((index_of[text], weight))
        all_indexes.append(indexes)
    return all_indexes, flat_list, index_of


def get_multicond_learned_conditioning(model: Any, prompts: list[str], steps: int, hires_steps: int | None = None,
                                       use_old_scheduling: bool = False) -> MulticondLearnedConditioning:
    """Like `get_learned_conditioning`, with each prompt split on `AND` into weighted parts.

    The split happens on the raw prompt, before prompt editing is expanded (as in A1111), and each
    distinct part is encoded once.
    """
    all_indexes, flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes]
             for indexes in all_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


# --------------------------------------------------------------------------------------------------
# Picking the conditioning of a step
# --------------------------------------------------------------------------------------------------


class DictWithShape(dict):
    """A conditioning made of several tensors (SDXL: `crossattn` `[B, 77*k, D]` and `vector` `[B, A]`),
    with `shape` the shape of its `crossattn` tensor, so code that reads `cond.shape` works (A1111 name)."""

    def __init__(self, values: dict, shape: Any = None):
        super().__init__(values)
        self.shape = shape if shape is not None else values["crossattn"].shape


def cond_row(conds: Any, index: int) -> Any:
    """Row `index` of a batch conditioning (a tensor or a dict of tensors)."""
    if isinstance(conds, dict):
        return {key: value[index] for key, value in conds.items()}
    return conds[index]


def _first_tensor(cond: Any) -> Any:
    return cond["crossattn"] if isinstance(cond, dict) else cond


def cond_to(cond: Any, like: Any) -> Any:
    """`cond` (a tensor or a dict of tensors) on the device and in the dtype of the tensor `like`."""
    if isinstance(cond, dict):
        return DictWithShape({key: value.to(device=like.device, dtype=like.dtype) for key, value in cond.items()})
    return cond.to(device=like.device, dtype=like.dtype)


def catenate_conds(conds: list[Any]) -> Any:
    """Concatenate batch conditionings along the batch axis (A1111 name); dicts key by key."""
    import torch

    if isinstance(conds[0], dict):
        return DictWithShape({key: torch.cat([c[key] for c in conds]) for key in conds[0]})
    return torch.cat(conds)


def subscript_cond(cond: Any, start: int | None, end: int | None) -> Any:
    """Rows `start:end` of a batch conditioning (A1111 name)."""
    if isinstance(cond, dict):
        return DictWithShape({key: value[start:end] for key, value in cond.items()})
    return cond[start:end]


def cond_tokens(cond: Any) -> Any:
    """The token-sequence tensor of a conditioning (`crossattn` of a dict)."""
    return _first_tensor(cond)


def with_tokens(cond: Any, tokens: Any) -> Any:
    """`cond` with its token-sequence tensor replaced by `tokens` (other entries kept)."""
    if isinstance(cond, dict):
        return DictWithShape({**cond, "crossattn": tokens})
    return tokens


def _at_step(schedule: list[ScheduledPromptConditioning], current_step: int) -> Any:
    """The first entry with current_step <= end_at_step (the first entry if there is none)."""
    for entry in schedule:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond


def stack_conds(tensors: list[Any]) -> Any:
    """Stack `[T_i, D]` tensors into `[N, max T, D]`.

    A shorter tensor (a prompt with fewer 77-token chunks) is padded by repeating its last token
    vector, as A1111 does, so prompts of different lengths can share a batch.
    """
    import torch

    if isinstance(tensors[0], dict):
        stacked = {key: stack_conds([t[key] for t in tensors]) for key in tensors[0]}
        return DictWithShape(stacked)
    length = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == length else torch.cat([t, t[-1:].expand(length - t.shape[0], *t.shape[1:])])
              for t in tensors]
    return torch.stack(padded)


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step: int) -> Any:
    """The batch tensor `[B, 77*k, D]` of the conditionings in effect at `current_step`.

    Prompts whose tensors have fewer chunks are padded as in `stack_conds` (A1111 would fail here).
    """
    param = _first_tensor(c[0][0].cond)
    return cond_to(stack_conds([_at_step(schedule, current_step) for schedule in c]), param)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step: int) -> tuple[CondIndexes, Any]:
    """The AND parts of every prompt at `current_step`.

    Returns:
        `(conds_list, tensor)`: `conds_list[i]` lists `(row in tensor, weight)` for prompt i; the tensor
        stacks every part's conditioning, padded as in `stack_conds`.
    """
    param = _first_tensor(c.batch[0][0].schedules[0].cond)
    tensors, conds_list = [], []
    for parts in c.batch:
        rows = []
        for part in parts:
            rows.append((len(tensors), part.weight))
            tensors.append(_at_step(part.schedules, current_step))
        conds_list.append(rows)
    return conds_list, cond_to(stack_conds(tensors), param)


# --------------------------------------------------------------------------------------------------
# Attention (emphasis) parsing
# --------------------------------------------------------------------------------------------------

ATTENTION_TOKEN = re.compile(r"""
    (?P<escape>\\[()\[\]\\])                    # \( \) \[ \] \\ : literal character
  | (?P<backslash>\\)                           # a lone backslash: literal
  | (?P<open>[(\[])
  | :\s*(?P<weight>[+-]?[.\d]+)\s*\)            # ":1.5)" closes a round bracket with a weight
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+)
  | (?P<colon>:)
""", re.VERBOSE)
BREAK_PATTERN = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
MAX_ATTENTION_WEIGHT = 100.0
"""The largest magnitude an attention weight (or an AND weight) can reach; A1111 has no bound.

Every explicit weight and every product of nested brackets is bounded to [-100, 100] as it is
formed, so a weight reached through smaller weights is exactly A1111's (`(x)` nested 48 times is
1.1**48 = 97.0…), 49 or more levels give 100.0, and `(x:999…9)` with 400 nines (inf as a float)
gives 100.0; no product can reach inf or NaN. 100 is far past any useful emphasis (images degrade
well before 5), and the CLIP output scaled by it (|values| ≲ 30 on SD1) stays well inside float16's
range. A conditioning that is not finite all the same fails the job (`check_finite`)."""


def bound_weight(weight: float) -> float:
    """`weight` limited to +-`MAX_ATTENTION_WEIGHT`; a weight inside the bound is returned unchanged."""
    return max(-MAX_ATTENTION_WEIGHT, min(MAX_ATTENTION_WEIGHT, weight))


@dataclass
class _Run:
    """A piece of text with its weight; `is_break` marks a BREAK (weight -1, never multiplied)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


@dataclass
class _AttentionState:
    """Runs parsed so far and the run index at which each open bracket started."""

    runs: list[_Run] = field(default_factory=list)
    round_open: list[int] = field(default_factory=list)
    square_open: list[int] = field(default_factory=list)

    def multiply_from(self, start: int, factor: float) -> None:
        for run in self.runs[start:]:
            if not run.is_break:
                run.weight = bound_weight(run.weight * factor)

    def add_text(self, text: str) -> None:
        """Plain text, split on BREAK."""
        for i, part in enumerate(BREAK_PATTERN.split(text)):
            if i > 0:
                self.runs.append(_Run("BREAK", -1.0, is_break=True))
            self.runs.append(_Run(part))


def _parse_weight(value: str, text: str) -> float:
    try:
        return bound_weight(float(value))
    except ValueError:
        raise InvalidParameter(f"invalid attention weight {value!r} in prompt {text!r}", field="prompt") from None


def _apply_attention_token(state: _AttentionState, match: re.Match, text: str) -> None:
    """Update `state` with one token of the attention grammar."""
    kind, token = match.lastgroup, match.group(0)
    if kind == "escape":
        state.runs.append(_Run(token[1]))
    elif kind == "open":
        (state.round_open if token == "(" else state.square_open).append(len(state.runs))
    elif kind == "weight" and state.round_open:
        state.multiply_from(state.round_open.pop(), _parse_weight(match.group("weight"), text))
    elif token == ")" and state.round_open:
        state.multiply_from(state.round_open.pop(), ROUND_MULTIPLIER)
    elif token == "]" and state.square_open:
        state.multiply_from(state.square_open.pop(), SQUARE_MULTIPLIER)
    else:
        state.add_text(token)


def _merge_equal_weights(runs: list[_Run]) -> list[list]:
    """Join neighbouring runs of identical weight (BREAK markers stay on their own)."""
    merged: list[_Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if last is not None and not last.is_break and not run.is_break and last.weight == run.weight:
            last.text += run.text
        else:
            merged.append(run)
    return [[run.text, run.weight] for run in merged]


def parse_prompt_attention(text: str) -> list[list]:
    """Split `text` into `[text, weight]` runs.

    `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:w)` multiplies by w; `\\(` `\\)` `\\[` `\\]`
    `\\\\` are literal characters and so is a lone backslash. Unclosed brackets apply to the end of
    the text. `BREAK` (whole word, uppercase) becomes its own `["BREAK", -1]` run; brackets around it
    do not change it (unlike A1111, whose multiplied -1 turns it into literal text). Weights are
    bounded to +-`MAX_ATTENTION_WEIGHT` at every multiplication.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]

    Raises:
        InvalidParameter: a `(x:w)` weight that is not a number, e.g. `1.2.3`.
    """
    state = _AttentionState()
    for match in ATTENTION_TOKEN.finditer(text):
        _apply_attention_token(state, match, text)
    for start in state.round_open:
        state.multiply_from(start, ROUND_MULTIPLIER)
    for start in state.square_open:
        state.multiply_from(start, SQUARE_MULTIPLIER)
    if not state.runs:
        return [["", 1.0]]
    return _merge_equal_weights(state.runs)


def bracket_depth(text: str) -> int:
    """The deepest nesting of attention and prompt-editing brackets in `text`.

    Brackets are read as `parse_prompt_attention` reads them: escaped ones do not count, an unclosed
    one stays open to the end, a closer without its opener is text.

    >>> bracket_depth(r"a ((b) [c:d:2]) \\(e\\) ((f")
    2
    """
    open_count = {"(": 0, "[": 0}
    deepest = 0
    for match in ATTENTION_TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group(0)
        if kind == "open":
            open_count[token] += 1
            deepest = max(deepest, open_count["("] + open_count["["])
        elif (kind == "weight" or token == ")") and open_count["("]:
            open_count["("] -= 1
        elif token == "]" and open_count["["]:
            open_count["["] -= 1
    return deepest


# --------------------------------------------------------------------------------------------------
# Comments and extra-network tags
# --------------------------------------------------------------------------------------------------

WHOLE_LINE_COMMENT = re.compile(r"(?:^|\n)#[^\n]*(?:\n|$)")
LINE_END_COMMENT = re.compile(r"#[^\n]*(?:\n|$)")


def strip_comments(text: str) -> str:
    """Remove `#` comments: a line starting with `#` and its newline, then `#` to the end of a line.

    Each removed comment leaves one newline, as A1111's comment script does. The caller checks the
    option `enable_prompt_comments`.
    """
    return LINE_END_COMMENT.sub("\n", WHOLE_LINE_COMMENT.sub("\n", text))


EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The arguments of one `<name:arg1:arg2…>` tag: `k=v` arguments are named, the rest positional."""

    def __init__(self, items: list[Any] | None = None):
        self.items: list[Any] = list(items or [])
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            pieces = item.split("=") if isinstance(item, str) else [item]
            if len(pieces) == 2:
                self.named[pieces[0]] = pieces[1]
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ExtraNetworkParams) and self.items == other.items
                and self.positional == other.positional and self.named == other.named)

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove extra-network tags from `prompt`; return the text and `{network name: [params, …]}`.

    The mapping is a `defaultdict(list)`, as in A1111, so an unmentioned network reads as `[]`.

    >>> text, found = parse_prompt("a cat <lora:cute:0.5>")
    >>> text, found["lora"], found["hypernet"]
    ('a cat ', [ExtraNetworkParams(items=['cute', '0.5'])], [])
    """
    found: dict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def take(match: re.Match) -> str:
        found[match.group(1)].append(ExtraNetworkParams(match.group(2).split(":")))
        return ""

    return EXTRA_NETWORK_TAG.sub(take, prompt), found


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """`parse_prompt` on each prompt; the network data is taken from the first prompt only."""
    texts, first = [], None
    for prompt in prompts:
        text, found = parse_prompt(prompt)
        texts.append(text)
        if first is None:
            first = found
    return texts, first if first is not None else defaultdict(list)


def get_token_counter_texts(text: str, steps: int, is_positive: bool = True) -> list[str]:
    """The texts the UI token counter measures for `text` (the largest count is shown).

    Extra-network tags are removed; a positive prompt is split on AND; every schedule text of every
    part is listed.
    """
    text, _ = parse_prompt(text)
    parts = get_multicond_prompt_list([text])[1] if is_positive else [text]
    schedules = get_learned_conditioning_prompt_schedules(list(parts), steps)
    return [entry_text for schedule in schedules for _, entry_text in schedule]
