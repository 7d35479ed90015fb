"""Inference engines. Each turns segments (16 kHz audio plus a prompt) into greedy token ids, stepped by
its caller: ``add`` work under a key, call ``step`` and read the ``Event``s it returns, ``cancel`` keys.
An engine never calls back. Everything around that (audio, prompts, segmentation, guards, formats) is
backend-neutral, in the stages above (``decoding.scheduler`` is the one loop that steps an engine).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import option
from ..text.prompt import PromptIds, num_audio_tokens

if TYPE_CHECKING:  # alignment imports torch, which the command line's argument checks must not pay for
    from .alignment import CTCResult

STOP = "stop"  # Event.reason: the model ended the text
LENGTH = "length"  # Event.reason: the new-token budget ran out


def position_limit_message(needed: int, limit: int) -> str:
    """What both backends say about a segment whose prompt and budget exceed the model's positions."""
    return (
        f"prompt plus {option('max_new_tokens')} needs {needed} positions, more than the {limit} supported; "
        f"use shorter segments (VAD) or a smaller {option('max_new_tokens')}"
    )


@dataclass(frozen=True)
class Request:
    """One segment: 16 kHz mono samples, the prompt around them, the new-token budget. ``align``: keep the
    CTC head's view of its audio for :meth:`Engine.align` (engines with a CTC head)."""

    audio: np.ndarray
    prompt: PromptIds
    max_new_tokens: int
    align: bool = False
    urgent: bool = False  # encoded and admitted before the others (a live utterance's final decode)

    @property
    def positions(self) -> int:
        """Cache positions it takes: the prompt around its audio tokens, plus the budget."""
        from ..frontend.features import num_samples_to_lfr_frames  # torch: not for the CLI's argument checks

        audio_tokens = num_audio_tokens(num_samples_to_lfr_frames(len(self.audio)))
        return self.prompt.total_length(audio_tokens) + self.max_new_tokens


@dataclass(frozen=True)
class Event:
    """What a step produced for one key: the token ids decoded since its previous event (stop token
    excluded) and, on its last event, ``done`` with the reason (STOP or LENGTH)."""

    key: Hashable
    tokens: list[int]
    done: bool = False
    reason: str | None = None


class Engine(Protocol):
    name: str
    device: str  # where the model runs ("cpu", "cuda:0", "gpu")

    def fits(self, request: Request) -> bool:
        """Whether the request can be decoded at all (its prompt and budget within the position limit)."""
        ...

    def add(self, key: Hashable, request: Request) -> None:
        """Queue a request under a new key; a request that does not fit raises UsageError."""
        ...

    def step(self) -> list[Event]:
        """Advance the work: encode, prefill or decode one token; the events of what finished meanwhile."""
        ...

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Forget these keys: no further events; their work stops as soon as possible."""
        ...

    def capacity(self) -> int:
        """How many more requests to add now for the engine to stay busy (0: it has enough queued)."""
        ...

    @property
    def idle(self) -> bool:
        """No work is queued, running or still to be reported."""
        ...

    def align(self, items: Sequence[tuple[Hashable, list[int]]]) -> list[CTCResult | None]:
        """For finished keys added with ``align``: the CTC head's greedy ids and the forced alignment of the
        given CTC target ids (None without a head); frees what the engine kept for them."""
        ...


def generate(engine: Engine, requests: Sequence[Request]) -> list[list[int]]:
    """Step ``engine`` until these requests are decoded; their token ids, in order (for tests and benchmarks,
    and any caller with a fixed set of segments)."""
    keys = [object() for _ in requests]
    for key, request in zip(keys, requests, strict=True):
        engine.add(key, request)
    tokens: dict[Hashable, list[int]] = {key: [] for key in keys}
    remaining = len(keys)
    while remaining:
        for event in engine.step():
            if event.key in tokens:
                tokens[event.key].extend(event.tokens)
                remaining -= event.done
    return [tokens[key] for key in keys]
