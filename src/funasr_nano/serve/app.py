"""OpenAI-compatible HTTP server: ``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``GET /health``.

Requests run in a thread pool (audio decoding and segmentation are per request); their segments meet
in one :class:`~funasr_nano.serve.batching.BatchingBackend`, whose single worker thread owns the model and
decodes the segments of requests that arrive together in one batch. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients raise the matching exception.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import ipaddress
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api import FunASRNano
from ..decoding.longform import ScannedAudio, scan_audio
from ..decoding.streaming import TextCallback
from ..errors import AudioError, AudioTooLongError, UsageError
from ..frontend.audio import load_audio
from ..frontend.vad import VadOptions
from ..result import Transcription
from ..text.languages import resolve_language
from .batching import BatcherClosedError, BatchingBackend
from .openai import RESPONSE_FORMATS, APIError, sse_stream, to_response

log = logging.getLogger("funasr_nano.serve.app")

_TRUE = {"1", "true", "yes", "on"}
MAX_PROMPT_CHARS = 4000  # hotwords/context; far beyond any useful prompt, bounds the prompt length


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "fun-asr-nano"  # the id /v1/models lists; any requested `model` is accepted
    api_key: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's own limit
    max_audio_s: float = 3600.0
    max_queue: int = 64  # requests admitted at once (uploaded, waiting or decoding); more get 429
    max_uploads: int = 64  # request bodies arriving at once; more get 429
    read_timeout_s: float = 30.0  # an upload that sends nothing for this long gets 408
    min_upload_bytes_per_s: float = 8000.0  # ...and one slower than this, after its first read_timeout_s
    max_new_tokens: int | None = None  # per segment; None derives it from the segment duration
    batch_window_s: float = 0.01
    batch_segments: int = 32
    vad: bool = True  # False decodes each upload as one segment, as the official model does
    resampler: str = "torchaudio"  # how uploads at other rates reach 16 kHz (see resample.py)


RETRY_AFTER_S = 1  # what a 429 tells the client to wait before trying again


def _busy(message: str, code: str) -> APIError:
    return APIError(429, message, type_="rate_limit_error", code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (
        length is not None and length.strip() not in (b"", b"0"))


class _Body:
    """One request's body as it arrives: counted against the size limit, timed against the read timeout
    and the minimum rate, and cut off when the server shuts down. Any of those ends the body for the app
    (an ``http.disconnect``) and records the error that replaces the app's answer."""

    def __init__(self, guard: UploadGuard, receive: Receive):
        self.guard, self.raw_receive = guard, receive
        self.started = asyncio.get_running_loop().time()
        self.received = 0
        self.complete = False
        self.error: APIError | None = None
        guard.service.uploading += 1
        self.counted = True

    def release(self) -> None:
        """Give back the upload's place (once): its body is complete, or it was refused."""
        if self.counted:
            self.guard.service.uploading -= 1
            self.counted = False

    def _wait_s(self) -> float:
        """How long the next piece of the body may take: the read timeout, or less where the upload has
        fallen behind the minimum rate (which applies after the first read timeout)."""
        guard = self.guard
        behind = self.started + guard.read_timeout_s + self.received / guard.min_rate
        now = asyncio.get_running_loop().time()
        return max(0.0, min(guard.read_timeout_s, behind - now))

    async def _next(self) -> Message | None:
        """The next message, or None once the wait ran out or the server began to shut down."""
        receiving = asyncio.ensure_future(self.raw_receive())
        stopping = asyncio.ensure_future(self.guard.service.stopping.wait())
        done, _ = await asyncio.wait({receiving, stopping}, timeout=self._wait_s(),
                                     return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if receiving in done:
            return receiving.result()
        receiving.cancel()
        if stopping in done:
            self.error = APIError(503, "the server is shutting down: send the request again later",
                                  type_="server_error", code="shutting_down")
        else:
            self.error = APIError(408, f"the upload was too slow (at least {self.guard.min_rate:g} bytes/s, "
                                       f"and a pause of at most {self.guard.read_timeout_s:g} s)",
                                  code="upload_timeout")
        return None

    async def receive(self) -> Message:
        if self.complete or self.error is not None:
            return await self.raw_receive() if self.error is None else {"type": "http.disconnect"}
        message = await self._next()
        if message is None:
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.guard.max_bytes:
                self.error = self.guard.too_large()
                return {"type": "http.disconnect"}  # ends the body for the parser
        else:
            self.complete = True
        if self.complete:
            self.release()
        return message

    async def drain(self) -> None:
        """Read and drop the rest (up to a bound), so clients that send the whole body before reading the
        answer (urllib) see it rather than a broken pipe; within the same time limits."""
        drained = 0
        while not self.complete and drained <= self.guard.drain_bytes:
            message = await self._next()
            if message is None or message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)


class UploadGuard:
    """ASGI middleware for request bodies: 413 for bodies over ``max_bytes`` (Content-Length is checked
    first, then bytes are counted as they arrive, so an oversized upload is refused before it is
    spooled), 429 when ``max_uploads`` bodies are already arriving, 408 for an upload that pauses longer
    than ``read_timeout_s`` or, after that long, arrives slower than ``min_rate`` bytes/s, and 503 for
    an upload still arriving when the server shuts down. A request counts as an upload from its start
    until its body is complete; only then can it take a place in the queue (see ``_Service.admit``)."""

    def __init__(self, app: ASGIApp, service: _Service):
        self.app, self.service = app, service
        config = service.config
        self.max_bytes, self.max_uploads = config.max_upload_bytes, config.max_uploads
        self.read_timeout_s, self.min_rate = config.read_timeout_s, config.min_upload_bytes_per_s
        self.drain_bytes = 4 * self.max_bytes

    def too_large(self) -> APIError:
        return APIError(413, f"the upload is larger than the server's limit of {self.max_bytes} bytes",
                        code="file_too_large", param="file")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        if scope["type"] != "http" or not _has_body(headers):
            await self.app(scope, receive, send)
            return
        body = _Body(self, receive)
        length = headers.get(b"content-length", b"")
        if self.service.uploading > self.max_uploads:
            body.error = _busy(f"the server is busy ({self.max_uploads} uploads arriving): retry shortly",
                               "too_many_uploads")
        elif length.isdigit() and int(length) > self.max_bytes:
            body.error = self.too_large()
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.error is None:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            if body.error is None:
                try:
                    await self.app(scope, body.receive, guarded_send)
                except Exception:
                    if body.error is None:
                        raise
            if body.error is not None and not started:
                body.release()  # a refused upload takes no place while the rest is drained
                if body.error.status in (413, 429):
                    await body.drain()
                response = body.error.response()
                response.headers["Connection"] = "close"  # what is left of the body is not read
                await response(scope, receive, send)
        finally:
            body.release()


def _check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


def _form_text(form: Any, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if isinstance(value, UploadFile):
        raise APIError(400, f"'{name}' must be a text field, not a file", param=name)
    return value


class _Service:
    """The per-app state: the batcher, the request threads and the admission counter."""

    def __init__(self, model: FunASRNano, config: ServerConfig):
        self.config = config
        self.base_model = model
        self.batcher: BatchingBackend | None = None
        self.model: FunASRNano | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.active = 0
        self.served = 0
        self.started = time.time()
        self.uploading = 0  # request bodies still arriving (UploadGuard counts them)
        self.stopping = asyncio.Event()  # set when the server begins to shut down

    def start(self) -> None:
        self.batcher = BatchingBackend(self.base_model.backend, self.config.batch_window_s,
                                       self.config.batch_segments)
        # A shallow copy shares weights, tokenizer and VAD; only its backend is the shared batcher.
        self.model = copy.copy(self.base_model)
        self.model.backend = self.batcher
        self.pool = ThreadPoolExecutor(self.config.max_queue, thread_name_prefix="funasr-nano-request")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.close()

    def load(self, upload: IO[bytes]) -> np.ndarray | ScannedAudio:
        """The upload read once: with VAD, in chunks, keeping only the speech found (its segments' audio
        is read again as they are decoded, so the upload stays open until then); without, its samples.
        Audio over the duration limit is refused from its header or as soon as decoding passes the limit
        (AudioTooLongError, a 413). Blocking (a request thread)."""
        if self.config.vad:
            assert self.model is not None
            return scan_audio(upload, VadOptions(), self.config.resampler, self.model.backend.device,
                              self.config.max_audio_s)
        return load_audio(upload, resampler=self.config.resampler, max_seconds=self.config.max_audio_s)

    def transcribe(self, audio: np.ndarray | ScannedAudio, language: str | None, prompt: str | None,
                   on_text: TextCallback | None = None, word_timestamps: bool = False) -> Transcription:
        """Blocking; runs in a request thread."""
        assert self.model is not None
        return self.model.transcribe(audio, language=language, hotwords=prompt, on_text=on_text,
                                     max_new_tokens=self.config.max_new_tokens, vad=self.config.vad,
                                     word_timestamps=word_timestamps)

    def admit(self) -> None:
        """Take a place in the queue; only requests whose upload is complete ask for one."""
        if self.active >= self.config.max_queue:
            raise _busy(f"the server is busy ({self.active} requests in progress): retry shortly", "queue_full")
        self.active += 1

    def release(self) -> None:
        self.active -= 1


async def _read_form(request: Request) -> tuple[Any, UploadFile, dict[str, str | None]]:
    """The parsed form, its upload (spooled to a temporary file past 1 MB) and the text fields this
    server uses; other fields are ignored. The caller closes the form, which removes the file."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "multipart/form-data":
        shown = content_type.partition(";")[0].strip()[:80] or "none"
        raise APIError(400, f"the request must be multipart/form-data with the audio in its 'file' field "
                            f"(Content-Type: {shown})", param="file")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except StarletteHTTPException as exc:
        raise APIError(400, f"malformed multipart body: {exc.detail}") from exc
    except ClientDisconnect as exc:  # also how UploadGuard stops a body: it answers with its own error then
        raise APIError(400, "the request body ended early") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "the 'file' field with the audio is required (multipart/form-data)",
                           param="file")
        names = ("response_format", "stream", "prompt", "language")
        fields = {name: _form_text(form, name) for name in names}
        granularities = [*form.getlist("timestamp_granularities[]"), *form.getlist("timestamp_granularities")]
        if any(isinstance(g, UploadFile) for g in granularities):
            raise APIError(400, "'timestamp_granularities[]' must be text fields", param="timestamp_granularities")
        fields["timestamp_granularities"] = ",".join(str(g) for g in granularities) or None
        return form, upload, fields
    except BaseException:
        await form.close()
        raise


TIMESTAMP_GRANULARITIES = ("word", "segment")


def _granularities(value: str | None, response_format: str) -> tuple[str, ...]:
    """OpenAI's ``timestamp_granularities[]``: word and/or segment, for verbose_json (or srt/vtt, which
    then cut their cues at word times); an unknown granularity is a 400."""
    chosen = tuple(dict.fromkeys(g.strip().lower() for g in (value or "").split(",") if g.strip()))
    unknown = [g for g in chosen if g not in TIMESTAMP_GRANULARITIES]
    if unknown:
        raise APIError(400, f"unsupported timestamp granularity {unknown[0]!r}: use word and/or segment",
                       param="timestamp_granularities")
    # json and text carry no timestamps: the granularities are ignored there (decoding no words)
    return chosen if response_format in ("verbose_json", "srt", "vtt") else ()


def _options(fields: dict[str, str | None], service: _Service) -> tuple[str, bool, tuple[str, ...]]:
    """The response format, whether to stream and the timestamp granularities; prompt and language checked."""
    response_format = (fields["response_format"] or "json").strip().lower()
    if response_format not in RESPONSE_FORMATS:
        raise APIError(400, f"unsupported response_format {response_format!r}: use one of "
                            + ", ".join(RESPONSE_FORMATS), param="response_format")
    granularities = _granularities(fields.get("timestamp_granularities"), response_format)
    prompt = fields["prompt"]
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise APIError(400, f"the prompt is longer than {MAX_PROMPT_CHARS} characters", param="prompt")
    try:
        resolve_language(fields["language"], service.base_model.languages)  # before decoding any audio
    except UsageError as exc:
        raise APIError(400, str(exc), param="language", code="unsupported_language") from exc
    return response_format, (fields["stream"] or "").strip().lower() in _TRUE, granularities


async def _transcription(request: Request, service: _Service) -> Response:
    """Read the whole upload, then take a place in the queue, decode, answer. The spooled upload is
    removed once its decoding has ended (it is read again as its segments are decoded)."""
    loop = asyncio.get_running_loop()
    form, upload, fields = await _read_form(request)
    streaming = False
    try:
        response_format, stream, granularities = _options(fields, service)
        service.admit()  # the whole upload is here: only now does it take a place in the queue
        try:
            with _user_errors():
                audio = await loop.run_in_executor(service.pool, service.load, upload.file)
        except BaseException:
            service.release()
            raise
        try:
            language, prompt = fields["language"], fields["prompt"]
            if stream:
                streaming = True
                return _stream(service, audio, language, prompt, upload.file.close)
            # Subtitles are cut at word times whenever the model has a CTC head to time them.
            words = "word" in granularities or (response_format in ("srt", "vtt")
                                                and service.base_model.ctc_tokenizer is not None)
            with _user_errors():
                result = await loop.run_in_executor(service.pool, service.transcribe, audio, language, prompt,
                                                    None, words)
        finally:
            service.release()
    finally:
        if not streaming:
            await form.close()  # removes the spooled upload
    service.served += 1
    return to_response(result, response_format, granularities)


def _as_api_error(exc: BaseException) -> APIError | None:
    """The response for an error the pipeline raised about the user's input (or a shutdown), if it is one."""
    if isinstance(exc, AudioTooLongError):
        return APIError(413, f"{exc} (--max-audio-s)", code="audio_too_long", param="file")
    if isinstance(exc, AudioError):
        return APIError(400, str(exc), param="file", code="invalid_audio")
    if isinstance(exc, UsageError):
        return APIError(400, str(exc))
    if isinstance(exc, BatcherClosedError):
        return APIError(503, str(exc), type_="server_error", code="shutting_down")
    return None


@contextmanager
def _user_errors() -> Iterator[None]:
    """The pipeline's errors as OpenAI-shaped responses: the user's input is never a 500."""
    try:
        yield
    except Exception as exc:
        error = _as_api_error(exc)
        if error is None:
            raise
        raise error from exc


def _stream(service: _Service, audio: np.ndarray | ScannedAudio, language: str | None, prompt: str | None,
            close_upload: Callable[[], None]) -> Response:
    """Server-sent events of the text as it is decoded: the decode runs in a request thread and hands
    each new piece of text to the event loop, which sends it as a ``transcript.text.delta`` event.

    The request keeps its admission slot until its decode ends, even if the client goes away first.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[str | Transcription | BaseException] = asyncio.Queue()

    def put(item: str | Transcription | BaseException) -> None:
        with suppress(RuntimeError):  # the event loop has closed: nobody is listening any more
            loop.call_soon_threadsafe(events.put_nowait, item)

    def decode() -> None:
        try:
            put(service.transcribe(audio, language, prompt, on_text=put))
        except BaseException as exc:  # handed to the event loop, which reports it in the stream
            put(exc)
        finally:
            close_upload()  # removes the spooled upload

    service.active += 1  # a second hold on the request's slot, kept until the decode ends
    decoding = loop.run_in_executor(service.pool, decode)
    decoding.add_done_callback(lambda _: service.release())
    return sse_stream(_stream_items(events, service))


async def _stream_items(
    events: asyncio.Queue[str | Transcription | BaseException], service: _Service
) -> AsyncIterator[str | Transcription | APIError]:
    while True:
        item = await events.get()
        if isinstance(item, BaseException):
            error = _as_api_error(item)
            if error is None:
                log.error("streamed transcription failed", exc_info=item)
                error = APIError(500, f"internal server error: {type(item).__name__}", type_="server_error")
            yield error
            return
        if isinstance(item, Transcription):
            service.served += 1
            yield item
            return
        yield item


def create_app(model: FunASRNano, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``model``; the batcher and request threads live as long as the app runs."""
    config = config or ServerConfig()
    service = _Service(model, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        service.start()
        try:
            yield
        finally:
            service.stop()  # uvicorn calls this after in-flight requests have finished

    app = FastAPI(title="funasr-nano", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(UploadGuard, service=service)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
                        ).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return APIError(400, f"invalid request: {exc.errors()[0].get('msg', 'bad field')}").response()

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return APIError(500, f"internal server error: {type(exc).__name__}", type_="server_error").response()

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        _check_api_key(request, config.api_key)
        return await _transcription(request, service)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_api_key(request, config.api_key)
        entry = {"id": config.model_name, "object": "model", "created": int(service.started),
                 "owned_by": "funasr-nano"}
        return {"object": "list", "data": [entry]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = service.batcher
        return {
            "status": "ok",
            "model": config.model_name,
            "device": model.backend.device,
            "requests_in_progress": service.active,
            "max_queue": config.max_queue,
            "uploads_in_progress": service.uploading,
            "max_uploads": config.max_uploads,
            "requests_served": service.served,
            "batching": batcher.stats.as_dict() if batcher else None,
        }

    return app


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 connection, plus the limit it lacks: a connection whose request line and headers are
    not all there within ``header_timeout_s`` of its opening (or of the end of its previous response) is
    closed. Without it a client that connects and sends nothing, or a header a byte at a time, holds its
    connection (and file descriptor) forever; uvicorn's keep-alive timer stops at the first byte. The body
    that follows is timed by :class:`UploadGuard`."""

    header_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._waiting_cycle = self.cycle  # the request the timer is for begins a new cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        # No request began since the timer was armed (a pipelined one may have begun just before: it runs on)
        waiting = self.cycle is self._waiting_cycle and (self.cycle is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            log.info("closing a connection that sent no complete request within %g s", self.header_timeout_s)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_cycle:  # its headers are complete: the body has its own limits
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def _protocol(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s})


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose shutdown first cuts off the uploads still arriving (503: a slow client
    would otherwise hold the shutdown without bound); requests whose upload is complete, decoding or
    waiting for it, run to their end. A second SIGINT exits at once, as in uvicorn."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]):
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def server_for(app: FastAPI, **config: Any) -> GracefulServer:
    """A :class:`GracefulServer` for an app made by :func:`create_app`; ``config`` as for ``uvicorn.Config``.
    Connections are uvicorn's h11 ones with a limit on the time their request headers take (the app's
    ``read_timeout_s``; see :class:`HeaderTimeoutH11Protocol`)."""
    service = app.state.service
    config.setdefault("http", _protocol(service.config.read_timeout_s))
    return GracefulServer(uvicorn.Config(app, **config), service.stopping.set)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, cut off uploads and finish the admitted requests."""
    server_for(app, host=host, port=port, log_level=log_level).run()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def serve_main(args: Any) -> int:
    """``funasr-nano serve``: load the model, then serve it until interrupted (see cli.py for options)."""
    from ..api import load_model
    from ..backends import dtype_name
    from ..demo import announce_default

    for name in ("max_upload_mb", "max_audio_s", "max_queue", "max_uploads", "batch_size", "read_timeout_s",
                 "min_upload_kbps"):
        if not 0 < getattr(args, name) < float("inf"):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    if not 0 <= args.batch_window_ms < float("inf"):
        raise UsageError("--batch-window-ms must be zero or a positive number")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (0-65535)")
    dtype_name(args.dtype)
    announce_default(args)
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                       batch_size=args.batch_size, hub=args.hub, variant=args.variant, ctc_head=args.ctc_head)
    if model.word_timestamps_note:
        print(f"note: {model.word_timestamps_note.replace('ctc_head=PATH', '--ctc-head PATH')}", file=sys.stderr)
    config = ServerConfig(
        model_name=args.model_name or str(args.model).rstrip("/").split("/")[-1],
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_audio_s=args.max_audio_s,
        max_queue=args.max_queue,
        max_uploads=args.max_uploads,
        read_timeout_s=args.read_timeout_s,
        min_upload_bytes_per_s=args.min_upload_kbps * 1000 / 8,
        max_new_tokens=args.max_new_tokens,
        batch_window_s=args.batch_window_ms / 1000,
        batch_segments=args.batch_size,
        vad=not args.no_vad,
        resampler=args.resampler,
    )
    if not is_loopback(args.host) and config.api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)
    run_server(create_app(model, config), args.host, args.port, args.log_level)
    return 0


__all__ = ["APIError", "GracefulServer", "ServerConfig", "create_app", "run_server", "serve_main", "server_for"]
