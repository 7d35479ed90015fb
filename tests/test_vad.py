"""VAD: silero parity, phrase boundaries on real (espeak-ng) speech, and the segmentation rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from speech_data import SAMPLE_RATE, layout, phrases, speech

from funasr_nano.errors import UsageError
from funasr_nano.frontend.vad import (
    FRAME_SAMPLES,
    SileroVAD,
    VadOptions,
    _weights_path,
    add_context,
    find_speech,
    load_vad,
    segments_from_probabilities,
    split_point,
)

FRAMES_PER_SECOND = SAMPLE_RATE / FRAME_SAMPLES
TIMING_TOLERANCE = 0.3


def probabilities(pattern: list[tuple[float, float]]) -> tuple[np.ndarray, list[float]]:
    """Crafted per-frame probabilities from (seconds, probability) runs, and where each run ends (s)."""
    runs = [np.full(round(seconds * FRAMES_PER_SECOND), p, np.float32) for seconds, p in pattern]
    ends = np.cumsum([run.size for run in runs]) * FRAME_SAMPLES / SAMPLE_RATE
    return np.concatenate(runs), [float(t) for t in ends]


def seconds(spans: list[tuple[int, int]]) -> list[tuple[float, float]]:
    return [(b / SAMPLE_RATE, e / SAMPLE_RATE) for b, e in spans]


def flat(spans: list[tuple[float, float]]) -> list[float]:
    return [t for span in spans for t in span]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_batched_network_matches_silero_frame_by_frame():
    samples, _ = speech()
    clip = samples[: 160 * FRAME_SAMPLES]  # 5 s: silence, a phrase, silence; whole frames only
    reference = torch.jit.load(str(_weights_path()))
    reference.reset_states()
    expected = [reference(torch.from_numpy(clip[i : i + FRAME_SAMPLES])[None], SAMPLE_RATE).item()
                for i in range(0, clip.size, FRAME_SAMPLES)]
    ours = SileroVAD().speech_probabilities(clip)
    assert ours.shape == (len(expected),)
    assert np.abs(ours - np.array(expected)).max() < 1e-4


def test_phrase_boundaries_within_300_ms_of_the_truth():
    samples, truth = speech()
    spans = find_speech(samples).spans
    assert len(spans) == len(truth)
    edges = [(edge / SAMPLE_RATE, true) for span, true_span in zip(spans, truth, strict=True)
             for edge, true in zip(span, true_span, strict=True)]
    worst = max(abs(found - true) for found, true in edges)
    print(f"VAD boundary errors: worst {worst:.3f} s over {len(truth)} phrases")
    assert worst <= TIMING_TOLERANCE


def test_relaid_phrases_with_new_silences_are_found_each():
    pieces = phrases()
    # a short phrase ("Yes") 1.5 s from its neighbour: beyond merge_gap, so it stays its own segment
    audio, truth = layout([0.6, pieces[0], 0.7, pieces[3], 2.5, pieces[4], 1.5, pieces[2], 1.0])
    spans = find_speech(audio).spans
    assert len(spans) == len(truth)
    for (begin, end), (start, finish) in zip(spans, truth, strict=True):
        assert abs(begin / SAMPLE_RATE - start) <= TIMING_TOLERANCE
        assert abs(end / SAMPLE_RATE - finish) <= TIMING_TOLERANCE


def test_digital_silence_and_quiet_noise_are_not_speech():
    rng = np.random.default_rng(0)
    assert find_speech(np.zeros(5 * SAMPLE_RATE, np.float32)).spans == []
    hiss = (rng.standard_normal(5 * SAMPLE_RATE) * 1e-3).astype(np.float32)
    assert find_speech(hiss).spans == []


def test_vad_leaves_torch_thread_count_alone():
    # importing the silero_vad package would set torch.set_num_threads(1) for the whole process
    before = torch.get_num_threads()
    load_vad.cache_clear()
    find_speech(np.zeros(SAMPLE_RATE, np.float32))
    assert torch.get_num_threads() == before


def test_long_speech_is_split_at_the_quietest_point_without_losing_audio():
    options = VadOptions()
    probs, ends = probabilities([(1.0, 0.0), (20.0, 0.95), (0.1, 0.6), (28.0, 0.95), (1.0, 0.0)])
    spans = segments_from_probabilities(probs, probs.size * FRAME_SAMPLES, options, score=probs)
    assert len(spans) == 2
    (first_begin, cut), (cut_again, last_end) = seconds(spans)
    assert cut == cut_again  # contiguous: no speech falls between the pieces
    assert ends[1] <= cut <= ends[2]  # at the dip, not at the 30 s mark
    assert (first_begin, last_end) == pytest.approx((ends[0], ends[3]), abs=0.001)
    for begin, end in add_context(spans, options.pad, probs.size * FRAME_SAMPLES):
        assert (end - begin) / SAMPLE_RATE <= options.max_segment


def test_very_long_speech_becomes_pieces_that_all_fit():
    options = VadOptions()
    probs, _ = probabilities([(200.0, 0.99)])
    rng = np.random.default_rng(1)
    score = rng.random(probs.size).astype(np.float32)
    spans = seconds(segments_from_probabilities(probs, probs.size * FRAME_SAMPLES, options, score))
    limit = options.max_segment - 2 * options.pad
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(probs.size * FRAME_SAMPLES / SAMPLE_RATE)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(limit / 2 - 0.05 <= e - b <= limit + 0.05 for b, e in spans)  # no sliver, none too long


def test_short_pauses_stay_inside_and_short_segments_join_a_close_neighbour():
    probs, ends = probabilities([
        (1.0, 0.0), (2.0, 0.9), (0.3, 0.1), (2.0, 0.9),  # a 0.3 s pause stays inside: one segment
        (3.0, 0.0), (0.5, 0.9), (0.8, 0.0), (2.0, 0.9),  # a 0.5 s segment 0.8 s away joins its neighbour
        (4.0, 0.0), (0.4, 0.9), (4.0, 0.0),  # isolated short speech is kept, alone
    ])
    spans = seconds(segments_from_probabilities(probs, probs.size * FRAME_SAMPLES, VadOptions()))
    expected = [(ends[0], ends[3]), (ends[4], ends[7]), (ends[8], ends[9])]
    assert flat(spans) == pytest.approx(flat(expected), abs=0.07)  # ending waits for neg_threshold: 2 frames


def test_clicks_shorter_than_min_speech_are_non_speech():
    probs, ends = probabilities([(2.0, 0.0), (0.064, 0.99), (2.0, 0.0), (0.2, 0.99), (2.0, 0.0)])
    spans = seconds(segments_from_probabilities(probs, probs.size * FRAME_SAMPLES, VadOptions()))
    assert flat(spans) == pytest.approx([ends[2], ends[3]], abs=0.001)


def test_context_padding_stays_inside_the_audio_and_never_overlaps():
    spans = [(1000, 20000), (24000, 50000), (50000, 60000)]
    padded = add_context(spans, 0.2, 61000)
    assert padded[0] == (0, 22000)  # 3200 wanted before, only 1000 there; half the 4000 gap after
    assert padded[1] == (22000, 50000)  # contiguous split pieces get no context across the cut
    assert padded[2] == (50000, 61000)


def test_split_point_lands_on_the_quietest_frame_of_the_middle_third():
    score = np.ones(300, np.float32)
    score[50] = 0.0  # outside the middle third: ignored
    score[140] = 0.2
    assert split_point(score, 0, 300 * FRAME_SAMPLES) == 140 * FRAME_SAMPLES


@pytest.mark.parametrize("options", [
    {"threshold": 0.3, "neg_threshold": 0.5}, {"max_segment": 0.5}, {"pad": -0.1},
])
def test_bad_options_are_one_clear_error(options):
    with pytest.raises(UsageError):
        VadOptions(**options)


@torch.inference_mode()
def test_passes_of_several_streams_in_one_batch_equal_their_own_passes():
    vad = load_vad("cpu")
    rng = np.random.default_rng(3)
    samples, _ = speech()
    audio = [samples[k * SAMPLE_RATE :] for k in range(3)]  # three streams, each at another point
    states: list = [None, None, None]
    alone: list = [None, None, None]
    for round_ in range(3):  # states carried over, windows of different counts per stream
        passes = []
        for k in range(3):
            count = int(rng.integers(1, 6))
            start = round_ * 6 * FRAME_SAMPLES
            windows = torch.from_numpy(audio[k][start : start + 64 + count * FRAME_SAMPLES]).unfold(0, 576, 512)
            passes.append((windows, states[k]))
        together = vad.pass_many(passes)
        for k, ((windows, _), (found, state)) in enumerate(zip(passes, together, strict=True)):
            expected, alone[k] = vad.pass_probabilities(windows, alone[k] if round_ else None)
            np.testing.assert_allclose(found, expected.numpy(), atol=1e-5)
            np.testing.assert_allclose(state[0].numpy(), alone[k][0].numpy(), atol=1e-5)
            states[k] = state


def test_live_detectors_on_many_threads_share_passes_and_find_their_own_speech():
    import threading
    import time

    from funasr_nano.frontend.endpoint import SpeechDetector

    samples, _ = speech()
    talks = [samples[k * SAMPLE_RATE // 2 : k * SAMPLE_RATE // 2 + 8 * SAMPLE_RATE] for k in range(6)]
    detectors = [SpeechDetector() for _ in talks]
    vad = detectors[0].vad
    batches: list[int] = []
    pass_many = vad.pass_many
    def slow_pass_many(passes):  # a pass that takes a while, so that other threads' passes queue behind it
        batches.append(len(passes))
        time.sleep(0.005)
        return pass_many(passes)

    vad.pass_many = slow_pass_many  # type: ignore[method-assign]
    start = threading.Barrier(len(talks))

    def run(k: int) -> None:
        start.wait()
        for first in range(0, talks[k].size, 1600):
            detectors[k].add(talks[k][first : first + 1600])

    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(talks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        del vad.pass_many
    assert max(batches) > 1  # some passes ran together
    for k, detector in enumerate(detectors):
        offline = vad.speech_probabilities(talks[k])
        kept = np.asarray(detector.probabilities)
        np.testing.assert_allclose(kept, offline[: kept.size], atol=1e-5)


def test_detectors_fed_together_find_the_boundaries_each_finds_alone():
    """add_together (one pass for many streams, chunks of any size, some completing no frame) gives each
    detector the boundaries and probabilities its own add calls give."""
    from funasr_nano.frontend.endpoint import SpeechDetector, add_together

    samples, _ = speech()
    talks = [samples[k * SAMPLE_RATE // 3 :] for k in range(3)]
    rng = np.random.default_rng(5)
    together, alone = [SpeechDetector() for _ in talks], [SpeechDetector() for _ in talks]
    found_together: list[list] = [[] for _ in talks]
    found_alone: list[list] = [[] for _ in talks]
    position = [0, 0, 0]
    while min(position) < 6 * SAMPLE_RATE:
        chunks = []
        for k in range(3):
            size = int(rng.choice([100, 700, 1600, 4000]))
            chunks.append(talks[k][position[k] : position[k] + size])
            position[k] += size
        for k, boundaries in enumerate(add_together(together, chunks)):
            found_together[k] += boundaries
            found_alone[k] += alone[k].add(chunks[k])
    assert any(found_alone)
    assert found_together == found_alone
    for mine, theirs in zip(together, alone, strict=True):
        np.testing.assert_allclose(mine.probabilities, theirs.probabilities, atol=1e-5)
