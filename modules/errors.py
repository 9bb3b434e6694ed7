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
