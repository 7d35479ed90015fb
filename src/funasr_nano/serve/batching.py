"""Batching across callers: a ``Backend`` that many threads call at once and that decodes together.

Each caller (one HTTP request, say) blocks in :meth:`BatchingBackend.generate` while a single worker
thread, the only one that touches the wrapped backend, gathers the segments of every call that
arrives within a short window and decodes them in one ``generate`` call. The model therefore runs
on one thread only, and requests that arrive together share the engine's batching.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..backends import AlignRequest, Backend, SegmentFits, SegmentWork, TokenSink
from ..text.prompt import PromptIds


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new work."""


@dataclass
class _Job:
    waveforms: Sequence[np.ndarray]
    prompts: Sequence[PromptIds]
    max_new_tokens: Sequence[int]
    on_tokens: TokenSink | None = None
    align: AlignRequest | None = None
    future: Future[list[list[int]]] = field(default_factory=Future)
    streamed: bool = False  # its sink has been called: it cannot be decoded again
    sink_error: BaseException | None = None
    results: list[list[int] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.waveforms)

    def finish(self, index: int, tokens: list[int]) -> None:
        """One segment's ids; the caller gets its answer as soon as its last segment is in."""
        self.results[index] = list(tokens)
        if self.future.done() or any(r is None for r in self.results):
            return
        if self.sink_error is not None:
            self.future.set_exception(self.sink_error)
        else:
            self.future.set_result([r for r in self.results if r is not None])

    def segments(self) -> list[tuple[np.ndarray, PromptIds, int]]:
        return list(zip(self.waveforms, self.prompts, self.max_new_tokens, strict=True))

    def send(self, index: int, tokens: list[int]) -> None:
        """Pass tokens to the caller's sink; a sink that fails fails its own call only, not the batch."""
        if self.on_tokens is None or self.sink_error is not None:
            return
        self.streamed = True
        try:
            self.on_tokens(index, tokens)
        except Exception as exc:
            self.sink_error = exc


@dataclass
class BatchStats:
    calls: int = 0  # generate() calls from callers
    batches: int = 0  # generate() calls on the wrapped backend
    segments: int = 0
    largest_batch: int = 0  # segments in the largest batch
    busy_s: float = 0.0  # time spent inside the wrapped backend

    def as_dict(self) -> dict[str, float | int]:
        return {"calls": self.calls, "batches": self.batches, "segments": self.segments,
                "largest_batch": self.largest_batch, "busy_s": round(self.busy_s, 3)}


class BatchingBackend:
    """Thread-safe ``Backend`` that coalesces concurrent calls into batched calls on ``inner``.

    window_s: how long an idle worker waits after the first call for others to join it; while a
    batch decodes, new calls queue up and go together into the next one anyway.
    max_segments: segments per batch; a single call with more is still decoded whole.
    """

    def __init__(self, inner: Backend, window_s: float = 0.01, max_segments: int = 32):
        if max_segments < 1:
            raise ValueError("max_segments must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.model_device = inner.device
        # What callers read as ``device`` is where they run their own work (the pipeline's VAD) on their
        # own threads. On CUDA that work must not overlap the worker's: a CUDA graph capture (global mode)
        # fails when another thread calls into CUDA meanwhile. So callers are pointed at the CPU.
        self.device = "cpu" if str(inner.device).startswith("cuda") else inner.device
        self.batch_size = getattr(inner, "batch_size", max_segments)  # callers size their groups by it
        self.window_s = max(0.0, window_s)
        self.max_segments = max_segments
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="funasr-nano-batcher", daemon=True)
        self._worker.start()

    def generate(
        self,
        waveforms: Sequence[np.ndarray],
        prompts: Sequence[PromptIds],
        max_new_tokens: Sequence[int],
        on_tokens: TokenSink | None = None,
        align: AlignRequest | None = None,
    ) -> list[list[int]]:
        """Blocks until this call's segments are decoded; ``on_tokens`` and ``align`` are called on the worker
        thread (the CTC head and the alignment run there, with the rest of the device work)."""
        if not waveforms:
            return []
        job = _Job(list(waveforms), list(prompts), list(max_new_tokens), on_tokens, align)
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the server is shutting down")
            self._queue.append(job)
            self.stats.calls += 1
            self._cond.notify_all()
        return job.future.result()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything already queued, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout)

    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            was_idle = not self._queue
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            # An idle worker gives callers that arrive a moment later the chance to share this batch;
            # after a busy one, whatever queued up meanwhile goes at once.
            deadline = time.monotonic() + (self.window_s if was_idle else 0.0)
            while not self._closing and self._queued_segments() < self.max_segments:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            jobs = [self._queue.popleft()]
            count = len(jobs[0].waveforms)
            while self._queue and count + len(self._queue[0].waveforms) <= self.max_segments:
                count += len(self._queue[0].waveforms)
                jobs.append(self._queue.popleft())
            return jobs

    def _queued_segments(self) -> int:
        return sum(len(job.waveforms) for job in self._queue)

    def _run(self) -> None:
        while (jobs := self._take_batch()) is not None:
            try:
                self._decode(jobs)  # appends the jobs it took in while decoding
            except Exception as exc:
                unfinished = [job for job in jobs if not job.future.done()]
                if len(unfinished) == 1:
                    unfinished[0].future.set_exception(exc)
                    continue
                # One caller's segments broke the batch: decode each caller alone so the others succeed;
                # a caller that was already sent tokens would get them twice, so it fails instead.
                for job in unfinished:
                    if job.streamed:
                        job.future.set_exception(exc)
                        continue
                    try:
                        self._decode([job], refill=False)
                    except Exception as single_exc:
                        job.future.set_exception(single_exc)

    def _decode(self, jobs: list[_Job], refill: bool = True) -> None:
        """Decode ``jobs`` in one backend call; a backend that takes more work while it decodes gets the
        calls that queue up meanwhile too (appended to ``jobs``), each answered as soon as it is done."""
        # Longest first across all callers, as each caller orders its own: the engine's continuous
        # batching then refills slots with ever shorter work and drains little at the end.
        slots = sorted(((job, i) for job in jobs for i in range(len(job.waveforms))),
                       key=lambda owner: -owner[0].waveforms[owner[1]].shape[-1])
        segments = [(job.waveforms[i], job.prompts[i], job.max_new_tokens[i]) for job, i in slots]

        def sink(slot: int, tokens: list[int]) -> None:
            job, index = slots[slot]
            job.send(index, tokens)

        def done(slot: int, tokens: list[int]) -> None:
            job, index = slots[slot]
            job.finish(index, tokens)

        def take_more(free: int, fits: SegmentFits) -> list[SegmentWork]:
            taken = self._take_fitting(free, fits)
            jobs.extend(taken)
            slots.extend((job, i) for job in taken for i in range(len(job.waveforms)))
            return [segment for job in taken for segment in job.segments()]

        streaming = any(job.on_tokens is not None for job in jobs)
        started = time.perf_counter()
        waveforms, prompts, budgets = ([segment[k] for segment in segments] for k in range(3))
        aligning = [job for job in jobs if job.align is not None]
        if aligning:
            # Alignments are computed together at the end of the call, so it takes no refill.

            def targets(slot: int, tokens: list[int]) -> list[int] | None:
                job, index = slots[slot]
                return None if job.align is None else job.align.targets(index, tokens)

            def aligned(slot: int, result: object) -> None:
                job, index = slots[slot]
                if job.align is not None:
                    job.align.on_aligned(index, result)

            generated = self.inner.generate(waveforms, prompts, budgets, sink if streaming else None,
                                            align=AlignRequest(targets, aligned))
        elif refill and getattr(self.inner, "accepts_refill", False):
            # The sink must be there from the start: a streaming call may join later.
            generated = self.inner.generate(waveforms, prompts, budgets, sink, refill=take_more, on_done=done)
        else:
            generated = self.inner.generate(waveforms, prompts, budgets, sink if streaming else None)
        self.stats.busy_s += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.segments += len(slots)
        self.stats.largest_batch = max(self.stats.largest_batch, len(slots))
        for slot, tokens in enumerate(generated):
            done(slot, tokens)

    def _take_fitting(self, free: int, fits: SegmentFits) -> list[_Job]:
        """Queued calls, oldest first, while their segments fit the free slots and the running decode."""
        taken: list[_Job] = []
        with self._cond:
            while self._queue:
                job = self._queue[0]
                if len(job.waveforms) > free or not all(fits(*segment) for segment in job.segments()):
                    break  # oldest first: it goes into the next batch, and nothing overtakes it
                taken.append(self._queue.popleft())
                free -= len(job.waveforms)
        return taken
