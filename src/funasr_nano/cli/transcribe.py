"""The ``funasr-nano transcribe`` command: files, directories, globs and standard input in; text, json,
srt, vtt or tsv out; all files decoded in shared batches, with a progress bar over audio time.

One unreadable file prints its one-line error and the rest still finish; the exit status is then 1.
With ``-o`` the outputs mirror the inputs' folders below the folder they have in common, so files of the
same name from different folders never collide; existing outputs are replaced with a warning on stderr
(``--overwrite``: silently; ``--skip-existing``: those inputs are left out, to resume a batch job).
With ``-o`` the txt, tsv, srt and vtt files grow as segments are decoded, under a temporary name
(``.name.txt.partial``), and every output takes its final name when its file is finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FunASRNanoError, UsageError, option
from ..frontend.sources import Input, expand_inputs, printable
from ..output.formats import ALL, FORMATS, ProgressiveOutputs, formats_for, output_paths, render
from ..output.subtitles import CueLimits
from ..result import Segment, Transcription
from .options import (
    add_decode_options,
    add_load_options,
    check_at_least_one,
    check_load_options,
    cue_limits,
    load,
    print_note,
    transcribe_options,
)

if TYPE_CHECKING:
    from .progress import AudioProgress

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio; print the text or write txt/json/srt/vtt/tsv")
    add = p.add_argument
    add("inputs", nargs="+", help="audio files, directories (searched recursively), globs, or - (standard input)")
    add_load_options(add)
    add_decode_options(add)
    add("--language", "-l", default=None, help="zh, en, ja, ... or a Chinese name; default automatic")
    add("--hotwords", default=None, help="comma-separated hotwords, e.g. '开放时间,Fun-ASR'")
    add("--hotwords-file", default=None, help="hotwords, one per line (added to --hotwords)")
    add("--no-itn", action="store_true", help="keep spoken forms (no inverse text normalisation)")
    add("--output-dir", "-o", default=None,
        help="write <path>.<format> here, mirroring the inputs' folders (default: stdout)")
    add("--output-format", "-f", default=None, choices=(*FORMATS, ALL),
        help=f"default: txt on stdout, {ALL} with --output-dir")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="with -o: leave out inputs whose outputs all exist (resume a batch)")
    existing.add_argument("--overwrite", action="store_true",
                          help="with -o: replace existing outputs without a warning")
    add("--int8", action="store_true",
        help="CPU: int8 LLM weights (about 3x faster decoding; greedy ids may differ from fp32)")
    add("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add("--max-line-width", type=int, default=42, help="srt/vtt columns per line (default: 42)")
    add("--max-line-count", type=int, default=2, help="srt/vtt lines per cue (default: 2)")
    add("--max-cue-duration", type=float, default=7.0, help="srt/vtt seconds per cue (default: 7)")
    add("--word-timestamps", action="store_true",
        help="time every word by CTC alignment: json gets segments[].words[], srt/vtt cues are cut at word times")
    add("--highlight-words", action="store_true",
        help="srt/vtt: one cue per word with the word underlined (karaoke; implies --word-timestamps)")
    add("--max-words-per-line", type=int, default=None,
        help="srt/vtt: at most this many words per cue (implies --word-timestamps)")
    add("--quiet", "-q", action="store_true", help="no progress bar, warnings or summary")
    cluster = p.add_argument_group("on a Ray cluster (pip install 'funasr-nano[ray]')")
    cluster.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                         help="run the job on Ray: a running cluster's ADDRESS (auto, ray://host:10001) or, "
                              "without one, a local cluster; needs -o; writes manifest.jsonl there and skips "
                              "files already done (--overwrite redoes them)")
    cluster.add_argument("--replicas", type=int, default=1,
                         help="model replicas (one GPU each where the cluster has GPUs; default: 1)")
    cluster.add_argument("--replica-cpus", type=float, default=1.0,
                         help="CPU cores per CPU replica, also its torch threads (default: 1)")


def read_hotwords(inline: str | None, file: str | None) -> str | None:
    """--hotwords 'a,b' and the lines of --hotwords-file as one text, which the pipeline splits at commas
    and line breaks (``text.prompt.normalize_hotwords``); None when neither is given."""
    texts = [] if inline is None else [inline]
    if file is not None:
        try:
            texts.append(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            reason = "it is a directory" if os.path.isdir(file) else (exc.strerror or type(exc).__name__).lower()
            raise UsageError(f"cannot read {option('hotwords_file', printable(file))}: {reason}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"{option('hotwords_file', printable(file))} is not UTF-8 text") from exc
    return "\n".join(texts) if texts else None


def output_formats(args: argparse.Namespace, file_count: int) -> list[str]:
    chosen = args.output_format or (ALL if args.output_dir else "txt")
    if args.output_dir:
        return formats_for(chosen)
    if args.skip_existing or args.overwrite:
        flag = "--skip-existing" if args.skip_existing else "--overwrite"
        raise UsageError(f"{flag} is about files in --output-dir: give --output-dir")
    if chosen == ALL:
        raise UsageError("--output-format all writes several files: give --output-dir")
    if chosen != "txt" and file_count > 1:
        raise UsageError(f"--output-format {chosen} for several files needs --output-dir (stdout takes one)")
    return [chosen]


def check_options(args: argparse.Namespace) -> None:
    """The mistakes that need no model to notice, found before anything heavy is imported."""
    check_load_options(args)
    check_at_least_one(args, ("threads", "max_line_width", "max_line_count", "max_words_per_line"))
    if not 0 < args.max_cue_duration < float("inf"):
        raise UsageError(f"{option('max_cue_duration')} must be a positive number of seconds")
    if args.output_dir is not None and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError(f"{option('output_dir', printable(args.output_dir))} is a file, not a directory")


def _flag_summary(result: Transcription) -> str | None:
    """What a user should look at: no speech at all, or segments the guards had to repair."""
    if not result.segments:
        return "no speech found"
    flagged = [s for s in result.segments if s.flags]
    if not flagged:
        return None
    kinds = sorted({flag for s in flagged for flag in s.flags})
    return f"{len(flagged)} of {len(result.segments)} segments flagged ({', '.join(kinds)})"


def _sources(inputs: list[Input]) -> Iterator[str | bytes]:
    """What the model reads, one input at a time: a path, or the bytes of standard input."""
    for item in inputs:
        yield sys.stdin.buffer.read() if item.path is None else str(item.path)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status (0: all files done, 1: some failed)."""
    inputs, errors = expand_inputs(args.inputs)
    formats = output_formats(args, len(inputs))
    check_options(args)
    options = transcribe_options(args, read_hotwords(args.hotwords, args.hotwords_file))
    limits = cue_limits(args)
    if any(item.path is None for item in inputs) and sys.stdin.isatty():
        raise UsageError("- reads audio from standard input, which is a terminal: pipe a file in "
                         "(funasr-nano transcribe - < talk.wav)")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    total = len(inputs) + len(errors)  # a missing file is one that was not transcribed
    skipped = _skipped(inputs, formats, args) if args.skip_existing else []
    inputs = [item for item in inputs if item not in skipped]
    if not inputs:
        _summary(args, 0, total, len(skipped), 0.0, 0.0, len(errors))
        return 1 if errors else 0
    from ..frontend.audio import probe_duration
    from ..text.languages import resolve_language
    from .progress import AudioProgress

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load(args, int8=args.int8)
    resolve_language(args.language, model.languages)  # a bad --language is said before the progress bar starts
    note = model.word_timestamps_note if options.word_timestamps else None
    if note and not args.quiet:
        print_note(note)
    estimates = [0.0 if item.path is None else probe_duration(item.path) or 0.0 for item in inputs]
    progress = AudioProgress(sum(estimates), enabled=not args.quiet)
    failures = len(errors)
    done = 0
    started = time.perf_counter()
    audio_seconds = 0.0
    warnings.filterwarnings("ignore", message=".*no trained CTC head.*")  # said above as a note
    outputs = _Outputs(inputs, formats, args, limits) if args.output_dir else None
    try:
        results = model.transcribe_many(
            _sources(inputs), options=options, progress=progress.advance,
            on_segment=outputs.add if outputs is not None else None,
        )
        for index, (item, estimate, result) in enumerate(zip(inputs, estimates, results, strict=True)):
            if isinstance(result, FunASRNanoError):
                progress.adjust_total(-estimate)
                progress.write(f"error: {item.label}: {result}", to_stderr=True)
                failures += 1
                if outputs is not None:
                    outputs.discard(index)
                continue
            progress.adjust_total(result.duration - estimate)
            audio_seconds += result.duration
            summary = _flag_summary(result)
            if summary and not args.quiet:
                progress.write(f"warning: {item.label}: {summary}", to_stderr=True)
            try:
                if outputs is not None:
                    outputs.finish(index, result, progress)
                else:
                    _print(result, item, formats, limits, progress, len(inputs) > 1)
            except BrokenPipeError:
                raise  # stdout's reader has gone: the command line stops quietly
            except OSError as exc:
                progress.write(f"error: {item.label}: cannot write output: {exc}", to_stderr=True)
                failures += 1
                continue
            done += 1
    finally:
        if outputs is not None:
            outputs.discard_all()  # an interrupted file leaves no temporary files; finished ones stay
        progress.close()
    _summary(args, done, total, len(skipped), audio_seconds, time.perf_counter() - started, failures)
    return 1 if failures else 0


class _Outputs:
    """The ``-o`` files of each input, written segment by segment as the pipeline hands them over."""

    def __init__(self, inputs: list[Input], formats: list[str], args: argparse.Namespace, limits: CueLimits):
        self.inputs, self.formats, self.args, self.limits = inputs, formats, args, limits
        self.open: dict[int, ProgressiveOutputs] = {}
        self.replaced: dict[int, list[Path]] = {}
        self.failed: dict[int, OSError] = {}  # a write failed: reported with the input's result

    def _files(self, index: int) -> ProgressiveOutputs:
        if index not in self.open:
            files = ProgressiveOutputs(Path(self.args.output_dir), self.inputs[index].name, self.formats, self.limits)
            self.replaced[index] = [p for p in files.paths if p.exists()]
            self.open[index] = files
        return self.open[index]

    def add(self, index: int, segment: Segment) -> None:
        if index in self.failed:
            return
        try:
            self._files(index).add(segment)
        except OSError as exc:  # not the other inputs' problem: said once this input is done
            self.failed[index] = exc
            self.discard(index)

    def finish(self, index: int, result: Transcription, progress: AudioProgress) -> None:
        if index in self.failed:
            raise self.failed.pop(index)
        files = self._files(index)
        del self.open[index]
        files.finish(result)
        replaced = self.replaced.pop(index)
        if replaced and not self.args.overwrite and not self.args.quiet:
            names = ", ".join(printable(str(p)) for p in replaced)
            progress.write(f"warning: {self.inputs[index].label}: replaced {names} (--skip-existing keeps them, "
                           "--overwrite replaces them without this warning)", to_stderr=True)

    def discard(self, index: int) -> None:
        files = self.open.pop(index, None)
        if files is not None:
            files.discard()

    def discard_all(self) -> None:
        for index in list(self.open):
            self.discard(index)


def _skipped(inputs: list[Input], formats: list[str], args: argparse.Namespace) -> list[Input]:
    """--skip-existing: the inputs whose every output is already there."""
    directory = Path(args.output_dir)
    return [item for item in inputs
            if all(path.is_file() for path in output_paths(directory, item.name, formats))]


def _summary(args: argparse.Namespace, done: int, total: int, skipped: int, audio_seconds: float,
             elapsed: float, failures: int) -> None:
    if args.quiet:
        return
    parts = [f"transcribed {done} of {total} files, {audio_seconds:.1f} s of audio in {elapsed:.1f} s"]
    if skipped:
        parts.append(f"{skipped} skipped (outputs exist)")
    if failures:
        parts.append(f"{failures} errors")
    print("; ".join(parts), file=sys.stderr)


def _print(
    result: Transcription, item: Input, formats: list[str], limits: CueLimits, progress: AudioProgress,
    several: bool,
) -> None:
    if formats == ["txt"]:
        progress.write((f"{item.label}\t" if several else "") + result.text)
    else:
        progress.write(render(result, formats[0], limits).rstrip("\n"))
