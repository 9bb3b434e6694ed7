"""styles: csv reading (BOM, comments, legacy form, several files), applying, extracting, saving."""
from __future__ import annotations

import os

import pytest

from modules import styles as st
from modules.errors import ConfigError


def write(path, text: str, bom: bool = False) -> str:
    path.write_bytes(("\ufeff" if bom else "").encode("utf8") + text.encode("utf8"))
    return str(path)


@pytest.fixture
def db(tmp_path) -> st.StyleDatabase:
    path = write(tmp_path / "styles.csv", 'name,prompt,negative_prompt\n'
                 'cinematic,"cinematic, {prompt}, film grain",blurry\n'
                 'sharp,"sharp focus",\n'
                 '# hidden,x,y\n'
                 'quoted,"a ""b"", c",\n', bom=True)
    return st.StyleDatabase([path])


def test_reads_bom_quotes_and_skips_comment_rows(db):
    assert list(db.styles) == ["cinematic", "sharp", "quoted"]
    assert db.styles["quoted"].prompt == 'a "b", c'
    assert db.styles["cinematic"] == st.PromptStyle("cinematic", "cinematic, {prompt}, film grain", "blurry",
                                                    db.default_path)


def test_legacy_two_column_form(tmp_path):
    path = write(tmp_path / "old.csv", "name,text\nold,old style\n")
    assert st.StyleDatabase(path).styles["old"] == st.PromptStyle("old", "old style", "", path)


def test_missing_columns_raise_with_columns(tmp_path):
    path = write(tmp_path / "bad.csv", "title,body\na,b\n")
    with pytest.raises(ConfigError, match="title"):
        st.StyleDatabase([path])


def test_several_files_and_globs(tmp_path):
    write(tmp_path / "a.csv", "name,prompt,negative_prompt\none,1,\n")
    write(tmp_path / "b.csv", "name,prompt,negative_prompt\ntwo,2,\none,uno,\n")
    db = st.StyleDatabase([str(tmp_path / "*.csv")])
    assert db.styles["one"].prompt == "uno" and db.styles["two"].path == str(tmp_path / "b.csv")
    assert db.default_path == str(tmp_path / "a.csv")


def test_missing_file_is_an_empty_database(tmp_path):
    db = st.StyleDatabase(str(tmp_path / "none.csv"))
    assert db.styles == {} and db.apply_styles_to_prompt("a", ["unknown"]) == "a"


def test_apply_placeholder_and_append(db):
    assert db.apply_styles_to_prompt("a cat", ["cinematic"]) == "cinematic, a cat, film grain"
    assert db.apply_styles_to_prompt(" a cat ", ["sharp"]) == "a cat, sharp focus"
    assert db.apply_styles_to_prompt("", ["sharp"]) == "sharp focus"
    assert db.apply_styles_to_prompt("a", ["sharp", "cinematic"]) == "cinematic, a, sharp focus, film grain"
    assert db.apply_negative_styles_to_prompt("ugly", ["cinematic", "sharp"]) == "ugly, blurry"


def test_module_level_apply_takes_style_texts():
    assert st.apply_styles_to_prompt("x", ["{prompt} y", "z"]) == "x y, z"
    assert st.apply_negative_styles_to_prompt("", ["n"]) == "n"


def test_extract_styles_round_trip(db):
    prompt = db.apply_styles_to_prompt("a cat", ["sharp", "cinematic"])
    negative = db.apply_negative_styles_to_prompt("ugly", ["sharp", "cinematic"])
    assert db.extract_styles_from_prompt(prompt, negative) == (["sharp", "cinematic"], "a cat", "ugly")


def test_extract_needs_both_prompts_to_match(db):
    assert db.extract_styles_from_prompt("cinematic, a cat, film grain", "ugly") == ([], "cinematic, a cat, film grain", "ugly")
    assert db.extract_styles_from_prompt("a cat", "") == ([], "a cat", "")


def test_extract_style_text_helpers():
    assert st.extract_style_text_from_prompt("{prompt}, b", "a, b") == (True, "a")
    assert st.extract_style_text_from_prompt("x {prompt} x", "x") == (False, "x")
    assert st.extract_style_text_from_prompt("b", " a, b ") == (True, "a")


def test_save_is_per_file_with_bom_and_backup(tmp_path, db):
    db.add_style("new", "new {prompt}", "bad")
    db.remove_style("quoted")
    db.save_styles()
    path = db.default_path
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert os.path.isfile(path + ".bak") and b"quoted" in open(path + ".bak", "rb").read()
    again = st.StyleDatabase([path])
    assert list(again.styles) == ["cinematic", "sharp", "new"]
    assert again.styles["cinematic"].prompt == "cinematic, {prompt}, film grain"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_save_writes_each_style_to_its_own_file(tmp_path):
    a = write(tmp_path / "a.csv", "name,prompt,negative_prompt\none,1,\n")
    b = write(tmp_path / "b.csv", "name,prompt,negative_prompt\ntwo,2,\n")
    db = st.StyleDatabase([a, b])
    db.add_style("two", "deux", "")
    db.save_styles()
    assert list(st.StyleDatabase(b).styles.values()) == [st.PromptStyle("two", "deux", "", b)]
    assert list(st.StyleDatabase(a).styles) == ["one"]


def test_empty_file_has_no_styles(tmp_path):
    path = write(tmp_path / "styles.csv", "")
    assert st.StyleDatabase(path).styles == {}
