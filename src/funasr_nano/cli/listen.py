"""The ``funasr-nano listen`` command: live transcription of the microphone (``sounddevice``, the
``[live]`` extra) or of a file played at its own pace (``--file``); finals printed with their times,
the open utterance's partial text rewritten in place on a terminal; ``-o`` saves the finals."""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError, option
from ..output.formats import FORMATS
from .options import add_load_options, check_at_least_one, check_load_options, load, print_note

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="live transcription of the microphone (or of a file played in real time)")
    add = p.add_argument
    add_load_options(add)
    add("--language", "-l", default=None, help="zh, en, ja, ... or a Chinese name; default automatic")
    add("--hotwords", default=None, help="comma-separated hotwords")
    add("--no-itn", action="store_true", help="keep spoken forms (no inverse text normalisation)")
    add("--word-timestamps", action="store_true", help="time the words of each final (json, srt, vtt)")
    add("--file", default=None, metavar="AUDIO", help="play this file instead of the microphone")
    add("--fast", action="store_true", help="with --file: feed it as fast as it decodes, not in real time")
    add("--chunk-ms", type=int, default=100, help="audio per feed (default: %(default)s ms)")
    add("--interval", type=float, default=0.5, help="seconds of audio between partial texts (default: 0.5)")
    add("--output", "-o", default=None, metavar="FILE", help="save the finals here when listening ends")
    add("--output-format", "-f", default="txt", choices=FORMATS, help="format of -o (default: txt)")


def _file_chunks(path: str, chunk: int, real_time: bool) -> Iterator[np.ndarray]:
    from ..frontend.audio import load_audio

    samples = load_audio(path)
    started = time.monotonic()
    for begin in range(0, samples.size, chunk):
        if real_time:  # a chunk is there once its audio has been "spoken"
            time.sleep(max(0.0, started + (begin + chunk) / SAMPLE_RATE - time.monotonic()))
        yield samples[begin : begin + chunk]


def _microphone_chunks(chunk: int) -> Iterator[np.ndarray]:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the package is there, PortAudio is not
        raise UsageError(f"the microphone needs sounddevice and PortAudio ({exc}): pip install "
                         "'funasr-nano[live]' and apt install libportaudio2, or use --file") from exc
    chunks: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=chunk,
                                 callback=lambda data, *_: chunks.put(data[:, 0].copy())):
        print("listening (Ctrl-C to stop)", file=sys.stderr)
        while True:
            yield chunks.get()


def run(args: argparse.Namespace) -> int:
    check_load_options(args)
    check_at_least_one(args, ("chunk_ms",))
    if not 0 < args.interval < float("inf"):
        raise UsageError(f"{option('interval')} must be a positive number of seconds")
    if args.fast and args.file is None:
        raise UsageError("--fast plays a --file faster than real time: give --file")
    if args.output is not None and Path(args.output).is_dir():
        raise UsageError(f"{option('output', args.output)} is a directory: name a file")
    from ..decoding.live_events import Final, Partial
    from ..result import Segment, Transcription, join_texts

    model = load(args)
    if args.word_timestamps and model.word_timestamps_note:
        print_note(model.word_timestamps_note)
    stream = model.stream(language=args.language, hotwords=args.hotwords, itn=not args.no_itn,
                          word_timestamps=args.word_timestamps, interval=args.interval)
    chunk = args.chunk_ms * SAMPLE_RATE // 1000
    chunks = _file_chunks(args.file, chunk, not args.fast) if args.file else _microphone_chunks(chunk)
    live_line = sys.stderr.isatty()
    segments: list[Segment] = []

    def show(events: list) -> None:
        for event in events:
            if isinstance(event, Partial) and live_line:
                print(f"\r\033[K{event.text}", end="", file=sys.stderr, flush=True)
            elif isinstance(event, Final):
                if live_line:
                    print("\r\033[K", end="", file=sys.stderr, flush=True)
                print(f"[{event.start:7.2f} -> {event.end:7.2f}] {event.text}", flush=True)
                segments.append(Segment(event.start, event.end, event.text, flags=list(event.flags),
                                        words=list(event.words)))

    try:
        for samples in chunks:
            stream.feed(samples)
            show(stream.poll())
    except KeyboardInterrupt:
        pass  # the end of listening: what was heard is still finished below
    stream.close()
    show(stream.poll())
    if args.output is not None:
        from ..output.formats import render

        duration = stream.heard_seconds
        result = Transcription(join_texts([s.text for s in segments]), segments, args.language, duration)
        Path(args.output).write_text(render(result, args.output_format), encoding="utf-8")
    return 0
