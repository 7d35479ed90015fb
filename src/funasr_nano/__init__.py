"""funasr-nano: fast, faithful inference for the Fun-ASR-Nano speech recognisers.

The public names are imported on first use (PEP 562), so ``funasr-nano --help`` and the error
classes do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AudioError, FunASRNanoError, ModelLoadError, UsageError

__version__ = "0.1.0"

_LAZY = {
    "load_audio": "frontend.audio",
    "FunASRNano": "api",
    "load_model": "api",
    "Segment": "result",
    "Transcription": "result",
    "VadOptions": "frontend.vad",
    "TranscribeOptions": "options",
    "EndpointOptions": "frontend.endpoint",
    "LiveStream": "decoding.live",
    "SpeechStarted": "decoding.live_events",
    "SpeechStopped": "decoding.live_events",
    "Partial": "decoding.live_events",
    "Final": "decoding.live_events",
}

if TYPE_CHECKING:
    from .api import FunASRNano, load_model
    from .decoding.live import LiveStream
    from .decoding.live_events import Final, Partial, SpeechStarted, SpeechStopped
    from .frontend.audio import load_audio
    from .frontend.endpoint import EndpointOptions
    from .frontend.vad import VadOptions
    from .options import TranscribeOptions
    from .result import Segment, Transcription


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "AudioError",
    "EndpointOptions",
    "Final",
    "FunASRNano",
    "FunASRNanoError",
    "LiveStream",
    "ModelLoadError",
    "Partial",
    "Segment",
    "SpeechStarted",
    "SpeechStopped",
    "TranscribeOptions",
    "Transcription",
    "UsageError",
    "VadOptions",
    "load_audio",
    "load_model",
]
