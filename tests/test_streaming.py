"""Streaming text: the loop guard's final prefix, OrderedText on the real Qwen3 tokenizer (multi-byte
characters split across tokens, /sil markers, whitespace, loop cuts, segments finishing out of order), and
``transcribe(on_text=...)`` end to end on the tiny checkpoint, live while the backend decodes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
from engines import EngineSpy

import funasr_nano
from funasr_nano.decoding.ordered_text import OrderedText, StreamDivergedError
from funasr_nano.result import join_texts
from funasr_nano.text.detokenize import sendable
from funasr_nano.text.prompt import PromptTokenizer, clean_text
from funasr_nano.text.repetition import LoopWatch, cut_repetition, find_repetition

SPEECH = Path(__file__).parent / "data" / "speech.ogg"


def keep(deltas: list[str], delta: str) -> None:
    if delta:
        deltas.append(delta)


def finished(tokens: list[int]) -> list[int]:
    """What the pipeline keeps of a finished sequence when loops are cut."""
    repetition = find_repetition(tokens)
    return tokens if repetition is None else cut_repetition(tokens, repetition)


def sequence_with_loops(rng: random.Random) -> list[int]:
    """Short runs over a small alphabet (chance repeats) with planted loops of various periods."""
    tokens: list[int] = []
    while len(tokens) < rng.randint(20, 160):
        if rng.random() < 0.3:
            unit = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
            tokens += unit * rng.randint(1, 24 // len(unit) + 3)
        else:
            tokens += [rng.randint(0, 40) for _ in range(rng.randint(1, 10))]
    return tokens


def test_loop_watch_never_passes_a_token_that_a_loop_cut_changes():
    rng = random.Random(0)
    looped = 0
    for _ in range(400):
        tokens = sequence_with_loops(rng)
        kept = finished(tokens)
        looped += kept != tokens
        watch = LoopWatch()
        for count, token in enumerate(tokens, 1):
            watch.extend([token])
            final = watch.final_length
            assert 0 <= final <= count
            assert kept[:final] == tokens[:final], (tokens, count, final)
    assert looped > 100  # the property was exercised on sequences that really get cut


def test_loop_watch_holds_back_nothing_without_repeats():
    watch = LoopWatch()
    watch.extend(list(range(100, 180)))
    assert watch.final_length == 80
    watch.extend([7, 7, 7])  # a repeat may become a loop: held until it is known not to be one
    assert watch.final_length == 81
    watch.extend([8])
    assert watch.final_length == 84


@pytest.mark.parametrize(
    ("partial", "sent"),
    [("你好\ufffd", "你好"), ("hello /si", "hello"), ("a/s", "a"), ("x /", "x"), ("  ok  ", "ok"),
     ("/silent", "/silent")],
)
def test_sendable_drops_what_the_finished_text_may_change(partial, sent):
    assert sendable(partial) == sent


@pytest.fixture(scope="module")
def tokenizer(official_tiny) -> PromptTokenizer:
    return PromptTokenizer(official_tiny.model_dir / "Qwen3-0.6B" / "tokenizer.json")


TEXTS = [
    "Hello, how are you today? /sil I am fine.",
    "今天天气怎么样？我们去公园吧。",
    "Emoji 🎉🎊 and accents: café, naïve, Ελληνικά, русский.",
    "  leading and trailing  spaces  /sil  ",
    "混合 mixed 文本 text /sil 123 4.5%",
    "Rare characters split across byte tokens: 𝄞 鱻 齉 🎉",
    "",
]


def random_segment(rng: random.Random, tokenizer: PromptTokenizer) -> list[int]:
    """Real text (emoji and rare characters take several byte-level tokens each), or text and a loop."""
    if rng.random() < 0.6:
        tokens = tokenizer.encode(rng.choice(TEXTS))
    else:
        unit = tokenizer.encode(rng.choice(["哈", " no", "谢谢", "/sil", " 🎉"]))
        tokens = tokenizer.encode(rng.choice(TEXTS)) + unit * rng.randint(3, 20)
    if rng.random() < 0.3:  # random vocabulary ids, incomplete UTF-8 byte tokens among them
        tokens += [rng.randint(0, 151000) for _ in range(rng.randint(1, 12))]
    return tokens


def test_streamed_text_adds_up_to_the_finished_text(tokenizer):
    rng = random.Random(1)
    live = 0
    for trial in range(150):
        cut_loops = trial % 3 != 0
        segments = [random_segment(rng, tokenizer) for _ in range(rng.randint(1, 5))]
        deltas: list[str] = []
        stream = OrderedText(tokenizer.decode, cut_loops)
        keys = [object() for _ in segments]
        stream.start(keys)
        fed = [0] * len(segments)
        texts: list[str | None] = [None] * len(segments)
        while None in texts:
            index = rng.choice([i for i, t in enumerate(texts) if t is None])
            if fed[index] < len(segments[index]):  # the engine delivers a few tokens at a time
                step = rng.randint(1, 3)
                keep(deltas, stream.add(keys[index], segments[index][fed[index] : fed[index] + step]))
                fed[index] += step
                live += index == 0 and texts[0] is None and bool(deltas)
            else:
                kept = finished(segments[index]) if cut_loops else segments[index]
                texts[index] = clean_text(tokenizer.decode(kept))
                keep(deltas, stream.finish(keys[index], texts[index]))
        assert "".join(deltas) == join_texts(texts), (segments, deltas)
    assert live > 50  # text went out while the first segment was still decoding


def test_splitting_replaces_an_unsent_segment_and_refuses_a_sent_one(tokenizer):
    deltas: list[str] = []
    stream = OrderedText(tokenizer.decode, cut_loops=True)
    first, second, later = object(), object(), object()
    stream.start([first, later])
    keep(deltas, stream.add(later, tokenizer.encode(" world")))
    assert deltas == []  # not the head: kept until the segments before it are done
    halves = [object(), object()]
    stream.split(first, halves)
    keep(deltas, stream.add(halves[0], tokenizer.encode("Hello there")))
    assert deltas == ["Hello there"]
    assert stream.streamed(halves[0]) and not stream.streamed(halves[1])
    with pytest.raises(ValueError):
        stream.split(halves[0], [second])
    keep(deltas, stream.finish(halves[0], "Hello there"))
    keep(deltas, stream.finish(halves[1], ""))
    keep(deltas, stream.finish(later, " world"))
    assert "".join(deltas) == "Hello there world"


def test_a_finished_text_that_contradicts_the_sent_text_is_an_error(tokenizer):
    stream = OrderedText(tokenizer.decode, cut_loops=False)
    deltas: list[str] = []
    key = object()
    stream.start([key])
    keep(deltas, stream.add(key, tokenizer.encode("Hello world, again")))
    with pytest.raises(StreamDivergedError):
        keep(deltas, stream.finish(key, "Goodbye"))


# --- transcribe(on_text=...) on the tiny checkpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def model(official_tiny):
    return funasr_nano.load_model(official_tiny.model_dir, device="cpu")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, _ = soundfile.read(SPEECH, dtype="float32")
    return samples


def test_without_vad_streaming_gives_exactly_the_plain_result_piece_by_piece(model, speech):
    clip = speech[: 8 * 16000]
    deltas: list[str] = []
    spy = EngineSpy(model.backend)
    watched = funasr_nano.FunASRNano(model.config, model.tokenizer, spy, model.model_dir)
    at_step: list[int] = []  # the engine step after which each piece of text arrived

    def on_text(delta: str) -> None:
        deltas.append(delta)
        at_step.append(spy.steps)

    streamed = watched.transcribe(clip, vad=False, max_new_tokens=40, on_text=on_text)
    plain = model.transcribe(clip, vad=False, max_new_tokens=40)
    assert streamed.text == plain.text and streamed.segments[0].tokens == plain.segments[0].tokens
    assert "".join(deltas) == plain.text
    assert len(deltas) >= 10  # token by token, not one piece at the end
    # The text arrived while the decode ran: at many different steps, as the host read the tokens.
    assert len(set(at_step)) >= 10 and at_step[0] < spy.steps - 10


def test_with_vad_the_pieces_add_up_to_the_text_in_time_order(model, speech):
    deltas: list[str] = []
    result = model.transcribe(speech, max_new_tokens=12, on_text=deltas.append)
    assert len(result.segments) > 3
    assert "".join(deltas) == result.text
    assert len(deltas) > len(result.segments)
