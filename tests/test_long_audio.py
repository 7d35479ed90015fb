"""Long recordings through the whole pipeline with the tiny random-weight checkpoint.

Random weights never emit EOS and loop a lot, so every segment runs into the guards: that exercises
split-and-retry and loop cutting on every segment, while small token budgets keep it fast.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from engines import EngineSpy, decode
from speech_data import SAMPLE_RATE, layout, phrases

import funasr_nano
from funasr_nano.api import join_texts
from funasr_nano.errors import AudioError, UsageError
from funasr_nano.frontend.vad import VadOptions, find_speech

TIMING_TOLERANCE = 0.3
TEN_MINUTES = 600.0


@pytest.fixture(scope="module")
def model(official_tiny):
    return funasr_nano.load_model(official_tiny.model_dir, device="cpu")


@pytest.fixture
def counting(model):
    original = model.backend
    model.backend = EngineSpy(original)
    yield model.backend
    model.backend = original


def ten_minute_recording() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Phrases with pauses of 0.7-3 s, and twice ~45 s of speech without a real pause (0.1-0.2 s)."""
    rng = np.random.default_rng(7)
    pieces = phrases()
    plan: list[np.ndarray | float] = [1.0]
    total = 1.0
    for stretch in range(400):
        continuous = stretch in (20, 70)
        run_end = total + (45.0 if continuous else 0.0)
        while True:
            phrase = pieces[rng.integers(len(pieces))]
            pause = float(rng.uniform(0.1, 0.2) if continuous else rng.uniform(0.7, 3.0))
            plan += [phrase, pause]
            total += phrase.size / SAMPLE_RATE + pause
            if total >= run_end:
                break
        if total > TEN_MINUTES - 8:
            break
    audio, truth = layout(plan)
    return np.pad(audio, (0, round(TEN_MINUTES * SAMPLE_RATE) - audio.size)), truth


def covered(segments, start: float, end: float, slack: float) -> bool:
    """[start, end] lies inside the union of the segments, each widened by ``slack``."""
    cursor = start
    for segment in segments:
        if segment.start - slack <= cursor < segment.end + slack:
            cursor = segment.end + slack
        if cursor >= end:
            return True
    return False


def test_ten_minutes_through_the_whole_pipeline(model):
    audio, truth = ten_minute_recording()
    assert audio.size == TEN_MINUTES * SAMPLE_RATE
    done: list[float] = []
    started = time.perf_counter()
    result = model.transcribe(audio, max_new_tokens=8, progress=done.append)
    elapsed = time.perf_counter() - started
    segments = result.segments
    print(f"10 min of audio: {elapsed:.1f} s wall, {len(segments)} segments, timings {result.timings}")
    assert elapsed < 60  # bounded: ~3 s on 2 CPU cores

    assert result.duration == TEN_MINUTES and sum(done) == pytest.approx(TEN_MINUTES)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:], strict=False))
    assert all(s.end - s.start <= VadOptions().max_segment for s in segments)
    # no speech dropped: every phrase is inside the segments (within the timing tolerance) ...
    assert all(covered(segments, start, end, TIMING_TOLERANCE) for start, end in truth)
    # ... and no segment was invented in silence
    assert all(any(s.start < end and start < s.end for start, end in truth) for s in segments)
    # the two 45 s stretches were cut into abutting pieces: no audio between them
    assert sum(a.end == b.start for a, b in zip(segments, segments[1:], strict=False)) >= 2
    # random weights run into every guard: each segment is flagged, none silently
    assert all(s.flags for s in segments)
    assert result.text == join_texts([s.text for s in segments])
    assert set(result.timings) >= {"load_audio", "vad", "decode", "total"}


def test_many_files_share_batches_and_a_bad_one_reports_in_place(model, counting):
    pieces = phrases()
    first, _ = layout([0.5, pieces[0], 1.0, pieces[1], 0.5])
    second, _ = layout([0.3, pieces[6], 0.8, pieces[8], 1.2, pieces[3], 0.4])
    results = list(model.transcribe_many([first, b"not audio at all", second], max_new_tokens=4))
    assert [type(r).__name__ for r in results] == ["Transcription", "AudioError", "Transcription"]
    assert isinstance(results[1], AudioError) and "cannot decode" in str(results[1])
    spans = len(find_speech(first).spans) + len(find_speech(second).spans)
    assert counting.added_at_steps[0] == spans  # both files' segments were in the engine from its first step
    assert results[0].duration == pytest.approx(first.size / SAMPLE_RATE)
    assert [len(r.segments) > 0 for r in (results[0], results[2])] == [True, True]


def test_without_vad_the_whole_clip_is_one_segment_as_the_official_model(model):
    audio, _ = layout([0.5, phrases()[0], 0.7, phrases()[1], 0.5])
    result = model.transcribe(audio, max_new_tokens=6, vad=False)
    (segment,) = result.segments
    assert (segment.start, segment.end) == (0.0, audio.size / SAMPLE_RATE)
    prompt = model.tokenizer.prompt_ids([], None, True)
    assert segment.tokens == decode(model.backend, [audio], [prompt], [6])[0]
    assert segment.flags == ["truncated"]


def test_silence_gives_no_segments_and_empty_text(model):
    result = model.transcribe(np.zeros(3 * SAMPLE_RATE, np.float32))
    assert result.segments == [] and result.text == "" and result.duration == 3.0


def test_a_bad_vad_argument_is_one_clear_error(model):
    with pytest.raises(UsageError, match="vad must be"):
        model.transcribe(np.zeros(SAMPLE_RATE, np.float32), vad="silero")
