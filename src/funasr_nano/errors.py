"""User-facing errors: each carries one line that says what went wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# True while the command line runs: messages then name options as flags (--device cpu), not as
# keyword arguments (device='cpu').
_CLI_SPELLING: ContextVar[bool] = ContextVar("funasr_nano_cli_spelling", default=False)


class FunASRNanoError(Exception):
    """Base class; the CLI prints the message as one line and exits non-zero."""


class ModelLoadError(FunASRNanoError):
    """The model directory, checkpoint or hub id cannot be used."""


class AudioError(FunASRNanoError):
    """The audio cannot be read or is empty."""


class AudioTooLongError(AudioError):
    """The audio lasts longer than the caller's limit (found before or while decoding it)."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


class UsageError(FunASRNanoError, ValueError):
    """An option has a value the model cannot use (unknown language, bad hotwords...)."""


def unreadable(path: object, exc: OSError) -> ModelLoadError:
    """The one-line error for a model file the OS would not let us read."""
    if isinstance(exc, PermissionError):
        return ModelLoadError(f"permission denied reading {path}: make it readable by this user")
    return ModelLoadError(f"cannot read {path}: {exc.strerror or type(exc).__name__}")


def option(name: str, value: object = None) -> str:
    """An option as the user spells it: ``device='cpu'`` in Python, ``--device cpu`` on the command line."""
    if _CLI_SPELLING.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}"


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Messages raised inside name options the command line's way (see :func:`option`)."""
    token = _CLI_SPELLING.set(True)
    try:
        yield
    finally:
        _CLI_SPELLING.reset(token)
