"""File name patterns and sequence numbers as A1111 v1.10.1 writes them (issue 8, items 4 and 5).

The facts, read from A1111's ``modules/images.py``:

* ``FilenameGenerator.apply`` finds each ``[tag]`` (the first ``[`` whose next bracket is a ``]``
  with something between), peels ``<arg>`` suffixes off the end of the tag, looks the rest up by
  its lowercase name, and when the tag is unknown, fails or yields None it writes ``[name]`` —
  the name as written, without its arguments. A tag that yields "nothing, skip previous text"
  drops the literal text before it.
* ``[hasprompt<a|b|...>]`` splits each argument at ``|``: piece 0, lowercased, is written when the
  lowercased prompt contains it, otherwise piece 1 (or nothing); it needs a job and a prompt.
* ``[datetime<fmt><zone>]`` asks ``pytz.timezone(zone)``; an unknown zone means local time.
* ``[prompt_words]`` splits on whitespace and on ASCII punctuation except the backslash (A1111
  pastes ``string.punctuation`` unescaped into a regex class, where ``\\]`` is an escaped ``]``).
* ``get_next_sequence_number`` strips ``basename-`` and the extension, cuts at the first ``-``,
  and counts the piece if ``int()`` reads it, skipping it on ``ValueError``.

Each oracle below restates one rule in its own terms; the property tests compare Serena with it.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
import time
import unicodedata
import zoneinfo
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from modules import images, shared
from modules.shared import opts

try:  # what A1111 resolves zone names with; the zone property test needs it as its oracle
    import pytz
except ImportError:
    pytz = None

IMG = Image.new("RGB", (16, 8), (10, 20, 30))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_p(**kw):
    base = dict(steps=20, cfg_scale=7.0, sampler_name="Euler a", scheduler="Automatic", styles=[],
                prompt="a cat", negative_prompt="ugly", batch_size=1, n_iter=1, batch_index=0, iteration=0,
                all_seeds=[10, 11, 12], denoising_strength=None, user="ann")
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module", autouse=True)
def _default_sanitising_and_odd_local_zone():
    """Default file name flags, and a local zone that is neither UTC nor any zone a test names."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shared.cmd_opts, "unix_filenames_sanitization", False, raising=False)
        mp.setattr(shared.cmd_opts, "filenames_max_length", 128, raising=False)
        mp.setenv("TZ", "America/St_Johns")
        time.tzset()
        yield
    time.tzset()


# --- oracles -----------------------------------------------------------------------------------------
SKIP = object()
RESERVED = '#<>:"/\\|?*\n\r\t'
WORD_BREAKING_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~"  # ASCII punctuation, no backslash


def oracle_sanitize(text, spaces_too=True):
    if spaces_too:
        text = text.replace(" ", "_")
    text = "".join("_" if ch in RESERVED else ch for ch in text)
    return text.lstrip(" ")[:128].rstrip(" .")


def oracle_prompt_words(prompt, limit):
    words, current = [], ""
    for ch in prompt or "":
        if ch.isspace() or ch in WORD_BREAKING_PUNCTUATION:
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
    if current:
        words.append(current)
    return oracle_sanitize(" ".join((words or ["empty"])[:limit]), spaces_too=False)


def oracle_hasprompt(p, prompt, args):
    if p is None or prompt is None:
        return None
    written = ""
    for arg in args:
        if not arg:
            continue
        pieces = arg.split("|")
        wanted = pieces[0].lower()
        if prompt.lower().find(wanted) != -1:
            written += wanted
        elif len(pieces) >= 2:
            written += pieces[1]
    return oracle_sanitize(written)


def oracle_length(args, default):
    if not args or args[0] == "":
        return default
    return int(args[0])  # ValueError: the tag fails


def oracle_tag(name, args, ctx):
    """The value of one tag, None when A1111 would write it back, or SKIP."""
    p, seed, prompt, image = ctx
    key = name.lower()
    try:
        if key == "prompt_hash":
            return None if prompt is None else hashlib.sha256(prompt.encode()).hexdigest()[:oracle_length(args, 8)]
        if key == "image_hash":
            return None if image is None else hashlib.sha256(image.tobytes()).hexdigest()[:oracle_length(args, None)]
    except ValueError:
        return None
    if key == "hasprompt":
        return oracle_hasprompt(p, prompt, args)
    if args:  # every other tag takes no arguments, and fails when given some
        return None
    if key == "seed":
        return "" if seed is None else str(seed)
    if key == "none":
        return ""
    if key == "prompt_words":
        return oracle_prompt_words(prompt, opts.directories_max_prompt_words)
    if p is None:
        return None
    if key == "steps":
        return str(p.steps)
    if key == "seed_first":
        value = seed if p.batch_size == 1 else p.all_seeds[0]
        return None if value is None else str(value)
    if key == "seed_last":
        return SKIP if p.batch_size == 1 else str(p.all_seeds[-1])
    return None


def next_tag(x, start):
    """(where the tag's "[" is, where its "]" is), or None."""
    for left in range(start, len(x)):
        if x[left] != "[":
            continue
        for right in range(left + 1, len(x)):
            if x[right] in "[]":
                if x[right] == "]" and right > left + 1:
                    return left, right
                break
    return None


def peel_arguments(tag):
    args = []
    while tag.endswith(">"):
        opening = tag.rfind("<")
        if opening == -1 or ">" in tag[opening + 1:-1]:
            break
        args.insert(0, tag[opening + 1:-1])
        tag = tag[:opening]
    return tag, args


def oracle_apply(pattern, ctx):
    written, position = "", 0
    while (found := next_tag(pattern, position)) is not None:
        left, right = found
        literal, (name, args) = pattern[position:left], peel_arguments(pattern[left + 1:right])
        position = right + 1
        value = oracle_tag(name, args, ctx)
        if value is SKIP:
            continue
        written += literal + (f"[{name}]" if value is None else value)
    return written + pattern[position:]


def oracle_leading_number(name, basename):
    """What A1111's counter reads from ``name``, or None when it skips the name."""
    prefix = f"{basename}-" if basename else ""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    dot = rest.rfind(".")
    if dot > 0 and rest[:dot].replace(".", "") != "":  # an extension, not a leading dot
        rest = rest[:dot]
    text = rest.split("-")[0].strip()  # int() ignores the same surrounding whitespace as str.strip()
    sign = 1
    if text[:1] in ("+", "-") and text:
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    groups = text.split("_")  # single underscores may sit between digits
    if not text or "" in groups:
        return None
    digits = [unicodedata.decimal(ch, None) for group in groups for ch in group]
    if None in digits:
        return None
    value = 0
    for digit in digits:
        value = value * 10 + digit
    return sign * value


def oracle_next_number(names, basename):
    numbers = [n for n in (oracle_leading_number(name, basename) for name in names) if n is not None]
    return max(numbers + [-1]) + 1


# --- item 4: examples ----------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,pattern,expected", [
    ("a dog", "[hasprompt<cat|b|c>]", "b"),
    ("a CAT", "[hasprompt<Cat|b|c>]", "cat"),
    ("a dog", "[hasprompt<cat|no cat|other>]", "no_cat"),
    ("a dog", "[hasprompt<cat>]", ""),
    ("a dog", "[hasprompt<><dog|x><cat|y|z>]", "dogy"),
    ("a dog", "[hasprompt<|x>]", ""),
])
def test_hasprompt_uses_the_second_piece(prompt, pattern, expected):
    assert images.FilenameGenerator(make_p(), 1, prompt, IMG).apply(pattern) == expected


@pytest.mark.parametrize("p,prompt,image,pattern,expected", [
    (make_p(), "x", None, "a-[image_hash<10>]-b", "a-[image_hash]-b"),
    (make_p(), None, IMG, "[prompt_hash<4>]", "[prompt_hash]"),
    (make_p(), "x", IMG, "[prompt_hash<four>]", "[prompt_hash]"),
    (None, "cat", IMG, "[hasprompt<cat|dog>]", "[hasprompt]"),
    (make_p(), None, IMG, "[hasprompt<cat|dog>]", "[hasprompt]"),
    (make_p(), "x", None, "[Image_Hash<10>]", "[Image_Hash]"),
    (make_p(), "x", IMG, "[no_such_tag<1><2>]", "[no_such_tag]"),
    (make_p(), "x", IMG, "[steps<3>]", "[steps]"),
    (None, "x", IMG, "[seed_first]", "[seed_first]"),
    (None, "x", IMG, "s[seed_first]-[seed_last]", "s[seed_first]-[seed_last]"),
])
def test_unresolved_tags_are_written_back_without_arguments(p, prompt, image, pattern, expected):
    assert images.FilenameGenerator(p, 5, prompt, image).apply(pattern) == expected


@pytest.mark.parametrize("zone,expected", [
    ("asia/tokyo", "+0900JST"),
    ("ASIA/TOKYO", "+0900JST"),
    ("Asia/Tokyo", "+0900JST"),
    ("utc", "+0000UTC"),
    ("etc/gmt_plus_5", "-0500-05"),
])
def test_datetime_zone_names_ignore_case(zone, expected):
    gen = images.FilenameGenerator(make_p(), 1, "x", IMG)
    assert gen.apply(f"[datetime<%z%Z><{zone}>]") == expected


@pytest.mark.parametrize("zone", ["No/Such_Zone", "", "Asia/\u212aolkata", "Factory", "localtime", "ETC/GMT_PLUS_5"])
def test_datetime_unknown_zone_is_local_time(zone):
    gen = images.FilenameGenerator(make_p(), 1, "x", IMG)
    local = datetime.datetime.now().astimezone().strftime("%z")
    assert local not in ("+0000", "+0530", "-0500")  # the fixture's zone, so a wrong answer shows
    assert gen.apply(f"[datetime<%z><{zone}>]") == local


@pytest.mark.parametrize("prompt,expected", [
    ("a\\b c", "a_b c"),
    ("(masterpiece:1.2), \\ lone", "masterpiece 1 2 _ lone"),
    ("x\u3000y\u00a0z", "x y z"),
    ("fullwidth\uff0ccomma", "fullwidth\uff0ccomma"),
    ("\\", "_"),
    ("...", "empty"),
])
def test_prompt_words_keep_backslashes(prompt, expected):
    assert images.FilenameGenerator(None, 1, prompt, IMG).apply("[prompt_words]") == expected


def test_prompt_words_backslash_with_unix_sanitising(monkeypatch):
    monkeypatch.setattr(shared.cmd_opts, "unix_filenames_sanitization", True, raising=False)
    assert images.FilenameGenerator(None, 1, "a\\b c", IMG).apply("[prompt_words]") == "a\\b c"


# --- item 4: properties --------------------------------------------------------------------------------
TAG_NAMES = ["seed", "SEED", "none", "seed_first", "Seed_Last", "steps", "prompt_hash", "image_hash",
             "Image_Hash", "hasprompt", "HasPrompt", "prompt_words", "nosuchtag", "", "x<a"]
argument = st.text(alphabet="ab|12A x<>", max_size=6)
tag = st.builds(lambda name, args: "[" + name + "".join(f"<{a}>" for a in args) + "]",
                st.sampled_from(TAG_NAMES), st.lists(argument, max_size=3))
literal = st.text(alphabet="ab -_.|<>[]", max_size=4)
patterns = st.lists(st.one_of(tag, literal), max_size=6).map("".join)
prompts = st.one_of(st.none(), st.text(alphabet="abAB |\\,x12 \u3000", max_size=12))
jobs = st.one_of(st.none(), st.builds(lambda size: make_p(batch_size=size), st.sampled_from([1, 3])))


@PROPERTY
@given(pattern=patterns, p=jobs, seed=st.one_of(st.none(), st.integers(0, 99)), prompt=prompts,
       image=st.sampled_from([None, IMG]))
def test_patterns_expand_as_a1111(pattern, p, seed, prompt, image):
    gen = images.FilenameGenerator(p, seed, prompt, image)
    assert gen.apply(pattern) == oracle_apply(pattern, (p, seed, prompt, image))


@PROPERTY
@given(prompt=st.one_of(st.none(), st.text(max_size=40)), limit=st.integers(1, 20))
def test_prompt_words_as_a1111(prompt, limit):
    with opts.override({"directories_max_prompt_words": limit}):
        got = images.FilenameGenerator(None, 1, prompt, IMG).apply("[prompt_words]")
        assert got == oracle_prompt_words(prompt, limit)


def _flip_case(name, flips):
    return "".join(ch.swapcase() if flip else ch for ch, flip in zip(name, flips + [False] * len(name)))


@st.composite
def zone_names(draw):
    kind = draw(st.sampled_from(["known", "munged", "junk", "lookalike"]))
    if kind == "junk":
        return draw(st.text(alphabet="abcAsiaTokyUTC/_+-0123 ", max_size=14))
    name = draw(st.sampled_from(sorted(pytz.all_timezones) if pytz is not None else ["UTC"]))
    if kind == "munged":
        name = name.replace("+", "_plus_").replace("-", "_minus_")
    if kind == "lookalike":
        name = name.replace("K", "\u212a").replace("s", "\u017f").replace("i", "\u0131")
    return _flip_case(name, draw(st.lists(st.booleans(), max_size=len(name))))


@pytest.mark.skipif(pytz is None, reason="pytz, the oracle for A1111's zone lookup, is not installed")
@PROPERTY
@given(name=zone_names())
def test_datetime_zone_as_pytz_resolves_it(name):
    try:
        canonical = pytz.timezone(name).zone
    except pytz.exceptions.UnknownTimeZoneError:
        canonical = None
    expected_zone = zoneinfo.ZoneInfo(canonical) if canonical is not None else None
    expected = datetime.datetime.now().astimezone(expected_zone).strftime("%z%Z")
    got = images.FilenameGenerator(None, 1, "x", IMG).apply(f"[datetime<%z%Z><{name}>]")
    assert got == images.sanitize_filename_part(expected, replace_spaces=False)


# --- item 5: sequence numbers ------------------------------------------------------------------------
def _folder(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return str(tmp_path)


@pytest.mark.parametrize("names,basename,expected", [
    (["\u00b2-superscript.png"], "", 0),
    (["\u00b2-superscript.png", "00004-1.png"], "", 5),
    ([" 7-x.png"], "", 8),
    (["+3.png"], "", 4),
    (["1_0.png"], "", 11),
    (["1__0.png", "_1.png", "1_.png"], "", 0),
    (["\u0663-arabic.png", "\uff17-fullwidth.png"], "", 8),
    (["7\t.png", "\u30007.png"], "", 8),
    (["grid- 7.png", "grid-\u00b9.png", "grid-2_0-x.png"], "grid", 21),
    (["0x10.png", "1e3.png", "3.5.png", ".7", "..9.png"], "", 0),
])
def test_next_sequence_number_reads_like_int(tmp_path, names, basename, expected):
    assert images.get_next_sequence_number(_folder(tmp_path, *names), basename) == expected


def test_save_image_beside_a_superscript_file(tmp_path):
    folder = _folder(tmp_path, "\u00b2-superscript.png", " 7-x.png")
    fn, _ = images.save_image(IMG, folder, "", 42, "a cat", "png", p=make_p(), save_to_dirs=False)
    assert os.path.basename(fn).startswith("00008")


leading = st.text(alphabet="0123456789 +_\u00b2\u0663\uff17\t\u3000x.", max_size=5)
file_names = st.builds(lambda lead, rest, ext: lead + rest + ext, leading,
                       st.sampled_from(["", "-1", "-x-y", "_z"]), st.sampled_from(["", ".png", ".txt", ".a.b"]))


@PROPERTY
@given(names=st.lists(st.one_of(file_names, file_names.map(lambda n: "grid-" + n)), max_size=8, unique=True),
       basename=st.sampled_from(["", "grid"]))
def test_next_sequence_number_as_a1111(names, basename):
    names = [n for n in names if n not in ("", ".", "..")]
    assume(names)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            with open(os.path.join(folder, name), "wb"):
                pass
        assert images.get_next_sequence_number(folder, basename) == oracle_next_number(names, basename)


def test_styles_tag_without_a_style_list_is_written_back():
    assert images.FilenameGenerator(make_p(styles=None), 1, "a cat", IMG).apply("[styles]") == "[styles]"
    assert images.FilenameGenerator(make_p(styles=[]), 1, "a cat", IMG).apply("[styles]") == "None"


def test_a_tag_an_extension_adds_to_the_class_dict_is_expanded(monkeypatch):
    from modules import images
    monkeypatch.setitem(images.FilenameGenerator.replacements, "fancy",
                        lambda self, *args: f"fancy-{self.seed}-{'-'.join(args)}")
    monkeypatch.setitem(images.FilenameGenerator.replacements, "seed", lambda self: "overridden")
    gen = images.FilenameGenerator(None, 42, "a prompt", None)
    assert gen.apply("[fancy<x><y>]_[seed]_[none]") == "fancy-42-x-y_overridden_"
