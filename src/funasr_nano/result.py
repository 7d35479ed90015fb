"""What a transcription returns: the text, its timed segments and how long each stage took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    text_tn: str = ""  # punctuation removed, as the official ``text_tn``
    tokens: list[int] = field(default_factory=list)
    # Problems the decoder guards found: "repetition" (a loop was cut), "truncated" (hit the token budget).
    flags: list[str] = field(default_factory=list)


@dataclass
class Transcription:
    text: str
    segments: list[Segment]
    language: str | None  # the trained language name used in the prompt, None for automatic
    duration: float  # seconds of audio
    text_tn: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
