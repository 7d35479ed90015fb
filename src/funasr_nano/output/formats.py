"""Output writers: txt, json, srt, vtt and tsv, behind one registry (:func:`get_writer`), as whisper's.

The subtitle formats cut each segment into cues with :mod:`~funasr_nano.output.subtitles`. With an output
directory the files grow a segment at a time (:class:`ProgressiveOutputs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, ClassVar

from ..errors import UsageError
from ..result import Segment, Transcription
from .subtitles import Cue, CueLimits, subtitle_cues

ALL = "all"  # every format, as whisper's --output_format all


class ResultWriter:
    """One output format. A writer writes one document: its :attr:`header`, then each segment's
    :meth:`segment` text (``by_segment`` formats: txt, tsv, srt, vtt), which joined are :meth:`render`'s
    text; formats that need the whole result (json) override :meth:`render` instead."""

    header: ClassVar[str] = ""
    by_segment: ClassVar[bool] = True
    media_type: ClassVar[str] = "text/plain"  # when a server sends the document

    def __init__(self, limits: CueLimits | None = None):
        self.limits = limits or CueLimits()

    def segment(self, segment: Segment) -> str:
        raise NotImplementedError(f"{type(self).__name__} is written from the whole result")

    def render(self, result: Transcription) -> str:
        return self.header + "".join(self.segment(s) for s in result.segments)


class _Txt(ResultWriter):
    """One segment per line, so long recordings stay readable and diffable."""

    def segment(self, segment: Segment) -> str:
        return segment.text.strip() + "\n" if segment.text.strip() else ""


class _Tsv(ResultWriter):
    """Whisper's tsv: integer milliseconds, one segment per row."""

    header = "start\tend\ttext\n"

    def segment(self, segment: Segment) -> str:
        text = " ".join(segment.text.split())
        return f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}\n" if text else ""


class _Srt(ResultWriter):
    media_type = "application/x-subrip"

    def __init__(self, limits: CueLimits | None = None):
        super().__init__(limits)
        self.cues = 0  # numbered across the document, so one writer writes one document

    def segment(self, segment: Segment) -> str:
        blocks = []
        for cue in subtitle_cues((segment,), self.limits):
            self.cues += 1
            start, end = _milliseconds(cue)
            times = f"{_timestamp(start, ',')} --> {_timestamp(end, ',')}"
            blocks.append(("\n" if self.cues > 1 else "") + f"{self.cues}\n{times}\n" + "\n".join(cue.lines) + "\n")
        return "".join(blocks)


class _Vtt(ResultWriter):
    header = "WEBVTT\n"
    media_type = "text/vtt"

    def segment(self, segment: Segment) -> str:
        blocks = []
        for cue in subtitle_cues((segment,), self.limits):
            start, end = _milliseconds(cue)
            times = f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}"
            blocks.append(f"\n{times}\n" + "\n".join(_vtt_escape(line) for line in cue.lines) + "\n")
        return "".join(blocks)


class _Json(ResultWriter):
    """Everything but the token ids, which mean nothing without the tokenizer."""

    by_segment = False

    def render(self, result: Transcription) -> str:
        words = any(segment.words for segment in result.segments)
        document = {
            "text": result.text,
            "text_tn": result.text_tn,
            "language": result.language,
            "duration": result.duration,
            "segments": [_json_segment(index, s, words) for index, s in enumerate(result.segments)],
            "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


_WRITERS: dict[str, type[ResultWriter]] = {"txt": _Txt, "json": _Json, "srt": _Srt, "vtt": _Vtt, "tsv": _Tsv}
FORMATS = tuple(_WRITERS)


def _unknown(fmt: str) -> UsageError:
    return UsageError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")


def get_writer(fmt: str, limits: CueLimits | None = None) -> ResultWriter:
    """A new writer of one format (see ``FORMATS``); ``limits`` shape the subtitle cues."""
    if fmt not in _WRITERS:
        raise _unknown(fmt)
    return _WRITERS[fmt](limits)


def formats_for(choice: str) -> list[str]:
    """The formats a choice names: one of ``FORMATS``, or ``ALL`` of them."""
    if choice == ALL:
        return list(FORMATS)
    if choice not in _WRITERS:
        raise _unknown(choice)
    return [choice]


def render(result: Transcription, fmt: str, limits: CueLimits | None = None) -> str:
    """The transcription as the text of one output format (see ``FORMATS``)."""
    return get_writer(fmt, limits).render(result)


def _json_segment(index: int, segment: Segment, words: bool) -> dict:
    entry: dict = {"id": index, "start": round(segment.start, 3), "end": round(segment.end, 3), "text": segment.text,
                   "text_tn": segment.text_tn, "flags": segment.flags}
    if words:
        entry["words"] = [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                          for w in segment.words]
    return entry


def _milliseconds(cue: Cue) -> tuple[int, int]:
    start = round(cue.start * 1000)
    return start, max(start + 1, round(cue.end * 1000))


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _vtt_escape(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # the highlight tags are markup that VTT (and SRT players) understand
    return escaped.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")


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
    """One recording's output files, written as its segments are decoded: the ``by_segment`` formats grow
    a segment at a time under a temporary name (``.stem.txt.partial``), the others (json) are written at
    the end, and :meth:`finish` renames them all into place. The finished files are :func:`render`'s text;
    an interrupted run (:meth:`discard`, or a crash) never leaves a half-written file under a final name."""

    def __init__(self, directory: Path, stem: str, formats: Sequence[str], limits: CueLimits | None = None):
        self.paths = output_paths(directory, stem, formats)
        self.formats, self.limits = list(formats), limits
        self.sent: list[Segment] = []
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, ResultWriter] = {}

    def _open(self) -> None:
        if self._files or not self.paths:
            return
        try:
            for fmt, path in zip(self.formats, self.paths, strict=True):
                writer = get_writer(fmt, self.limits)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._files[fmt] = _partial(path).open("w", encoding="utf-8", newline="\n")
                if writer.by_segment:
                    self._writers[fmt] = writer
                    self._files[fmt].write(writer.header)
        except BaseException:
            self.discard()
            raise

    def add(self, segment: Segment) -> None:
        """Append a final segment (segments come in time order) to the by-segment formats."""
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
