"""Built-in script "Custom code": runs the Python a user sends, only behind `--allow-code`.

Without the flag the script is hidden (`show` is False), so it is in no script list and its name
is unknown to the API (422), as in A1111. With it, the code runs as the body of a function, each
line after the first indented by `indent_level` spaces, in a namespace holding this module's
globals, `p` (the job) and `display(images, seed=-1, info="")`. A `return` of a `Processed` is
the result; otherwise the images given to `display` are (none if it was not called).

Positional `script_args`, as API clients send them: code (str), indent_level (int, 2).
"""
from __future__ import annotations

import traceback
from typing import Any

import gradio as gr

from modules import errors, processing, scripts, shared
from modules.processing import Processed, process_images  # noqa: F401  (for the user's code, as in A1111)

FUNCTION_NAME = "__webuitemp__"
EXAMPLE = """from modules.processing import process_images

p.width = 768
p.height = 768
p.batch_size = 2
p.steps = 10

return process_images(p)
"""


class CodeNotAllowed(errors.SerenaError):
    """Custom code was asked for on a server started without `--allow-code`."""

    status_code = 403


class CustomCodeError(errors.InvalidParameter):
    """The user's code did not compile or raised; the message names the error and where."""


def code_allowed() -> bool:
    return bool(getattr(shared.cmd_opts, "allow_code", False))


def function_source(code: str, indent_level: int) -> str:
    """`code` as the body of a function named FUNCTION_NAME (A1111's wrapping)."""
    indent = " " * indent_level
    return f"def {FUNCTION_NAME}():\n{indent}" + code.replace("\n", "\n" + indent)


def _user_line(lineno: int | None) -> int | str:
    """A line of the wrapped source as a line of the user's code (the `def` line is added)."""
    return max(lineno - 1, 1) if lineno else "?"


def run_code(code: str, indent_level: int, namespace: dict[str, Any]) -> Any:
    """Define the wrapped function in `namespace`, call it and return what it returns.

    Raises:
        CustomCodeError: the code does not compile, or raises something other than a Serena error.
    """
    try:
        compiled = compile(function_source(code, indent_level), "<custom code>", "exec")
    except SyntaxError as e:
        raise CustomCodeError(f"Custom code: {type(e).__name__} at line {_user_line(e.lineno)}: {e.msg}",
                              field="script_args") from e
    exec(compiled, namespace)  # noqa: S102  (running the user's code is the feature; --allow-code only)
    try:
        return namespace[FUNCTION_NAME]()
    except errors.SerenaError:
        raise
    except Exception as e:
        where = next((f"line {_user_line(frame.lineno)}" for frame in reversed(traceback.extract_tb(e.__traceback__))
                      if frame.filename == "<custom code>"), "unknown line")
        raise CustomCodeError(f"Custom code raised {type(e).__name__} at {where}: {e}", field="script_args") from e


class Script(scripts.Script):
    def title(self) -> str:
        return "Custom code"

    def show(self, is_img2img: bool) -> bool:
        return code_allowed()

    def ui(self, is_img2img: bool) -> list:
        code = gr.Code(value=EXAMPLE, language="python", label="Python code", elem_id=self.elem_id("code"))
        indent_level = gr.Number(label="Indent level", value=2, precision=0, elem_id=self.elem_id("indent_level"))
        return [code, indent_level]

    def run(self, p: Any, code: Any, indent_level: Any) -> Processed:
        """Run the code; its returned `Processed`, else what it passed to `display`."""
        if not code_allowed():
            raise CodeNotAllowed("Custom code needs the server started with --allow-code")
        if not isinstance(code, str):
            raise errors.InvalidParameter(f"Custom code: code must be text, got {code!r:.100}", field="script_args")
        if isinstance(indent_level, bool) or not isinstance(indent_level, (int, float)) \
                or indent_level != int(indent_level) or not 1 <= indent_level <= 64:
            raise errors.InvalidParameter(
                f"Custom code: indent_level must be a whole number of spaces in 1..64, got {indent_level!r}",
                field="script_args")
        shown: list = [[], -1, ""]

        def display(imgs: list, s: Any = -1, i: str = "") -> None:
            shown[:] = [imgs, s, i]

        namespace = dict(globals())
        namespace.update(p=p, display=display)
        result = run_code(code, int(indent_level), namespace)
        if isinstance(result, processing.Processed):
            return result
        return processing.Processed(p, *shown)
