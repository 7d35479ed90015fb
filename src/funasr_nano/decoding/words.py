"""Word and character times from a CTC alignment.

A segment's text is re-tokenized in the CTC vocabulary (as the official ``timestamps`` does), aligned
(alignment.py), and each token's frames become times: one CTC frame is one LFR frame, 60 ms, and a
token's span [start, end) is [start·0.06, end·0.06) s from the start of the audio the model heard (the
official convention). The text is then cut into words: runs of letters/digits between spaces, and each
CJK character (Han, kana) alone; punctuation belongs to the word before it (opening brackets and quotes
to the word after). A word's times are those of the letters in it (not of its punctuation, which the
head tends to place in the pause after it), its probability the mean of its tokens' scores. A token
holding several characters (a BPE merge of two Han characters, say) shares its frames among them in
proportion to their bytes (a leading space takes none).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.alignment import Alignment
from ..result import Word

FRAME_SECONDS = 0.06  # one LFR frame: 6 fbank frames of 10 ms


def is_cjk_char(char: str) -> bool:
    """Characters written without spaces, each one a word: Han, kana, CJK symbols."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FFFF
    )


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in ("P", "S") and not is_cjk_char(char)


def _is_opening(char: str) -> bool:
    return unicodedata.category(char) in ("Ps", "Pi")


@dataclass(frozen=True)
class TextUnit:
    """A word of the text: characters [start, end), of which [core_start, core_end) carry its times."""

    start: int
    end: int
    core_start: int
    core_end: int


def _joins(text: str, i: int) -> bool:
    """A hyphen or apostrophe inside a word (well-known, don't), a point or comma inside a number (3.5)."""
    if not (0 < i < len(text) - 1):
        return False
    before, char, after = text[i - 1], text[i], text[i + 1]
    if char in "-'’":
        return before.isalnum() and after.isalnum() and not is_cjk_char(before) and not is_cjk_char(after)
    return char in ".,:" and before.isdigit() and after.isdigit()


def text_units(text: str) -> list[TextUnit]:
    """The words of ``text``, as described in the module docstring."""
    units: list[list[int]] = []  # [start, end, core_start, core_end]
    pending_open: int | None = None  # where punctuation waiting for the word after it began
    current: list[int] | None = None  # the word still being extended
    for i, char in enumerate(text):
        if char.isspace():
            current = None
            continue
        if current is not None and current[1] == i and _joins(text, i):
            current[1] = current[3] = i + 1
            continue
        if _is_punctuation(char):
            if _is_opening(char) or not units:
                pending_open = i if pending_open is None else pending_open
            else:
                units[-1][1] = i + 1  # closing punctuation belongs to the word before it
            current = None
            continue
        begin = i if pending_open is None else pending_open
        pending_open = None
        if is_cjk_char(char):
            units.append([begin, i + 1, i, i + 1])
            current = None
        elif current is not None and current[1] == i:
            current[1] = current[3] = i + 1
        else:
            current = [begin, i + 1, i, i + 1]
            units.append(current)
    if pending_open is not None:  # punctuation with no word after it
        if units:
            units[-1][1] = len(text.rstrip())
        else:
            units.append([pending_open, len(text.rstrip()), pending_open, len(text.rstrip())])
    return [TextUnit(*u) for u in units]


def _char_byte_offsets(text: str) -> list[int]:
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8")))
    return offsets


def aligned_words(
    text: str, tokens: Sequence[bytes], alignment: Alignment, offset: float, limit: float | None = None
) -> list[Word]:
    """Words of ``text`` timed by ``alignment`` of its CTC tokens (``tokens``: each token's bytes, which
    concatenate to the UTF-8 text); times in seconds, ``offset`` added (where frame 0 of the heard audio
    lies), clamped to ``limit`` (the end of the heard audio)."""
    encoded = text.encode("utf-8")
    if b"".join(tokens) != encoded or len(tokens) != len(alignment.spans):
        raise ValueError("the CTC tokens do not spell the text")
    # Each byte's time: the token's frames shared evenly among its bytes.
    starts: list[float] = []
    ends: list[float] = []
    scores: list[int] = []  # the token of each byte
    for index, (piece, span) in enumerate(zip(tokens, alignment.spans, strict=True)):
        # the token's frames are shared among its non-space bytes (a leading space takes none)
        spaces = len(piece) - len(piece.lstrip(b" "))
        width = (span.end - span.start) / max(1, len(piece) - spaces)
        for k in range(len(piece)):
            share = max(0, k - spaces)
            starts.append(span.start + share * width)
            ends.append(span.start + (share + (k >= spaces)) * width)
            scores.append(index)
    bytes_at = _char_byte_offsets(text)
    words: list[Word] = []
    for unit in text_units(text):
        first, last = bytes_at[unit.core_start], bytes_at[unit.core_end] - 1
        token_ids = sorted({scores[b] for b in range(first, last + 1)})
        probability = sum(alignment.spans[t].score for t in token_ids) / len(token_ids)
        start = offset + starts[first] * FRAME_SECONDS
        end = offset + ends[last] * FRAME_SECONDS
        if limit is not None:
            start, end = min(start, limit), min(end, limit)
        words.append(Word(round(start, 3), round(end, 3), text[unit.start : unit.end], round(probability, 4)))
    return words


def proportional_words(text: str, start: float, end: float) -> list[Word]:
    """Words with times shared out in proportion to their length (no CTC head): estimates, no probability."""
    units = text_units(text)
    weights = [max(1, sum(2 if is_cjk_char(c) else 1 for c in text[u.start : u.end])) for u in units]
    total = sum(weights) or 1
    words: list[Word] = []
    position = 0
    for unit, weight in zip(units, weights, strict=True):
        begin = start + (end - start) * position / total
        position += weight
        words.append(
            Word(round(begin, 3), round(start + (end - start) * position / total, 3), text[unit.start : unit.end], None)
        )
    return words


def token_timestamps(decode_one, targets: Sequence[int], alignment: Alignment) -> list[dict]:  # type: ignore[no-untyped-def]
    """The official ``timestamps`` of an alignment: per CTC token its text, ``start_time``/``end_time`` in
    seconds (frame · 0.06) and ``score`` (rounded to 3 places). ``decode_one`` maps a token id to text."""
    return [
        {
            "token": decode_one(token),
            "start_time": span.start * 6 * 10 / 1000,
            "end_time": span.end * 6 * 10 / 1000,
            "score": round(span.score, 3),
        }
        for token, span in zip(targets, alignment.spans, strict=True)
    ]
