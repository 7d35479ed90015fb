"""Raw HTTP: every bad request is a JSON error in OpenAI's shape with the right status, never a 500 —
missing or misplaced files, bad audio, unknown formats and languages, bodies that are not multipart,
uploads over the size or duration limit (chunked and compressed ones included), unknown paths and
methods."""

from __future__ import annotations

import http.client
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
from server_helpers import assert_error, multipart, post_transcription, request, wav_bytes  # noqa: E402


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


def test_a_request_that_is_not_multipart_says_so(base_url):
    for content_type in ("application/json", "text/plain", None):
        status, body = request(base_url + "/v1/audio/transcriptions", b'{"file": "x"}', content_type)
        error = assert_error(status, body, 400, param="file")
        assert "must be multipart/form-data" in error["message"]


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


def test_unknown_path_and_method_are_json_errors(base_url):
    assert_error(*request(base_url + "/v1/audio/nothing"), 404)
    assert_error(*request(base_url + "/v1/audio/transcriptions"), 405)
