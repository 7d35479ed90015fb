"""The ``funasr-nano transcribe`` command: files, directories and globs in; text, json, srt, vtt or
tsv out; all files decoded in shared batches, with a progress bar over audio time.

One unreadable file prints its one-line error and the rest still finish; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import FunASRNanoError, UsageError
from .formats import FORMATS, CueLimits, render, write_outputs
from .progress import AudioProgress, probe_duration
from .result import Transcription

AUDIO_SUFFIXES = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".mkv", ".mov", ".wma",
    ".aif", ".aiff", ".amr", ".3gp",
})


@dataclass
class _Input:
    path: Path
    name: str  # output file name without the format suffix, relative to --output-dir


def _directory_audio(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def expand_inputs(arguments: Sequence[str]) -> tuple[list[_Input], list[str]]:
    """Files as given, directories searched recursively for audio, glob patterns expanded.

    Returns the inputs (duplicates dropped) and one error line per argument that named nothing.
    """
    inputs: list[_Input] = []
    errors: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = [_Input(p, str(p.relative_to(path).with_suffix(""))) for p in _directory_audio(path)]
            if not found:
                suffixes = ", ".join(sorted(AUDIO_SUFFIXES))
                errors.append(f"{argument}: no audio files ({suffixes}) in this directory")
        elif path.is_file():
            found = [_Input(path, path.stem)]
        elif any(char in argument for char in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True))]
            found = [_Input(m, m.stem) for m in matches if m.is_file()]
            found += [_Input(p, p.stem) for m in matches if m.is_dir() for p in _directory_audio(m)]
            if not found:
                errors.append(f"{argument}: no files match this pattern")
        else:
            found = []
            errors.append(f"{argument}: no such file or directory")
        inputs.extend(found)
    seen: set[Path] = set()
    unique = []
    for item in inputs:
        if item.path.resolve() not in seen:
            seen.add(item.path.resolve())
            unique.append(item)
    _disambiguate(unique)
    return unique, errors


def _disambiguate(inputs: list[_Input]) -> None:
    """a/x.wav and b/x.mp3 would both write x.srt: keep the source suffix (x.wav.srt), then number."""
    counts: dict[str, int] = {}
    for item in inputs:
        counts[item.name] = counts.get(item.name, 0) + 1
    taken: set[str] = set()
    for item in inputs:
        name = item.name if counts[item.name] == 1 else item.name + item.path.suffix
        candidate, number = name, 2
        while candidate in taken:
            candidate, number = f"{name}-{number}", number + 1
        item.name = candidate
        taken.add(candidate)


def read_hotwords(inline: str | None, file: str | None) -> list[str]:
    """--hotwords 'a,b' plus --hotwords-file (one per line, commas also split)."""
    words = (inline or "").replace("，", ",").split(",")
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read hotwords file {file}: {exc}") from exc
        words += text.replace("，", ",").replace("\n", ",").split(",")
    return [w.strip() for w in words if w.strip()]


def _formats(args: argparse.Namespace, file_count: int) -> list[str]:
    chosen = args.output_format or ("all" if args.output_dir else "txt")
    if args.output_dir:
        return list(FORMATS) if chosen == "all" else [chosen]
    if chosen == "all":
        raise UsageError("--output-format all writes several files: give --output-dir")
    if chosen != "txt" and file_count > 1:
        raise UsageError(f"--output-format {chosen} for several files needs --output-dir (stdout takes one)")
    return [chosen]


def _flag_summary(result: Transcription) -> str | None:
    """What a user should look at: no speech at all, or segments the guards had to repair."""
    if not result.segments:
        return "no speech found"
    flagged = [s for s in result.segments if s.flags]
    if not flagged:
        return None
    kinds = sorted({flag for s in flagged for flag in s.flags})
    return f"{len(flagged)} of {len(result.segments)} segments flagged ({', '.join(kinds)})"


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status (0: all files done, 1: some failed)."""
    from .pipeline import load_model

    inputs, errors = expand_inputs(args.inputs)
    formats = _formats(args, len(inputs))
    hotwords = read_hotwords(args.hotwords, args.hotwords_file)
    limits = CueLimits(args.max_line_width, args.max_line_count, args.max_cue_duration)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if not inputs:
        return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                       batch_size=args.batch_size, int8=args.int8)
    estimates = [probe_duration(item.path) or 0.0 for item in inputs]
    progress = AudioProgress(sum(estimates), enabled=not args.quiet)
    failures = len(errors)
    started = time.perf_counter()
    audio_seconds = 0.0
    try:
        results = model.transcribe_many(
            (str(item.path) for item in inputs), language=args.language, hotwords=hotwords,
            itn=not args.no_itn, max_new_tokens=args.max_new_tokens, vad=not args.no_vad,
            progress=progress.advance,
        )
        for item, estimate, result in zip(inputs, estimates, results, strict=True):
            if isinstance(result, FunASRNanoError):
                progress.adjust_total(-estimate)
                progress.write(f"error: {item.path}: {result}", to_stderr=True)
                failures += 1
                continue
            progress.adjust_total(result.duration - estimate)
            audio_seconds += result.duration
            summary = _flag_summary(result)
            if summary and not args.quiet:
                progress.write(f"warning: {item.path}: {summary}", to_stderr=True)
            try:
                _emit(result, item, formats, args, limits, progress, len(inputs) > 1)
            except OSError as exc:
                progress.write(f"error: {item.path}: cannot write output: {exc}", to_stderr=True)
                failures += 1
    finally:
        progress.close()
    if not args.quiet:
        done = len(inputs) - (failures - len(errors))
        elapsed = time.perf_counter() - started
        print(f"transcribed {done} of {len(inputs)} files, {audio_seconds:.1f} s of audio in {elapsed:.1f} s"
              + (f"; {failures} errors" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def _emit(
    result: Transcription, item: _Input, formats: list[str], args: argparse.Namespace, limits: CueLimits,
    progress: AudioProgress, several: bool,
) -> None:
    if args.output_dir:
        write_outputs(result, Path(args.output_dir), item.name, formats, limits)
    elif formats == ["txt"]:
        progress.write((f"{item.path}\t" if several else "") + result.text)
    else:
        progress.write(render(result, formats[0], limits).rstrip("\n"))
