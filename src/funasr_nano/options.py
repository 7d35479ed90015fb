"""The transcribe options, spelled once: the Python API, the CLI and the server all build a
``TranscribeOptions`` and the model resolves it (:meth:`funasr_nano.api.FunASRNano.settings`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from .frontend.vad import VadOptions


@dataclass(frozen=True)
class TranscribeOptions:
    """language: a code or name the model knows, None for automatic. hotwords: a list, or one comma-separated
    string. itn: punctuation and inverse text normalization in the prompt. sample_rate: of array inputs
    (default 16 kHz). max_new_tokens: per segment (None: from its duration). vad: True cuts speech into
    segments with silero-vad and repairs loops; a VadOptions tunes it; False decodes the whole recording
    as one segment, as the official model does. resampler: "torchaudio" or "soxr". word_timestamps: each
    segment's words. max_seconds: refuse longer audio."""

    language: str | None = None
    hotwords: str | Sequence[str] | None = None
    itn: bool = True
    sample_rate: int | None = None
    max_new_tokens: int | None = None
    vad: bool | VadOptions = True
    resampler: str = "torchaudio"
    word_timestamps: bool = False
    max_seconds: float | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
