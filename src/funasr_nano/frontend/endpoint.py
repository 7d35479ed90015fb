"""Where speech starts and stops in audio that is still arriving (live input): silero-vad frame by
frame, its LSTM state kept across chunks, and hysteresis with a silence timeout, as OpenAI's
``server_vad`` turn detection (threshold, prefix padding, silence duration).

Offline recordings are cut by :mod:`~funasr_nano.frontend.vad`, which sees the whole file; here only
the past is known, so a stop is said once ``silence`` seconds of non-speech have followed the speech.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from .features import SAMPLE_RATE
from .vad import CONTEXT_SAMPLES, FRAME_SAMPLES, LSTMState, SileroVAD, load_vad

START, STOP = "start", "stop"


@dataclass(frozen=True)
class EndpointOptions:
    """Seconds, and silero probabilities (OpenAI's ``server_vad`` defaults)."""

    threshold: float = 0.5  # a frame at or above this probability starts speech ...
    neg_threshold: float = 0.35  # ... and only frames below this one count as silence
    silence: float = 0.5  # this much silence after speech ends the utterance
    prefix_padding: float = 0.3  # audio before the detected start that the utterance keeps

    def __post_init__(self) -> None:
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise UsageError("VAD thresholds need 0 < neg_threshold <= threshold < 1")
        if self.silence <= 0:
            raise UsageError("the silence that ends speech must be a positive number of seconds")
        if self.prefix_padding < 0:
            raise UsageError("the prefix padding must not be negative")


@dataclass(frozen=True)
class Boundary:
    kind: str  # START or STOP
    sample: int  # where the speech starts (the first speech frame) or stops (the first silent frame)


class SpeechDetector:
    """:meth:`add` 16 kHz samples as they arrive; returns the speech boundaries they complete. The
    probabilities are those :func:`~funasr_nano.frontend.vad.find_speech` computes for the same audio:
    each frame's network input is its own window plus the 64 samples before it."""

    def __init__(self, options: EndpointOptions | None = None, vad: SileroVAD | None = None, device: str = "cpu"):
        self.options = options or EndpointOptions()
        self.vad = vad or load_vad(device)
        self.frames = 0  # frames evaluated so far
        self.in_speech = False
        self.probabilities: list[float] = []  # of the frames from `first_frame` on (see forget)
        self.first_frame = 0
        self._pending = np.zeros(CONTEXT_SAMPLES, np.float32)  # context, then samples of the next frames
        self._state: LSTMState | None = None
        self._silent_frames = 0
        self._silence_frames = max(1, round(self.options.silence * SAMPLE_RATE / FRAME_SAMPLES))

    @torch.inference_mode()
    def add(self, samples: np.ndarray) -> list[Boundary]:
        windows = self._windows(samples)
        if windows is None:
            return []
        found, state = _passes_together(self.vad).run(self.vad, windows, self._state)
        return self._advance(found, state)

    def _windows(self, samples: np.ndarray) -> torch.Tensor | None:
        """The network inputs of the frames these samples complete (None: none yet); keeps the rest."""
        pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        count = (pending.size - CONTEXT_SAMPLES) // FRAME_SAMPLES
        if count == 0:
            self._pending = pending
            return None
        used = CONTEXT_SAMPLES + count * FRAME_SAMPLES
        windows = torch.from_numpy(pending[:used]).unfold(0, CONTEXT_SAMPLES + FRAME_SAMPLES, FRAME_SAMPLES)
        self._pending = pending[used - CONTEXT_SAMPLES :].copy()
        return windows

    def _advance(self, probabilities: np.ndarray, state: LSTMState) -> list[Boundary]:
        self._state = state
        found = (self._frame(p) for p in probabilities.tolist())
        return [boundary for boundary in found if boundary is not None]

    def _frame(self, probability: float) -> Boundary | None:
        index = self.frames
        self.frames += 1
        self.probabilities.append(probability)
        if not self.in_speech:
            if probability >= self.options.threshold:
                self.in_speech, self._silent_frames = True, 0
                return Boundary(START, index * FRAME_SAMPLES)
            return None
        self._silent_frames = self._silent_frames + 1 if probability < self.options.neg_threshold else 0
        if self._silent_frames >= self._silence_frames:
            self.in_speech = False
            return Boundary(STOP, (index + 1 - self._silent_frames) * FRAME_SAMPLES)
        return None

    def forget(self, before: int) -> None:
        """Drop the probabilities of frames wholly before sample ``before`` (a live stream runs for hours)."""
        drop = min(before // FRAME_SAMPLES - self.first_frame, len(self.probabilities))
        if drop > 0:
            del self.probabilities[:drop]
            self.first_frame += drop

    def probabilities_from(self, sample: int, count: int) -> np.ndarray:
        """The probabilities of ``count`` frames from the one holding ``sample`` (1 where none is kept)."""
        first = sample // FRAME_SAMPLES - self.first_frame
        kept = np.asarray(self.probabilities, np.float32)
        out = np.ones(count, np.float32)
        lo, hi = max(first, 0), min(first + count, kept.size)
        if hi > lo:
            out[lo - first : hi - first] = kept[lo:hi]
        return out


@torch.inference_mode()
def add_together(detectors: Sequence[SpeechDetector | None], chunks: Sequence[np.ndarray]) -> list[list[Boundary]]:
    """:meth:`SpeechDetector.add` for many streams' detectors (each once) from one thread: one batched
    pass per VAD network for all of them, instead of one pass per stream. A stream without a detector
    (None) gets no boundaries."""
    boundaries: list[list[Boundary]] = [[] for _ in detectors]
    passes: dict[SileroVAD, list[tuple[int, SpeechDetector, torch.Tensor]]] = {}
    for index, (detector, samples) in enumerate(zip(detectors, chunks, strict=True)):
        windows = None if detector is None else detector._windows(samples)
        if detector is not None and windows is not None:
            passes.setdefault(detector.vad, []).append((index, detector, windows))
    for vad, batch in passes.items():
        results = vad.pass_many([(windows, detector._state) for _, detector, windows in batch])
        for (index, detector, _), (found, state) in zip(batch, results, strict=True):
            boundaries[index] = detector._advance(found, state)
    return boundaries


class _PassesTogether:
    """Live streams' VAD passes on one network, run together. A caller whose pass finds another batch
    running waits; the next caller to run takes every pass queued meanwhile, in one
    :meth:`SileroVAD.pass_many`. Many live streams fed on many threads (a server's) then cost one small
    pass per round instead of one per stream: the VAD's small ops hold the GIL, which a server's model
    worker thread needs to keep the GPU fed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Pass] = []
        self._running = False

    def run(self, vad: SileroVAD, windows: torch.Tensor, state: LSTMState | None) -> tuple[np.ndarray, LSTMState]:
        job = _Pass(windows, state)
        with self._cond:
            self._queue.append(job)
            while not job.finished:
                if self._running:
                    self._cond.wait()
                    continue
                batch, self._queue, self._running = self._queue, [], True
                self._cond.release()
                try:
                    results: list | BaseException = vad.pass_many([(j.windows, j.state) for j in batch])
                except BaseException as exc:  # every caller of the batch hears of it
                    results = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                for index, queued in enumerate(batch):
                    queued.result = results if isinstance(results, BaseException) else results[index]
                    queued.finished = True
                self._cond.notify_all()
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result


@dataclass
class _Pass:
    windows: torch.Tensor
    state: LSTMState | None
    finished: bool = False
    result: tuple[np.ndarray, LSTMState] | BaseException | None = None


_TOGETHER: weakref.WeakKeyDictionary[SileroVAD, _PassesTogether] = weakref.WeakKeyDictionary()
_TOGETHER_LOCK = threading.Lock()


def _passes_together(vad: SileroVAD) -> _PassesTogether:
    """The one combiner of ``vad``'s passes (load_vad shares one network per device, so there are few)."""
    with _TOGETHER_LOCK:
        together = _TOGETHER.get(vad)
        if together is None:
            together = _TOGETHER[vad] = _PassesTogether()  # holds no reference to vad: the key may go
        return together
