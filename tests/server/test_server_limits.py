"""The server's guards: the API key, the queue depth (429 with Retry-After), slow and hostile uploads
(read timeouts, a minimum upload rate, a cap on uploads at once), large uploads spooled to disk, and
connections that never finish their headers."""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import soundfile

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
from server_helpers import (  # noqa: E402
    API_KEY,
    MAX_NEW_TOKENS,
    PART_HEAD,
    answer,
    assert_error,
    direct,
    get_json,
    multipart,
    post_transcription,
    request,
    running,
    spied,
    start_upload,
    wait_for,
)

from funasr_nano.api import FunASRNano  # noqa: E402
from funasr_nano.serve.config import ServerConfig  # noqa: E402

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
