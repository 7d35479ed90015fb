"""Draft tokens for speculative decoding from the CTC head's greedy transcript.

An engine verifies up to k draft tokens in one forward pass and keeps the longest prefix greedy decoding
would have produced, plus the one token greedy gives after it, so the output is exactly greedy's whatever
the draft says; a good draft only makes it come sooner. The draft is the CTC transcript in the LLM's
vocabulary. Where the LLM's text departs from it (inverse text normalization writes "26" for what CTC
spells out, a misheard word), drafting resumes where the newest tokens occur in the draft again.
Backend-neutral: the torch and MLX engines keep a :class:`RowDraft` per sequence and count in
:class:`DraftStats`; the API builds the :class:`CTCDrafter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..text.ctc_tokenizer import CTCTokenizer, greedy_text

# How many of the newest tokens are looked up in the draft to find where to continue from; longer
# matches first, so a frequent single token (a space, a comma) anchors only when nothing longer does.
_ANCHOR = 3
MAX_DRAFTS = 64  # draft tokens per verify step, at most (a step's width grows with them)


@dataclass(frozen=True)
class CTCDrafter:
    """CTC greedy ids (one per frame) -> the draft in the LLM's ids, ending with the stop token; no draft
    (empty) when the CTC text is empty, so the engine decodes that segment without reading every step back."""

    ctc_tokenizer: CTCTokenizer
    encode: Callable[[str], list[int]]  # the LLM tokenizer's text -> ids
    stop_id: int

    def __call__(self, frame_ids: Sequence[int]) -> list[int]:
        text = greedy_text(self.ctc_tokenizer, list(frame_ids)).strip()
        return [*self.encode(text), self.stop_id] if text else []


def propose(draft: Sequence[int], tokens: Sequence[int], expected: int, limit: int) -> tuple[int, list[int]]:
    """Where in ``draft`` the text continues after ``tokens`` (the ids decoded so far, newest last) and the
    next ``limit`` draft ids from there: (start, ids); ids is empty when nothing in the draft fits.

    ``expected``: where the text would go on had every token since the last proposal followed the draft.
    In order: the newest token is the draft's id before ``expected`` (the text follows the draft); the
    token before it is where the draft has it (the newest took the place of the draft's: go on at
    ``expected``); the newest two or three tokens occur in the draft (after a word left out or put in),
    their occurrence nearest to ``expected`` first; go on at ``expected`` anyway; the newest token alone
    occurs in the draft.
    """
    if limit <= 0 or not tokens:
        return expected, []
    follows = 0 < expected <= len(draft) and draft[expected - 1] == tokens[-1]
    replaced = 1 < expected < len(draft) and len(tokens) > 1 and draft[expected - 2] == tokens[-2]
    if follows or replaced:
        return expected, list(draft[expected : expected + limit])
    for size in range(min(_ANCHOR, len(tokens)), 1, -1):
        found = _after(draft, tokens[-size:], expected, limit)
        if found:
            return found
    if 0 < expected < len(draft):
        return expected, list(draft[expected : expected + limit])
    return _after(draft, tokens[-1:], expected, limit) or (expected, [])


def _after(draft: Sequence[int], tail: Sequence[int], expected: int, limit: int) -> tuple[int, list[int]] | None:
    """The start after the occurrence of ``tail`` in ``draft`` nearest to ``expected`` that has ids after it."""
    size = len(tail)
    ends = [i + size for i in range(len(draft) - size + 1) if list(draft[i : i + size]) == list(tail)]
    ends = [end for end in ends if end < len(draft)]
    if not ends:
        return None
    start = min(ends, key=lambda end: (abs(end - expected), end))
    return start, list(draft[start : start + limit])


def step_width(proposals: Iterable[list[int]], most: int) -> int:
    """Draft ids a verify step feeds each row: its longest proposal's count, rounded up to a power of two (few
    shapes for graphs and kernels), at most ``most``; 0 without proposals. A row verifies no more ids than
    it proposes, so a step costs what its widest row needs."""
    longest = max((len(ids) for ids in proposals), default=0)
    return min(most, 1 << (longest - 1).bit_length()) if longest else 0


@dataclass
class DraftStats:
    """How drafting went since an engine was made: its steps, and the rows that verified a proposal."""

    plain_steps: int = 0  # decode steps without any proposal
    verify_steps: int = 0
    rows: int = 0  # rows verifying a proposal, summed over the verify steps
    drafted: int = 0  # draft ids those rows verified
    accepted: int = 0  # of them, the ones greedy decoding agreed with

    @property
    def tokens_per_row(self) -> float:
        """Tokens a proposal's row gained per verify step (its accepted drafts and greedy's next token)."""
        return (self.accepted + self.rows) / self.rows if self.rows else 0.0


@dataclass
class RowDraft:
    """One sequence's draft and where its output stands in it."""

    ids: list[int]
    most: int  # draft ids per step, at most (the engine's k)
    length: int = 0  # ids to propose next: shrinks after a rejection, grows after a full acceptance
    shift: int = 0  # the draft's index of the next token, less the tokens decoded (as last proposed)
    proposed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.length = self.length or self.most

    def propose(self, tokens: Sequence[int], room: int) -> list[int]:
        """The draft ids to verify after ``tokens`` (the output so far), at most ``room`` of them."""
        start, self.proposed = propose(self.ids, tokens, len(tokens) + self.shift, min(self.length, room))
        if self.proposed:
            self.shift = start - len(tokens)
        return self.proposed

    def accepted(self, count: int, stats: DraftStats) -> None:
        """Greedy agreed with the first ``count`` ids of the proposal just verified."""
        proposed = len(self.proposed)
        stats.rows += 1
        stats.drafted += proposed
        stats.accepted += count
        # Where drafts keep failing, verifying fewer of them costs less (a CPU pays for every verified
        # id); where they hold, more of them pay off.
        self.length = min(self.most, 2 * proposed) if count == proposed else count + 1
        self.proposed = []
