"""Decoding guards shared by all backends: token budgets, repetition loops and truncation.

Greedy LLM decoding of speech fails in two ways users see (anchors: "那那那…", a phrase repeated
40 times, long recordings cut off at a hard token cap): the output falls into a loop of the same
token n-gram, or it runs into the token budget before the model says it is done. Both are found
here on the token ids; the pipeline reacts by splitting the segment and decoding the halves, and
cuts a loop that survives that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..text.repetition import Repetition, cut_repetition, find_repetition

# Fast speech is ~5 CJK characters or ~4 English words per second; Qwen3 needs at most ~2 tokens
# per word, so 12 tokens/s leaves room while bounding a runaway loop.
TOKENS_PER_SECOND = 12
BUDGET_FLOOR = 16
BUDGET_CEILING = 512  # the official default max_length

MAX_SPLITS = 1  # a looping or truncated segment is split once and retried; a loop that survives is cut
MIN_SPLIT_SECONDS = 3.0  # shorter segments are not split: halves under ~1 s lose too much context

REPETITION = "repetition"  # Segment flag: a loop was cut out of the text
TRUNCATED = "truncated"  # Segment flag: the output hit its token budget and may miss its end


def token_budget(duration_s: float) -> int:
    """New-token budget for a segment of this duration."""
    return min(BUDGET_CEILING, BUDGET_FLOOR + math.ceil(duration_s * TOKENS_PER_SECOND))


def is_truncated(tokens: Sequence[int], budget: int) -> bool:
    """The decoder stopped because it ran out of budget, not because the model ended the text."""
    return len(tokens) >= budget


@dataclass(frozen=True)
class Finished:
    """The ids a segment reports (a surviving loop cut) and its flags (REPETITION, TRUNCATED)."""

    tokens: list[int]
    flags: tuple[str, ...] = ()
    repetition: Repetition | None = None


@dataclass(frozen=True)
class Split:
    """Decode the segment again as two halves: its output looped or ran out of budget."""


def reported_tokens(tokens: Sequence[int], repair: bool) -> tuple[list[int], Repetition | None]:
    """The ids a finished segment reports (a surviving loop cut when repairing) and the loop found."""
    repetition = find_repetition(tokens) if repair else None
    return (cut_repetition(tokens, repetition) if repetition is not None else list(tokens)), repetition


def decide(
    tokens: Sequence[int], budget: int, *, repair: bool, splits: int, seconds: float, streamed: bool
) -> Finished | Split:
    """What to do with a decoded segment. repair: guards are on (VAD); splits: how often it was split
    already; seconds: its speech's duration; streamed: it has sent text, which cannot be withdrawn."""
    truncated = is_truncated(tokens, budget)
    reported, repetition = reported_tokens(tokens, repair)
    if (repair and (truncated or repetition) and splits < MAX_SPLITS and seconds >= MIN_SPLIT_SECONDS
            and not streamed):
        return Split()
    flags = tuple(flag for flag, raised in ((REPETITION, repetition), (TRUNCATED, truncated)) if raised)
    return Finished(reported, flags, repetition)
