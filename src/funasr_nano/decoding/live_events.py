"""What a live stream reports (speech started and stopped, partial and final texts, failures) and the
options it runs with."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..frontend.endpoint import EndpointOptions
from ..result import Word


@dataclass(frozen=True)
class SpeechStarted:
    time: float  # seconds from the start of the stream
    item: int  # the utterance it begins


@dataclass(frozen=True)
class SpeechStopped:
    time: float
    item: int


@dataclass(frozen=True)
class Partial:
    """The open utterance's text so far; ``stable_text`` is the part two decodes in a row agreed on."""

    item: int
    text: str
    stable_text: str


@dataclass(frozen=True)
class Final:
    item: int
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)  # with word_timestamps
    flags: list[str] = field(default_factory=list)  # as Segment.flags


@dataclass(frozen=True)
class Failed:
    """An utterance whose final decode failed (it is not retried); the stream goes on."""

    item: int
    message: str


LiveEvent = SpeechStarted | SpeechStopped | Partial | Final | Failed


@dataclass(frozen=True)
class LiveOptions:
    interval: float = 0.5  # seconds of new audio between partial decodes of an open utterance
    rollback: int = 3  # agreed tokens left unforced, so the newest of them can still change
    hold_back: int = 1  # words at the end of a partial's unstable tail not shown: the audio cuts them off
    max_utterance: float = 20.0  # longer speech is ended at its quietest recent frame
    endpoint: EndpointOptions | None = field(default_factory=EndpointOptions)  # None: the caller commits

    def __post_init__(self) -> None:
        if not 0 < self.interval < float("inf"):
            raise UsageError("the partial interval must be a positive number of seconds")
        if self.rollback < 0:
            raise UsageError("the rollback must be zero or more tokens")
        if self.hold_back < 0:
            raise UsageError("hold_back must be zero or more words")
        if not 2 <= self.max_utterance <= 30:
            raise UsageError("max_utterance must be between 2 and 30 seconds")
