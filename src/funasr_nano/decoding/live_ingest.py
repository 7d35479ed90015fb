"""One thread that feeds many live streams: what arrives while it works is fed together next.

A server with hundreds of live sessions gets a small append from each every ~100 ms. Fed on request
threads, each append waits for its own VAD pass (or for a few others to share one), and the threads
queue on each other and on the GIL; here each round takes every append that arrived during the last one
and runs :meth:`LiveStream.feed_together` over them: one batched VAD pass for all the streams, then
each stream's own logic. A caller waits for its append's future before it sends the stream's next one,
so a stream's audio goes in in order and a sender that outruns the server is held back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .live import LiveStream


class IngestClosedError(RuntimeError):
    """The ingest thread has stopped: no more audio is taken."""


@dataclass
class IngestStats:
    rounds: int = 0
    feeds: int = 0
    largest_round: int = 0  # streams fed together
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"rounds": self.rounds, "feeds": self.feeds, "largest_round": self.largest_round,
                "busy_s": round(self.busy_s, 3)}


class Ingest:
    def __init__(self) -> None:
        self.stats = IngestStats()
        self._cond = threading.Condition()
        self._queue: list[tuple[LiveStream, np.ndarray, int, Future[None]]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="funasr-nano-ingest", daemon=True)
        self._thread.start()

    def feed(self, stream: LiveStream, samples: np.ndarray, sample_rate: int) -> Future[None]:
        """Queue ``stream.feed(samples, sample_rate)``; the future ends when it is done (or with what it
        raised)."""
        future: Future[None] = Future()
        with self._cond:
            if self._closing:
                raise IngestClosedError("the server is shutting down")
            self._queue.append((stream, samples, sample_rate, future))
            self._cond.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Feed what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, later, seen = [], [], set()
                for entry in self._queue:  # a stream's second append waits for the next round
                    if id(entry[0]) in seen:
                        later.append(entry)
                    elif entry[3].set_running_or_notify_cancel():  # not cancelled by its caller meanwhile
                        batch.append(entry)
                        seen.add(id(entry[0]))
                self._queue = later
            started = time.perf_counter()
            errors = LiveStream.feed_together([(stream, samples, rate) for stream, samples, rate, _ in batch])
            self.stats.busy_s += time.perf_counter() - started
            self.stats.rounds += 1
            self.stats.feeds += len(batch)
            self.stats.largest_round = max(self.stats.largest_round, len(batch))
            for (*_, future), error in zip(batch, errors, strict=True):
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
