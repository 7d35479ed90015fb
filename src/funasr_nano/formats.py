"""Output writers: txt, json, srt, vtt and tsv.

Subtitle cues come from segment times: the model gives no word timestamps (the released checkpoint
has no trained CTC head), so a segment's text is cut into readable cues at punctuation, and each cue
gets a share of the segment's time proportional to its share of the text (display width). Cues are
at most ``max_lines`` lines of ``max_line_width`` columns (CJK characters count two) and at most
``max_duration`` seconds, unless a single word alone is longer.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .result import Segment, Transcription

FORMATS = ("txt", "json", "srt", "vtt", "tsv")

_SENTENCE_END = set(".!?。！？…‼⁇⁈⁉")
_CLAUSE_END = set(",;:、，；：—")
_MIN_FILL = {2: 0.3, 1: 0.5, 0: 1.0}  # how full a cue must be to end after a unit of each break priority


@dataclass(frozen=True)
class CueLimits:
    max_line_width: int = 42  # columns
    max_lines: int = 2
    max_duration: float = 7.0  # seconds

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")
        duration = self.max_duration
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < math.inf:
            raise UsageError(f"max_duration must be a positive number of seconds, not {duration!r}")


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


def _segment_cues(segment: Segment, limits: CueLimits) -> list[Cue]:
    units = _units(segment.text)
    if not units:
        return []
    weights = [max(1, u.width) for u in units]
    seconds_per_column = (segment.end - segment.start) / sum(weights)
    offsets = [0]
    for weight in weights:
        offsets.append(offsets[-1] + weight)

    def fits(first: int, end: int) -> bool:
        duration = (offsets[end] - offsets[first]) * seconds_per_column
        return duration <= limits.max_duration and _fits(units[first:end], limits)

    cues = []
    first = 0
    while first < len(units):
        end = first + 1
        while end < len(units) and fits(first, end + 1):
            end += 1
        if end < len(units):
            # Rather than where the cue filled up, end it at a sentence end if one lies past the first
            # 30 % of the cue, else at a clause end in its second half.
            span = offsets[end] - offsets[first]
            candidates = [k for k in range(first + 1, end + 1)
                          if offsets[k] - offsets[first] >= _MIN_FILL[units[k - 1].break_priority] * span]
            end = max(candidates, key=lambda k: (units[k - 1].break_priority, k))
        lines = wrap(units[first:end], limits)
        start_time = segment.start + offsets[first] * seconds_per_column
        cues.append(Cue(start_time, segment.start + offsets[end] * seconds_per_column, tuple(lines)))
        first = end
    return cues


def subtitle_cues(segments: Sequence[Segment], limits: CueLimits | None = None) -> list[Cue]:
    limits = limits or CueLimits()
    return [cue for segment in segments for cue in _segment_cues(segment, limits)]


def _milliseconds(cue: Cue) -> tuple[int, int]:
    start = round(cue.start * 1000)
    return start, max(start + 1, round(cue.end * 1000))


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def to_srt(result: Transcription, limits: CueLimits | None = None) -> str:
    blocks = []
    for index, cue in enumerate(subtitle_cues(result.segments, limits), start=1):
        start, end = _milliseconds(cue)
        times = f"{_timestamp(start, ',')} --> {_timestamp(end, ',')}"
        blocks.append(f"{index}\n{times}\n" + "\n".join(cue.lines) + "\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(result: Transcription, limits: CueLimits | None = None) -> str:
    blocks = ["WEBVTT\n"]
    for cue in subtitle_cues(result.segments, limits):
        start, end = _milliseconds(cue)
        times = f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}"
        blocks.append(f"{times}\n" + "\n".join(_vtt_escape(line) for line in cue.lines) + "\n")
    return "\n".join(blocks)


def to_txt(result: Transcription) -> str:
    """One segment per line, so long recordings stay readable and diffable."""
    return "".join(segment.text.strip() + "\n" for segment in result.segments if segment.text.strip())


def to_tsv(result: Transcription) -> str:
    """Whisper's tsv: integer milliseconds, one segment per row."""
    rows = ["start\tend\ttext"]
    for segment in result.segments:
        text = " ".join(segment.text.split())
        if text:
            rows.append(f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}")
    return "\n".join(rows) + "\n"


def to_json(result: Transcription) -> str:
    """Everything but the token ids, which mean nothing without the tokenizer."""
    document = {
        "text": result.text,
        "text_tn": result.text_tn,
        "language": result.language,
        "duration": result.duration,
        "segments": [
            {"id": index, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
             "text_tn": s.text_tn, "flags": s.flags}
            for index, s in enumerate(result.segments)
        ],
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def render(result: Transcription, fmt: str, limits: CueLimits | None = None) -> str:
    """The transcription as the text of one output format (see ``FORMATS``)."""
    if fmt == "srt":
        return to_srt(result, limits)
    if fmt == "vtt":
        return to_vtt(result, limits)
    writers = {"txt": to_txt, "json": to_json, "tsv": to_tsv}
    if fmt not in writers:
        raise UsageError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
    return writers[fmt](result)


def output_paths(directory: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """Where :func:`write_outputs` writes: ``directory/stem.<format>`` for each format."""
    return [directory / f"{stem}.{fmt}" for fmt in formats]


def write_outputs(
    result: Transcription, directory: Path, stem: str, formats: Sequence[str], limits: CueLimits | None = None
) -> list[Path]:
    """Write ``directory/stem.<format>`` for each format (UTF-8, LF); returns the paths written.

    Each file is written under a temporary name and renamed into place, so an interrupted run never
    leaves a truncated output that a later ``--skip-existing`` run would take as done.
    """
    paths = output_paths(directory, stem, formats)
    for fmt, path in zip(formats, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.write_text(render(result, fmt, limits), encoding="utf-8", newline="\n")
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return paths
