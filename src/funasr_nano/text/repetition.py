"""Repetition loops in token ids: greedy LLM decoding of speech falls into a loop of the same n-gram
("那那那…", a phrase repeated 40 times). Found on the finished ids, cut, and watched for while they decode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A loop is an n-gram (n <= MAX_LOOP_PERIOD) repeated back to back at least MIN_LOOP_COUNT times and
# over at least MIN_LOOP_TOKENS tokens: a single token needs 16 repeats ("哈哈哈…" laughter and
# "no, no, no" stay), a 6-token phrase 3.
MAX_LOOP_PERIOD = 32
MIN_LOOP_COUNT = 3
MIN_LOOP_TOKENS = 16


@dataclass(frozen=True)
class Repetition:
    """``tokens[start:end]`` is one ``period``-token unit repeated back to back (a partial last unit too)."""

    start: int
    period: int
    end: int

    @property
    def count(self) -> int:
        return (self.end - self.start) // self.period


def find_repetition(
    tokens: Sequence[int],
    max_period: int = MAX_LOOP_PERIOD,
    min_count: int = MIN_LOOP_COUNT,
    min_tokens: int = MIN_LOOP_TOKENS,
) -> Repetition | None:
    """The repeated run covering the most tokens (shortest period, then earliest, on ties), or None."""
    ids = np.asarray(tokens, dtype=np.int64)
    best: Repetition | None = None
    for period in range(1, min(max_period, ids.size // min_count) + 1):
        # same[i]: token i equals the token one period later; a run of them is a periodic stretch
        same = np.concatenate(([False], ids[period:] == ids[:-period], [False]))
        edges = np.flatnonzero(same[1:] != same[:-1])
        for run_start, run_end in zip(edges[::2], edges[1::2], strict=True):
            covered = run_end - run_start + period
            if covered // period < min_count or covered < min_tokens:
                continue
            if best is None or covered > best.end - best.start:
                best = Repetition(int(run_start), period, int(run_start + covered))
    return best


def cut_repetition(tokens: Sequence[int], repetition: Repetition) -> list[int]:
    """Keep the first occurrence of the repeated unit, drop its repeats, keep what follows the loop."""
    return list(tokens[: repetition.start + repetition.period]) + list(tokens[repetition.end :])


class LoopWatch:
    """The leading tokens of a sequence still being decoded that no loop cut can change.

    The finished sequence has its longest loop cut (:func:`find_repetition`, :func:`cut_repetition`):
    the repeats of a run where each token equals the one ``period`` before are removed. While such a
    run is the sequence's tail it may still grow into that loop, so its tokens are not final yet; once
    a run qualifies as a loop, nothing after its first unit is final until the sequence ends, because
    a longer loop later would be cut instead and this one's repeats would stay.
    """

    def __init__(self) -> None:
        self._tokens: list[int] = []
        # Per period: where the tail run starts (its first token equal to the one `period` before);
        # the sequence length when the newest token starts none.
        self._run_starts = [0] * (MAX_LOOP_PERIOD + 1)
        self._loop_start: int | None = None  # first token after the first unit of the earliest loop

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            index = len(self._tokens)
            self._tokens.append(token)
            for period in range(1, MAX_LOOP_PERIOD + 1):
                if index < period or self._tokens[index - period] != token:
                    self._run_starts[period] = index + 1
                    continue
                covered = index + 1 - self._run_starts[period] + period
                if covered // period >= MIN_LOOP_COUNT and covered >= MIN_LOOP_TOKENS:
                    start = self._run_starts[period]
                    self._loop_start = start if self._loop_start is None else min(self._loop_start, start)

    @property
    def final_length(self) -> int:
        """How many leading tokens every loop cut of the finished sequence keeps unchanged."""
        final = min(self._run_starts[1:])
        return final if self._loop_start is None else min(final, self._loop_start)
