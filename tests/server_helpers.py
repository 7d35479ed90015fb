"""Shared pieces of the server tests (tests/server/): the tiny checkpoint served on 127.0.0.1 in a thread
(``running``), the direct transcription a response must equal, raw-HTTP helpers (multipart bodies,
OpenAI-shaped error checks) and uploads that stall part-way. Their fixtures are in tests/server/conftest.py;
tests/test_demo_model.py serves the demo model with ``running`` too.

Only ``running`` needs fastapi and uvicorn (imported when it is called), so importing this module skips
nothing: the test modules skip themselves when the server's extras are missing."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from engines import EngineSpy

from funasr_nano.api import FunASRNano
from funasr_nano.serve.config import ServerConfig

SPEECH = Path(__file__).parent / "data" / "speech.ogg"
MAX_NEW_TOKENS = 4  # random weights never stop on their own; keep every decode short
API_KEY = "test-key-123"


# --- serving and the direct result --------------------------------------------------------------


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@contextlib.contextmanager
def running(model: FunASRNano, config: ServerConfig) -> Iterator[str]:
    """Serve on 127.0.0.1 at a free port (the socket is bound here, so no port race); yields the base URL."""
    from funasr_nano.serve.app import create_app, server_for  # fastapi and uvicorn: the server extra

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


def direct(model: FunASRNano, audio: bytes, **options: Any) -> Any:
    return model.transcribe(audio, max_new_tokens=MAX_NEW_TOKENS, **options)


def spied(model: FunASRNano, **hooks: Any) -> FunASRNano:
    """The same model with its engine behind an EngineSpy (tests/engines.py)."""
    return FunASRNano(model.config, model.tokenizer, EngineSpy(model.backend, **hooks), model.model_dir)


# --- raw HTTP: every error is JSON in OpenAI's shape ------------------------------------------------


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


# --- uploads that stall part-way -------------------------------------------------------------------


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
