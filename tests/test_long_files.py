"""Recordings of any length in bounded memory: chunked decoding, resampling and VAD give the whole-file
results exactly; outputs grow as segments finish; an interrupted batch leaves finished files intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
from engines import FakeEngine
from test_audio import encode

import funasr_nano
from funasr_nano.cli.main import main
from funasr_nano.frontend.audio import load_audio, stream_audio
from funasr_nano.frontend.resample import ChunkedResampler, resample
from funasr_nano.frontend.vad import SpeechScanner, find_speech
from funasr_nano.output import formats
from funasr_nano.output.formats import FORMATS, render

DEMO = Path(__file__).parent / "data" / "demo"
SAMPLE_RATE = 16000


def clips() -> list[np.ndarray]:
    return [load_audio(path) for path in sorted(DEMO.glob("*.flac"))]


def joined(count: int, seed: int = 0) -> np.ndarray:
    """Demo clips one after another, with 0.3-2.5 s of light noise between them."""
    rng = np.random.default_rng(seed)
    pieces = clips()
    parts = []
    for index in range(count):
        parts.append(pieces[index % len(pieces)])
        parts.append((rng.standard_normal(int(rng.uniform(0.3, 2.5) * SAMPLE_RATE)) * 0.003).astype(np.float32))
    return np.concatenate(parts)


def in_chunks(samples: np.ndarray, rng: np.random.Generator, largest: int = 300_000):
    start = 0
    while start < samples.size:
        size = int(rng.integers(1, largest))
        yield samples[start : start + size]
        start += size


@pytest.fixture(scope="module")
def demo():
    return funasr_nano.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.wav"
    soundfile.write(path, joined(30), SAMPLE_RATE, subtype="FLOAT")
    return path


@pytest.mark.parametrize("resampler", ["torchaudio", "soxr"])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 44101])
def test_chunked_resampling_gives_the_whole_file_samples_bit_for_bit(rate, resampler):
    rng = np.random.default_rng(rate)
    for seconds in (0.01, 3.0, 31.0):  # one call, and several calls plus a short last one
        samples = (rng.standard_normal(int(rate * seconds) + int(rng.integers(0, 999))) * 0.1).astype(np.float32)
        converter = ChunkedResampler(rate, resampler)
        parts = [converter.push(chunk) for chunk in in_chunks(samples, rng)]
        chunked = np.concatenate([*parts, converter.finish()])
        whole = resample(samples, rate, resampler)
        assert chunked.dtype == np.float32 and chunked.size == whole.size
        assert np.array_equal(chunked, whole)


def test_streamed_files_are_the_loaded_samples(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((44100 * 40, 2)) * 0.2).astype(np.float32)
    files = [sorted(DEMO.glob("*.flac"))[0]]
    for subtype, rate in (("PCM_16", 44100), ("FLOAT", 48000), ("PCM_24", 22050), ("PCM_16", 16000)):
        files.append(tmp_path / f"{subtype}-{rate}.wav")
        soundfile.write(files[-1], stereo[: rate * 40], rate, subtype=subtype)
    files.append(tmp_path / "a.m4a")
    encode(files[-1], "mp4", "aac", stereo[: 48000 * 20, 0], 48000)
    for path in files:
        for resampler in ("torchaudio", "soxr"):
            streamed = np.concatenate(list(stream_audio(path, resampler=resampler)))
            assert np.array_equal(streamed, load_audio(path, resampler=resampler)), (path, resampler)
    assert np.array_equal(np.concatenate(list(stream_audio(files[1].read_bytes()))), load_audio(files[1]))


def test_the_vad_in_chunks_finds_the_whole_file_speech():
    samples = joined(40, seed=3)
    whole = find_speech(samples)
    rng = np.random.default_rng(3)
    for _ in range(2):
        scanner = SpeechScanner()
        for chunk in in_chunks(samples, rng, largest=3_000_000):
            scanner.add(chunk)
        found = scanner.finish()
        assert found.spans == whole.spans and len(whole.spans) > 20
        assert np.array_equal(found.score, whole.score)


def _same(a, b) -> None:
    assert a.text == b.text and a.duration == b.duration
    assert [(s.start, s.end, s.text, s.tokens, s.flags, s.words) for s in a.segments] == [
        (s.start, s.end, s.text, s.tokens, s.flags, s.words) for s in b.segments
    ]


def test_files_read_in_chunks_transcribe_as_their_whole_samples(demo, long_wav):
    for path in [*sorted(DEMO.glob("*.flac"))[::9], long_wav]:
        _same(demo.transcribe(str(path), word_timestamps=True), demo.transcribe(load_audio(path), word_timestamps=True))


def test_segments_are_handed_over_in_time_order_before_the_file_is_done(long_wav):
    model = funasr_nano.load_model("demo", device="cpu", batch_size=1)  # 4 segments per decode call
    handed: list[tuple[int, object]] = []
    results = []
    for result in model.transcribe_many(
        [str(long_wav), str(sorted(DEMO.glob("*.flac"))[0])],
        on_segment=lambda index, segment: handed.append((index, segment)),
    ):
        results.append((result, len(handed)))
    (first, handed_before_first), (second, _) = results
    assert [s for i, s in handed if i == 0] == first.segments and len(first.segments) > 8
    assert [s for i, s in handed if i == 1] == second.segments
    assert handed_before_first >= len(first.segments)


def test_outputs_grow_as_segments_finish_and_are_the_rendered_result(demo, long_wav, tmp_path, monkeypatch):
    seen: list[int] = []
    add = formats.ProgressiveOutputs.add

    def watching_add(self, segment):  # type: ignore[no-untyped-def]
        add(self, segment)
        partial = self.paths[0].with_name(f".{self.paths[0].name}.partial")
        seen.append(len(partial.read_text(encoding="utf-8").splitlines()))
        assert not self.paths[0].exists()  # the final name appears only once the file is finished

    monkeypatch.setattr(formats.ProgressiveOutputs, "add", watching_add)
    out = tmp_path / "out"
    assert main(["transcribe", str(long_wav), "-m", "demo", "-o", str(out), "-q", "--batch-size", "1"]) == 0
    result = demo.transcribe(str(long_wav))
    assert seen == sorted(seen) and len(seen) == len(result.segments) and seen[0] < seen[-1]
    for fmt in FORMATS:
        text = (out / f"long.{fmt}").read_text(encoding="utf-8")
        assert text == render(result, fmt) if fmt != "json" else '"segments"' in text
    assert not list(out.glob(".*.partial"))


def test_ctrl_c_leaves_finished_outputs_and_skip_existing_resumes(long_wav, tmp_path):
    short = sorted(DEMO.glob("*.flac"))[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.flac").write_bytes(short.read_bytes())
    # long enough that the CLI is still decoding it when the signal comes, however fast decoding gets
    samples, rate = soundfile.read(long_wav, dtype="float32")
    soundfile.write(inputs / "b.wav", np.tile(samples, 4), rate, subtype="FLOAT")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "funasr_nano",
        "transcribe",
        str(inputs),
        "-m",
        "demo",
        "-o",
        str(out),
        "-q",
        "--batch-size",
        "1",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(funasr_nano.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    # Ctrl-C as a shell delivers it, whatever the test runner's own SIGINT disposition (an ignored one is inherited)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # The signal comes once the short file's outputs are in place, while the long one is being decoded
    # (when its first text reaches its partial files depends on the order its segments finish in).
    deadline = time.monotonic() + 120
    while not all((out / f"a.{fmt}").is_file() for fmt in FORMATS) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    assert process.poll() is None, "the long file was done before the signal: make it longer"
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    finished = {fmt: (out / f"a.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS}
    assert all(finished.values())
    assert not [p for p in out.iterdir() if p.name.startswith("b.") or p.name.endswith(".partial")]
    resumed = subprocess.run([*command[:-3], "--skip-existing"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert all((out / f"b.{fmt}").is_file() for fmt in FORMATS)
    assert {fmt: (out / f"a.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS} == finished


def _traced_peak(model, path: Path, minutes: float) -> tuple[int, object]:
    with soundfile.SoundFile(path, "w", 24000, 1, "PCM_16") as out:
        block = joined(12, seed=5)
        written = 0
        while written < minutes * 60 * 24000:
            out.write(block[: minutes * 60 * 24000 - written])
            written += min(block.size, minutes * 60 * 24000 - written)
    tracemalloc.start()
    try:
        result = model.transcribe(str(path))
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_recording(demo, tmp_path):
    """5 and 20 minutes of 24 kHz audio through the pipeline (decoding stubbed). What numpy holds at its
    peak (tracemalloc: counted allocations, not RSS, so not flaky) is a fixed cost, one VAD pass (8 MB)
    and the resampler's buffers, the same for both lengths and far below the 77 MB of the 20 minutes as
    16 kHz float32 (115 MB at 24 kHz)."""
    original = demo.backend
    demo.backend = FakeEngine(lambda seconds, budget: [], slots=1)  # every segment: no tokens, at once
    try:
        demo.transcribe(str(sorted(DEMO.glob("*.flac"))[0]))  # first-call imports are not the recording's
        short, _ = _traced_peak(demo, tmp_path / "five.wav", 5)
        peak, result = _traced_peak(demo, tmp_path / "twenty.wav", 20)
    finally:
        demo.backend = original
    whole = 20 * 60 * SAMPLE_RATE * 4
    assert result.duration == 20 * 60 and len(result.segments) > 200
    assert peak < 0.4 * whole, f"peak {peak / 1e6:.1f} MB"
    assert peak < 1.2 * short, f"peak {peak / 1e6:.1f} MB for 20 minutes, {short / 1e6:.1f} MB for 5"
