"""A ``Transcription`` in the shapes of OpenAI's transcription API: json, text, srt, vtt, verbose_json,
the server-sent events of ``stream=true``, and OpenAI's error shape.

Every body is written by a :class:`~funasr_nano.output.formats.ResultWriter`: srt and vtt are the CLI's
files; text, json and verbose_json are OpenAI's own shapes, so they are writers of their own here.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..output.formats import ResultWriter, get_writer
from ..result import Transcription
from ..text.languages import language_code

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
RETRY_AFTER_S = 1  # what a 429 tells the client to wait before trying again


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers

    def body(self) -> dict[str, str | None]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=self.headers)


def busy_error(message: str, code: str) -> APIError:
    """A 429 that OpenAI clients retry after ``Retry-After``."""
    return APIError(429, message, type_="rate_limit_error", code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


def _compression_ratio(text: str) -> float:
    """Whisper's measure: UTF-8 length over zlib-compressed length (high values mean repetition)."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def _usage(result: Transcription) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(result.duration, 3)}


class _Text(ResultWriter):
    """OpenAI's text: the json "text" on one line, not the CLI's txt file (a line per segment)."""

    by_segment = False

    def render(self, result: Transcription) -> str:
        return result.text + "\n"


class _Json(ResultWriter):
    by_segment = False
    media_type = "application/json"

    def document(self, result: Transcription) -> dict[str, Any]:
        return {"text": result.text, "usage": _usage(result)}

    def render(self, result: Transcription) -> str:
        # As starlette's JSONResponse writes it, so the body is what OpenAI clients have always read.
        return json.dumps(self.document(result), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class _VerboseJson(_Json):
    """OpenAI's verbose_json. Greedy decoding: temperature 0. The model reports no log-probabilities
    or speech probability, so those fields are null rather than invented; ``flags`` is ours.
    granularities: OpenAI's ``timestamp_granularities``: "word" adds ``words: [{word, start, end}]``; the
    segments are there unless only "word" was asked for (as OpenAI answers)."""

    def __init__(self, granularities: tuple[str, ...] = ()):
        super().__init__()
        self.granularities = granularities

    def document(self, result: Transcription) -> dict[str, Any]:
        segments = [
            {
                "id": index,
                "seek": int(round(segment.start * 100)),  # Whisper counts seek in 10 ms frames
                "start": round(segment.start, 3),
                "end": round(segment.end, 3),
                "text": segment.text,
                "tokens": segment.tokens,
                "temperature": 0.0,
                "avg_logprob": None,
                "compression_ratio": _compression_ratio(segment.text),
                "no_speech_prob": None,
                "flags": segment.flags,
            }
            for index, segment in enumerate(result.segments)
        ]
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": language_code(result.language),
            "duration": round(result.duration, 3),
            "text": result.text,
        }
        if "word" in self.granularities:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end}
                             for segment in result.segments for w in segment.words]
        if self.granularities != ("word",):
            body["segments"] = segments
        body["usage"] = _usage(result)
        return body


def _writer(response_format: str, granularities: tuple[str, ...]) -> ResultWriter:
    if response_format in ("srt", "vtt"):
        return get_writer(response_format)
    if response_format == "text":
        return _Text()
    if response_format == "json":
        return _Json()
    if response_format == "verbose_json":
        return _VerboseJson(granularities)
    raise ValueError(f"unknown response format {response_format!r}")


def to_response(result: Transcription, response_format: str, granularities: tuple[str, ...] = ()) -> Response:
    """The transcription as the response of one of ``RESPONSE_FORMATS``."""
    writer = _writer(response_format, granularities)
    return Response(writer.render(result), media_type=writer.media_type)


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def sse_stream(items: AsyncIterator[str | Transcription | APIError]) -> StreamingResponse:
    """OpenAI's transcription events: a ``transcript.text.delta`` per new piece of text, then
    ``transcript.text.done`` with the whole text, or an ``error`` event (which the openai client raises)."""

    async def events() -> AsyncIterator[str]:
        async for item in items:
            if isinstance(item, str):
                yield _sse({"type": "transcript.text.delta", "delta": item})
            elif isinstance(item, Transcription):
                yield _sse({"type": "transcript.text.done", "text": item.text})
            else:
                yield _sse({"type": "error", "error": item.body()})

    # X-Accel-Buffering: proxies such as nginx would otherwise hold the events back
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


__all__ = ["APIError", "RESPONSE_FORMATS", "busy_error", "sse_stream", "to_response"]
