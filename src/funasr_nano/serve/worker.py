"""The server's worker: one thread owns the model's engine and runs a scheduler over it forever.

Request threads read their uploads and find the speech (VAD on the CPU, so that no request thread uses
the GPU while the worker captures CUDA graphs), submit a recording, cut its pieces into a bounded feed
as the worker takes them, and wait for its result. The worker hands each request its outputs as they
come (text deltas for streams, then the result); requests that arrive while others decode join the
running batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from ..api import FunASRNano
from ..decoding.pieces import Recording, SpanAudio
from ..decoding.scheduler import Output, RecordingDone, Scheduler

VAD_DEVICE = "cpu"  # where request threads run the VAD (see the module docstring)
_FEED_DEPTH = 64  # pieces a request cuts ahead of the worker: bounds an upload's audio in memory
_IDLE_WAIT_S = 0.05  # how long the worker sleeps at most while it waits for pieces to be cut

Deliver = Callable[[Output | BaseException], None]  # called on the worker thread; must not block


class WorkerClosedError(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass
class WorkerStats:
    requests: int = 0
    segments: int = 0  # pieces decoded (split halves count)
    steps: int = 0
    largest_batch: int = 0  # pieces decoding at once, across requests
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"requests": self.requests, "segments": self.segments, "steps": self.steps,
                "largest_batch": self.largest_batch, "busy_s": round(self.busy_s, 3)}


class SpanFeed:
    """A recording's pieces, cut on the request's thread into a bounded queue and taken by the worker
    without waiting: the worker sees None while the next piece is not cut yet."""

    _END = object()

    def __init__(self, spans: Iterator[SpanAudio | None], wake: Callable[[], None]):
        self._spans = spans
        self._queue: queue.Queue[object] = queue.Queue(_FEED_DEPTH)
        self._wake = wake
        self.stopped = threading.Event()  # the worker no longer wants pieces (cancelled or failed)

    def produce(self) -> None:
        """Cut every piece (blocking: on the request's thread); an error is passed on to the worker."""
        try:
            for item in self._spans:
                if not self._put(item):
                    return
            self._put(self._END)
        except Exception as exc:
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self.stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self._wake()
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> SpanFeed:
        return self

    def __next__(self) -> SpanAudio | None:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        if item is self._END:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]


class Worker:
    """Runs ``model``'s scheduler on its own thread. window_s: how long an idle worker waits after the
    first submission for others to join it in its first batch."""

    def __init__(self, model: FunASRNano, window_s: float = 0.01):
        self.model = model
        self.window_s = max(0.0, window_s)
        self.stats = WorkerStats()
        self._scheduler: Scheduler = model.scheduler()
        self._inbox: list[tuple[Recording, Deliver]] = []
        self._cancelled: list[Hashable] = []
        self._deliver: dict[Hashable, Deliver] = {}
        self._feeds: dict[Hashable, SpanFeed] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="funasr-nano-worker", daemon=True)
        self._thread.start()

    def submit(self, recording: Recording, deliver: Deliver) -> SpanFeed:
        """Queue a recording; returns the feed its pieces are to be cut into (``produce`` on the caller's
        thread). ``deliver`` gets its outputs, ending with its RecordingDone (or the exception that broke
        the decode)."""
        feed = SpanFeed(recording.spans, self.wake)
        recording.spans = feed
        with self._cond:
            if self._closing:
                raise WorkerClosedError("the server is shutting down")
            self._feeds[recording.key] = feed
            self._inbox.append((recording, deliver))
            self.stats.requests += 1
            self._cond.notify_all()
        return feed

    def cancel(self, key: Hashable) -> None:
        """Stop a submitted recording: no more outputs for it (a live stream's superseded partial)."""
        with self._cond:
            self._cancelled.append(key)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything already submitted, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take(self) -> bool:
        """Move submissions to the scheduler; waits while there is nothing to do. False: time to stop."""
        scheduler = self._scheduler
        with self._cond:
            self._drop_cancelled()
            while not self._inbox and (scheduler.idle or not scheduler.decoding):
                if scheduler.idle and self._closing:
                    return False
                self._cond.wait(None if scheduler.idle else _IDLE_WAIT_S)
                self._drop_cancelled()
                if not scheduler.idle and not self._inbox:
                    return True  # pieces may have been cut meanwhile
            if scheduler.idle and self._inbox and self.window_s:
                deadline = time.monotonic() + self.window_s  # others arriving a moment later join in
                while not self._closing and (remaining := deadline - time.monotonic()) > 0:
                    self._cond.wait(remaining)
            taken, self._inbox = self._inbox, []
        for recording, deliver in taken:
            self._deliver[recording.key] = deliver
            scheduler.submit(recording)
        return True

    def _drop_cancelled(self) -> None:
        """With the lock held: forget the recordings cancelled since the last look."""
        for key in self._cancelled:
            self._inbox = [(r, d) for r, d in self._inbox if r.key != key]
            self._scheduler.cancel(key)
            self._deliver.pop(key, None)
            feed = self._feeds.pop(key, None)
            if feed is not None:
                feed.stopped.set()
        self._cancelled.clear()

    def _run(self) -> None:
        while self._take():
            started = time.perf_counter()
            try:
                outputs = self._scheduler.step()
            except Exception as exc:  # a broken decode fails the requests in it, not the server
                for key in self._scheduler.abort():
                    self._end(key)(exc)
                continue
            self.stats.busy_s += time.perf_counter() - started
            self.stats.steps += 1
            self.stats.largest_batch = max(self.stats.largest_batch, self._scheduler.decoding)
            for output in outputs:
                deliver = self._deliver.get(output.recording)
                if deliver is None:
                    continue
                if isinstance(output, RecordingDone):
                    self._end(output.recording)
                    if not isinstance(output.result, BaseException):
                        self.stats.segments += len(output.result.segments)
                deliver(output)

    def _end(self, key: Hashable) -> Deliver:
        """Forget a finished recording; its feed stops (a request still cutting a failed one returns)."""
        with self._cond:
            self._feeds.pop(key).stopped.set()
        return self._deliver.pop(key)


class WorkerDecodes:
    """A live stream's decodes on the worker, beside every other request's (the live stream's port)."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def submit(self, recording: Recording, deliver: Deliver) -> None:
        self.worker.submit(recording, deliver).produce()  # a live decode's audio is cut already

    def cancel(self, key: Hashable) -> None:
        self.worker.cancel(key)

    def run(self) -> None:
        """Nothing: the worker's thread runs the decodes."""
