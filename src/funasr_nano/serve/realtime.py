"""``GET /v1/realtime?intent=transcription``: live transcription over a WebSocket, in the events of
OpenAI's Realtime API (transcription sessions), each session a :class:`~funasr_nano.decoding.live.LiveStream`
whose appends the server's ingest thread feeds (:mod:`~funasr_nano.decoding.live_ingest`) and whose decodes
share the server's worker with the file requests.

Client events: ``session.update`` (or the older ``transcription_session.update``), ``input_audio_buffer.append``
(base64 PCM16 mono, 24 kHz unless the session says 16 kHz), ``input_audio_buffer.commit``,
``input_audio_buffer.clear``. Server events: ``session.created`` / ``session.updated``,
``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` / ``cleared``,
``conversation.item.input_audio_transcription.delta`` and ``.completed`` (the deltas of an item add up
to its transcript), ``...failed``, ``error``; and ``conversation.item.input_audio_transcription.partial``
{item_id, text, stable_text}, the live hypothesis, which OpenAI's clients ignore. A bad message gets an
``error`` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect

from ..decoding.live import LiveStream
from ..decoding.live_events import Failed, Final, Partial, SpeechStarted, SpeechStopped
from ..decoding.live_ingest import IngestClosedError
from ..errors import UsageError
from ..frontend.endpoint import EndpointOptions
from .service import Service
from .worker import WorkerDecodes

RATES = (24000, 16000)  # OpenAI's audio/pcm is 24 kHz; 16 kHz saves the client a resampling
MAX_MESSAGE_BYTES = 1 << 20  # one append of ~21 s of 24 kHz audio: far more than any client sends at once
IDLE_TIMEOUT_S = 60.0  # a session that sends nothing for this long is closed
SUBPROTOCOL_KEY = "openai-insecure-api-key."  # browsers cannot set headers: the key rides in a subprotocol


@dataclass
class _Session:
    id: str = field(default_factory=lambda: "sess_" + uuid.uuid4().hex[:20])
    rate: int = 24000
    language: str | None = None
    prompt: str | None = None
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                 "silence_duration_ms": 500})
    stream: LiveStream | None = None
    items: dict[int, str] = field(default_factory=dict)  # stream item -> item_id
    events: itertools.count = field(default_factory=itertools.count)
    wake: Callable[[], None] | None = None  # tells the session's sender that its stream has events
    feeding: Future[None] | None = None  # its latest append, queued on the ingest thread

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "realtime.session", "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate},
                                    "transcription": {"model": "fun-asr-nano", "language": self.language,
                                                      "prompt": self.prompt},
                                    "turn_detection": self.turn_detection}}}

    def item_id(self, item: int) -> str:
        return self.items.setdefault(item, f"item_{self.id[5:13]}_{item}")


class _BadEvent(Exception):
    def __init__(self, message: str, code: str = "invalid_event", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def _authorised(websocket: WebSocket, api_key: str | None) -> tuple[bool, str | None]:
    """Whether the key is right (Authorization header or subprotocol), and the subprotocol to accept."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    chosen = "realtime" if "realtime" in offered else None
    if api_key is None:
        return True, chosen
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    keys = [token.strip()] if scheme.lower() == "bearer" else []
    keys += [p[len(SUBPROTOCOL_KEY):] for p in offered if p.startswith(SUBPROTOCOL_KEY)]
    return any(hmac.compare_digest(k.encode(), api_key.encode()) for k in keys), chosen


def _settings(session: _Session, body: dict[str, Any]) -> None:
    """Apply a session.update's session (the GA shape or the older transcription_session one)."""
    if not isinstance(body, dict):
        raise _BadEvent("'session' must be an object", param="session")
    audio = body.get("audio", {}).get("input", {}) if isinstance(body.get("audio"), dict) else {}
    fmt = audio.get("format", body.get("input_audio_format"))
    if isinstance(fmt, dict):
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise _BadEvent(f"audio format {fmt.get('type')!r} is not supported: send audio/pcm", param="format")
        rate = fmt.get("rate", session.rate)
        if rate not in RATES:
            raise _BadEvent(f"rate {rate!r} is not supported: 24000 or 16000", param="rate")
        session.rate = rate
    elif fmt not in (None, "pcm16"):
        raise _BadEvent(f"audio format {fmt!r} is not supported: send pcm16", param="input_audio_format")
    transcription = audio.get("transcription", body.get("input_audio_transcription"))
    if isinstance(transcription, dict):
        session.language = transcription.get("language") or None
        session.prompt = transcription.get("prompt") or None
    if "turn_detection" in audio or "turn_detection" in body:
        detection = audio.get("turn_detection", body.get("turn_detection"))
        if detection is not None and (not isinstance(detection, dict) or detection.get("type") != "server_vad"):
            raise _BadEvent("turn_detection must be {'type': 'server_vad', ...} or null", param="turn_detection")
        session.turn_detection = detection


def _open_stream(service: Service, session: _Session) -> LiveStream:
    detection = session.turn_detection
    vad: bool | EndpointOptions = False
    if detection is not None:
        vad = EndpointOptions(threshold=float(detection.get("threshold", 0.5)),
                              neg_threshold=min(0.35, float(detection.get("threshold", 0.5))),
                              silence=float(detection.get("silence_duration_ms", 500)) / 1000,
                              prefix_padding=float(detection.get("prefix_padding_ms", 300)) / 1000)
    assert service.worker is not None
    return service.base_model.stream(language=session.language, hotwords=session.prompt, vad=vad,
                                     max_new_tokens=service.config.max_new_tokens,
                                     decodes=WorkerDecodes(service.worker))


def _outgoing(session: _Session, event: object) -> list[dict[str, Any]]:
    """A stream event as Realtime server events."""
    if isinstance(event, SpeechStarted):
        return [{"type": "input_audio_buffer.speech_started", "audio_start_ms": round(event.time * 1000),
                 "item_id": session.item_id(event.item)}]
    if isinstance(event, SpeechStopped):
        item = event.item
        item_id = session.item_id(item)
        return [{"type": "input_audio_buffer.speech_stopped", "audio_end_ms": round(event.time * 1000),
                 "item_id": item_id},
                {"type": "input_audio_buffer.committed", "item_id": item_id,
                 "previous_item_id": session.items.get(item - 1)}]
    if isinstance(event, Partial):
        return [{"type": "conversation.item.input_audio_transcription.partial", "item_id": session.item_id(event.item),
                 "content_index": 0, "text": event.text, "stable_text": event.stable_text}]
    if isinstance(event, Final):
        item_id = session.item_id(event.item)
        return [{"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id,
                 "content_index": 0, "delta": event.text},
                {"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                 "content_index": 0, "transcript": event.text}]
    if isinstance(event, Failed):
        return [{"type": "conversation.item.input_audio_transcription.failed", "item_id": session.item_id(event.item),
                 "content_index": 0, "error": {"type": "server_error", "message": event.message}}]
    return []


async def realtime(websocket: WebSocket, service: Service) -> None:
    """One Realtime transcription session."""
    config = service.config
    allowed, subprotocol = _authorised(websocket, config.api_key)
    if not allowed:
        await websocket.close(code=1008, reason="missing or incorrect API key")
        return
    await websocket.accept(subprotocol=subprotocol)
    session = _Session()
    loop = asyncio.get_running_loop()

    async def send(payload: dict[str, Any]) -> None:
        await websocket.send_text(json.dumps({"event_id": f"event_{next(session.events)}", **payload},
                                             ensure_ascii=False))

    if service.streams >= config.max_streams:  # accepted first, so that the client is told why
        busy = f"the server is busy ({config.max_streams} live sessions): try again later"
        await send({"type": "error", "error": {"type": "server_error", "code": "server_busy", "message": busy}})
        await websocket.close(code=1013, reason=busy)
        return
    service.streams += 1

    ready = asyncio.Event()  # set (from any thread) when the session's stream has events to send

    async def forward() -> None:
        while True:
            await ready.wait()
            ready.clear()
            if session.stream is not None:
                for event in session.stream.poll():
                    for payload in _outgoing(session, event):
                        await send(payload)

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has shut down
            loop.call_soon_threadsafe(ready.set)

    session.wake = wake
    forwarder = asyncio.ensure_future(forward())
    try:
        await send({"type": "session.created", "session": session.describe()})
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive_text(), IDLE_TIMEOUT_S)
            except asyncio.TimeoutError:
                await send({"type": "error", "error": {"type": "invalid_request_error", "code": "idle_timeout",
                                                       "message": f"nothing received for {IDLE_TIMEOUT_S:g} s"}})
                break
            try:
                await _handle(message, session, service, send, loop)
            except (_BadEvent, UsageError) as exc:
                code = exc.code if isinstance(exc, _BadEvent) else "invalid_value"
                param = exc.param if isinstance(exc, _BadEvent) else None
                await send({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                       "message": str(exc), "param": param}})
    except WebSocketDisconnect:
        pass
    except IngestClosedError as exc:  # the server is shutting down
        with contextlib.suppress(Exception):
            await send({"type": "error", "error": {"type": "server_error", "code": "server_shutting_down",
                                                   "message": f"{exc}: reconnect later"}})
            await websocket.close(code=1012, reason="server shutting down")
    finally:
        service.streams -= 1
        if session.stream is not None:
            stream, feeding = session.stream, session.feeding

            def close() -> None:  # after the append the ingest thread may still be feeding
                if feeding is not None:
                    with contextlib.suppress(Exception):
                        feeding.result()
                stream.close()  # its decodes end; nobody listens

            await loop.run_in_executor(None, close)
        forwarder.cancel()


async def _handle(message: str, session: _Session, service: Service, send: Any, loop: Any) -> None:
    if len(message) > MAX_MESSAGE_BYTES:
        raise _BadEvent(f"a message may hold at most {MAX_MESSAGE_BYTES} bytes: send audio in smaller appends",
                        code="message_too_large")
    try:
        event = json.loads(message)
    except json.JSONDecodeError as exc:
        raise _BadEvent(f"the message is not JSON ({exc.msg})", code="invalid_json") from exc
    if not isinstance(event, dict):
        raise _BadEvent("an event must be a JSON object with a 'type'")
    kind = event.get("type")
    if kind in ("session.update", "transcription_session.update"):
        if session.stream is not None:
            raise _BadEvent("the session cannot change once audio has arrived: open a new session",
                            code="session_in_use")
        _settings(session, event.get("session", {}))
        await send({"type": "session.updated", "session": session.describe()})
    elif kind == "input_audio_buffer.append":
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _BadEvent("'audio' must be base64 text of PCM16 samples", param="audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _BadEvent("'audio' is not valid base64", code="invalid_audio", param="audio") from exc
        if len(raw) % 2:
            raise _BadEvent("PCM16 audio has an even number of bytes", code="invalid_audio", param="audio")
        if session.stream is None:
            session.stream = _open_stream(service, session)
            session.stream.wake = session.wake
        assert service.ingest is not None
        session.feeding = service.ingest.feed(session.stream, np.frombuffer(raw, "<i2"), session.rate)
        await asyncio.wrap_future(session.feeding)
    elif kind == "input_audio_buffer.commit":
        stream = session.stream
        item = None if stream is None else stream.open_item
        if stream is None or item is None:
            raise _BadEvent("the input audio buffer is empty: nothing to commit", code="input_audio_buffer_empty")
        await loop.run_in_executor(None, stream.commit)
        await send({"type": "input_audio_buffer.committed", "item_id": session.item_id(item),
                    "previous_item_id": session.items.get(item - 1)})
    elif kind == "input_audio_buffer.clear":
        if session.stream is not None:
            await loop.run_in_executor(None, session.stream.clear)  # its lock may be held by a feed
        await send({"type": "input_audio_buffer.cleared"})
    else:
        raise _BadEvent(f"unknown event type {kind!r}", code="unknown_event", param="type")
