"""Strict little SRT and WebVTT parsers, so tests can read subtitle files back and check them."""

from __future__ import annotations

import re

Cues = list[tuple[float, float, list[str]]]  # start, end (seconds), text lines
_TIME = r"(\d\d):(\d\d):(\d\d){sep}(\d\d\d)"


def _seconds(parts: tuple[str, ...]) -> float:
    hours, minutes, secs, millis = (int(x) for x in parts)
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def _times(line: str, separator: str) -> tuple[float, float]:
    stamp = _TIME.format(sep=separator)
    match = re.fullmatch(f"{stamp} --> {stamp}", line)
    assert match, f"bad cue timing line: {line!r}"
    return _seconds(match.groups()[:4]), _seconds(match.groups()[4:])


def parse_srt(text: str) -> Cues:
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        index, timing, *lines = block.split("\n")
        assert index == str(number), f"cue {number} numbered {index!r}"
        cues.append((*_times(timing, ","), lines))
    return cues


def parse_vtt(text: str) -> Cues:
    header, *blocks = text.strip("\n").split("\n\n")
    assert header == "WEBVTT"
    cues = []
    for block in blocks:
        timing, *lines = block.split("\n")
        assert all("-->" not in line and "<" not in line for line in lines), lines
        cues.append((*_times(timing, r"\."), lines))
    return cues
