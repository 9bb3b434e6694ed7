"""Request bodies that JSON allows but a request cannot mean: non-finite numbers and broken text.

Python's `json` reads `NaN`, `Infinity`, `-Infinity` and overflows such as `1e309` to non-finite
floats, and keeps `"\\ud800"` as an unpaired surrogate that no encoder can write back. Left in a
request they surface far away (a tokenizer TypeError, a response that cannot be serialised) as a
500. :class:`StrictJSONRoute` parses every JSON body once, rejects such values with FastAPI's 422
validation shape naming the field, and hands the parsed body on (FastAPI reuses it), so each route
and model sees only finite numbers and valid Unicode.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterator

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

Path = tuple[Any, ...]


def bad_values(value: Any, path: Path = ()) -> Iterator[tuple[Path, str, str]]:
    """Yield `(path, type, message)` for each non-finite number or invalid string inside `value`."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, "finite_number", "Input should be a finite number (NaN, Infinity and overflows are not allowed)"
    elif isinstance(value, str):
        if not is_valid_unicode(value):
            yield path, "string_unicode", "Input should be valid Unicode text (it holds an unpaired surrogate)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if not is_valid_unicode(key):
                yield path + (key.encode("utf-8", "backslashreplace").decode("ascii", "replace"),), "string_unicode", \
                    "Key should be valid Unicode text (it holds an unpaired surrogate)"
            else:
                yield from bad_values(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from bad_values(item, path + (i,))


def is_valid_unicode(text: str) -> bool:
    """True if `text` can be written as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_body(parsed: Any) -> None:
    """Raise FastAPI's RequestValidationError listing every bad value of a parsed body."""
    problems = [{"type": kind, "loc": ("body",) + path, "msg": msg, "input": None}
                for path, kind, msg in bad_values(parsed)]
    if problems:
        raise RequestValidationError(problems)


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body is parsed once, checked by :func:`check_body`, then reused."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Any:
            body = await request.body()
            if body and _is_json(request):
                try:
                    parsed = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    parsed = None  # FastAPI answers malformed JSON itself (json_invalid / 400)
                else:
                    check_body(parsed)
                    request._json = parsed  # starlette's cache: FastAPI's request.json() reuses it
            return await handler(request)

        return strict_handler


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")
