"""Draft tokens for speculative decoding from the CTC head's greedy transcript.

An engine verifies up to k draft tokens in one forward pass and keeps the longest prefix greedy decoding
would have produced, plus the one token greedy gives after it, so the output is exactly greedy's whatever
the draft says; a good draft only makes it come sooner. The draft is the CTC transcript in the LLM's
vocabulary. Where the LLM's text departs from it (inverse text normalization writes "26" for what CTC
spells out, a misheard word), drafting resumes where the newest tokens occur in the draft again.
Backend-neutral: the torch and MLX engines call :func:`propose`; the API builds the :class:`CTCDrafter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..text.ctc_tokenizer import CTCTokenizer, greedy_text

# How many of the newest tokens are looked up in the draft to find where to continue from; longer
# matches first, so a frequent single token (a space, a comma) anchors only when nothing longer does.
_ANCHOR = 3
MAX_DRAFTS = 64  # draft tokens per verify step, at most (a step's width grows with them)


@dataclass(frozen=True)
class CTCDrafter:
    """CTC greedy ids (one per frame) -> the draft in the LLM's ids, ending with the stop token."""

    ctc_tokenizer: CTCTokenizer
    encode: Callable[[str], list[int]]  # the LLM tokenizer's text -> ids
    stop_id: int

    def __call__(self, frame_ids: Sequence[int]) -> list[int]:
        text = greedy_text(self.ctc_tokenizer, list(frame_ids)).strip()
        return [*self.encode(text), self.stop_id] if text else [self.stop_id]


def propose(draft: Sequence[int], tokens: Sequence[int], expected: int, limit: int) -> tuple[int, list[int]]:
    """Where in ``draft`` the text continues after ``tokens`` (the ids decoded so far, newest last) and the
    next ``limit`` draft ids from there: (start, ids); ids is empty when the newest tokens do not occur.

    ``expected`` is the start the previous proposal implied: when the newest token is the draft's id
    before it, the text still follows the draft. Otherwise the longest run of newest tokens (up to three)
    found in the draft decides, its occurrence nearest to ``expected`` first.
    """
    if limit <= 0 or not tokens:
        return expected, []
    if 0 < expected <= len(draft) and draft[expected - 1] == tokens[-1]:
        return expected, list(draft[expected : expected + limit])
    for size in range(min(_ANCHOR, len(tokens)), 0, -1):
        tail = list(tokens[-size:])
        ends = [i + size for i in range(len(draft) - size + 1) if list(draft[i : i + size]) == tail]
        if ends:
            start = min(ends, key=lambda end: (abs(end - expected), end))
            following = list(draft[start : start + limit])
            if following:
                return start, following
    return expected, []
