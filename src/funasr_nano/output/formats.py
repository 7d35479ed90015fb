"""Output writers: txt, json, srt, vtt and tsv.

A segment's text is cut into readable cues at punctuation: at most ``max_lines`` lines of
``max_line_width`` columns (CJK characters count two), at most ``max_words`` words (when given) and at
most ``max_duration`` seconds, unless a single word alone is longer. When the segment has word times
(``word_timestamps=True``) each cue starts at its first word's start and ends at its last word's end;
otherwise each cue gets a share of the segment's time proportional to its share of the text (display
width). ``highlight_words`` repeats each cue once per word with that word underlined, for the duration of
the word (karaoke-style, as whisper's ``--highlight_words``).
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from ..errors import UsageError
from ..result import Segment, Transcription

FORMATS = ("txt", "json", "srt", "vtt", "tsv")

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


def _milliseconds(cue: Cue) -> tuple[int, int]:
    start = round(cue.start * 1000)
    return start, max(start + 1, round(cue.end * 1000))


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


class LineWriter:
    """A format written a segment at a time: its header, then each segment's lines, which joined are
    :func:`render`'s text (txt, tsv, srt, vtt; json needs the whole result)."""

    header = ""

    def __init__(self, limits: CueLimits | None = None):
        self.limits = limits

    def segment(self, segment: Segment) -> str:
        raise NotImplementedError

    def render(self, segments: Sequence[Segment]) -> str:
        return self.header + "".join(self.segment(s) for s in segments)


class _Txt(LineWriter):
    """One segment per line, so long recordings stay readable and diffable."""

    def segment(self, segment: Segment) -> str:
        return segment.text.strip() + "\n" if segment.text.strip() else ""


class _Tsv(LineWriter):
    """Whisper's tsv: integer milliseconds, one segment per row."""

    header = "start\tend\ttext\n"

    def segment(self, segment: Segment) -> str:
        text = " ".join(segment.text.split())
        return f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}\n" if text else ""


class _Srt(LineWriter):
    def __init__(self, limits: CueLimits | None = None):
        super().__init__(limits)
        self.cues = 0

    def segment(self, segment: Segment) -> str:
        blocks = []
        for cue in _segment_cues(segment, self.limits or CueLimits()):
            self.cues += 1
            start, end = _milliseconds(cue)
            times = f"{_timestamp(start, ',')} --> {_timestamp(end, ',')}"
            blocks.append(("\n" if self.cues > 1 else "") + f"{self.cues}\n{times}\n" + "\n".join(cue.lines) + "\n")
        return "".join(blocks)


class _Vtt(LineWriter):
    header = "WEBVTT\n"

    def segment(self, segment: Segment) -> str:
        blocks = []
        for cue in _segment_cues(segment, self.limits or CueLimits()):
            start, end = _milliseconds(cue)
            times = f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}"
            blocks.append(f"\n{times}\n" + "\n".join(_vtt_escape(line) for line in cue.lines) + "\n")
        return "".join(blocks)


LINE_WRITERS: dict[str, type[LineWriter]] = {"txt": _Txt, "tsv": _Tsv, "srt": _Srt, "vtt": _Vtt}


def _vtt_escape(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # the highlight tags are markup that VTT (and SRT players) understand
    return escaped.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")


def to_srt(result: Transcription, limits: CueLimits | None = None) -> str:
    return _Srt(limits).render(result.segments)


def to_vtt(result: Transcription, limits: CueLimits | None = None) -> str:
    return _Vtt(limits).render(result.segments)


def to_txt(result: Transcription) -> str:
    """One segment per line, so long recordings stay readable and diffable."""
    return _Txt().render(result.segments)


def to_tsv(result: Transcription) -> str:
    """Whisper's tsv: integer milliseconds, one segment per row."""
    return _Tsv().render(result.segments)


def to_json(result: Transcription) -> str:
    """Everything but the token ids, which mean nothing without the tokenizer."""
    document = {
        "text": result.text,
        "text_tn": result.text_tn,
        "language": result.language,
        "duration": result.duration,
        "segments": [
            _json_segment(index, s, any(seg.words for seg in result.segments))
            for index, s in enumerate(result.segments)
        ],
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _json_segment(index: int, segment: Segment, words: bool) -> dict:
    entry: dict = {"id": index, "start": round(segment.start, 3), "end": round(segment.end, 3), "text": segment.text,
                   "text_tn": segment.text_tn, "flags": segment.flags}
    if words:
        entry["words"] = [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                          for w in segment.words]
    return entry


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


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_outputs(
    result: Transcription, directory: Path, stem: str, formats: Sequence[str], limits: CueLimits | None = None
) -> list[Path]:
    """Write ``directory/stem.<format>`` for each format (UTF-8, LF); returns the paths written.

    Each file is written under a temporary name and renamed into place, so an interrupted run never
    leaves a truncated output that a later ``--skip-existing`` run would take as done.
    """
    outputs = ProgressiveOutputs(directory, stem, formats, limits)
    outputs.finish(result)
    return outputs.paths


class ProgressiveOutputs:
    """One recording's output files, written as its segments are decoded: txt, tsv, srt and vtt grow a
    segment at a time under a temporary name (``.stem.txt.partial``), json is written at the end, and
    :meth:`finish` renames them all into place. The finished files are :func:`render`'s text; an
    interrupted run (:meth:`discard`, or a crash) never leaves a half-written file under a final name."""

    def __init__(self, directory: Path, stem: str, formats: Sequence[str], limits: CueLimits | None = None):
        self.paths = output_paths(directory, stem, formats)
        self.formats, self.limits = list(formats), limits
        self.sent: list[Segment] = []
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, LineWriter] = {}

    def _open(self) -> None:
        if self._files or not self.paths:
            return
        try:
            for fmt, path in zip(self.formats, self.paths, strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                self._files[fmt] = _partial(path).open("w", encoding="utf-8", newline="\n")
                if fmt in LINE_WRITERS:
                    self._writers[fmt] = LINE_WRITERS[fmt](self.limits)
                    self._files[fmt].write(self._writers[fmt].header)
        except BaseException:
            self.discard()
            raise

    def add(self, segment: Segment) -> None:
        """Append a final segment (segments come in time order) to the line formats."""
        self._open()
        self.sent.append(segment)
        for fmt, writer in self._writers.items():
            self._files[fmt].write(writer.segment(segment))
            self._files[fmt].flush()

    def finish(self, result: Transcription) -> None:
        """Write what only the whole result gives (json), then rename every file into place."""
        self._open()
        try:
            in_order = len(self.sent) == len(result.segments) and all(
                s is t for s, t in zip(self.sent, result.segments, strict=True))
            for fmt, path in zip(self.formats, self.paths, strict=True):
                handle = self._files.pop(fmt)
                if fmt not in self._writers or not in_order:  # json; or segments that came out of order
                    handle.seek(0)
                    handle.truncate()
                    handle.write(render(result, fmt, self.limits))
                handle.close()
                os.replace(_partial(path), path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Close and remove the temporary files (the final names are left as they were)."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        for path in self.paths:
            _partial(path).unlink(missing_ok=True)
