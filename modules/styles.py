"""Prompt styles: named prompt / negative-prompt snippets kept in one or more `styles.csv` files.

A style's text either holds a `{prompt}` placeholder, which the user's prompt replaces, or is appended
after `", "`. Applying styles is reversible where the text still matches, which is how pasted
infotext recovers its "Styles array" (`extract_styles_from_prompt`).

CSV format (A1111): header `name,prompt,negative_prompt`, UTF-8 with optional BOM; rows whose name
starts with `#` are ignored; the legacy two-column form `name,text` is accepted. Several files
(or glob patterns) can be given; styles are kept per file and written back to the file they came
from, each through an atomic rename.
"""
from __future__ import annotations

import csv
import glob
import io
import os
from typing import Iterable, NamedTuple

from modules.errors import ConfigError
from modules.fileio import atomic_write_bytes, atomic_write_text

CSV_FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"


class PromptStyle(NamedTuple):
    """One style; `path` is the csv file it belongs to (None for a new style: the default file)."""

    name: str
    prompt: str | None
    negative_prompt: str | None
    path: str | None = None


# --------------------------------------------------------------------------------------------------
# Pure text functions
# --------------------------------------------------------------------------------------------------


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """Put `prompt` into the style text: at `{prompt}`, or before the style after `", "`."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, styles: Iterable[str]) -> str:
    """Apply style texts to `prompt` in order (each via `merge_prompts`)."""
    for style_prompt in styles:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


apply_negative_styles_to_prompt = apply_styles_to_prompt
"""Negative prompts merge exactly like positive ones; the name mirrors the database method."""


def extract_style_text_from_prompt(style_text: str, prompt: str) -> tuple[bool, str]:
    """Undo `merge_prompts(style_text, x)`: return `(True, x)` if `prompt` has that form, else `(False, prompt)`.

    Both texts are stripped first. With a placeholder, the text before and after it must frame the
    prompt; otherwise the prompt must end with the style text, and a `", "` left before it is dropped.
    """
    stripped_prompt, stripped_style = prompt.strip(), style_text.strip()
    if PLACEHOLDER in stripped_style:
        left, _, right = stripped_style.partition(PLACEHOLDER)
        if stripped_prompt.startswith(left) and stripped_prompt.endswith(right) \
                and len(stripped_prompt) >= len(left) + len(right):
            return True, stripped_prompt[len(left):len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style):
        rest = stripped_prompt[:len(stripped_prompt) - len(stripped_style)]
        return True, rest[:-2] if rest.endswith(", ") else rest
    return False, prompt


def extract_original_prompts(style: PromptStyle, prompt: str, negative_prompt: str) -> tuple[bool, str, str]:
    """Take `style` out of both prompts; succeed only if it was applied to both (empty texts match)."""
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative_prompt
    matched, positive = extract_style_text_from_prompt(style.prompt or "", prompt)
    if not matched:
        return False, prompt, negative_prompt
    matched, negative = extract_style_text_from_prompt(style.negative_prompt or "", negative_prompt)
    if not matched:
        return False, prompt, negative_prompt
    return True, positive, negative


def extract_styles_from_prompt(styles: Iterable[PromptStyle], prompt: str,
                               negative_prompt: str) -> tuple[list[str], str, str]:
    """Find which of `styles` were applied to the prompts and remove them.

    Styles are peeled off from the outermost (last applied) inwards, each at most once.

    Returns:
        `(style names in the order they were applied, prompt, negative prompt)`.
    """
    remaining = list(styles)
    peeled: list[str] = []
    while True:
        for style in remaining:
            matched, new_prompt, new_negative = extract_original_prompts(style, prompt, negative_prompt)
            if matched:
                prompt, negative_prompt = new_prompt, new_negative
                remaining.remove(style)
                peeled.append(style.name)
                break
        else:
            return list(reversed(peeled)), prompt, negative_prompt


# --------------------------------------------------------------------------------------------------
# CSV files
# --------------------------------------------------------------------------------------------------


def read_styles_csv(path: str) -> list[PromptStyle]:
    """The styles of one csv file (BOM, `#` rows and the legacy `name,text` form handled).

    Raises:
        ConfigError: the file has no `name` column or neither a `prompt` nor a `text` column.
    """
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        if reader.fieldnames is None:  # an empty file
            return []
        columns = reader.fieldnames
        text_column = "prompt" if "prompt" in columns else "text"
        if "name" not in columns or text_column not in columns:
            raise ConfigError(f"styles file {path!r} has columns {columns!r}; expected {list(CSV_FIELDS)!r}")
        styles = []
        for row in reader:
            name = row.get("name") or ""
            if not name or name.startswith("#"):
                continue
            styles.append(PromptStyle(name, row.get(text_column) or "", row.get("negative_prompt") or "", path))
        return styles


def styles_csv_text(styles: Iterable[PromptStyle]) -> str:
    """The csv text (with BOM, A1111 writes one) of `styles`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for style in styles:
        writer.writerow({"name": style.name, "prompt": style.prompt or "",
                         "negative_prompt": style.negative_prompt or ""})
    return "\ufeff" + buffer.getvalue()


def expand_style_paths(patterns: Iterable[str]) -> list[str]:
    """Files named by `patterns` in order, without duplicates; a glob pattern adds its matches."""
    found: list[str] = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(os.path.basename(pattern)) else [pattern]
        found.extend(m for m in matches if m not in found)
    return found


class StyleDatabase:
    """The styles of one or more csv files, by name (later files override earlier names).

    Args:
        paths: csv paths or glob patterns; a single path is accepted too. The first plain path (or,
            for a pattern, its first match, else `styles.csv` in its folder) is where new styles go.
    """

    def __init__(self, paths: str | os.PathLike | Iterable[str | os.PathLike]):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths: list[str] = [os.fspath(p) for p in paths]
        if not self.paths:
            raise ConfigError("StyleDatabase needs at least one styles file path")
        self.no_style = PromptStyle("None", "", "", None)
        self.styles: dict[str, PromptStyle] = {}
        self.default_path = self._default_path()
        self.reload()

    def _default_path(self) -> str:
        first = self.paths[0]
        if not glob.has_magic(os.path.basename(first)):
            return first
        matches = sorted(glob.glob(first))
        return matches[0] if matches else os.path.join(os.path.dirname(first), "styles.csv")

    def reload(self) -> None:
        """Read every styles file again; missing files are skipped."""
        self.styles.clear()
        self.loaded_files: list[str] = []
        for path in expand_style_paths(self.paths):
            if os.path.isfile(path):
                self.loaded_files.append(path)
                for style in read_styles_csv(path):
                    self.styles[style.name] = style

    def get_style_prompts(self, styles: Iterable[str]) -> list[str]:
        """Prompt texts of the named styles (unknown names give "")."""
        return [self.styles.get(name, self.no_style).prompt or "" for name in styles]

    def get_negative_style_prompts(self, styles: Iterable[str]) -> list[str]:
        """Negative prompt texts of the named styles (unknown names give "")."""
        return [self.styles.get(name, self.no_style).negative_prompt or "" for name in styles]

    def apply_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """`prompt` with the named styles applied in order."""
        return apply_styles_to_prompt(prompt, self.get_style_prompts(styles))

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """`prompt` with the named styles' negative texts applied in order."""
        return apply_styles_to_prompt(prompt, self.get_negative_style_prompts(styles))

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """Names of the styles found in the prompts, and the prompts without them."""
        return extract_styles_from_prompt(self.styles.values(), prompt, negative_prompt)

    def add_style(self, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
        """Add or replace a style (kept in its existing file, else the default file); not saved yet."""
        existing = self.styles.get(name)
        style = PromptStyle(name, prompt, negative_prompt, existing.path if existing else self.default_path)
        self.styles[name] = style
        return style

    def remove_style(self, name: str) -> None:
        """Forget a style (not saved yet); an unknown name is ignored."""
        self.styles.pop(name, None)

    def save_styles(self, path: str | None = None) -> None:
        """Write every file's styles back to it atomically, keeping the old file as `<file>.bak`.

        `path` is accepted for A1111 compatibility and ignored: each style goes to its own file.
        """
        by_file: dict[str, list[PromptStyle]] = {file: [] for file in self.loaded_files}
        for style in self.styles.values():
            by_file.setdefault(style.path or self.default_path, []).append(style)
        for file, styles in by_file.items():
            if os.path.isfile(file):
                with open(file, "rb") as f:
                    atomic_write_bytes(f"{file}.bak", f.read())
            atomic_write_text(file, styles_csv_text(styles))
