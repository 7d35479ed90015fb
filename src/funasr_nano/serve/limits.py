"""What bounds a request before the app sees it: the size, pace and number of uploads arriving
(:class:`UploadGuard`, ASGI middleware) and the time a connection's request headers may take
(:class:`HeaderTimeoutH11Protocol`, uvicorn's h11 connection). The queue of complete uploads is the
worker's (:meth:`~funasr_nano.serve.worker.Service.admit`).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .openai import APIError, busy_error
from .service import Service

log = logging.getLogger("funasr_nano.serve.limits")


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
    until its body is complete; only then can it take a place in the queue (see ``Service.admit``)."""

    def __init__(self, app: ASGIApp, service: Service):
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
            body.error = busy_error(f"the server is busy ({self.max_uploads} uploads arriving): retry shortly",
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

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel_header_timer()  # the transport is the WebSocket's now: its session has its own limits
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def header_timeout_protocol(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s})


