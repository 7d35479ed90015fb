"""What a transcription returns: the text, its timed segments and how long each stage took."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3000 <= code <= 0x303F  # CJK punctuation
        or 0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def separator(before: str, after: str) -> str:
    """What goes between two stripped, non-empty segment texts: nothing next to CJK, else a space."""
    return "" if _is_cjk(before[-1]) or _is_cjk(after[0]) else " "


def join_texts(texts: Sequence[str]) -> str:
    """Concatenate segment texts, each stripped, empty ones skipped, joined by :func:`separator`."""
    joined = ""
    for text in (t.strip() for t in texts):
        if text:
            joined += separator(joined, text) + text if joined else text
    return joined


@dataclass
class Word:
    """A word (or one CJK character) with its punctuation, as faster-whisper's ``Word``: seconds from the
    start of the audio; ``probability`` is the CTC head's (None where the times are proportional estimates
    because the model has no trained CTC head)."""

    start: float
    end: float
    word: str
    probability: float | None


@dataclass
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    text_tn: str = ""  # punctuation removed, as the official ``text_tn``
    tokens: list[int] = field(default_factory=list)
    # Problems the decoder guards found: "repetition" (a loop was cut), "truncated" (hit the token budget).
    flags: list[str] = field(default_factory=list)
    # With word_timestamps=True: the words in order (empty otherwise).
    words: list[Word] = field(default_factory=list)
    # With word_timestamps=True and a CTC head: the head's own greedy transcript (the official ``ctc_text``).
    ctc_text: str | None = None


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcription:
        """The inverse of :meth:`to_dict` (a result sent as JSON, e.g. from a cluster's replica)."""
        fields = dict(data)
        segments = [
            Segment(**{**segment, "words": [Word(**word) for word in segment.get("words", ())]})
            for segment in fields.pop("segments")
        ]
        return cls(segments=segments, **fields)
