"""``funasr-nano serve``: which hosts count as loopback (no warning about serving publicly without a key),
options that are not finite and positive, and a graceful shutdown on SIGTERM that finishes the requests
in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
from server_helpers import API_KEY, MAX_NEW_TOKENS, PART_HEAD, answer, direct, post_transcription, start_upload  # noqa: E402

from funasr_nano.cli.serve import is_loopback  # noqa: E402


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


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-audio-s", "nan"),
        ("--max-upload-mb", "inf"),
        ("--read-timeout-s", "0"),
        ("--min-upload-kbps", "-1"),
        ("--batch-window-ms", "-1"),
        ("--encode-interval-s", "nan"),
    ],
)
def test_serve_options_that_are_not_finite_and_positive_are_one_line(option, value, capsys):
    from funasr_nano.cli.main import main

    assert main(["serve", "-m", "/nonexistent/model", option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} must be") and err.count("\n") == 1, err


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
