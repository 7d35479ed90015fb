"""Guards: loop and truncation detection on crafted token streams, and the split-retry-cut policy."""

from __future__ import annotations

import numpy as np
import pytest
from engines import FakeEngine
from speech_data import layout, phrases

from funasr_nano.decoding.guards import (
    BUDGET_CEILING,
    REPETITION,
    TRUNCATED,
    Repetition,
    cut_repetition,
    find_repetition,
    is_truncated,
    token_budget,
)
from funasr_nano.decoding.pieces import DecodeSettings, open_recording
from funasr_nano.decoding.scheduler import RecordingDone, Scheduler, TextDelta, decode_recordings
from funasr_nano.frontend.vad import VadOptions
from funasr_nano.text.prompt import PromptIds

SENTENCE = [9707, 11, 1246, 525, 498, 3351, 30, 358, 2776, 1661, 13]  # distinct ids, no repeats


def test_budget_grows_with_duration_and_is_capped():
    assert token_budget(1.0) < token_budget(10.0) < token_budget(30.0)
    assert token_budget(3600.0) == BUDGET_CEILING


@pytest.mark.parametrize("tokens", [
    SENTENCE,
    SENTENCE + [7] * 15,  # a token 15 times: laughter, "22222" in a number
    SENTENCE + [5, 6] * 7,  # "no no no ..." 7 times
    SENTENCE + [1, 2, 3, 4, 5, 6] * 2 + [1, 2, 3],  # a phrase said twice and a half
])
def test_ordinary_text_is_not_a_loop(tokens):
    assert find_repetition(tokens) is None


def test_a_single_token_loop_is_found_where_it_starts():
    tokens = SENTENCE + [42] * 40
    assert find_repetition(tokens) == Repetition(start=len(SENTENCE), period=1, end=len(tokens))


def test_a_phrase_loop_is_found_with_its_shortest_period_and_partial_tail():
    phrase = [101, 102, 103, 104, 105, 106]
    tokens = SENTENCE + phrase * 5 + phrase[:4]
    repetition = find_repetition(tokens)
    assert repetition == Repetition(start=len(SENTENCE), period=6, end=len(tokens))
    assert repetition.count == 5


def test_the_longest_loop_wins_when_there_are_several():
    tokens = [7] * 16 + SENTENCE + [1, 2, 3] * 10
    assert find_repetition(tokens) == Repetition(start=16 + len(SENTENCE), period=3, end=len(tokens))


def test_cutting_keeps_one_occurrence_and_what_follows_the_loop():
    tokens = SENTENCE[:3] + [8, 9] * 10 + SENTENCE[3:]
    repetition = find_repetition(tokens)
    assert cut_repetition(tokens, repetition) == SENTENCE[:3] + [8, 9] + SENTENCE[3:]


def test_truncation_is_hitting_the_budget():
    assert is_truncated(list(range(20)), 20)
    assert not is_truncated(list(range(19)), 20)


class IdTokenizer:
    """Token i is the word "ti" with a leading space; like byte-level BPE, decoding concatenates."""

    def decode(self, ids: list[int]) -> str:
        return "".join(f" t{i}" for i in ids)


DEFAULT_VAD = VadOptions()


def decode(answer, vad: VadOptions | None = DEFAULT_VAD, audio: np.ndarray | None = None, on_text=None):
    """Run the scheduler over a 6 s phrase (or ``audio``) with a fake engine answering by duration."""
    if audio is None:
        audio, _ = layout([0.5, phrases()[4], 0.5])  # the 5.7 s Mandarin phrase: one VAD segment
    engine = FakeEngine(answer)
    settings = DecodeSettings(PromptIds([1], [2]), None, vad, stream_text=on_text is not None)
    scheduler = Scheduler(engine, IdTokenizer())
    outputs = list(decode_recordings(scheduler, iter([open_recording(0, audio, settings, "cpu")])))
    for output in outputs:
        if isinstance(output, TextDelta):
            on_text(output.text)
    (decoded,) = [o.result for o in outputs if isinstance(o, RecordingDone)]
    return decoded, engine


def loop_when_long(seconds: float, budget: int) -> list[int]:
    return [5, 6] * budget if seconds > 4.0 else SENTENCE


def test_a_looping_segment_is_split_in_two_and_both_halves_decoded_again():
    decoded, engine = decode(loop_when_long)
    assert len(engine.added) == 3  # the segment, then its two halves
    assert [s.flags for s in decoded.segments] == [[], []]
    first, second = decoded.segments
    assert first.end == second.start  # the halves meet: no audio lost between them
    assert all(s.tokens == SENTENCE for s in decoded.segments)


def test_a_segment_whose_text_has_streamed_is_cut_rather_than_split():
    """Sent text cannot be taken back, so streaming trades the split-and-retry for a cut."""
    deltas: list[str] = []
    decoded, engine = decode(loop_when_long, on_text=deltas.append)
    assert len(engine.added) == 1
    (segment,) = decoded.segments
    assert segment.tokens == [5, 6] and segment.flags == [REPETITION, TRUNCATED]
    assert "".join(deltas) == segment.text.strip() == "t5 t6"


def test_a_segment_that_has_sent_nothing_is_still_split_while_streaming():
    # "Yes", then the long phrase: the long one loops and ends while "Yes" (the head) still decodes, so it
    # has sent nothing and is split; its halves send their text once "Yes" is done.
    audio, _ = layout([0.5, phrases()[2], 3.0, phrases()[4], 0.5])
    yes = SENTENCE + SENTENCE[:9]

    def answer(seconds: float, budget: int) -> list[int]:
        return [5, 6] * 8 if seconds > 4.0 else yes if seconds < 1.5 else SENTENCE

    deltas: list[str] = []
    decoded, engine = decode(answer, audio=audio, on_text=deltas.append)
    assert len(engine.added) == 4  # two segments, the long one's halves
    assert [s.tokens for s in decoded.segments] == [yes, SENTENCE, SENTENCE]
    assert all(not s.flags for s in decoded.segments)
    assert "".join(deltas) == " ".join("".join(f" t{i}" for i in ids).strip() for ids in (yes, SENTENCE, SENTENCE))


def test_a_loop_that_survives_the_split_is_cut_and_flagged():
    decoded, _ = decode(lambda seconds, budget: SENTENCE + [77] * budget)
    assert len(decoded.segments) == 2
    for segment in decoded.segments:
        assert segment.tokens == SENTENCE + [77]
        assert segment.flags == [REPETITION, TRUNCATED]
        assert segment.text == "".join(f" t{i}" for i in SENTENCE + [77])


def test_output_that_stops_at_the_budget_is_retried_then_flagged_truncated():
    decoded, engine = decode(lambda seconds, budget: list(range(1000, 1000 + budget)))
    assert len(engine.added) == 3
    assert [s.flags for s in decoded.segments] == [[TRUNCATED], [TRUNCATED]]


def test_short_segments_are_cut_at_once_rather_than_split():
    audio, _ = layout([0.5, phrases()[2], 0.5])  # "Yes": 0.4 s
    decoded, engine = decode(lambda seconds, budget: [3] * budget, audio=audio)
    assert len(engine.added) == 1
    assert [s.tokens for s in decoded.segments] == [[3]]
    assert decoded.segments[0].flags == [REPETITION, TRUNCATED]


def test_without_vad_nothing_is_repaired_as_in_the_official_model():
    decoded, engine = decode(lambda seconds, budget: ([5, 6] * budget)[:budget], vad=None)
    (segment,) = decoded.segments
    assert len(engine.added) == 1
    assert segment.tokens == ([5, 6] * 600)[: token_budget(decoded.duration)]  # the loop stays
    assert segment.start == 0 and segment.end == decoded.duration
    assert segment.flags == [TRUNCATED]


def test_urgent_recordings_are_cut_and_added_before_earlier_work():
    """When the engine is full, a live utterance's final (urgent) still goes in, ahead of work submitted
    before it, which waits for room."""
    engine = FakeEngine(lambda seconds, budget: SENTENCE, slots=1)  # room for two requests
    scheduler = Scheduler(engine, IdTokenizer())
    plain = DecodeSettings(PromptIds([1], [2]), None, None)
    urgent = DecodeSettings(PromptIds([1], [2]), None, None, urgent=True)
    for key, seconds, settings in ((0, 6.0, plain), (1, 9.0, plain), (2, 4.0, plain), (3, 2.0, urgent)):
        scheduler.submit(open_recording(key, np.zeros(round(seconds * 16000), np.float32), settings, "cpu"))
    assert [round(seconds) for _, seconds, _ in engine.added] == [6, 9, 2]  # full: only the urgent one joins
    while len(engine.added) < 4:
        scheduler.step()
    assert [round(seconds) for _, seconds, _ in engine.added] == [6, 9, 2, 4]
