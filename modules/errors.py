"""Domain errors. Each carries the offending value in its message and the HTTP status the API maps
it to (one exception handler in `modules.api.app` does the mapping; nothing else catches them)."""
from __future__ import annotations


class SerenaError(Exception):
    """Base of every error Serena raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidParameter(SerenaError, ValueError):
    """A request value is outside what Serena accepts; `field` names it."""

    status_code = 422


class UnknownSampler(InvalidParameter):
    pass


class UnknownScheduler(InvalidParameter):
    pass


class InvalidImage(InvalidParameter):
    pass


class UnknownOption(SerenaError, KeyError):
    status_code = 422

    def __init__(self, key: str):
        super().__init__(f"unknown option {key!r}", field=key)

    def __str__(self) -> str:
        return self.message


class FrozenSettings(SerenaError):
    status_code = 403

    def __init__(self, key: str):
        super().__init__(f"settings are frozen (--freeze-settings): cannot change {key!r}", field=key)


class ConfigError(SerenaError):
    pass


class CheckpointNotFound(SerenaError):
    status_code = 404


class CheckpointLoadError(SerenaError):
    """A checkpoint file exists but cannot be loaded (corrupt, truncated, wrong keys, pickled code)."""

    status_code = 422


class UnsupportedModel(CheckpointLoadError):
    """A recognised architecture Serena does not load (SD2 depth-to-image, for instance)."""


class NotFound(SerenaError):
    status_code = 404


class Interrupted(SerenaError):
    status_code = 409


class ReadOnlyOption(SerenaError):
    """An option that this server's flags make read-only (`--hide-ui-dir-config`)."""

    status_code = 403


class NansDetected(SerenaError):
    """A job's numbers left the finite range (NaN or infinity in the text conditioning, the latents or
    the decoded image): the job's own values (extreme prompt weights, CFG scale, denoising settings)
    or the model's precision caused it, so it is the job's error, not the server's. `field` names
    the request field to look at when one is known."""

    status_code = 422


# --- A1111's error-reporting helpers (extensions call these) ------------------------------------------
import logging as _logging  # noqa: E402
import sys as _sys  # noqa: E402
import threading as _threading  # noqa: E402
import traceback as _traceback  # noqa: E402

_log = _logging.getLogger(__name__)
exception_records: list[dict] = []
"""The last exceptions reported through `report`/`display` (newest last, at most 5), as A1111 keeps them."""
_records_lock = _threading.Lock()
_already_displayed: set = set()


def format_traceback(tb) -> list[list[str]]:
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line or ""]
            for frame in _traceback.extract_tb(tb)]


def format_exception(e: BaseException, tb) -> dict:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict]:
    """The recorded exceptions, newest first."""
    with _records_lock:
        return list(reversed(exception_records))


def record_exception() -> None:
    """Remember the exception being handled (if any) in `exception_records`."""
    _, e, tb = _sys.exc_info()
    if e is None:
        return
    with _records_lock:
        if exception_records and exception_records[-1]["exception"] == str(e):
            return
        exception_records.append(format_exception(e, tb))
        del exception_records[:-5]


def report(message: str, *, exc_info: bool = False) -> None:
    """Log `message` (each line prefixed by "*** ") as an error; with `exc_info`, add the traceback
    of the exception being handled, indented, then a "---" line."""
    record_exception()
    lines = [f"*** {line}" for line in str(message).splitlines()]
    if exc_info:
        trace = _traceback.format_exc().rstrip("\n")
        lines += ["    " + line for line in trace.splitlines()]
        lines.append("---")
    _log.error("\n".join(lines))


def print_error_explanation(message: str) -> None:
    """Log `message` framed by lines of "=" as wide as its longest line."""
    record_exception()
    lines = str(message).strip().split("\n")
    width = max((len(line) for line in lines), default=0)
    frame = "=" * width
    _log.error("\n".join([frame, *lines, frame]))


def display(e: BaseException, task: str | None, *, full_traceback: bool = False) -> None:
    """Log `e` as "<task>: <ExceptionType>" with its traceback (the whole stack if `full_traceback`)."""
    record_exception()
    header = f"{task or 'error'}: {type(e).__name__}"
    trace = _traceback.TracebackException.from_exception(e)
    if full_traceback:
        trace.stack = _traceback.StackSummary(_traceback.extract_stack()[:-2] + list(trace.stack))
    _log.error("%s\n%s", header, "".join(trace.format()).rstrip("\n"))
    message = str(e)
    if "copying a param with shape torch.Size([640, 1024]) from checkpoint, the shape in current model is torch.Size([640, 768])" in message:
        print_error_explanation(
            "The most likely cause of this is you are trying to load Stable Diffusion 2.0 model without specifying its config file.")


def display_once(e: BaseException, task: str | None) -> None:
    """`display`, but only the first time for a given task."""
    record_exception()
    if task in _already_displayed:
        return
    display(e, task)
    _already_displayed.add(task)


def run(code, task: str | None) -> None:
    """Call `code()`; an exception is displayed (see `display`) instead of raised."""
    try:
        code()
    except Exception as e:
        display(e, task)
