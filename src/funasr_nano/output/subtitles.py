"""Subtitle cues: a segment's text cut into readable cues at punctuation.

A cue holds at most ``max_lines`` lines of ``max_line_width`` columns (CJK characters count two), at most
``max_words`` words (when given) and at most ``max_duration`` seconds, unless a single word alone is longer.
When the segment has word times (``word_timestamps=True``) each cue starts at its first word's start and
ends at its last word's end; otherwise each cue gets a share of the segment's time proportional to its
share of the text (display width). ``highlight_words`` repeats each cue once per word with that word
underlined, for the duration of the word (karaoke-style, as whisper's ``--highlight_words``).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..errors import UsageError
from ..result import Segment

_SENTENCE_END = set(".!?。！？…‼⁇⁈⁉")
_CLAUSE_END = set(",;:、，；：—")
_MIN_FILL = {2: 0.3, 1: 0.5, 0: 1.0}  # how full a cue must be to end after a unit of each break priority


@dataclass(frozen=True)
class CueLimits:
    max_line_width: int = 42  # columns
    max_lines: int = 2
    max_duration: float = 7.0  # seconds
    max_words: int | None = None  # words per cue (whisper's --max_words_per_line); None: no limit
    highlight_words: bool = False  # one cue per word, the word underlined (needs word times)

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")
        duration = self.max_duration
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < math.inf:
            raise UsageError(f"max_duration must be a positive number of seconds, not {duration!r}")
        if self.max_words is not None and (isinstance(self.max_words, bool) or not isinstance(self.max_words, int)
                                           or self.max_words < 1):
            raise UsageError(f"max words per line must be a whole number of at least 1, not {self.max_words!r}")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Unit:
    """The smallest piece a line may break after: a word, or one CJK character, with its punctuation."""

    text: str
    spaced: bool  # a space separated it from the previous unit
    width: int  # display columns
    break_priority: int  # how good a cue break after it is: 2 sentence end, 1 clause end, 0 anywhere


def _unit(text: str, spaced: bool) -> _Unit:
    core = text.rstrip("\"'”’»)]）」』】")
    priority = 2 if core and core[-1] in _SENTENCE_END else 1 if core and core[-1] in _CLAUSE_END else 0
    return _Unit(text, spaced, display_width(text), priority)


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def display_width(text: str) -> int:
    return sum(2 if _is_wide(c) else 1 for c in text)


def _is_closing(char: str) -> bool:
    category = unicodedata.category(char)
    return category.startswith("P") and category not in ("Ps", "Pi")


def _units(text: str) -> list[_Unit]:
    units: list[_Unit] = []
    spaced = False
    for char in text:
        if char.isspace():
            spaced = True
            continue
        if units and not spaced:
            last = units[-1].text
            opening = unicodedata.category(last[-1]) in ("Ps", "Pi")
            latin_run = not _is_wide(char) and not _is_wide(last[-1])
            if _is_closing(char) or opening or latin_run:
                units[-1] = _unit(last + char, units[-1].spaced)
                continue
        units.append(_unit(char, spaced and bool(units)))
        spaced = False
    return units


def _join(units: Sequence[_Unit]) -> str:
    return "".join((" " if u.spaced and i else "") + u.text for i, u in enumerate(units))


def _line_count(units: Sequence[_Unit], width: int) -> int | None:
    """Lines greedy filling needs (the fewest possible), or None if a single unit is wider than a line."""
    lines, used = 1, 0
    for unit in units:
        if unit.width > width:
            return None
        needed = unit.width + (1 if used and unit.spaced else 0)
        if used and used + needed > width:
            lines, used = lines + 1, unit.width
        else:
            used += needed
    return lines


def _fits(units: Sequence[_Unit], limits: CueLimits) -> bool:
    lines = _line_count(units, limits.max_line_width)
    return lines is not None and lines <= limits.max_lines


def wrap(units: Sequence[_Unit], limits: CueLimits) -> list[str]:
    """The fewest lines, as even as possible, preferring to break after punctuation.

    Dynamic programming over break points: each line costs its width squared (even lines cost least)
    and a break costs more the weaker it is, so a comma may leave lines ~15 columns apart.
    """
    count = _line_count(units, limits.max_line_width)
    if count is None or count == 1:
        return [_join(units)]
    width, n = limits.max_line_width, len(units)
    penalty = width * width / 16
    widths, spaces = [0], [0]  # prefix sums, so a line's width is O(1)
    for unit in units:
        widths.append(widths[-1] + unit.width)
        spaces.append(spaces[-1] + unit.spaced)
    best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (0.0, 0)}  # (units, lines) -> (cost, previous)
    for lines in range(1, count + 1):
        for end in range(1, n + 1):
            options = []
            for start in range(end):
                if (start, lines - 1) not in best:
                    continue
                line = widths[end] - widths[start] + spaces[end] - spaces[start + 1]
                if line > width:
                    continue
                cost = best[(start, lines - 1)][0] + line * line
                if end < n:
                    cost += (2 - units[end - 1].break_priority) * penalty
                options.append((cost, start))
            if options:
                best[(end, lines)] = min(options)
    breaks, end = [], n
    for lines in range(count, 0, -1):
        start = best[(end, lines)][1]
        breaks.append((start, end))
        end = start
    return [_join(units[start:end]) for start, end in reversed(breaks)]


def _word_units(segment: Segment) -> tuple[list[_Unit], list[tuple[float, float]]]:
    """One unit per timed word (its spacing from the text), and each word's times."""
    units: list[_Unit] = []
    position = 0
    for word in segment.words:
        found = segment.text.find(word.word, position)
        spaced = found > 0 and segment.text[found - 1].isspace() if found >= 0 else not _is_wide(word.word[0])
        position = found + len(word.word) if found >= 0 else position
        units.append(_unit(word.word, spaced and bool(units)))
    return units, [(w.start, w.end) for w in segment.words]


def _segment_cues(segment: Segment, limits: CueLimits) -> list[Cue]:
    if segment.words:
        units, times = _word_units(segment)
    else:
        units = _units(segment.text)
        if not units:
            return []
        weights = [max(1, u.width) for u in units]
        seconds_per_column = (segment.end - segment.start) / sum(weights)
        offsets = [0]
        for weight in weights:
            offsets.append(offsets[-1] + weight)
        times = [(segment.start + offsets[k] * seconds_per_column, segment.start + offsets[k + 1] * seconds_per_column)
                 for k in range(len(units))]
    if not units:
        return []

    def span(first: int, end: int) -> float:
        return times[end - 1][1] - times[first][0]

    def fits(first: int, end: int) -> bool:
        if limits.max_words is not None and end - first > limits.max_words:
            return False
        return span(first, end) <= limits.max_duration and _fits(units[first:end], limits)

    cues = []
    first = 0
    while first < len(units):
        end = first + 1
        while end < len(units) and fits(first, end + 1):
            end += 1
        if end < len(units):
            # Rather than where the cue filled up, end it at a sentence end if one lies past the first
            # 30 % of the cue, else at a clause end in its second half.
            widths = [0]
            for unit in units[first:end]:
                widths.append(widths[-1] + max(1, unit.width))
            candidates = [k for k in range(first + 1, end + 1)
                          if widths[k - first] >= _MIN_FILL[units[k - 1].break_priority] * widths[-1]]
            end = max(candidates, key=lambda k: (units[k - 1].break_priority, k))
        if limits.highlight_words and segment.words:
            cues.extend(_highlighted(units[first:end], times[first:end], limits))
        else:
            cues.append(Cue(times[first][0], times[end - 1][1], tuple(wrap(units[first:end], limits))))
        first = end
    return cues


def _highlighted(units: list[_Unit], times: list[tuple[float, float]], limits: CueLimits) -> list[Cue]:
    """The cue's text once per word, that word underlined, from its start to the next word's start (the
    gaps filled, so the text stays on screen), as whisper's highlight_words. The tags keep the word's plain
    width, so every repetition breaks its lines where the plain cue does."""
    cues = []
    for k, (start, end) in enumerate(times):
        marked = [replace(u, text=f"<u>{u.text}</u>") if i == k else u for i, u in enumerate(units)]
        finish = times[k + 1][0] if k + 1 < len(times) else end
        cues.append(Cue(start, max(end, finish), tuple(wrap(marked, limits))))
    return cues


def subtitle_cues(segments: Sequence[Segment], limits: CueLimits | None = None) -> list[Cue]:
    limits = limits or CueLimits()
    return [cue for segment in segments for cue in _segment_cues(segment, limits)]
