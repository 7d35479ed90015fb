"""User-facing errors: each carries one line that says what went wrong and what to do."""


class FunASRNanoError(Exception):
    """Base class; the CLI prints the message as one line and exits non-zero."""


class ModelLoadError(FunASRNanoError):
    """The model directory, checkpoint or hub id cannot be used."""


class AudioError(FunASRNanoError):
    """The audio cannot be read or is empty."""


class UsageError(FunASRNanoError, ValueError):
    """An option has a value the model cannot use (unknown language, bad hotwords...)."""
