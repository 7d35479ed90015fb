"""Word timestamps: the official char timestamps of a random official checkpoint with a CTC head (the
official code end to end, torchaudio's kernel replaced by its transcription where torchaudio is
missing), word rules, outputs, borrowing a head, and the demo model's word-timed clips."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from funasr_nano import load_model
from funasr_nano.backends.alignment import Alignment, TokenSpan
from funasr_nano.decoding.words import aligned_words, text_units, token_timestamps
from funasr_nano.errors import ModelLoadError

DATA = Path(__file__).parent / "data" / "word_timed"


def _ours_token_timestamps(model, wav: np.ndarray, text: str) -> list[dict]:
    backend, tokenizer = model.backend, model.ctc_tokenizer
    ids = tokenizer.encode(text)
    with torch.inference_mode():
        _, hidden = backend.model.encode_waveforms_with_ctc([torch.from_numpy(wav)], backend.ctc_head)
        (result,) = backend.ctc_head.run(hidden, [ids])
    return [] if result.alignment is None else token_timestamps(lambda t: tokenizer.decode([t]), ids, result.alignment)


def test_char_timestamps_equal_the_official(official_ctc):
    from oracle.forced_align_reference import torchaudio_forced_align
    from oracle.official_ctc import official_inference
    from oracle.reference import make_wav

    model_dir, am = official_ctc
    ours = load_model(model_dir, device="cpu")
    assert ours.ctc_tokenizer is not None and ours.backend.ctc_head is not None
    compared = 0
    for k, samples in enumerate((16_000, 37_920, 52_800, 126_560)):
        wav = make_wav(samples, 40 + k)
        official = official_inference(am, wav, kernel=torchaudio_forced_align)
        for text_key, stamps_key in (("text", "timestamps"), ("ctc_text", "ctc_timestamps")):
            expected = official[stamps_key]
            got = _ours_token_timestamps(ours, wav.numpy(), official[text_key])
            assert got == expected, (samples, text_key)
            compared += len(expected)
        result = ours.transcribe(wav.numpy(), vad=False, word_timestamps=True, max_new_tokens=12)
        assert result.segments[0].ctc_text == official["ctc_text"]
    assert compared > 20


def test_borrowed_head_and_refusals(official_ctc, official_tiny, tmp_path):
    model_dir, _ = official_ctc
    plain = load_model(official_tiny.model_dir, device="cpu")  # no CTC tensors
    assert plain.word_timestamps_note and "no trained CTC head" in plain.word_timestamps_note
    with pytest.raises(ModelLoadError, match="ctc head .*lacks|ctc head .*shape|do not belong"):
        load_model(official_tiny.model_dir, device="cpu", ctc_head=model_dir)  # config.yaml declares 5 layers
    with pytest.raises(ModelLoadError, match="carries no CTC head"):
        load_model(model_dir, device="cpu", ctc_head=official_tiny.model_dir)
    with pytest.raises(ModelLoadError, match="no such checkpoint"):
        load_model(model_dir, device="cpu", ctc_head=tmp_path / "nothing")
    # A model without a head in its own checkpoint borrows one of the same shapes.
    import shutil

    import yaml

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    state = torch.load(bare / "model.pt", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("ctc")}}, bare / "model.pt")
    assert load_model(bare, device="cpu").ctc_tokenizer is None
    borrowed = load_model(bare, device="cpu", ctc_head=model_dir / "model.pt")
    assert borrowed.ctc_tokenizer is not None
    wav = np.random.default_rng(0).normal(scale=0.1, size=40_000).astype(np.float32)
    own = load_model(model_dir, device="cpu")
    a = own.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=8)
    b = borrowed.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=8)
    assert a.segments[0].words == b.segments[0].words
    config = yaml.safe_load((bare / "config.yaml").read_text())
    del config  # the config is the same; only the checkpoint lacked the head


def test_no_head_says_so_once_and_keeps_proportional_times(official_tiny):
    model = load_model(official_tiny.model_dir, device="cpu")
    wav = np.random.default_rng(1).normal(scale=0.1, size=30_000).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = model.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=6)
        model.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=6)
    assert [str(w.message) for w in caught if "CTC head" in str(w.message)] == [model.word_timestamps_note]
    segment = first.segments[0]
    if segment.words:
        assert segment.words[0].start == pytest.approx(segment.start)
        assert segment.words[-1].end == pytest.approx(segment.end, abs=1e-3)
        assert all(w.probability is None for w in segment.words)


def test_word_rules():
    def words(text: str) -> list[str]:
        return [text[u.start : u.end] for u in text_units(text)]

    assert words("She was born on September 26, 1967.") == ["She", "was", "born", "on", "September", "26,", "1967."]
    assert words("我们在1977年9月8日。") == ["我", "们", "在", "1977", "年", "9", "月", "8", "日。"]
    assert words('"Hello," (well-known) don\'t 3.5!') == ['"Hello,"', "(well-known)", "don't", "3.5!"]


def test_aligned_words_times_and_shared_tokens():
    text = " ab 我们"
    tokens = [b" ab", " 我们".encode()]
    alignment = Alignment([TokenSpan(2, 4, 0.5), TokenSpan(10, 16, 0.9)], 20)
    got = aligned_words(text, tokens, alignment, offset=1.0)
    assert [w.word for w in got] == ["ab", "我", "们"]
    assert got[0].start == pytest.approx(1.0 + 2 * 0.06)  # the leading space takes no frames
    assert got[0].end == pytest.approx(1.0 + 4 * 0.06)
    assert got[1].start == pytest.approx(1.0 + 10 * 0.06) and got[1].end == pytest.approx(1.0 + 13 * 0.06)
    assert got[2].end == pytest.approx(1.0 + 16 * 0.06)
    assert got[1].probability == pytest.approx(0.9)


# Median |start error| bounds (s) per protocol, about 1.7x what the time-trained demo head measures on
# these clips; the plain-CTC head it replaced measured 0.37 and 0.78, and fails them.
WORD_TIME_BOUNDS = {"whole_sentences": 0.25, "word_by_word": 0.55}


@pytest.mark.skipif(not (DATA / "words.json").is_file(), reason="no word-timed clips")
def test_demo_word_timed_clips_are_timed_close_to_the_truth():
    """The demo head's alignment of the spoken transcript against the true word times of espeak-ng
    speech (benchmarks/timestamps.py --make-clips): a time scale or offset bug (frames taken as 10 ms,
    the context padding forgotten) or a head that places its tokens anywhere fails."""
    import soundfile as sf

    from benchmarks.timestamps import reference_words, score

    model = load_model("demo", device="cpu")
    errors: dict[str, list[float]] = {protocol: [] for protocol in WORD_TIME_BOUNDS}
    for item in json.loads((DATA / "words.json").read_text()):
        audio, _ = sf.read(DATA / item["file"], dtype="float32")
        words = reference_words(model, audio, item["sentence"])
        assert [w.start for w in words] == sorted(w.start for w in words)
        errors[item["protocol"]] += [abs(e["start_error"]) for e in score(item, words)]
    for protocol, bound in WORD_TIME_BOUNDS.items():
        assert len(errors[protocol]) >= 10, protocol
        assert float(np.median(errors[protocol])) <= bound, (protocol, float(np.median(errors[protocol])))


@pytest.fixture(scope="module")
def demo_model():
    return load_model("demo", device="cpu")


def test_demo_words_follow_the_segment(demo_model):
    from funasr_nano import demo

    result = demo_model.transcribe(demo.sample("en"), word_timestamps=True)
    segment = result.segments[0]
    assert [w.word for w in segment.words] == segment.text.split()
    assert segment.ctc_text  # the head's greedy transcript
    assert segment.start == segment.words[0].start and segment.end == segment.words[-1].end
    assert all(a.start <= a.end <= b.start + 1e-9 for a, b in zip(segment.words, segment.words[1:], strict=False))
    assert all(0.0 <= w.probability <= 1.0 for w in segment.words)
    plain = demo_model.transcribe(demo.sample("en"))
    assert plain.text == result.text and not plain.segments[0].words


def test_cli_json_words_and_srt_cut_at_words(demo_model, tmp_path, monkeypatch, capsys):
    from funasr_nano import api as pipeline
    from funasr_nano import demo
    from funasr_nano.cli import main as cli
    from funasr_nano.output.formats import render
    from funasr_nano.output.subtitles import CueLimits

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: demo_model)
    assert cli.main(["transcribe", str(demo.sample("en")), "-f", "json", "--word-timestamps", "-q"]) == 0
    document = json.loads(capsys.readouterr().out)
    words = document["segments"][0]["words"]
    assert words and set(words[0]) == {"word", "start", "end", "probability"}
    assert cli.main(["transcribe", str(demo.sample("en")), "-f", "srt", "--max-words-per-line", "2", "-q"]) == 0
    srt = capsys.readouterr().out
    result = demo_model.transcribe(demo.sample("en"), word_timestamps=True)
    assert srt.rstrip("\n") == render(result, "srt", CueLimits(max_words=2)).rstrip("\n")
    cue_lines = [line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit()]
    assert all(len(line.split()) <= 2 for line in cue_lines)
    starts = [w.start for w in result.segments[0].words][::2]
    stamps = [line.split(" --> ")[0] for line in srt.splitlines() if "-->" in line]
    assert [round(s, 3) for s in starts] == [_seconds(t) for t in stamps]
    assert cli.main(["transcribe", str(demo.sample("en")), "-f", "vtt", "--highlight-words", "-q"]) == 0
    vtt = capsys.readouterr().out
    assert vtt.count("<u>") == len(result.segments[0].words)


def _seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.split(":")
    return round(int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", ".")), 3)


def test_server_word_granularity(demo_model):
    from fastapi.testclient import TestClient

    from funasr_nano import demo
    from funasr_nano.serve.app import create_app

    with TestClient(create_app(demo_model)) as http:
        audio = demo.sample("en").read_bytes()
        both = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("en.flac", audio)},
            data={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
        )
        assert both.status_code == 200, both.text
        body = both.json()
        assert body["words"] and set(body["words"][0]) == {"word", "start", "end"} and body["segments"]
        words_only = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("en.flac", audio)},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
        ).json()
        assert "segments" not in words_only and words_only["words"] == body["words"]
        plain = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("en.flac", audio)},
            data={"response_format": "json", "timestamp_granularities[]": "word"},
        )
        assert plain.status_code == 200 and "words" not in plain.json()  # json carries no timestamps
        wrong = http.post(
            "/v1/audio/transcriptions",
            files={"file": ("en.flac", audio)},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "char"},
        )
        assert wrong.status_code == 400
        srt = http.post(
            "/v1/audio/transcriptions", files={"file": ("en.flac", audio)}, data={"response_format": "srt"}
        ).text
        assert srt.split("\n")[1].startswith(f"00:00:0{body['words'][0]['start']:.3f}".replace(".", ",")[:12])
