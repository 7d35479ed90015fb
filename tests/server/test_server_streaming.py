"""Streamed transcriptions (server-sent events): the deltas add up to the direct text and arrive while the
decode runs, and a client that leaves mid-stream or a failure during a stream frees the request's slot."""

from __future__ import annotations

import http.client
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
from server_helpers import direct, get_json, multipart, post_transcription, running, spied  # noqa: E402

from funasr_nano.serve.config import ServerConfig  # noqa: E402


def test_streaming_sends_the_text_piece_by_piece(client, model, clips):
    stream = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), stream=True)
    events = list(stream)
    deltas: list[str] = []
    expected = direct(model, clips["en"], on_text=deltas.append)
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == expected.text == "".join(e.delta for e in events[:-1]) == "".join(deltas)
    assert len(events) - 1 > sum(1 for s in expected.segments if s.text.strip())  # finer than segments


def test_streamed_text_arrives_while_the_decode_runs_and_equals_the_plain_result(model, clips):
    client_saw_text = threading.Event()
    held = spied(model, hold=client_saw_text)
    config = ServerConfig(max_new_tokens=12, vad=False, batch_window_s=0)
    with running(held, config) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        events = []
        for event in client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), stream=True):
            events.append(event)
            client_saw_text.set()
    assert held.backend.held is True  # the last step waited for the client, which had text already
    plain = model.transcribe(clips["en"], vad=False, max_new_tokens=12)
    assert events[-1].text == plain.text == "".join(e.delta for e in events[:-1])
    assert len(events) > 3  # deltas step by step, then the whole text


def test_a_client_that_leaves_mid_stream_frees_its_slot_once_the_decode_ends(model, clips):
    client_left = threading.Event()
    held = spied(model, hold=client_left)
    with running(held, ServerConfig(max_new_tokens=12, vad=False, batch_window_s=0)) as url:
        body, content_type = multipart({"model": "m", "stream": "true"}, {"file": ("a.wav", clips["en"])})
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        connection.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type})
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        connection.close()  # gone before the rest of the text
        client_left.set()
        deadline = time.monotonic() + 20
        while get_json(url + "/health")["requests_in_progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert post_transcription(url, file=clips["yes"])[0] == 200  # the server carries on


def test_a_failure_during_a_stream_is_an_error_event_and_frees_the_slot(model, clips):
    failing = spied(model, fail_at_step=4)  # after a few tokens have streamed
    with running(failing, ServerConfig(max_new_tokens=12, vad=False, batch_window_s=0)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        stream = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), stream=True)
        with pytest.raises(openai.APIError, match="internal server error: RuntimeError"):
            list(stream)
        assert get_json(url + "/health")["requests_in_progress"] == 0
        assert post_transcription(url, file=clips["yes"])[0] == 200  # the worker carries on
