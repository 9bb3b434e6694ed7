"""`CondFunc`, the monkey-patching helper A1111 extensions import from `modules.sd_hijack_utils`."""
from __future__ import annotations

import importlib
from typing import Any, Callable


class CondFunc:
    """Replace the function at dotted path `orig_func` (e.g. "torch.nn.functional.interpolate") by
    a wrapper: when `cond_func(orig, *args, **kwargs)` is true (or `cond_func` is None) it returns
    `sub_func(orig, *args, **kwargs)`, else `orig(*args, **kwargs)`.

    `orig_func` may also be a function object; then nothing is patched and the `CondFunc`
    instance itself is the wrapper to install.
    """

    def __new__(cls, orig_func: Any, sub_func: Callable, cond_func: Callable | None = None):
        self = super().__new__(cls)
        if isinstance(orig_func, str):
            owner, attr = _resolve_owner(orig_func)
            original = getattr(owner, attr)
            self.__init__(original, sub_func, cond_func)
            setattr(owner, attr, lambda *args, **kwargs: self(*args, **kwargs))
        return self

    def __init__(self, orig_func: Any, sub_func: Callable, cond_func: Callable | None = None):
        if isinstance(orig_func, str):  # already set up by __new__
            return
        self.__orig_func = orig_func
        self.__sub_func = sub_func
        self.__cond_func = cond_func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.__cond_func is None or self.__cond_func(self.__orig_func, *args, **kwargs):
            return self.__sub_func(self.__orig_func, *args, **kwargs)
        return self.__orig_func(*args, **kwargs)


def _resolve_owner(path: str) -> tuple[Any, str]:
    """The object holding the last name of dotted `path` (longest importable module prefix, then attributes)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(f"cannot resolve {path!r}")
