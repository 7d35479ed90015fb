"""OpenAI-compatible HTTP server: ``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``GET /health``.

Requests run in a thread pool (audio decoding and segmentation are per request); their segments meet
in one :class:`~funasr_nano.batching.BatchingBackend`, whose single worker thread owns the model and
decodes the segments of requests that arrive together in one batch. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients raise the matching exception.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import io
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audio import load_audio
from .batching import BatcherClosedError, BatchingBackend
from .errors import AudioError, UsageError
from .features import SAMPLE_RATE
from .languages import resolve_language
from .pipeline import FunASRNano
from .result import Transcription
from .server_responses import RESPONSE_FORMATS, APIError, render, sse_stream
from .streaming import TextCallback

log = logging.getLogger("funasr_nano.server")

_TRUE = {"1", "true", "yes", "on"}
MAX_PROMPT_CHARS = 4000  # hotwords/context; far beyond any useful prompt, bounds the prompt length


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "fun-asr-nano"  # the id /v1/models lists; any requested `model` is accepted
    api_key: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's own limit
    max_audio_s: float = 3600.0
    max_queue: int = 64  # requests admitted at once (uploading, waiting or decoding); more get 429
    max_new_tokens: int | None = None  # per segment; None derives it from the segment duration
    batch_window_s: float = 0.01
    batch_segments: int = 32
    vad: bool = True  # False decodes each upload as one segment, as the official model does


class UploadLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``, counted as they arrive so an
    oversized upload is refused before it is spooled (Content-Length is checked first when sent)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        # Clients such as urllib send the whole body before reading the answer: the rest of an oversized
        # body is read and dropped (up to this much) so they see the 413 rather than a broken pipe.
        self.drain_bytes = 4 * max_bytes

    async def _reject(self, scope: Scope, receive: Receive, send: Send, more_body: bool) -> None:
        drained = 0
        while more_body and drained <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            more_body = message.get("more_body", False)
        error = APIError(413, f"the upload is larger than the server's limit of {self.max_bytes} bytes",
                         code="file_too_large", param="file")
        await error.response()(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send, more_body=True)
            return
        received = 0
        exceeded = False
        more_body = True
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > self.max_bytes:
                    exceeded = True
                    # Ends the body for the parser; whatever the app answers is replaced by the 413.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._reject(scope, receive, send, more_body)


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


def _declared_duration(data: bytes) -> float | None:
    """The duration a file's header states, when soundfile can read it; None otherwise."""
    try:
        import soundfile

        info = soundfile.info(io.BytesIO(data))
        return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else None
    except Exception:  # unknown or broken header, or no soundfile: the decoder decides
        return None


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

    def _check_duration(self, duration: float) -> None:
        if duration > self.config.max_audio_s:
            raise APIError(413, f"the audio lasts {duration:.1f} s, longer than the server's limit of "
                                f"{self.config.max_audio_s:g} s", code="audio_too_long", param="file")

    def load(self, data: bytes) -> np.ndarray:
        """The upload's samples, or a 413 for audio over the duration limit. Blocking (a request thread)."""
        declared = _declared_duration(data)
        if declared is not None:  # refuse before decoding: a small compressed upload can hold hours
            self._check_duration(declared)
        samples = load_audio(data)
        self._check_duration(samples.size / SAMPLE_RATE)
        return samples

    def transcribe(self, samples: np.ndarray, language: str | None, prompt: str | None,
                   on_text: TextCallback | None = None) -> Transcription:
        """Blocking; runs in a request thread."""
        assert self.model is not None
        return self.model.transcribe(samples, language=language, hotwords=prompt, on_text=on_text,
                                     max_new_tokens=self.config.max_new_tokens, vad=self.config.vad)

    def admit(self) -> None:
        if self.active >= self.config.max_queue:
            raise APIError(429, f"the server is busy ({self.active} requests in progress): retry shortly",
                           type_="rate_limit_error", code="queue_full")
        self.active += 1

    def release(self) -> None:
        self.active -= 1


async def _read_form(request: Request) -> tuple[bytes, dict[str, str | None]]:
    """The upload's bytes and the text fields this server uses; other fields are ignored."""
    try:
        form = await request.form(max_files=1, max_fields=64)
    except StarletteHTTPException as exc:
        raise APIError(400, f"malformed multipart body: {exc.detail}") from exc
    except ClientDisconnect as exc:  # also how UploadLimit stops an oversized body: it answers 413 then
        raise APIError(400, "the request body ended early") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "the 'file' field with the audio is required (multipart/form-data)",
                           param="file")
        names = ("response_format", "stream", "prompt", "language")
        fields = {name: _form_text(form, name) for name in names}
        return await upload.read(), fields
    finally:
        await form.close()


async def _transcription(request: Request, service: _Service) -> Response:
    data, fields = await _read_form(request)
    response_format = (fields["response_format"] or "json").strip().lower()
    if response_format not in RESPONSE_FORMATS:
        raise APIError(400, f"unsupported response_format {response_format!r}: use one of "
                            + ", ".join(RESPONSE_FORMATS), param="response_format")
    stream = (fields["stream"] or "").strip().lower() in _TRUE
    prompt = fields["prompt"]
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise APIError(400, f"the prompt is longer than {MAX_PROMPT_CHARS} characters", param="prompt")
    language = fields["language"]
    try:
        resolve_language(language, service.base_model.languages)  # validate before decoding any audio
    except UsageError as exc:
        raise APIError(400, str(exc), param="language", code="unsupported_language") from exc

    loop = asyncio.get_running_loop()
    with _user_errors():
        samples = await loop.run_in_executor(service.pool, service.load, data)
    if stream:
        return _stream(service, samples, language, prompt)
    with _user_errors():
        result = await loop.run_in_executor(service.pool, service.transcribe, samples, language, prompt)
    service.served += 1
    return render(result, response_format)


def _as_api_error(exc: BaseException) -> APIError | None:
    """The response for an error the pipeline raised about the user's input (or a shutdown), if it is one."""
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


def _stream(service: _Service, samples: np.ndarray, language: str | None, prompt: str | None) -> Response:
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
            put(service.transcribe(samples, language, prompt, on_text=put))
        except BaseException as exc:  # handed to the event loop, which reports it in the stream
            put(exc)

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
    app.add_middleware(UploadLimit, max_bytes=config.max_upload_bytes)

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
        service.admit()
        try:
            return await _transcription(request, service)
        finally:
            service.release()

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
            "requests_served": service.served,
            "batching": batcher.stats.as_dict() if batcher else None,
        }

    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; uvicorn then stops accepting and finishes in-flight requests."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None)




def serve_main(args: Any) -> int:
    """``funasr-nano serve``: load the model, then serve it until interrupted (see cli.py for options)."""
    from .pipeline import load_model

    for name in ("max_upload_mb", "max_audio_s", "max_queue", "batch_size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (0-65535)")
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                       batch_size=args.batch_size)
    config = ServerConfig(
        model_name=args.model_name or str(args.model).rstrip("/").split("/")[-1],
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_audio_s=args.max_audio_s,
        max_queue=args.max_queue,
        max_new_tokens=args.max_new_tokens,
        batch_window_s=args.batch_window_ms / 1000,
        batch_segments=args.batch_size,
        vad=not args.no_vad,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)
    run_server(create_app(model, config), args.host, args.port, args.log_level)
    return 0


__all__ = ["APIError", "ServerConfig", "create_app", "run_server", "serve_main"]
