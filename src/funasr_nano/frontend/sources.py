"""What the transcribe command reads: files as given, folders searched for audio, glob patterns and
standard input, each with the name its outputs get (its path below the folder the inputs share).
A cluster job names its outputs the same way (:mod:`funasr_nano.distributed.inputs`)."""

from __future__ import annotations

import glob
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".mkv", ".mov", ".wma",
    ".aif", ".aiff", ".amr", ".3gp",
})
STDIN = "-"
STDIN_NAME = "stdin"  # its output name under --output-dir


@dataclass
class Input:
    path: Path | None  # None: standard input
    root: Path | None  # the folder the output name mirrors the path below (None for standard input)
    name: str = ""  # output file name without the format suffix, relative to --output-dir

    @property
    def label(self) -> str:
        """How messages and stdout name the input: as given, control characters escaped."""
        return STDIN if self.path is None else printable(str(self.path))


def printable(text: str) -> str:
    """``text`` with line breaks, tabs and other control characters written as escapes (\\n, \\t, \\x1b),
    so a file name cannot break a ``path<TAB>text`` line or an error line."""
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(
        escapes.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") else
        # A byte of a file name that is not UTF-8 (Python keeps it as a lone surrogate): its hex escape,
        # the same on stdout and stderr, and never an encoding error.
        f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else char
        for char in text
    )


def _directory_audio(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def expand_inputs(arguments: Sequence[str]) -> tuple[list[Input], list[str]]:
    """Files as given, directories searched recursively for audio, glob patterns expanded, ``-`` for
    standard input.

    Returns the inputs (duplicates dropped) and one error line per argument that named nothing.
    """
    inputs: list[Input] = []
    errors: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if argument == STDIN:
            found = [Input(None, None)]
        elif path.is_dir():
            found = [Input(p, path) for p in _directory_audio(path)]
            if not found:
                suffixes = ", ".join(sorted(AUDIO_SUFFIXES))
                errors.append(f"{printable(argument)}: no audio files ({suffixes}) in this directory")
        elif path.is_file():
            found = [Input(path, path.parent)]
        elif any(char in argument for char in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True))]
            found = [Input(m, m.parent) for m in matches if m.is_file()]
            found += [Input(p, m) for m in matches if m.is_dir() for p in _directory_audio(m)]
            if not found:
                errors.append(f"{printable(argument)}: no files match this pattern")
        else:
            found = []
            errors.append(f"{printable(argument)}: no such file or directory")
        inputs.extend(found)
    seen: set[Path | None] = set()
    unique = []
    for item in inputs:
        key = None if item.path is None else item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    _name_outputs(unique)
    return unique, errors


def free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever is not yet in ``taken`` (case-folded: on macOS and
    Windows A.srt and a.srt are one file); the name returned is added to ``taken``."""
    candidate, number = name, 2
    while candidate.casefold() in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate.casefold())
    return candidate


def _name_outputs(inputs: list[Input]) -> None:
    """Each input's path below the folder all inputs' roots share, without its suffix; inputs that
    would still share a name (x.wav and x.mp3) keep their suffix (x.wav.srt), then get a number."""
    roots = [os.path.abspath(item.root) for item in inputs if item.root is not None]
    common = os.path.commonpath(roots) if roots else ""
    for item in inputs:
        if item.path is None:
            item.name = STDIN_NAME
        else:
            item.name = Path(os.path.relpath(os.path.abspath(item.path), common)).with_suffix("").as_posix()
    counts: dict[str, int] = {}
    for item in inputs:
        counts[item.name.casefold()] = counts.get(item.name.casefold(), 0) + 1
    taken: set[str] = set()
    for item in inputs:
        suffix = "" if item.path is None else item.path.suffix
        name = item.name if counts[item.name.casefold()] == 1 else item.name + suffix
        item.name = free_name(name, taken)
