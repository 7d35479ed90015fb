"""A recording made ready for the model: decoded to 16 kHz mono and, with VAD on, its speech found.

Arrays go whole (:func:`prepare_audio`). Files (paths, bytes, file objects) are read in chunks, twice,
in bounded memory whatever their length: a first pass finds the speech (:func:`scan_audio`; the cut
scores need the whole file's loudness range), a second cuts each segment's audio out as the decoding
reaches it (:func:`cut_spans`). The segments are those of the whole-file path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import AudioError
from .audio import AudioInput, load_audio, stream_audio
from .vad import SpeechMap, SpeechScanner, VadOptions, find_speech


@dataclass(frozen=True)
class PreparedAudio:
    """A recording already decoded to 16 kHz mono and, with VAD on, cut into speech (by
    :func:`prepare_audio`, possibly in another process or on another machine)."""

    samples: np.ndarray
    speech: SpeechMap | None = None
    load_seconds: float = 0.0
    vad_seconds: float = 0.0


def prepare_audio(
    source: AudioInput,
    vad: VadOptions | None,
    sample_rate: int | None = None,
    resampler: str = "torchaudio",
    vad_device: str = "cpu",
    max_seconds: float | None = None,
) -> PreparedAudio:
    """Decode, resample and (when ``vad`` is given) run the VAD: everything before the model."""
    started = time.perf_counter()
    samples = load_audio(source, sample_rate, resampler=resampler, max_seconds=max_seconds)
    loaded = time.perf_counter()
    speech = None if vad is None else find_speech(samples, vad, vad_device)
    return PreparedAudio(samples, speech, loaded - started, time.perf_counter() - loaded)


@dataclass(frozen=True)
class ScannedAudio:
    """A file whose speech was found by a first pass over it in chunks (:func:`scan_audio`); its samples
    are read again, in chunks, as its segments are decoded. ``source`` must read the same the second time
    (a path, bytes, or a seekable file object left open until the decoding ends)."""

    source: AudioInput
    speech: SpeechMap
    num_samples: int
    resampler: str = "torchaudio"
    scan_seconds: float = 0.0


def scan_audio(
    source: AudioInput, vad: VadOptions, resampler: str = "torchaudio", vad_device: str = "cpu",
    max_seconds: float | None = None,
) -> ScannedAudio:
    """Decode, resample and run the VAD over a file in chunks, keeping only what the VAD found."""
    started = time.perf_counter()
    scanner = SpeechScanner(vad, vad_device)
    for chunk in stream_audio(source, resampler=resampler, max_seconds=max_seconds):
        scanner.add(chunk)
    speech = scanner.finish()
    return ScannedAudio(source, speech, scanner.samples, resampler, time.perf_counter() - started)


def cut_spans(scanned: ScannedAudio, spans: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The audio of each (begin, end) sample span, in order (spans ascending, not overlapping), from a
    second pass over the file that keeps only the samples between the previous span and the next."""
    buffer, base = np.zeros(0, np.float32), 0  # samples [base, base + buffer.size) of the recording
    chunks = stream_audio(scanned.source, resampler=scanned.resampler)
    for begin, end in spans:
        while base + buffer.size < end:
            chunk = next(chunks, None)
            if chunk is None:
                raise AudioError("the file changed while it was being transcribed: it is shorter now")
            drop = min(max(0, begin - base), buffer.size)  # samples before the span are not needed
            buffer, base = np.concatenate([buffer[drop:], chunk]), base + drop
        yield buffer[begin - base : end - base].copy()
        buffer, base = buffer[end - base :], end
