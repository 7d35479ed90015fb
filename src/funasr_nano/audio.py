"""Audio input: files of any common format, bytes, numpy or torch arrays -> 16 kHz mono float32."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AudioError
from .features import SAMPLE_RATE

# Any: a torch.Tensor, accepted without importing torch here.
AudioInput = str | os.PathLike | bytes | np.ndarray | Any


def _to_mono_float(samples: np.ndarray, channels_last: bool | None = None) -> np.ndarray:
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + 1 + info.min) / 2) / (info.max + 1)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        if channels_last is None:
            channels_last = samples.shape[1] <= samples.shape[0]
        samples = samples.mean(axis=1 if channels_last else 0)
    elif samples.ndim != 1:
        raise AudioError(f"audio array must be 1-D or 2-D (samples x channels), got shape {samples.shape}")
    return samples


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    import soxr

    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def _decode_soundfile(data: str | io.BytesIO) -> tuple[np.ndarray, int]:
    import soundfile

    samples, rate = soundfile.read(data, dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)


def _decode_av(data: str | io.BytesIO) -> tuple[np.ndarray, int]:
    import av  # optional: m4a/aac/webm/mp4 and anything ffmpeg reads

    with av.open(data) as container:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), SAMPLE_RATE


def _decode(data: str | bytes, label: str) -> np.ndarray:
    errors = []
    for decoder in (_decode_soundfile, _decode_av):
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        try:
            samples, rate = decoder(source)
            return resample(samples.astype(np.float32), rate)
        except ImportError:
            errors.append("PyAV not installed")
        except AudioError:
            raise
        except Exception as exc:
            errors.append(type(exc).__name__)
    hint = (
        " (PyAV is missing: `pip install av` for m4a/aac/webm/mp4)" if "PyAV not installed" in errors else ""
    )
    raise AudioError(f"cannot decode audio {label}: not a supported or intact audio file{hint}")


def load_audio(source: AudioInput, sample_rate: int | None = None) -> np.ndarray:
    """Return 16 kHz mono float32 samples in [-1, 1].

    ``source``: a path, raw file bytes, or an array (numpy/torch) of samples at ``sample_rate``
    (16000 when not given); 2-D arrays are averaged over channels.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"audio file not found: {path}")
        samples = _decode(str(path), str(path))
    elif isinstance(source, (bytes, bytearray)):
        samples = _decode(bytes(source), "(uploaded bytes)")
    else:
        if hasattr(source, "detach"):  # torch.Tensor
            source = source.detach().float().cpu().numpy()
        if not isinstance(source, np.ndarray):
            raise AudioError(
                f"unsupported audio input type {type(source).__name__}: pass a path, bytes or an array"
            )
        samples = resample(_to_mono_float(source), sample_rate or SAMPLE_RATE)
    if samples.size == 0:
        raise AudioError("the audio is empty (0 samples): nothing to transcribe")
    if not np.isfinite(samples).all():
        raise AudioError("the audio contains NaN or infinite samples")
    return np.ascontiguousarray(samples, dtype=np.float32)
