"""Audio input: files of any common format, bytes, file objects, numpy or torch arrays -> 16 kHz mono
float32.

Files are decoded at their own rate, their channels averaged, then resampled to 16 kHz as the official
toolkit does (``resample.py``: torchaudio's filter by default, or soxr as librosa uses it). MP3 goes
to PyAV (FFmpeg's decoder, as torchaudio uses) and never to libsndfile, whose mpg123 prints notes about
damaged frames straight to the terminal. With ``max_seconds`` a file is refused from its header's
duration when it states one, and otherwise as soon as decoding passes the limit, so a small compressed
upload cannot make the caller decode hours of audio.

:func:`stream_audio` yields the same samples in chunks (libsndfile blocks, PyAV frames, resampled as they
come by :class:`~funasr_nano.frontend.resample.ChunkedResampler`), so a recording of any length is read in bounded
memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import AudioError, AudioTooLongError, UsageError, option
from .resample import RESAMPLERS, TARGET_RATE, ChunkedResampler, resample

# Any: a torch.Tensor, accepted without importing torch here.
AudioInput = str | os.PathLike | bytes | IO[bytes] | np.ndarray | Any
# Rates beyond this are not audio a person records, and their resampling filters grow with the rate.
MAX_SAMPLE_RATE = 1_000_000
BLOCK_FRAMES = 1 << 16  # frames libsndfile reads at a time when streaming
# Raw elementary streams: FFmpeg guesses their duration from the bitrate, so it is no reason to refuse.
_GUESSED_DURATION_FORMATS = frozenset({"mp3", "mp2", "aac", "ac3", "eac3", "dts"})


def check_sample_rate(rate: object, error: type[Exception] = UsageError) -> int:
    """``rate`` as an int of Hz, or one line saying it cannot be a sample rate."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 0 < rate <= MAX_SAMPLE_RATE:
        what = option("sample_rate") if error is UsageError else "the file's sample rate"
        raise error(f"{what} must be a whole number of Hz from 1 to {MAX_SAMPLE_RATE}, not {rate!r}")
    return int(rate)


def check_max_seconds(max_seconds: object) -> None:
    """``max_seconds`` must be None or a positive, finite number of seconds."""
    if max_seconds is None:
        return
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.integer, np.floating)) or not (
        0 < max_seconds < float("inf")
    ):
        raise UsageError(f"{option('max_seconds')} must be a positive number of seconds, not {max_seconds!r}")


def check_resampler(resampler: str) -> str:
    if resampler not in RESAMPLERS:
        choices = " or ".join(option("resampler", r) for r in RESAMPLERS)
        raise UsageError(f"unknown resampler {resampler!r}: use {choices}")
    return resampler


class _Limit:
    """Counts decoded samples against ``max_seconds`` (None: no limit)."""

    def __init__(self, max_seconds: float | None, rate: int):
        self.max_seconds, self.rate = max_seconds, rate
        self.max_samples = None if max_seconds is None else int(max_seconds * rate)

    def check_declared(self, seconds: float | None) -> None:
        if self.max_seconds is not None and seconds is not None and seconds > self.max_seconds:
            raise AudioTooLongError(
                f"the audio lasts {seconds:.1f} s, longer than the limit of {self.max_seconds:g} s", seconds
            )

    def check_decoded(self, samples: int) -> None:
        if self.max_samples is not None and samples > self.max_samples:
            raise AudioTooLongError(f"the audio lasts more than the limit of {self.max_seconds:g} s",
                                    samples / self.rate)


def _to_mono_float(samples: np.ndarray, channels_last: bool | None = None) -> np.ndarray:
    if samples.dtype.kind not in "iuf":
        raise AudioError(f"audio arrays must hold float or integer samples, not {samples.dtype}")
    if samples.ndim not in (1, 2):
        raise AudioError(f"audio array must be 1-D or 2-D (samples x channels), got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"the audio is empty (shape {samples.shape}): nothing to transcribe")
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + 1 + info.min) / 2) / (info.max + 1)
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range samples are refused below, in one line
        samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        if channels_last is None:
            channels_last = samples.shape[1] <= samples.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):
            samples = samples.mean(axis=1 if channels_last else 0)
    return samples


def _soundfile_chunks(source: str | IO[bytes], max_seconds: float | None) -> Iterator[tuple[np.ndarray, int]]:
    """The file's samples at its own rate, channels averaged, a block at a time, with the rate."""
    import soundfile

    with soundfile.SoundFile(source) as audio:
        rate = check_sample_rate(audio.samplerate, AudioError)
        limit = _Limit(max_seconds, rate)
        limit.check_declared(_soundfile_seconds(audio))
        total = 0
        while True:
            block = audio.read(frames=BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                return
            total += len(block)
            limit.check_decoded(total)
            yield block.mean(axis=1), rate


def _av_stream_chunks(source: str | IO[bytes], max_seconds: float | None) -> Iterator[tuple[np.ndarray, int]]:
    import av

    with av.open(source, mode="r") as container:
        stream = _av_audio_stream(container)
        rate = check_sample_rate(stream.rate, AudioError)
        limit = _Limit(max_seconds, rate)
        _check_av_duration(container, limit)
        total = 0
        for chunk in _av_chunks(container, stream):
            total += chunk.size
            limit.check_decoded(total)
            yield chunk.astype(np.float32, copy=False), rate


def _av_audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise AudioError("the file has no audio stream")
    return container.streams.audio[0]


def _soundfile_seconds(audio: Any) -> float | None:
    """The duration a libsndfile header states (a ``SoundFile`` or ``soundfile.info``), if it states one."""
    return audio.frames / audio.samplerate if audio.samplerate > 0 and audio.frames > 0 else None


def _av_seconds(container: Any) -> float | None:
    """The duration FFmpeg gives a container: its header's, or for raw streams a guess from the bitrate."""
    return container.duration / 1_000_000 if container.duration else None  # av.time_base is microseconds


def _check_av_duration(container: Any, limit: _Limit) -> None:
    if container.format.name not in _GUESSED_DURATION_FORMATS:
        limit.check_declared(_av_seconds(container))


def _av_chunks(container: Any, stream: Any) -> Iterator[np.ndarray]:
    """The stream's samples at its own rate, channels averaged, one decoded frame at a time."""
    import av

    # Converts every frame to planar float of the stream's layout and rate (a no-op for most streams);
    # the channels are then averaged as torchaudio's loader is (mean over channels).
    converter = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
    for frame in container.decode(stream):
        for converted in converter.resample(frame):
            yield converted.to_ndarray().mean(axis=0)
    for converted in converter.resample(None):
        yield converted.to_ndarray().mean(axis=0)


def looks_like_mp3(head: bytes) -> bool:
    """An ID3 tag or an MPEG audio frame header (layer I-III; ADTS AAC has layer bits 00)."""
    return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
                                       and head[1] & 0x06 != 0)


def probe_duration(path: str | os.PathLike) -> float | None:
    """Seconds of audio in a file from its header, without decoding it; None when unknown. A raw stream's
    guess from its bitrate counts: this is for estimates (a progress bar's total), not for limits.

    MP3s go to PyAV only, as they are decoded: libsndfile's mpg123 prints notes about damaged frames
    straight to the terminal."""
    import soundfile

    try:
        mp3 = looks_like_mp3(_head(str(path)))
    except OSError:
        return None
    try:
        seconds = None if mp3 else _soundfile_seconds(soundfile.info(str(path)))
        if seconds is not None:
            return seconds
    except Exception:  # not a libsndfile format: ask PyAV below
        pass
    try:
        import av

        with av.open(str(path)) as container:
            return _av_seconds(container)
    except Exception:  # unreadable files fail later, with a proper error, when they are decoded
        return None


def _head(source: str | IO[bytes]) -> bytes:
    if isinstance(source, str):
        with open(source, "rb") as handle:
            return handle.read(4)
    source.seek(0)  # file objects are read from their start, wherever they were left
    head = source.read(4)
    source.seek(0)
    return head


def _is_mp3(source: str | IO[bytes], label: str) -> bool:
    """Whether the file is MP3 (PyAV only); an empty or unreadable one is an AudioError."""
    try:
        head = _head(source)
    except OSError as exc:
        raise AudioError(f"cannot read audio {label}: {exc.strerror or type(exc).__name__}") from exc
    if not head:
        what = label if isinstance(source, str) else "the audio"
        raise AudioError(f"{what} is empty (0 bytes): nothing to transcribe")
    return looks_like_mp3(head)


def _undecodable(label: str, errors: list[str]) -> AudioError:
    hint = (
        " (PyAV is missing: `pip install av` for mp3/m4a/aac/webm/mp4)" if "PyAV not installed" in errors else ""
    )
    return AudioError(f"cannot decode audio {label}: not a supported or intact audio file{hint}")


def _decode(source: str | IO[bytes], label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """The whole file at its own rate: :func:`_decoded_chunks` joined, so a file read whole and a file
    read in chunks are decoded by one code path."""
    chunks = list(_decoded_chunks(source, label, max_seconds))
    if not chunks:  # no samples: refused by the caller, whatever the rate
        return np.zeros(0, np.float32), 16_000
    return np.concatenate([part for part, _ in chunks]), chunks[0][1]


def _decoded_chunks(source: str | IO[bytes], label: str, max_seconds: float | None
                    ) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`_decode` a chunk at a time. A decoder that fails before its first chunk hands over to the
    next, as there; one that fails later ends the file with the same one-line error."""
    decoders = (_av_stream_chunks,) if _is_mp3(source, label) else (_soundfile_chunks, _av_stream_chunks)
    errors = []
    for decoder in decoders:
        if not isinstance(source, str):
            source.seek(0)
        started = False
        try:
            for chunk in decoder(source, max_seconds):
                started = True
                yield chunk
            return
        except ImportError:
            errors.append("PyAV not installed")
        except AudioError:
            raise
        except Exception as exc:
            errors.append(type(exc).__name__)
        if started:
            break
    raise _undecodable(label, errors)


def is_file_input(source: AudioInput) -> bool:
    """A path, bytes or a file object (an encoded file), rather than an array of samples."""
    return isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or (
        hasattr(source, "read") and hasattr(source, "seek"))


@contextmanager
def _opened(source: AudioInput) -> Iterator[tuple[str | IO[bytes], str]]:
    """What the decoders read for a path (checked first), bytes or a file object, and its label."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise AudioError(f"{path} is a directory, not an audio file")
        if not path.is_file():
            raise AudioError(f"audio file not found: {path}" if not path.exists() else
                             f"{path} is not a regular file")
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8: libsndfile cannot open it by name
            with path.open("rb") as handle:
                yield handle, str(path)
        else:
            yield str(path), str(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source)), "(bytes)"
    else:
        yield source, "(file object)"


def _array_samples(source: Any, sample_rate: int | None, max_seconds: float | None) -> tuple[np.ndarray, int]:
    if hasattr(source, "detach"):  # torch.Tensor: integer samples keep their dtype, so their scale
        try:
            tensor = source.detach().cpu()
            source = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            raise AudioError(f"cannot read the audio tensor ({reason}): pass a CPU tensor of samples") from exc
    if not isinstance(source, np.ndarray):
        raise AudioError(
            f"unsupported audio input type {type(source).__name__}: pass a path, bytes, a file object or an array"
        )
    rate = TARGET_RATE if sample_rate is None else sample_rate
    samples = _to_mono_float(source)
    _Limit(max_seconds, rate).check_decoded(samples.size)
    return samples, rate


def load_audio(
    source: AudioInput,
    sample_rate: int | None = None,
    *,
    resampler: str = "torchaudio",
    max_seconds: float | None = None,
) -> np.ndarray:
    """Return 16 kHz mono float32 samples in [-1, 1].

    ``source``: a path, raw file bytes, a binary file object (read from its start), or an array (numpy/torch)
    of samples at ``sample_rate`` (16000 when not given); 2-D arrays are averaged over channels.
    ``resampler``: "torchaudio" (default; what the official toolkit uses where torchaudio is installed) or
    "soxr" (what it uses otherwise, through librosa). ``max_seconds``: refuse longer audio
    (:class:`~funasr_nano.errors.AudioTooLongError`) before decoding all of it.
    """
    check_resampler(resampler)
    check_max_seconds(max_seconds)
    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
    if is_file_input(source):
        with _opened(source) as (file, label):
            samples, rate = _decode(file, label, max_seconds)
    else:
        samples, rate = _array_samples(source, sample_rate, max_seconds)
    if samples.size == 0:
        raise AudioError("the audio is empty (0 samples): nothing to transcribe")
    if not np.isfinite(samples).all():
        raise AudioError("the audio contains NaN or infinite samples")
    return np.ascontiguousarray(resample(samples, rate, resampler), dtype=np.float32)


def stream_audio(
    source: AudioInput,
    sample_rate: int | None = None,
    *,
    resampler: str = "torchaudio",
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """:func:`load_audio` in chunks: 16 kHz mono float32 pieces that, joined, are the samples it returns
    (the same errors, raised when reached), holding only a few seconds of audio at a time."""
    check_resampler(resampler)
    check_max_seconds(max_seconds)
    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
    if not is_file_input(source):
        yield load_audio(source, sample_rate, resampler=resampler, max_seconds=max_seconds)
        return
    with _opened(source) as (file, label):
        yield from _resampled_chunks(file, label, resampler, max_seconds)


def _resampled_chunks(source: str | IO[bytes], label: str, resampler: str, max_seconds: float | None
                      ) -> Iterator[np.ndarray]:
    converter: ChunkedResampler | None = None
    for samples, rate in _decoded_chunks(source, label, max_seconds):
        if not np.isfinite(samples).all():
            raise AudioError("the audio contains NaN or infinite samples")
        converter = converter or ChunkedResampler(rate, resampler)
        resampled = converter.push(samples)
        if resampled.size:
            yield resampled
    if converter is None or converter.received == 0:
        raise AudioError("the audio is empty (0 samples): nothing to transcribe")
    yield converter.finish()
