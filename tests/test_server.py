"""The OpenAI-compatible server on 127.0.0.1 with the tiny checkpoint: the official ``openai`` client for
every response format and streaming, raw HTTP for every error case, batching across concurrent requests,
and a graceful shutdown of ``funasr-nano serve`` on SIGTERM with a request in flight."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
from engines import EngineSpy  # noqa: E402

from funasr_nano import load_model  # noqa: E402
from funasr_nano.api import FunASRNano  # noqa: E402
from funasr_nano.cli.serve import is_loopback  # noqa: E402
from funasr_nano.output.formats import render  # noqa: E402
from funasr_nano.serve.app import create_app, server_for  # noqa: E402
from funasr_nano.serve.config import ServerConfig  # noqa: E402

SPEECH = Path(__file__).parent / "data" / "speech.ogg"
MAX_NEW_TOKENS = 4  # random weights never stop on their own; keep every decode short
API_KEY = "test-key-123"


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = soundfile.read(SPEECH, dtype="float32")
    assert rate == 16000
    return samples


@pytest.fixture(scope="module")
def clips(speech: np.ndarray) -> dict[str, bytes]:
    """Short speech clips as WAV uploads: English phrases, a Chinese phrase, a single word."""
    return {
        "en": wav_bytes(speech[int(0.5 * 16000) : int(8.0 * 16000)]),
        "zh": wav_bytes(speech[int(16.2 * 16000) : int(22.8 * 16000)]),
        "yes": wav_bytes(speech[int(8.5 * 16000) : int(10.0 * 16000)]),
    }


@pytest.fixture(scope="module")
def model(official_tiny) -> FunASRNano:
    return load_model(official_tiny.model_dir, device="cpu")


@contextlib.contextmanager
def running(model: FunASRNano, config: ServerConfig) -> Iterator[str]:
    """Serve on 127.0.0.1 at a free port (the socket is bound here, so no port race); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = server_for(create_app(model, config), log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture(scope="module")
def base_url(model: FunASRNano) -> Iterator[str]:
    config = ServerConfig(model_name="fun-asr-nano-tiny", max_new_tokens=MAX_NEW_TOKENS, max_audio_s=20.0,
                          max_upload_bytes=2_000_000, batch_window_s=0.3)
    with running(model, config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Any:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def direct(model: FunASRNano, audio: bytes, **options: Any) -> Any:
    return model.transcribe(audio, max_new_tokens=MAX_NEW_TOKENS, **options)


# --- the openai client -------------------------------------------------------------------------------


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


def test_streaming_sends_the_text_piece_by_piece(client, model, clips):
    stream = client.audio.transcriptions.create(model="m", file=("en.wav", clips["en"]), stream=True)
    events = list(stream)
    deltas: list[str] = []
    expected = direct(model, clips["en"], on_text=deltas.append)
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == expected.text == "".join(e.delta for e in events[:-1]) == "".join(deltas)
    assert len(events) - 1 > sum(1 for s in expected.segments if s.text.strip())  # finer than segments


def spied(model: FunASRNano, **hooks: Any) -> FunASRNano:
    """The same model with its engine behind an EngineSpy (tests/engines.py)."""
    return FunASRNano(model.config, model.tokenizer, EngineSpy(model.backend, **hooks), model.model_dir)


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


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["fun-asr-nano-tiny"]


def test_unknown_fields_are_ignored(client, model, clips):
    result = client.audio.transcriptions.create(
        model="m", file=("yes.wav", clips["yes"]), temperature=0.7, timestamp_granularities=["segment"],
        extra_body={"some_future_option": "x"},
    )
    assert result.text == direct(model, clips["yes"]).text


def test_concurrent_requests_decode_together(base_url, client, model, clips):
    """Requests in flight together decode in one batch, with unchanged results."""
    names = ["en", "zh", "yes", "en"]
    before = get_json(base_url + "/health")["batching"]
    with ThreadPoolExecutor(len(names)) as pool:
        texts = list(pool.map(
            lambda n: client.audio.transcriptions.create(model="m", file=(f"{n}.wav", clips[n])).text, names))
    after = get_json(base_url + "/health")["batching"]
    assert texts == [direct(model, clips[n]).text for n in names]
    assert after["requests"] - before["requests"] == len(names)
    assert after["largest_batch"] > 1  # segments of different requests decoded together


def test_requests_join_a_running_decode_with_unchanged_results(model, clips):
    """Requests that arrive mid-decode join it: same texts, streams included."""
    spy = spied(model)
    names = ["en", "zh", "yes", "en", "zh", "yes"]
    with running(spy, ServerConfig(max_new_tokens=12, batch_window_s=0)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)

        def ask(index: int) -> str:
            time.sleep(0.05 * index)  # staggered: most arrive while an earlier request decodes
            name = names[index]
            if index % 2:
                stream = client.audio.transcriptions.create(model="m", file=(f"{name}.wav", clips[name]), stream=True)
                return list(stream)[-1].text
            return client.audio.transcriptions.create(model="m", file=(f"{name}.wav", clips[name])).text

        with ThreadPoolExecutor(len(names)) as pool:
            texts = list(pool.map(ask, range(len(names))))
    expected = [model.transcribe(clips[n], max_new_tokens=12, on_text=(lambda d: None) if i % 2 else None).text
                for i, n in enumerate(names)]
    assert texts == expected
    assert spy.backend.joined > 0  # segments that joined a decode already running


# --- raw HTTP: every error is JSON in OpenAI's shape, never a 500 --------------------------------------


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    for name, (filename, data) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(url: str, body: bytes | None = None, content_type: str | None = None,
            headers: dict[str, str] | None = None, method: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    status, body = request(url)
    assert status == 200
    return json.loads(body)


def post_transcription(base_url: str, fields: dict[str, str] | None = None, file: bytes | None = None,
                       headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    files = {"file": ("audio.wav", file)} if file is not None else {}
    body, content_type = multipart({"model": "m", **(fields or {})}, files)
    return request(base_url + "/v1/audio/transcriptions", body, content_type, headers)


def assert_error(status: int, body: bytes, expected_status: int, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    assert status == expected_status, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_missing_file_is_400(base_url):
    assert_error(*post_transcription(base_url), 400, param="file")


def test_file_sent_as_text_field_is_400(base_url):
    body, content_type = multipart({"model": "m", "file": "not a file"}, {})
    assert_error(*request(base_url + "/v1/audio/transcriptions", body, content_type), 400, param="file")


@pytest.mark.parametrize("payload", [b"", b"this is not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt "])
@pytest.mark.parametrize("stream", ["false", "true"])
def test_bad_audio_is_400(base_url, payload, stream):
    assert_error(*post_transcription(base_url, {"stream": stream}, file=payload), 400, code="invalid_audio",
                 param="file")


def test_unsupported_response_format_is_400(base_url, clips):
    assert_error(*post_transcription(base_url, {"response_format": "docx"}, clips["yes"]), 400,
                 param="response_format")


def test_unknown_language_is_400(base_url, clips):
    assert_error(*post_transcription(base_url, {"language": "klingon"}, clips["yes"]), 400, param="language")


def test_not_multipart_is_400(base_url):
    status, body = request(base_url + "/v1/audio/transcriptions", b'{"file": "x"}', "application/json")
    assert_error(status, body, 400, param="file")
    status, body = request(base_url + "/v1/audio/transcriptions", b"--broken\r\n\r\n",
                           "multipart/form-data; boundary=broken")
    assert_error(status, body, 400)


def test_upload_over_the_size_limit_is_413(base_url):
    big = b"\x00" * 2_100_000
    assert_error(*post_transcription(base_url, file=big), 413, code="file_too_large")


def test_chunked_upload_over_the_size_limit_is_413(base_url):
    """Without a Content-Length the limit is enforced while the body streams in."""
    body, content_type = multipart({"model": "m"}, {"file": ("a.wav", b"\x00" * 2_100_000)})
    port = int(base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        connection.request("POST", "/v1/audio/transcriptions", body=chunks,
                           headers={"Content-Type": content_type}, encode_chunked=True)
        response = connection.getresponse()
        assert_error(response.status, response.read(), 413, code="file_too_large")
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server dropped the connection instead of answering 413")
    finally:
        connection.close()


def test_audio_over_the_duration_limit_is_413(base_url, speech):
    long_clip = wav_bytes(speech[: 21 * 16000])  # the server allows 20 s
    assert_error(*post_transcription(base_url, file=long_clip), 413, code="audio_too_long", param="file")


def test_unknown_path_and_method_are_json_errors(base_url):
    assert_error(*request(base_url + "/v1/audio/nothing"), 404)
    assert_error(*request(base_url + "/v1/audio/transcriptions"), 405)


def test_health(base_url):
    health = get_json(base_url + "/health")
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert health["batching"]["steps"] >= 0 and health["batching"]["requests"] >= 0


# --- API key -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_url(model: FunASRNano) -> Iterator[str]:
    with running(model, ServerConfig(api_key=API_KEY, max_new_tokens=MAX_NEW_TOKENS)) as url:
        yield url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                                     {"Authorization": "Basic " + API_KEY}])
def test_missing_or_wrong_api_key_is_401(keyed_url, clips, headers):
    status, body = post_transcription(keyed_url, file=clips["yes"], headers=headers)
    assert_error(status, body, 401, code="invalid_api_key")
    assert_error(*request(keyed_url + "/v1/models", headers=headers), 401, code="invalid_api_key")


def test_right_api_key_is_accepted(keyed_url, model, clips):
    good = openai.OpenAI(base_url=keyed_url + "/v1", api_key=API_KEY, max_retries=0)
    assert good.audio.transcriptions.create(model="m", file=("a.wav", clips["yes"])).text == \
        direct(model, clips["yes"]).text
    bad = openai.OpenAI(base_url=keyed_url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(model="m", file=("a.wav", clips["yes"]))
    assert request(keyed_url + "/health")[0] == 200  # health checks need no key


# --- queue depth -----------------------------------------------------------------------------------------


def test_queue_full_is_429(model, clips):
    gate = threading.Event()
    gated = spied(model, gate=gate)
    with running(gated, ServerConfig(max_queue=2, max_new_tokens=MAX_NEW_TOKENS, batch_window_s=0)) as url, \
            ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post_transcription, url, None, clips["yes"]) for _ in range(2)]
        deadline = time.monotonic() + 20
        while get_json(url + "/health")["requests_in_progress"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        body, content_type = multipart({"model": "m"}, {"file": ("a.wav", clips["yes"])})
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        connection.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type})
        response = connection.getresponse()
        error = assert_error(response.status, response.read(), 429, code="queue_full")
        assert error["type"] == "rate_limit_error" and response.getheader("Retry-After") == "1"
        connection.close()
        gate.set()
        assert [f.result()[0] for f in held] == [200, 200]
        assert post_transcription(url, file=clips["yes"])[0] == 200


# --- slow and hostile uploads -------------------------------------------------------------------------------


PART_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


def start_upload(port: int, sent: bytes, declared_length: int = 100_000, key: str | None = None) -> socket.socket:
    """A raw upload whose headers promise ``declared_length`` bytes of body, of which ``sent`` are sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nContent-Length: {declared_length}\r\n"
            f"{auth}Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    sock.sendall(head.encode() + sent)
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and headers the server sends back; the socket is closed after."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    sock.close()
    head = data.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ", 2)[1]), head


def wait_for(url: str, key: str, value: int) -> None:
    deadline = time.monotonic() + 20
    while get_json(url + "/health")[key] != value:
        assert time.monotonic() < deadline, (key, value)
        time.sleep(0.02)


def test_slow_uploads_hold_no_queue_place_and_are_dropped(model, clips):
    config = ServerConfig(max_queue=1, max_uploads=3, read_timeout_s=1.0, min_upload_bytes_per_s=2000,
                          max_new_tokens=MAX_NEW_TOKENS, batch_window_s=0)
    with running(model, config) as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        stalled = start_upload(port, PART_HEAD)  # then nothing
        trickling = start_upload(port, PART_HEAD)
        wait_for(url, "uploads_in_progress", 2)

        def trickle() -> None:  # a byte every 0.2 s: never silent for a read timeout, far below 2000 B/s
            with contextlib.suppress(OSError):
                for _ in range(40):
                    time.sleep(0.2)
                    trickling.sendall(b"\x00")

        threading.Thread(target=trickle, daemon=True).start()
        # With --max-queue 1 both would have taken the only place; now a whole request still gets in.
        assert post_transcription(url, file=clips["yes"])[0] == 200
        assert answer(stalled)[0] == 408
        assert answer(trickling)[0] == 408
        assert time.monotonic() - started < 6
        health = get_json(url + "/health")
        assert health["uploads_in_progress"] == 0 and health["requests_in_progress"] == 0


def test_too_many_uploads_at_once_is_429_with_retry_after(model, clips):
    config = ServerConfig(max_uploads=2, read_timeout_s=20, max_new_tokens=MAX_NEW_TOKENS, batch_window_s=0)
    with running(model, config) as url:
        port = int(url.rsplit(":", 1)[1])
        held = [start_upload(port, PART_HEAD) for _ in range(2)]
        wait_for(url, "uploads_in_progress", 2)
        status, body = post_transcription(url, file=clips["yes"])
        assert assert_error(status, body, 429, code="too_many_uploads")["type"] == "rate_limit_error"
        body, content_type = multipart({"model": "m"}, {"file": ("a.wav", clips["yes"])})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type})
        response = connection.getresponse()
        assert response.status == 429 and response.getheader("Retry-After") == "1"
        connection.close()
        assert get_json(url + "/health")["status"] == "ok"  # requests without a body are not uploads
        for sock in held:
            sock.close()
        wait_for(url, "uploads_in_progress", 0)
        assert post_transcription(url, file=clips["yes"])[0] == 200


def test_large_uploads_are_spooled_to_a_temporary_file_removed_afterwards(base_url, speech, monkeypatch):
    import funasr_nano.serve.service as service

    seen: list[Any] = []
    scan_audio = service.scan_audio  # the upload's first pass (in chunks); its second reads the same file

    def recording(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((source, getattr(source, "_rolled", None), isinstance(source, (bytes, bytearray))))
        return scan_audio(source, *args, **kwargs)

    monkeypatch.setattr(service, "scan_audio", recording)
    clip = speech[: 8 * 16000]
    stereo_48k = np.repeat(np.stack([clip, 0.5 * clip], axis=1), 3, axis=0)  # 8 s, 1.5 MB as 16-bit WAV
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo_48k, 48000, format="WAV", subtype="PCM_16")
    assert buffer.tell() > 1_400_000
    assert post_transcription(base_url, file=buffer.getvalue())[0] == 200
    (source, rolled, as_bytes), = seen
    assert rolled is True and not as_bytes  # on disk, not held in memory
    assert source.closed  # and gone once the request ended


def test_compressed_uploads_over_the_duration_limit_are_refused_quickly(base_url, speech, tmp_path):
    pytest.importorskip("av")
    from test_audio import encode

    minute = np.tile(speech[: 16000 * 10], 6) * 0.5
    for container, codec in (("webm", "libopus"), ("adts", "aac")):  # adts declares no duration
        path = tmp_path / f"long.{container}"
        encode(path, container, codec, np.repeat(minute, 3) if codec == "libopus" else minute,
               48000 if codec == "libopus" else 16000)
        started = time.monotonic()
        status, body = post_transcription(base_url, file=path.read_bytes())
        assert_error(status, body, 413, code="audio_too_long", param="file")  # the server allows 20 s
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("127.255.0.9", True),
                                                ("localhost", True), ("::1", True), ("[::1]", True),
                                                ("::ffff:127.0.0.1", True), ("0.0.0.0", False),
                                                ("192.168.1.5", False), ("::", False), ("example.com", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_serving_on_127_0_0_2_without_a_key_gives_no_public_warning(model, monkeypatch, capsys):
    import funasr_nano.api as pipeline
    import funasr_nano.serve.app as server
    from funasr_nano.cli import serve
    from funasr_nano.cli.main import parser

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: model)
    monkeypatch.setattr(server, "run_server", lambda *a, **k: None)
    for host, warned in (("127.0.0.2", False), ("0.0.0.0", True)):
        assert serve.run(parser().parse_args(["serve", "--host", host])) == 0
        assert ("warning: serving on" in capsys.readouterr().err) is warned


# --- the CLI: funasr-nano serve, graceful shutdown ---------------------------------------------------------


def test_serve_cli_finishes_in_flight_requests_on_sigterm(official_tiny, model, clips):
    command = [sys.executable, "-m", "funasr_nano.cli.main", "serve", "--model", str(official_tiny.model_dir),
               "--device", "cpu", "--port", "0", "--max-new-tokens", str(MAX_NEW_TOKENS),
               "--batch-window-ms", "1500", "--api-key", API_KEY, "--read-timeout-s", "120"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        port = None
        log: list[str] = []
        deadline = time.monotonic() + 40
        while port is None:
            assert time.monotonic() < deadline, "".join(log)
            line = process.stderr.readline()
            assert line or process.poll() is None, "".join(log)
            log.append(line)
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        stalled = start_upload(port, PART_HEAD, key=API_KEY)  # it would hold the shutdown for 120 s
        with ThreadPoolExecutor(2) as pool:
            in_flight = pool.submit(post_transcription, url, None, clips["yes"], headers)
            streaming = pool.submit(post_transcription, url, {"stream": "true"}, clips["yes"], headers)
            time.sleep(0.5)  # the requests now wait in the 1.5 s batch window
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status, body = in_flight.result(timeout=30)
            stream_status, events = streaming.result(timeout=30)
        assert answer(stalled)[0] == 503  # cut off at once: it had not been admitted
        expected = direct(model, clips["yes"]).text
        assert status == 200 and json.loads(body)["text"] == expected
        assert stream_status == 200  # the stream, too, runs to its end
        done = json.loads(events.decode().strip().split("\n\n")[-1].removeprefix("data: "))
        streamed = direct(model, clips["yes"], on_text=lambda piece: None)
        assert done == {"type": "transcript.text.done", "text": streamed.text}
        # uvicorn re-raises the signal once it has shut down cleanly, as process supervisors expect
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < 15  # bounded by the decodes, not by the slow upload
        log.append(process.stderr.read())
        assert "Application shutdown complete" in "".join(log), "".join(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_connections_that_never_finish_their_headers_are_closed(model, clips):
    config = ServerConfig(read_timeout_s=1.0, max_new_tokens=MAX_NEW_TOKENS, batch_window_s=0)
    with running(model, config) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)  # connects, sends nothing
        trickling = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickling.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n")
        keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        keep_alive.request("GET", "/health")
        assert keep_alive.getresponse().read()  # then idle on a kept-alive connection
        started = time.monotonic()

        def closed(sock: socket.socket) -> bool:
            try:
                while time.monotonic() - started < 6:
                    if sock is trickling:
                        sock.sendall(b"X-Slow: 1\r\n")  # a header line at a time: never idle for long
                    sock.settimeout(0.2)
                    with contextlib.suppress(TimeoutError):
                        if sock.recv(1) == b"":
                            return True
                return False
            except OSError:
                return True

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(closed, [silent, trickling])) == [True, True]
        assert time.monotonic() - started < 4
        assert keep_alive.sock is None or keep_alive.sock.recv(1) == b""
        assert post_transcription(url, file=clips["yes"])[0] == 200  # a prompt client is unaffected
        for sock in (silent, trickling):
            sock.close()


def test_a_request_that_is_not_multipart_says_so(base_url):
    for content_type in ("application/json", "text/plain", None):
        status, body = request(base_url + "/v1/audio/transcriptions", b'{"file": "x"}', content_type)
        error = assert_error(status, body, 400, param="file")
        assert "must be multipart/form-data" in error["message"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-audio-s", "nan"),
        ("--max-upload-mb", "inf"),
        ("--read-timeout-s", "0"),
        ("--min-upload-kbps", "-1"),
        ("--batch-window-ms", "-1"),
    ],
)
def test_serve_options_that_are_not_finite_and_positive_are_one_line(option, value, capsys):
    from funasr_nano.cli.main import main

    assert main(["serve", "-m", "/nonexistent/model", option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} must be") and err.count("\n") == 1, err
