"""OpenAI-compatible HTTP server: ``POST /v1/audio/transcriptions``, ``GET /v1/realtime`` (WebSocket),
``GET /v1/models``, ``GET /health``, and a browser page at ``/`` (microphone and file upload).

Requests run in a thread pool (audio decoding and segmentation are per request); their segments meet
in one :class:`~funasr_nano.serve.worker.Worker`, whose thread owns the model and decodes the segments
of every request in flight together (continuous batching; :mod:`~funasr_nano.serve.service`).
Uploads are bounded before the app reads them (:mod:`~funasr_nano.serve.limits`). Errors use OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients raise the matching exception.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..api import FunASRNano
from ..errors import AudioError, AudioTooLongError, UsageError
from ..frontend.prepared import ScannedAudio
from ..result import Transcription
from ..text.languages import resolve_language
from .config import ServerConfig
from .limits import UploadGuard, header_timeout_protocol
from .openai import RESPONSE_FORMATS, APIError, sse_stream, to_response
from .realtime import realtime
from .service import Service
from .worker import WorkerClosedError

log = logging.getLogger("funasr_nano.serve.app")

_TRUE = {"1", "true", "yes", "on"}
PAGE = importlib.resources.files(__package__).joinpath("page/index.html").read_text(encoding="utf-8")
MAX_PROMPT_CHARS = 4000  # hotwords/context; far beyond any useful prompt, bounds the prompt length


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


def _options(fields: dict[str, str | None], service: Service) -> tuple[str, bool, tuple[str, ...]]:
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


async def _transcription(request: Request, service: Service) -> Response:
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
    if isinstance(exc, WorkerClosedError):
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

def _stream(service: Service, audio: np.ndarray | ScannedAudio, language: str | None, prompt: str | None,
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
    events: asyncio.Queue[str | Transcription | BaseException], service: Service
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
    """The ASGI app serving ``model``; the worker and request threads live as long as the app runs."""
    config = config or ServerConfig()
    service = Service(model, config)

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

    @app.websocket("/v1/realtime")
    async def realtime_session(websocket: WebSocket) -> None:
        await realtime(websocket, service)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_api_key(request, config.api_key)
        entry = {"id": config.model_name, "object": "model", "created": int(service.started),
                 "owned_by": "funasr-nano"}
        return {"object": "list", "data": [entry]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        worker = service.worker
        return {
            "status": "ok",
            "model": config.model_name,
            "device": model.backend.device,
            "requests_in_progress": service.active,
            "max_queue": config.max_queue,
            "uploads_in_progress": service.uploading,
            "max_uploads": config.max_uploads,
            "requests_served": service.served,
            "batching": worker.stats.as_dict() if worker else None,
            "live_ingest": service.ingest.stats.as_dict() if service.ingest else None,
        }

    return app


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
    ``read_timeout_s``; see :class:`~funasr_nano.serve.limits.HeaderTimeoutH11Protocol`)."""
    service = app.state.service
    config.setdefault("http", header_timeout_protocol(service.config.read_timeout_s))
    return GracefulServer(uvicorn.Config(app, **config), service.stopping.set)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, cut off uploads and finish the admitted requests."""
    server_for(app, host=host, port=port, log_level=log_level).run()


__all__ = ["GracefulServer", "create_app", "run_server", "server_for"]
