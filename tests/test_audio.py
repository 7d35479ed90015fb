"""Audio input: every common container/codec, arrays at any rate and channel count, clear errors."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import soundfile
import torch

from funasr_nano.audio import load_audio
from funasr_nano.errors import AudioError

RATE = 44100
SECONDS = 1.5


def tone(rate: int = RATE, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * SECONDS)) / rate
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    return np.stack([left, 0.5 * left][:channels], axis=1).astype(np.float32)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * 16000 / samples.size)


def check_decoded(samples: np.ndarray, tolerance_s: float = 0.06) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / 16000 - SECONDS) < tolerance_s
    assert abs(dominant_frequency(samples) - 440) < 5
    assert 0.2 < np.abs(samples).max() <= 1.0


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [
        (".wav", "WAV", "PCM_16"),
        (".flac", "FLAC", "PCM_16"),
        (".ogg", "OGG", "VORBIS"),
        (".opus", "OGG", "OPUS"),
        (".mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_soundfile_formats(tmp_path, suffix, fmt, subtype):
    path = tmp_path / f"a{suffix}"
    rate = 48000 if subtype == "OPUS" else RATE
    soundfile.write(path, tone(rate), rate, format=fmt, subtype=subtype)
    check_decoded(load_audio(path))


@pytest.mark.parametrize(
    ("suffix", "container", "codec"),
    [
        (".m4a", "mp4", "aac"),
        (".webm", "webm", "libopus"),
        (".mp4", "mp4", "aac"),
        (".aac", "adts", "aac"),
    ],
)
def test_ffmpeg_formats_through_pyav(tmp_path, suffix, container, codec):
    av = pytest.importorskip("av")
    path = tmp_path / f"a{suffix}"
    rate = 48000
    samples = tone(rate, channels=1)[:, 0]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = 960
        for start in range(0, samples.size, frame_size):
            chunk = samples[start : start + frame_size][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.time_base = fractions.Fraction(1, rate)
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    check_decoded(load_audio(path), tolerance_s=0.1)
    check_decoded(load_audio(path.read_bytes()), tolerance_s=0.1)


def test_arrays_any_rate_and_layout():
    stereo = tone(RATE)
    check_decoded(load_audio(stereo, sample_rate=RATE))  # samples x channels
    check_decoded(load_audio(stereo.T.copy(), sample_rate=RATE))  # channels x samples
    check_decoded(load_audio(torch.from_numpy(stereo), sample_rate=RATE))
    int16 = (stereo * 32767).astype(np.int16)
    check_decoded(load_audio(int16, sample_rate=RATE))
    mono16k = load_audio(tone(16000, 1)[:, 0])  # 16 kHz assumed when no rate is given
    assert mono16k.size == int(16000 * SECONDS)


def test_bytes_input(tmp_path):
    path = tmp_path / "a.flac"
    soundfile.write(path, tone(), RATE)
    check_decoded(load_audio(path.read_bytes()))


def test_errors_are_one_clear_line(tmp_path):
    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    cases = [
        (tmp_path / "missing.wav", "not found"),
        (corrupt, "cannot decode"),
        (b"\x00\x01garbage", "cannot decode"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.zeros((2, 2, 2), np.float32), "1-D or 2-D"),
        ({"not": "audio"}, "unsupported audio input"),
    ]
    for source, fragment in cases:
        with pytest.raises(AudioError) as info:
            load_audio(source)
        assert fragment in str(info.value) and "\n" not in str(info.value)
