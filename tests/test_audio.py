"""Audio input: every common container/codec, arrays at any rate and channel count, clear errors."""

from __future__ import annotations

import contextlib
import fractions
import io
import tempfile
import warnings

import numpy as np
import pytest
import soundfile
import torch

from funasr_nano.errors import AudioError, AudioTooLongError, UsageError
from funasr_nano.frontend.audio import load_audio, probe_duration

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
    pytest.importorskip("av")
    path = tmp_path / f"a{suffix}"
    encode(path, container, codec, tone(48000, channels=1)[:, 0], 48000)
    check_decoded(load_audio(path), tolerance_s=0.1)
    check_decoded(load_audio(path.read_bytes()), tolerance_s=0.1)


def encode(path, container: str, codec: str, samples: np.ndarray, rate: int) -> None:
    import av

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


def quiet(seconds: float, rate: int) -> np.ndarray:
    return (0.01 * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)


@pytest.mark.parametrize(("suffix", "container", "codec"), [(".wav", None, None), (".webm", "webm", "libopus"),
                                                            (".m4a", "mp4", "aac")])
def test_a_declared_duration_over_the_limit_is_refused_before_decoding(tmp_path, monkeypatch, suffix, container,
                                                                       codec):
    import funasr_nano.frontend.audio as audio

    path = tmp_path / f"long{suffix}"
    if container is None:
        soundfile.write(path, quiet(30, 16000), 16000)
    else:
        encode(path, container, codec, quiet(30, 48000), 48000)
    monkeypatch.setattr(audio, "_av_chunks", lambda *a: pytest.fail("decoded although the header says 30 s"))
    with pytest.raises(AudioTooLongError, match=r"lasts 30\.\d s, longer than the limit of 5 s") as info:
        load_audio(path, max_seconds=5)
    assert info.value.seconds == pytest.approx(30, abs=0.1)


def test_without_a_declared_duration_decoding_stops_at_the_limit(tmp_path, monkeypatch):
    import funasr_nano.frontend.audio as audio

    path = tmp_path / "long.aac"  # raw ADTS: FFmpeg only guesses its duration, so decoding decides
    encode(path, "adts", "aac", quiet(60, 48000), 48000)
    pulled = []
    real_chunks = audio._av_chunks

    def counted(container, stream):  # type: ignore[no-untyped-def]
        for chunk in real_chunks(container, stream):
            pulled.append(chunk.size)
            yield chunk

    monkeypatch.setattr(audio, "_av_chunks", counted)
    with pytest.raises(AudioTooLongError, match="more than the limit of 2 s"):
        load_audio(path, max_seconds=2)
    assert sum(pulled) < 3 * 48000  # stopped a frame past 2 s, not after the 60 s
    pulled.clear()
    assert load_audio(path, max_seconds=61).size == pytest.approx(60 * 16000, abs=2000)
    assert sum(pulled) >= 60 * 48000


def test_audio_of_exactly_the_limit_passes_and_arrays_are_limited_too(tmp_path):
    path = tmp_path / "five.flac"
    soundfile.write(path, quiet(5, 16000), 16000)
    assert load_audio(path, max_seconds=5).size == 5 * 16000
    with pytest.raises(AudioTooLongError):
        load_audio(path, max_seconds=4.99)
    with pytest.raises(AudioTooLongError):
        load_audio(quiet(3, 8000), sample_rate=8000, max_seconds=2)


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
        (io.BytesIO(b"\x00\x01garbage"), "cannot decode"),
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 0), np.float32), "empty"),
        (np.zeros((0, 2), np.int16), "empty"),
        (torch.zeros(2, 0), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.array([0.0, np.inf], np.float64), "NaN or infinite"),
        (np.zeros((2, 2, 2), np.float32), "1-D or 2-D"),
        (np.array([0.1, "x"], dtype=object), "float or integer samples, not object"),
        (np.array([[0.1], [None]], dtype=object), "not object"),
        (np.array(["a", "b"]), "float or integer samples"),
        (np.zeros(4, np.complex64), "not complex64"),
        (np.zeros(4, bool), "not bool"),
        (torch.zeros(4, dtype=torch.complex64), "not complex64"),
        ({"not": "audio"}, "unsupported audio input"),
    ]
    for source, fragment in cases:
        with pytest.raises(AudioError) as info:
            load_audio(source)
        assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16000", True, 2_000_000])
def test_a_bad_sample_rate_is_a_usage_error(rate):
    with pytest.raises(UsageError, match="sample_rate must be a whole number of Hz") as info:
        load_audio(np.zeros(1600, np.float32), sample_rate=rate)
    assert "\n" not in str(info.value)


def test_sample_rates_numpy_integers_and_int_tensors():
    assert load_audio(np.zeros(800, np.float32), sample_rate=np.int64(8000)).size == 1600
    int16 = torch.full((16000,), 16384, dtype=torch.int16)  # keeps its integer scale: 0.5, not 16384
    assert load_audio(int16).max() == pytest.approx(0.5)


def test_a_corrupt_mp3_prints_nothing_on_the_terminal(tmp_path, capfd):
    path = tmp_path / "a.mp3"
    soundfile.write(path, tone(), RATE, format="MP3")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for start in range(2000, len(data) - 400, 1500):  # damage frames all through the file
        data[start : start + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    capfd.readouterr()
    for source in (path, bytes(data), b"ID3" + bytes(data[3:800]), b"\xff\xfb" + bytes(1000)):
        with contextlib.suppress(AudioError):
            load_audio(source)
    out, err = capfd.readouterr()  # the file descriptors themselves, where libmpg123 writes
    assert out == "" and err == ""


def test_mp3_decodes_through_pyav_not_libsndfile(tmp_path, monkeypatch):
    import funasr_nano.frontend.audio as audio

    path = tmp_path / "a.mp3"
    soundfile.write(path, tone(), RATE, format="MP3")
    monkeypatch.setattr(audio, "_soundfile_chunks", lambda *a: pytest.fail("libsndfile got the mp3"))
    check_decoded(load_audio(path))
    check_decoded(load_audio(io.BytesIO(path.read_bytes())))


def test_file_objects_are_read_from_their_start(tmp_path):
    pytest.importorskip("av")
    flac, m4a = tmp_path / "a.flac", tmp_path / "a.m4a"
    soundfile.write(flac, tone(), RATE)
    encode(m4a, "mp4", "aac", tone(48000, channels=1)[:, 0], 48000)
    for path in (flac, m4a):
        with path.open("rb") as handle:
            handle.read(100)
            np.testing.assert_array_equal(load_audio(handle), load_audio(path))
        for max_size in (1, 0):  # a server upload: rolled to disk, or still in memory ("w+b", as PyAV sees it)
            with tempfile.SpooledTemporaryFile(max_size=max_size) as spooled:
                spooled.write(path.read_bytes())
                np.testing.assert_array_equal(load_audio(spooled), load_audio(path))


def test_more_bad_inputs_are_one_clear_line(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    wav = io.BytesIO()
    soundfile.write(wav, tone(16000, 1), 16000, format="WAV")
    cases = [
        (tmp_path, AudioError, "is a directory, not an audio file"),
        (empty, AudioError, "empty.wav is empty (0 bytes)"),
        (b"", AudioError, "the audio is empty (0 bytes)"),
        (io.BytesIO(b""), AudioError, "the audio is empty (0 bytes)"),
        (wav.getvalue()[:30], AudioError, "cannot decode"),  # a WAV cut inside its header
        (torch.zeros(4, device="meta"), AudioError, "cannot read the audio tensor"),
        (np.array([1e300, -1e300]), AudioError, "NaN or infinite"),  # beyond float32
    ]
    for source, error, fragment in cases:
        with pytest.raises(error) as info, warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning on the way either
            load_audio(source)
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("limit", [0, -1, float("nan"), float("inf"), "60", True])
def test_a_bad_max_seconds_is_a_usage_error(limit):
    with pytest.raises(UsageError, match="max_seconds must be a positive number of seconds"):
        load_audio(np.zeros(1600, np.float32), max_seconds=limit)


def test_a_file_name_that_is_not_utf8_still_decodes(tmp_path):
    path = tmp_path / "caf\udce9.flac"  # a Latin-1 byte in the name, as os.listdir gives it
    soundfile.write(tmp_path / "a.flac", tone(), RATE)
    (tmp_path / "a.flac").rename(path)
    check_decoded(load_audio(path))


def test_the_duration_probe_reads_headers_and_gives_none_for_what_it_cannot_read(tmp_path):
    wav, mp3 = tmp_path / "tone.wav", tmp_path / "tone.mp3"
    soundfile.write(wav, tone(), RATE)
    soundfile.write(mp3, tone(), RATE, format="MP3")
    assert probe_duration(wav) == pytest.approx(SECONDS)
    assert probe_duration(mp3) == pytest.approx(SECONDS, abs=0.1)  # PyAV's estimate: mp3 never goes to libsndfile
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    (tmp_path / "empty.wav").write_bytes(b"")
    for name in ("junk.wav", "empty.wav", "missing.wav"):
        assert probe_duration(tmp_path / name) is None
