"""funasr-nano: fast, faithful inference for the Fun-ASR-Nano speech recognisers."""

from .audio import load_audio
from .errors import AudioError, FunASRNanoError, ModelLoadError, UsageError
from .pipeline import FunASRNano, load_model
from .result import Segment, Transcription
from .vad import VadOptions

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "FunASRNano",
    "FunASRNanoError",
    "ModelLoadError",
    "Segment",
    "Transcription",
    "UsageError",
    "VadOptions",
    "load_audio",
    "load_model",
]
