"""Live input (model.stream): the streaming speech detector finds what the offline VAD finds, and a
stream of demo clips fed in small chunks gives, utterance by utterance, the texts the offline pipeline
gives for the same audio, with revisable partials before each final."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

import funasr_nano
from funasr_nano import Final, Partial, SpeechStarted, SpeechStopped
from funasr_nano.errors import UsageError
from funasr_nano.frontend.endpoint import STOP, SpeechDetector
from funasr_nano.frontend.vad import VadOptions, find_speech, load_vad

DEMO = Path(__file__).parent / "data" / "demo"
GAP_S = 1.5  # silence between clips: longer than the offline VAD's merge gap, so each clip is its own segment
GAP_S_SAMPLES = round(GAP_S * 16000)


@pytest.fixture(scope="module")
def model() -> funasr_nano.FunASRNano:
    return funasr_nano.load_model("demo", device="cpu", dtype="float32")


def demo_talk(clips: int = 4) -> np.ndarray:
    """Demo clips, each after GAP_S of silence, and GAP_S of silence at the end (16 kHz)."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()][:clips]
    gap = np.zeros(round(GAP_S * 16000), np.float32)
    parts = [gap]
    for row in rows:
        parts += [soundfile.read(DEMO / row["path"], dtype="float32")[0], gap]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def talk() -> np.ndarray:
    return demo_talk()


def feed(stream: funasr_nano.LiveStream, audio: np.ndarray, rate: int = 16000, chunk_s: float = 0.1) -> list:
    chunk = round(chunk_s * rate)
    events = []
    for start in range(0, audio.size, chunk):
        stream.feed(audio[start : start + chunk], rate)
        events += stream.poll()
    stream.close()
    return events + stream.poll()


def test_the_detector_finds_the_offline_speech_in_chunks_of_any_size(talk):
    detector = SpeechDetector()
    rng = np.random.default_rng(0)
    boundaries, start = [], 0
    while start < talk.size:
        size = int(rng.integers(1, 5000))
        boundaries += detector.add(talk[start : start + size])
        start += size
    offline = load_vad("cpu").speech_probabilities(talk)
    kept = np.asarray(detector.probabilities)
    assert kept.size == talk.size // 512  # whole frames only: the last, partial one waits for more audio
    np.testing.assert_allclose(kept, offline[: kept.size], atol=1e-5)
    spans = list(zip(boundaries[::2], boundaries[1::2], strict=True))
    assert all(stop.kind == STOP for _, stop in spans)
    assert [(a.sample, b.sample) for a, b in spans] == find_speech(talk, VadOptions()).spans


def test_finals_are_the_offline_segments_of_the_same_audio(model, talk):
    events = feed(model.stream(), talk)
    finals = [e for e in events if isinstance(e, Final)]
    offline = model.transcribe(talk).segments
    assert [f.text for f in finals] == [s.text.strip() for s in offline]
    assert [f.item for f in finals] == list(range(len(offline)))
    for final, segment in zip(finals, offline, strict=True):
        assert abs(final.start - segment.start) < 1e-6 and abs(final.end - segment.end) < 1e-6


def test_each_utterance_starts_shows_partials_stops_then_finishes(model, talk):
    events = feed(model.stream(), talk)
    for item in range(4):
        started = [i for i, e in enumerate(events) if isinstance(e, SpeechStarted)][item]
        stopped = [i for i, e in enumerate(events) if isinstance(e, SpeechStopped)][item]
        final = next(i for i, e in enumerate(events) if isinstance(e, Final) and e.item == item)
        partials = [i for i, e in enumerate(events) if isinstance(e, Partial) and e.item == item]
        assert partials and started < partials[0] and partials[-1] < stopped < final
        for index in partials:
            partial = events[index]
            assert partial.text.startswith(partial.stable_text)


def test_on_mlx_finals_are_the_mlx_offline_segments(talk):
    pytest.importorskip("mlx.core")
    mlx_model = funasr_nano.load_model("demo", backend="mlx", device="cpu", dtype="float32")
    events = feed(mlx_model.stream(), talk)
    offline = mlx_model.transcribe(talk).segments
    assert [e.text for e in events if isinstance(e, Final)] == [s.text.strip() for s in offline]
    assert any(isinstance(e, Partial) for e in events)


def test_a_token_budget_bounds_every_decode_as_offline(model, talk):
    events = feed(model.stream(max_new_tokens=3), talk)
    offline = model.transcribe(talk, max_new_tokens=3).segments
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.text for f in finals] == [s.text.strip() for s in offline]
    assert all("truncated" in f.flags for f in finals)  # every demo clip says more than three tokens


def test_audio_at_24_khz_gives_the_texts_of_the_same_audio_offline(model, talk):
    audio = np.interp(np.arange(round(talk.size * 1.5)) / 1.5, np.arange(talk.size), talk).astype(np.float32)
    events = feed(model.stream(), audio, rate=24000, chunk_s=0.02)
    offline = model.transcribe(audio, sample_rate=24000).segments
    assert [e.text for e in events if isinstance(e, Final)] == [s.text.strip() for s in offline]


def test_without_vad_the_caller_commits_each_utterance(model, talk):
    stream = model.stream(vad=False)
    clip = talk[: talk.size // 4]
    stream.feed(clip)
    stream.commit()
    first = [e for e in stream.poll() if isinstance(e, Final)]
    stream.feed(clip)
    stream.close()
    second = [e for e in stream.poll() if isinstance(e, Final)]
    assert [f.item for f in first + second] == [0, 1]
    assert first[0].text == second[0].text == model.transcribe(clip, vad=False).text.strip()
    assert (first[0].start, second[0].start) == (0.0, clip.size / 16000)


def test_speech_longer_than_max_utterance_is_ended_at_a_pause_and_goes_on(model, talk):
    speech = talk[round(GAP_S * 16000) :]  # starts with speech at once
    stream = model.stream(max_utterance=3.0)
    events = feed(stream, np.concatenate([speech[:-8000]] * 2))  # ~25 s with 1.5 s pauses
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) >= 8 and all(f.end - f.start <= 3.0 + 0.5 for f in finals)


def test_word_times_of_finals_are_stream_times(model, talk):
    finals = [e for e in feed(model.stream(word_timestamps=True), talk) if isinstance(e, Final)]
    for final in finals:
        assert final.words
        assert final.start - 1e-6 <= final.words[0].start <= final.words[-1].end <= final.end + 1e-6


def test_a_quiet_stream_keeps_only_the_prefix_padding(model):
    stream = model.stream()
    for _ in range(300):  # 30 s of silence
        stream.feed(np.zeros(1600, np.float32))
    assert stream.buffered_seconds <= 0.3 + 0.1
    assert stream.poll() == []


@pytest.mark.parametrize(("samples", "rate", "message"), [
    (np.zeros((2, 1600), np.float32), 16000, "mono"),
    (np.full(1600, np.nan, np.float32), 16000, "NaN"),
    (np.zeros(1600, np.int32), 16000, "int16"),
    (np.zeros(1600, np.float32), 100, "sample_rate"),
])
def test_bad_audio_is_one_clear_error_and_the_stream_goes_on(model, samples, rate, message):
    stream = model.stream()
    with pytest.raises(UsageError, match=message):
        stream.feed(samples, rate)
    stream.feed(np.zeros(1600, np.float32))  # still usable


def test_a_stream_keeps_its_rate_and_ends_once(model):
    stream = model.stream()
    stream.feed(np.zeros(2400, np.float32), 24000)
    with pytest.raises(UsageError, match="24000 Hz"):
        stream.feed(np.zeros(1600, np.float32), 16000)
    stream.close()
    with pytest.raises(UsageError, match="closed"):
        stream.feed(np.zeros(1600, np.float32))


@pytest.mark.parametrize(("text", "stable", "words", "expected"), [
    ("Send the letter to Leah", "Send", 1, "Send the letter to"),
    ("Send the letter to Barbara Chapman.", "Send the letter to", 1, "Send the letter to Barbara"),
    ("Send the letter to Barbara Chapman.", "Send the letter to", 2, "Send the letter to"),
    ("Send the letter to Barbara Chapman.", "Send the letter to", 3, "Send the letter to"),
    ("Send.", "", 1, ""),
    ("Send.", "", 0, "Send."),
    ("我们需要177", "", 1, "我们需要"),  # digits are one word
    ("名称必须美国地址电话支", "名称必须美国地址电话", 1, "名称必须美国地址电话"),
    ("こまかいがくせ", "", 2, "こまかいが"),
])
def test_a_partial_holds_back_the_newest_words_of_its_unstable_tail(text, stable, words, expected):
    from funasr_nano.text.partial import held_back

    assert held_back(text, stable, words) == expected


@pytest.mark.parametrize(("stable", "text", "expected"), [
    ("Send the letter to Barbara C", "Send the letter to Barbara Castillo.", "Send the letter to Barbara"),
    ("Send the letter", "Send the letter to Barbara.", "Send the letter"),
    ("Send the letter to Barbara Castillo.", "Send the letter to Barbara Castillo.",
     "Send the letter to Barbara Castillo."),
    ("我们在", "我们在1977年", "我们在"),
    ("Sen", "Send it.", ""),
    ("other", "Send it.", ""),
])
def test_stable_text_ends_at_a_whole_word(stable, text, expected):
    from funasr_nano.text.partial import whole_words

    assert whole_words(stable, text) == expected


def test_streams_share_the_server_worker_with_the_texts_they_have_alone(model, talk):
    """Two streams fed at once from two threads, their decodes on one worker (beside each other): each
    gets the finals it gets alone."""
    import threading

    from funasr_nano.decoding.live import LiveStream
    from funasr_nano.decoding.live_events import LiveOptions
    from funasr_nano.frontend.endpoint import EndpointOptions
    from funasr_nano.options import TranscribeOptions
    from funasr_nano.serve.worker import Worker, WorkerDecodes

    alone = [e.text for e in feed(model.stream(), talk) if isinstance(e, Final)]
    worker = Worker(model, window_s=0)
    try:
        settings = model.settings(TranscribeOptions())
        streams = [LiveStream(WorkerDecodes(worker), model.tokenizer.decode, settings, LiveOptions(),
                              SpeechDetector(EndpointOptions())) for _ in range(2)]
        results: dict[int, list] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, feed(streams[i], talk)))
                   for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert worker.stats.largest_batch >= 1
    finally:
        worker.close()
    for index in range(2):
        assert [e.text for e in results[index] if isinstance(e, Final)] == alone


def test_listen_plays_a_file_prints_finals_and_saves_subtitles(model, talk, tmp_path, monkeypatch, capsys):
    import funasr_nano.api as api
    from funasr_nano.cli.main import main

    wav, srt = tmp_path / "talk.wav", tmp_path / "talk.srt"
    soundfile.write(wav, talk, 16000, subtype="FLOAT")  # the same samples back
    monkeypatch.setattr(api, "load_model", lambda *args, **kwargs: model)
    assert main(["listen", "--model", "demo", "--file", str(wav), "--fast", "-o", str(srt), "-f", "srt"]) == 0
    texts = [s.text.strip() for s in model.transcribe(talk).segments]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == texts
    cues = srt.read_text(encoding="utf-8").split("\n\n")
    assert [" ".join(cue.splitlines()[2:]) for cue in cues if cue.strip()] == texts  # cues wrap at 42 columns


def test_listen_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys):
    import importlib.util

    from funasr_nano.cli.main import main

    assert main(["listen", "--model", "demo", "--fast"]) == 2
    assert main(["listen", "--model", "demo", "--file", "x.wav", "-o", str(tmp_path)]) == 2
    if importlib.util.find_spec("sounddevice") is None:
        assert main(["listen", "--model", "demo", "--device", "cpu"]) == 2
        assert "sounddevice" in capsys.readouterr().err.splitlines()[-1]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert all("Traceback" not in line for line in errors)


def test_streams_fed_by_the_ingest_thread_get_the_finals_they_get_alone(model, talk):
    """The server's ingest: appends of two streams fed together in rounds (one VAD pass each), decodes on
    the shared worker; each stream's finals are those it gets alone, and a closed stream's append fails
    alone."""
    from concurrent.futures import wait

    from funasr_nano.decoding.live import LiveStream
    from funasr_nano.decoding.live_events import LiveOptions
    from funasr_nano.decoding.live_ingest import Ingest
    from funasr_nano.frontend.endpoint import EndpointOptions
    from funasr_nano.options import TranscribeOptions
    from funasr_nano.serve.worker import Worker, WorkerDecodes

    talks = [talk, talk[GAP_S_SAMPLES:]]
    alone = [[e.text for e in feed(model.stream(), audio) if isinstance(e, Final)] for audio in talks]
    worker, ingest = Worker(model, window_s=0), Ingest()
    try:
        settings = model.settings(TranscribeOptions())
        streams = [LiveStream(WorkerDecodes(worker), model.tokenizer.decode, settings, LiveOptions(),
                              SpeechDetector(EndpointOptions())) for _ in talks]
        closed = model.stream()
        closed.close()
        events: list[list] = [[], []]
        for start in range(0, talk.size, 1600):
            futures = [ingest.feed(stream, audio[start : start + 1600], 16000)
                       for stream, audio in zip(streams, talks, strict=True)]
            refused = ingest.feed(closed, talk[:1600], 16000)
            wait(futures)
            for future in futures:
                future.result()
            with pytest.raises(UsageError, match="closed"):
                refused.result(60)
            for k, stream in enumerate(streams):
                events[k] += stream.poll()
        for k, stream in enumerate(streams):
            stream.close()
            events[k] += stream.poll()
        assert ingest.stats.feeds == 3 * len(range(0, talk.size, 1600))
        assert ingest.stats.largest_round >= 2  # appends that came while a round ran were fed together
    finally:
        ingest.close()
        worker.close()
    for k in range(2):
        assert [e.text for e in events[k] if isinstance(e, Final)] == alone[k]


def test_an_append_cancelled_before_its_round_is_skipped_and_the_ingest_goes_on(model):
    import time

    from funasr_nano.decoding.live_ingest import Ingest

    first, second = model.stream(), model.stream()
    ingest = Ingest()
    try:
        chunk = np.zeros(1600, np.float32)
        with first._lock:  # the ingest thread's round waits on this stream, so the next append queues
            running = ingest.feed(first, chunk, 16000)
            while not running.running():
                time.sleep(0.001)
            cancelled = ingest.feed(second, chunk, 16000)
            assert cancelled.cancel()
        running.result(30)
        ingest.feed(second, chunk, 16000).result(30)
        assert ingest.stats.feeds == 2 and second.heard_seconds == pytest.approx(0.1)
    finally:
        ingest.close()


def test_after_a_partial_that_showed_nothing_the_next_comes_half_an_interval_later(model, talk):
    """Partials are asked every interval (0.5 s of audio), except right after one whose words were all
    held back (0.25 s, here the next 100 ms chunk after it): the first words are what a user waits for."""
    from funasr_nano.decoding.live_decodes import InlineDecodes

    asks: list[tuple[int, float, bool]] = []  # item, stream seconds, whether it had shown text before

    class Logged(InlineDecodes):
        def submit(self, recording, deliver):
            if recording.key[1] == "partial":
                asks.append((stream.open_item, stream.heard_seconds, bool(stream._open.shown)))
            super().submit(recording, deliver)

    stream = model.stream(decodes=Logged(model.scheduler()))
    feed(stream, talk)
    pairs = zip(asks, asks[1:], strict=False)
    gaps = [(round(later - earlier, 2), shown) for (item, earlier, _), (same, later, shown) in pairs if item == same]
    assert (0.3, False) in gaps  # some utterance's first partial was all held back
    assert {gap for gap, shown in gaps if shown} == {0.5}
    assert {gap for gap, shown in gaps if not shown} == {0.3}


def test_a_broken_vad_pass_fails_that_round_s_appends_and_the_ingest_goes_on(model, talk):
    from funasr_nano.decoding.live_ingest import Ingest

    streams = [model.stream(), model.stream()]
    vad = streams[0].detector.vad
    ingest = Ingest()
    try:
        vad.pass_many = lambda passes: (_ for _ in ()).throw(RuntimeError("the GPU fell over"))
        failed = [ingest.feed(s, talk[:16000], 16000) for s in streams]
        for future in failed:
            with pytest.raises(RuntimeError, match="fell over"):
                future.result(30)
        del vad.pass_many
        for future in [ingest.feed(s, talk[16000:32000], 16000) for s in streams]:
            future.result(30)
        assert all(s.detector.frames > 0 for s in streams)
    finally:
        vad.__dict__.pop("pass_many", None)
        ingest.close()
