"""Live transcription: audio arrives over time, utterances are found as they end, and each open
utterance is shown as a revisable partial text until its final one.

While an utterance is open, every ``interval`` seconds of audio its audio so far is decoded with the
tokens two consecutive hypotheses agreed on forced after the prompt, less a short ``rollback`` of the
newest ones (the official realtime demo's idea), so a partial costs an encoder pass, a prefill and a few
new tokens rather than a decode from scratch. When the speech stops (or the utterance reaches
``max_utterance`` seconds, or the caller commits) the utterance is decoded in full, as a file's segment
is, for its final text. Decodes are recordings for the :class:`~funasr_nano.decoding.scheduler.Scheduler`;
a partial still waiting when its utterance ends is cancelled.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FunASRNanoError, UsageError
from ..frontend.endpoint import START, Boundary, SpeechDetector, add_together
from ..frontend.features import SAMPLE_RATE
from ..frontend.prepared import PreparedAudio
from ..frontend.resample import ChunkedResampler
from ..frontend.vad import FRAME_SAMPLES, SpeechMap, quietness
from ..result import join_texts
from ..text.detokenize import sendable
from ..text.partial import held_back, whole_words
from ..text.prompt import PromptIds, clean_text
from .guards import token_budget
from .live_decodes import Decodes
from .live_events import Failed, Final, LiveEvent, LiveOptions, Partial, SpeechStarted, SpeechStopped
from .pieces import DecodedRecording, DecodeSettings, open_recording
from .scheduler import Output, RecordingDone


@dataclass
class _Utterance:
    item: int
    begin: int  # stream sample where its audio begins (prefix padding included)
    speech: int  # where the detected speech begins
    last_partial: int  # stream sample up to which the last partial was asked for
    hypothesis: list[int] = field(default_factory=list)  # tokens of the latest partial
    agreed: list[int] = field(default_factory=list)
    pending: Hashable | None = None  # its partial decode in the scheduler
    shown: str = ""  # the text of its latest partial event
    retry_soon: bool = False  # its latest partial showed nothing and came back quickly


_TAIL_SAMPLES = FRAME_SAMPLES  # kept beyond the prefix padding while nobody speaks

class LiveStream:
    """One live audio stream. :meth:`feed` audio as it arrives, take the events with :meth:`poll` (or
    iterate :meth:`events`), :meth:`commit` to end the open utterance now, :meth:`close` at the end.
    With :class:`InlineDecodes` the decodes run on the caller's thread, in :meth:`feed`, :meth:`commit`
    and :meth:`close`; with a shared worker they run there, and :meth:`close` waits for them."""

    def __init__(self, decodes: Decodes, decode_text: Callable[[list[int]], str], settings: DecodeSettings,
                 options: LiveOptions, detector: SpeechDetector | None, vad_device: str = "cpu"):
        self.decodes, self.settings, self.options = decodes, settings, options
        self.detector = detector
        self.vad_device = vad_device
        self._decode = decode_text
        self._lock = threading.RLock()  # a shared worker hands decodes back on its own thread
        self._idle = threading.Condition(self._lock)
        self._keys = itertools.count()
        self._items = itertools.count()
        self._resampler: ChunkedResampler | None = None
        self._rate: int | None = None
        self._audio = np.zeros(0, np.float32)
        self._audio_begin = 0  # stream sample of self._audio[0]
        self._heard = 0  # samples fed so far (16 kHz)
        self._open: _Utterance | None = None
        self._partials: dict[Hashable, _Utterance] = {}
        self._finals: dict[Hashable, tuple[int, int]] = {}  # key -> (item, stream sample of its audio[0])
        self._events: list[LiveEvent] = []
        # poll() takes only this lock: a feed holds the stream's lock while it waits for the shared VAD
        # pass, and a server polls on its event loop, which must not wait for that
        self._events_lock = threading.Lock()
        # Called, on whichever thread made them, when new events wait for poll(): a server's session wakes
        # its sender then instead of polling every stream many times a second.
        self.wake: Callable[[], None] | None = None
        self._finished: dict[int, Final | Failed | None] = {}  # finals decoded before an earlier item's
        self._next_final = 0
        self.closed = False

    # -- the caller's side -------------------------------------------------------------------------

    def feed(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Mono float samples in [-1, 1] (or int16) at ``sample_rate``, the same rate for the whole stream."""
        with self._lock:
            samples = self._accept(samples, sample_rate)
            self._take(samples, self._boundaries(samples))
        self.decodes.run()

    @staticmethod
    def feed_together(feeds: Sequence[tuple[LiveStream, np.ndarray, int]]) -> list[Exception | None]:
        """:meth:`feed` for many streams (each once), with one VAD pass for all of them: a server's ingest
        thread, which is the only one that feeds these streams. Returns what each feed raised, if anything."""
        errors: list[Exception | None] = [None] * len(feeds)
        taken: list[tuple[int, LiveStream, np.ndarray]] = []
        for index, (stream, samples, rate) in enumerate(feeds):
            try:
                with stream._lock:
                    taken.append((index, stream, stream._accept(samples, rate)))
            except UsageError as exc:
                errors[index] = exc
        try:
            found = add_together([stream.detector for _, stream, _ in taken], [samples for _, _, samples in taken])
        except Exception as exc:  # the shared pass broke: every stream in it hears of it
            for index, _, _ in taken:
                errors[index] = exc
            return errors
        for (index, stream, samples), boundaries in zip(taken, found, strict=True):
            try:
                with stream._lock:
                    stream._take(samples, boundaries)
                stream.decodes.run()
            except Exception as exc:
                errors[index] = exc
        return errors

    def commit(self) -> None:
        """End the open utterance here (e.g. push-to-talk released): its final text comes next."""
        with self._lock:
            if self._open is not None:
                self._end(self._heard)
                if self.detector is not None and self.detector.in_speech:
                    self._begin(self._heard)  # the speech goes on: what follows is the next utterance
                    self._open.begin = self._heard  # type: ignore[union-attr]
        self.decodes.run()

    def close(self) -> None:
        """No more audio: the open utterance is ended and every decode finished."""
        with self._lock:
            if self.closed:
                return
            if self._resampler is not None:
                tail = self._resampler.finish()
                self._take(tail, self._boundaries(tail))
            if self._open is not None:
                item = self._open.item
                self._end(self._heard)
                self._emit(SpeechStopped(self._heard / SAMPLE_RATE, item))
            self.closed = True
        self.decodes.run()
        with self._idle:
            self._idle.wait_for(lambda: not self._partials and not self._finals)

    @property
    def open_item(self) -> int | None:
        """The item of the utterance open now, if one is."""
        return None if self._open is None else self._open.item

    def clear(self) -> None:
        """Drop the open utterance's audio undecoded (speech that goes on starts the next utterance)."""
        with self._lock:
            utterance, self._open = self._open, None
            if utterance is not None and utterance.pending is not None:
                self.decodes.cancel(utterance.pending)
                self._partials.pop(utterance.pending, None)
            if utterance is not None:
                self._report_skipped(utterance.item)
            if self.detector is not None and self.detector.in_speech:
                self._begin(self._heard)
                self._open.begin = self._heard  # type: ignore[union-attr]

    @property
    def heard_seconds(self) -> float:
        """Audio fed so far (at 16 kHz)."""
        return self._heard / SAMPLE_RATE

    @property
    def buffered_seconds(self) -> float:
        """Audio held now: the open utterance's, or the prefix padding while nobody speaks."""
        return self._audio.size / SAMPLE_RATE

    def poll(self) -> list[LiveEvent]:
        """The events since the previous poll."""
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def events(self) -> Iterator[LiveEvent]:
        """The events not yet taken (every one, once the stream is closed)."""
        while events := self.poll():
            yield from events

    # -- audio in ----------------------------------------------------------------------------------

    def _accept(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """A feed's samples at 16 kHz (UsageError: this stream takes no more, or not these)."""
        if self.closed:
            raise UsageError("this stream is closed: open a new one with model.stream()")
        return self._to_16k(samples, rate)

    def _to_16k(self, samples: np.ndarray, rate: int) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise UsageError(f"feed mono samples (a 1-D array), not an array of shape {samples.shape}")
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        elif not np.issubdtype(samples.dtype, np.floating):
            raise UsageError(f"feed float samples in [-1, 1] or int16 PCM, not {samples.dtype}")
        else:
            samples = samples.astype(np.float32, copy=False)
            if not np.isfinite(samples).all():
                raise UsageError("the samples hold NaN or infinite values")
        if self._rate is None:
            if not isinstance(rate, int) or not 8000 <= rate <= 384000:
                raise UsageError(f"sample_rate must be a whole number of Hz from 8000 to 384000, not {rate!r}")
            self._rate = rate
            if rate != SAMPLE_RATE:
                self._resampler = ChunkedResampler(rate, self.settings.resampler, live=True)
        elif rate != self._rate:
            raise UsageError(f"this stream's audio is at {self._rate} Hz: feed every chunk at that rate")
        return samples if self._resampler is None else self._resampler.push(samples)

    def _boundaries(self, samples: np.ndarray) -> list[Boundary]:
        return self.detector.add(samples) if self.detector is not None else []

    def _take(self, samples: np.ndarray, boundaries: list[Boundary]) -> None:
        """Keep 16 kHz samples, and act on the speech boundaries the detector found in them."""
        start = self._heard
        self._audio = np.concatenate([self._audio, samples])
        self._heard += samples.size
        if self.detector is None:
            if self._open is None and samples.size:
                self._begin(start)
        else:
            for boundary in boundaries:
                if boundary.kind == START:
                    self._begin(boundary.sample)
                    self._emit(SpeechStarted(boundary.sample / SAMPLE_RATE, self._open.item))  # type: ignore[union-attr]
                elif self._open is not None:
                    self._emit(SpeechStopped(boundary.sample / SAMPLE_RATE, self._open.item))
                    pad = self.settings.vad.pad if self.settings.vad else 0.0
                    self._end(min(self._heard, boundary.sample + round(pad * SAMPLE_RATE)), boundary.sample)
        utterance = self._open
        if utterance is not None:
            if self._heard - utterance.speech >= self.options.max_utterance * SAMPLE_RATE:
                self._split_long(utterance)
            elif self._heard - utterance.last_partial >= self._spacing(utterance) * SAMPLE_RATE:
                self._ask_partial(utterance)
        self._forget()

    def _spacing(self, utterance: _Utterance) -> float:
        """Seconds of audio between partials: the interval, but half of it after a partial that showed
        nothing yet (its first words are held back while they are all there is, and the first partial is
        what a user waits for) when that partial came back within half an interval."""
        return self.options.interval / 2 if utterance.retry_soon else self.options.interval

    def _forget(self) -> None:
        """Keep only the open utterance's audio, or the prefix padding while nobody speaks."""
        if self._open is not None:
            keep_from = self._open.begin
        else:
            padding = self.options.endpoint.prefix_padding if self.options.endpoint else 0.0
            keep_from = self._heard - round(padding * SAMPLE_RATE) - _TAIL_SAMPLES
        drop = keep_from - self._audio_begin
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_begin += drop
            if self.detector is not None:
                self.detector.forget(self._audio_begin)

    def _samples(self, begin: int, end: int) -> np.ndarray:
        """A view: safe to hand to a decode, since the buffer is replaced, never written in place."""
        return self._audio[begin - self._audio_begin : end - self._audio_begin]

    # -- utterances --------------------------------------------------------------------------------

    def _begin(self, speech: int) -> None:
        padding = self.options.endpoint.prefix_padding if self.options.endpoint else 0.0
        begin = max(self._audio_begin, speech - round(padding * SAMPLE_RATE))
        self._open = _Utterance(next(self._items), begin, speech, last_partial=begin)

    def _split_long(self, utterance: _Utterance) -> None:
        """End an utterance at max_utterance at its least speech-like frame of the last quarter; the
        speech after that goes on as the next utterance."""
        first = utterance.speech + int(0.75 * self.options.max_utterance * SAMPLE_RATE)
        frames = max(1, (self._heard - first) // FRAME_SAMPLES)
        if self.detector is not None:
            probabilities = self.detector.probabilities_from(first, frames)
            cut = first + int(np.argmin(probabilities)) * FRAME_SAMPLES
        else:
            cut = self._heard
        self._end(cut)
        self._begin(cut)
        self._open.begin = cut  # type: ignore[union-attr]  # the next utterance has no prefix padding

    def _end(self, end: int, speech_end: int | None = None) -> None:
        """Decode the open utterance's audio up to ``end`` in full (its speech up to ``speech_end``)."""
        utterance = self._open
        assert utterance is not None
        self._open = None
        if utterance.pending is not None:
            self.decodes.cancel(utterance.pending)
            self._partials.pop(utterance.pending, None)
        samples = self._samples(utterance.begin, end)
        speech = (max(0, utterance.speech - utterance.begin), (speech_end or end) - utterance.begin)
        frames = -(-samples.size // FRAME_SAMPLES)
        probabilities = (self.detector.probabilities_from(utterance.begin, frames) if self.detector is not None
                         else np.ones(frames, np.float32))
        score = quietness(samples, probabilities)
        key = (id(self), "final", next(self._keys))  # unique among the streams of a shared worker
        self._finals[key] = (utterance.item, utterance.begin)
        prepared = PreparedAudio(samples, SpeechMap([speech], score) if self.settings.vad is not None else None)
        self._submit(key, prepared, replace(self.settings, urgent=True))

    def _ask_partial(self, utterance: _Utterance) -> None:
        if utterance.pending is not None:
            return  # the previous partial has not come back: the next one is asked for after it
        forced = utterance.agreed[: max(0, len(utterance.agreed) - self.options.rollback)]
        seconds = (self._heard - utterance.begin) / SAMPLE_RATE
        prompt = self.settings.prompt
        budget = self.settings.max_new_tokens or token_budget(seconds)
        settings = replace(self.settings, prompt=PromptIds(prompt.prefix, prompt.suffix + forced), vad=None,
                           max_new_tokens=max(4, budget - len(forced)), word_timestamps=False, stream_text=False)
        key = (id(self), "partial", next(self._keys), len(forced))
        utterance.pending, utterance.last_partial = key, self._heard
        self._partials[key] = utterance
        self._submit(key, PreparedAudio(self._samples(utterance.begin, self._heard)), settings)

    def _submit(self, key: Hashable, prepared: PreparedAudio, settings: DecodeSettings) -> None:
        try:
            recording = open_recording(key, prepared, settings, self.vad_device)
        except FunASRNanoError as exc:
            self._failed(key, exc)
            return
        self.decodes.submit(recording, lambda output: self._handle(key, output))

    # -- decodes back ------------------------------------------------------------------------------

    def _handle(self, key: Hashable, output: Output | BaseException) -> None:
        """A scheduler output for one of this stream's decodes (or what broke it)."""
        if not isinstance(output, (RecordingDone, BaseException)):
            return
        with self._idle:
            result = output.result if isinstance(output, RecordingDone) else output
            if isinstance(result, BaseException):
                self._failed(key, result)
            elif key in self._partials:
                self._partial_done(key, result)
            elif key in self._finals:
                self._final_done(key, result)
            self._idle.notify_all()

    def _failed(self, key: Hashable, error: BaseException) -> None:
        utterance = self._partials.pop(key, None)
        if utterance is not None:
            utterance.pending = None  # a partial is only a preview: the final decode says the rest
            return
        item, _ = self._finals.pop(key, (None, 0))
        if item is not None:
            self._report(Failed(item, str(error) or type(error).__name__))

    def _partial_done(self, key: Hashable, result: DecodedRecording) -> None:
        utterance = self._partials.pop(key)
        utterance.pending = None
        forced = utterance.agreed[: key[3]]  # type: ignore[index]
        hypothesis = forced + [t for s in result.segments for t in s.tokens]
        agreed = _common_prefix(utterance.hypothesis, hypothesis) if utterance.hypothesis else forced
        utterance.hypothesis, utterance.agreed = hypothesis, agreed
        if self._open is utterance:
            text = sendable(clean_text(self._decode(hypothesis)))
            stable = whole_words(sendable(clean_text(self._decode(agreed))), text)
            shown = held_back(text, stable, self.options.hold_back)
            if shown and shown != utterance.shown:
                utterance.shown = shown
                self._emit(Partial(utterance.item, shown, stable))
            # a decoder that keeps up can afford the next partial sooner; one that is behind cannot
            quick = self._heard - utterance.last_partial < self.options.interval / 2 * SAMPLE_RATE
            utterance.retry_soon = not utterance.shown and quick

    def _final_done(self, key: Hashable, result: DecodedRecording) -> None:
        item, begin = self._finals.pop(key)
        offset = begin / SAMPLE_RATE
        segments = result.segments
        words = [replace(w, start=w.start + offset, end=w.end + offset) for s in segments for w in s.words]
        start = offset + (segments[0].start if segments else 0.0)
        end = offset + (segments[-1].end if segments else result.duration)
        flags = sorted({flag for s in segments for flag in s.flags})
        self._report(Final(item, join_texts([s.text for s in segments]).strip(), start, end, words, flags))

    def _report(self, final: Final | Failed | None, item: int | None = None) -> None:
        """Finals go out in item order, whichever decode ends first (None: a cleared item has none)."""
        self._finished[final.item if final is not None else item] = final  # type: ignore[index]
        while self._next_final in self._finished:
            done = self._finished.pop(self._next_final)
            if done is not None:
                self._emit(done)
            self._next_final += 1

    def _report_skipped(self, item: int) -> None:
        self._report(None, item)

    def _emit(self, event: LiveEvent) -> None:
        with self._events_lock:
            self._events.append(event)
        if self.wake is not None:
            self.wake()


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return b[:length]
