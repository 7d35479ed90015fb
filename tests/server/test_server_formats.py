"""The OpenAI-compatible server through the official ``openai`` client: every response format gives the
text of a direct transcription (json, text, verbose_json with timed segments, srt, vtt), the request's
language and prompt reach the model, unknown fields are ignored, and the models list and health
endpoints answer."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
from server_helpers import direct, get_json  # noqa: E402

from funasr_nano.output.formats import render  # noqa: E402


def test_json_matches_direct_transcription(client, model, clips):
    result = client.audio.transcriptions.create(model="whisper-1", file=("en.wav", clips["en"]))
    expected = direct(model, clips["en"])
    assert expected.text.strip()
    assert result.text == expected.text
    assert result.usage.seconds == pytest.approx(expected.duration, abs=1e-3)


def test_language_and_prompt_reach_the_model(client, model, clips):
    result = client.audio.transcriptions.create(model="m", file=("zh.wav", clips["zh"]), language="zh",
                                                prompt="开放时间, Fun-ASR")
    expected = direct(model, clips["zh"], language="zh", hotwords="开放时间, Fun-ASR")
    assert result.text == expected.text
    # the prompt changes the model's input, so (with these random weights) its output
    assert expected.text != direct(model, clips["zh"], language="zh").text


def test_text_format(client, model, clips):
    text = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), response_format="text")
    assert text == direct(model, clips["en"]).text + "\n"  # the json text, as OpenAI's text format


def test_verbose_json_has_timed_segments(client, model, clips):
    result = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]),
                                                response_format="verbose_json", language="en")
    expected = direct(model, clips["en"], language="en")
    assert result.text == expected.text
    assert result.language == "en"
    assert result.duration == pytest.approx(expected.duration, abs=1e-3)
    assert [s.text for s in result.segments] == [s.text for s in expected.segments]
    assert [s.tokens for s in result.segments] == [s.tokens for s in expected.segments]
    for index, (got, want) in enumerate(zip(result.segments, expected.segments, strict=True)):
        assert got.id == index
        assert got.start == pytest.approx(want.start, abs=1e-3)
        assert got.end == pytest.approx(want.end, abs=1e-3)
        assert 0 <= got.start < got.end <= result.duration + 1e-3
        assert got.temperature == 0.0


def test_srt_format(client, model, clips):
    srt = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), response_format="srt")
    assert srt == render(direct(model, clips["en"]), "srt")
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt)


def test_vtt_format(client, model, clips):
    vtt = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), response_format="vtt")
    assert vtt == render(direct(model, clips["en"]), "vtt")
    assert vtt.startswith("WEBVTT")
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", vtt)


def test_unknown_fields_are_ignored(client, model, clips):
    result = client.audio.transcriptions.create(
        model="m", file=("yes.wav", clips["yes"]), temperature=0.7, timestamp_granularities=["segment"],
        extra_body={"some_future_option": "x"},
    )
    assert result.text == direct(model, clips["yes"]).text


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["fun-asr-nano-tiny"]


def test_health(base_url):
    health = get_json(base_url + "/health")
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert health["batching"]["steps"] >= 0 and health["batching"]["requests"] >= 0
