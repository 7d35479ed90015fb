"""The one loop that steps an engine: recordings in, timed segments and text out, as events.

Recordings are submitted with their spans still to be cut; the scheduler cuts pieces as the engine has
room for them (so a file's audio is never all held), adds them longest first, steps the engine, and
settles each finished piece: the guards decide whether it is final or decoded again as two halves.
What happened comes back from :meth:`Scheduler.step` as data — text deltas, segments in time order,
progress, finished recordings — for the caller to hand on: the library runs it on the caller's thread
(:func:`decode_recordings`), the server's worker on its own thread, forever.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

from ..backends import Engine, Event, Request
from ..backends.alignment import CTCResult
from ..errors import FunASRNanoError
from ..frontend.features import SAMPLE_RATE
from ..frontend.vad import split_point
from ..result import Segment
from ..text.ctc_tokenizer import CTCTokenizer
from ..text.prompt import PromptTokenizer, clean_text
from .guards import Finished, Split, decide, token_budget
from .ordered_text import OrderedText
from .pieces import DecodedRecording, Piece, Recording


@dataclass(frozen=True)
class TextDelta:
    """New text of a recording that streams its text (in order; the deltas add up to its text)."""

    recording: Hashable
    text: str


@dataclass(frozen=True)
class SegmentDone:
    """A segment once it and every earlier one of its recording are final (time order)."""

    recording: Hashable
    segment: Segment


@dataclass(frozen=True)
class Progress:
    """Seconds of audio just finished (decoded, or found to be non-speech)."""

    recording: Hashable
    seconds: float


@dataclass(frozen=True)
class RecordingDone:
    recording: Hashable
    result: DecodedRecording | FunASRNanoError


Output = TextDelta | SegmentDone | Progress | RecordingDone


class Scheduler:
    def __init__(self, engine: Engine, tokenizer: PromptTokenizer, ctc_tokenizer: CTCTokenizer | None = None):
        """ctc_tokenizer: given when the engine has a CTC head, whose alignments then time the words."""
        self.engine = engine
        self.tokenizer = tokenizer
        self.ctc_tokenizer = ctc_tokenizer
        self._recordings: dict[Hashable, Recording] = {}
        self._cutting: list[Recording] = []  # submitted, with spans still to cut (in submission order)
        self._decoding: set[Piece] = set()
        self._outbox: list[Output] = []  # outputs of cutting done before the next step

    @property
    def idle(self) -> bool:
        """Nothing submitted is unfinished."""
        return not self._recordings

    @property
    def decoding(self) -> int:
        """Pieces in the engine now."""
        return len(self._decoding)

    @property
    def hungry(self) -> bool:
        """The engine has room and no submitted recording has pieces ready to cut: time to submit more."""
        return not self._cutting and self.engine.capacity() > 0

    def submit(self, recording: Recording) -> None:
        if recording.key in self._recordings:
            raise ValueError(f"a recording {recording.key!r} is already being decoded")
        if recording.settings.stream_text:
            recording.text = OrderedText(self.tokenizer.decode, cut_loops=recording.settings.repair)
        self._recordings[recording.key] = recording
        self._cutting.append(recording)
        self._feed(self._outbox)  # cut what the engine has room for now, so that `hungry` is up to date

    def cancel(self, key: Hashable) -> None:
        """Stop decoding a recording: its work leaves the engine, no more outputs for it."""
        recording = self._recordings.pop(key, None)
        if recording is not None:
            self._stop(recording)

    def abort(self) -> list[Hashable]:
        """Drop every recording (after the engine failed); their keys."""
        keys = list(self._recordings)
        for key in keys:
            self.cancel(key)
        return keys

    def step(self) -> list[Output]:
        """Cut what the engine has room for, step it once, settle what finished."""
        out, self._outbox = self._outbox, []
        self._feed(out)
        if self._decoding:
            self._settle(self.engine.step(), out)
        for recording in [r for r in self._recordings.values() if r.done]:
            self._finish(recording, out)
        return out

    def _feed(self, out: list[Output]) -> None:
        room = self.engine.capacity()
        cut: list[Piece] = []
        for recording in list(self._cutting):
            # urgent ones even when the engine is full: someone waits on them, and they are short (live finals)
            while len(cut) < room or recording.settings.urgent:
                try:
                    item = next(recording.spans, ...)
                except FunASRNanoError as exc:  # the second pass over a file failed
                    self._fail(recording, exc)
                    break
                if item is None:
                    break  # nothing more cut yet: another thread is still cutting it
                if item is ...:
                    recording.cut = True
                    self._cutting.remove(recording)
                    out.append(Progress(recording.key, (recording.num_samples - recording.heard_until) / SAMPLE_RATE))
                    break
                (begin, end), (audio_begin, audio_end), audio = item
                piece = Piece(recording, begin, end, audio_begin, audio_end, audio)
                out.append(Progress(recording.key, (audio_begin - recording.heard_until) / SAMPLE_RATE))
                recording.heard_until = audio_end
                recording.unsent.append(piece)
                if recording.text is not None:
                    recording.text.start([piece])
                cut.append(piece)
        # Urgent first, then longest first: the engine's batches then hold similar lengths and drain little
        # at the end.
        self._add(sorted(cut, key=lambda p: (not p.recording.settings.urgent, -p.audio_seconds)))

    def _add(self, pieces: Iterable[Piece]) -> None:
        for piece in pieces:
            recording = piece.recording
            if recording.error is not None:
                continue
            settings = recording.settings
            piece.budget = settings.max_new_tokens or token_budget(piece.audio_seconds)
            request = Request(piece.audio, settings.prompt, piece.budget,
                              align=settings.word_timestamps and self.ctc_tokenizer is not None,
                              urgent=settings.urgent)
            try:
                self.engine.add(piece, request)
            except FunASRNanoError as exc:  # it does not fit the model's positions: a UsageError
                self._fail(recording, exc)
                continue
            recording.pending += 1
            recording.first_decode = recording.first_decode or time.perf_counter()
            self._decoding.add(piece)

    def _fail(self, recording: Recording, error: FunASRNanoError) -> None:
        recording.error = error
        self._stop(recording)

    def _stop(self, recording: Recording) -> None:
        """No more cutting or decoding for a recording: its pieces leave the engine."""
        if recording in self._cutting:
            self._cutting.remove(recording)
        pieces = [p for p in self._decoding if p.recording is recording]
        self._decoding.difference_update(pieces)
        self.engine.cancel(pieces)

    def _settle(self, events: list[Event], out: list[Output]) -> None:
        finished: list[tuple[Piece, Finished]] = []
        streaming: dict[Piece, list[int]] = {}
        for event in events:
            piece = event.key
            if not isinstance(piece, Piece) or piece not in self._decoding:
                continue
            piece.tokens.extend(event.tokens)
            if piece.recording.text is not None and event.tokens:
                streaming[piece] = event.tokens
            if not event.done:
                continue
            self._decoding.discard(piece)
            recording = piece.recording
            streamed = recording.text is not None and recording.text.streamed(piece)
            decision = decide(piece.tokens, piece.budget, repair=recording.settings.repair, splits=piece.splits,
                              seconds=piece.seconds, streamed=streamed)
            if isinstance(decision, Split):
                streaming.pop(piece, None)
                self._split(piece)
            else:
                finished.append((piece, decision))
        alignments = self._align(finished)
        for (piece, decision), ctc in zip(finished, alignments, strict=True):
            recording = piece.recording
            segment = piece.settle(decision, self.tokenizer, self.ctc_tokenizer, ctc)
            recording.segments.append(segment)
            recording.pending -= 1
            streaming.pop(piece, None)
            if recording.text is not None:
                delta = recording.text.finish(piece, segment.text)
                if delta:
                    out.append(TextDelta(recording.key, delta))
            out.append(Progress(recording.key, piece.audio_seconds))
        for piece, tokens in streaming.items():
            assert piece.recording.text is not None
            delta = piece.recording.text.add(piece, tokens)
            if delta:
                out.append(TextDelta(piece.recording.key, delta))
        for recording in {id(p.recording): p.recording for p, _ in finished}.values():
            out.extend(SegmentDone(recording.key, segment) for segment in recording.settled_in_order())

    def _split(self, piece: Piece) -> None:
        recording = piece.recording
        assert recording.speech is not None
        halves = piece.halves(split_point(recording.speech.score, piece.begin, piece.end))
        place = recording.unsent.index(piece)
        recording.unsent[place : place + 1] = halves
        if recording.text is not None:
            recording.text.split(piece, halves)
        recording.pending -= 1
        self._add(halves)

    def _align(self, finished: list[tuple[Piece, Finished]]) -> list[CTCResult | None]:
        """The CTC alignment of the text each finished piece reports (what the official ``timestamps``
        aligns), for pieces that asked for word times; one call for all of them."""
        if self.ctc_tokenizer is None:
            return [None] * len(finished)
        wanted = [i for i, (piece, _) in enumerate(finished) if piece.recording.settings.word_timestamps]
        items = [(finished[i][0], self.ctc_tokenizer.encode(clean_text(self.tokenizer.decode(finished[i][1].tokens))))
                 for i in wanted]
        results: list[CTCResult | None] = [None] * len(finished)
        for index, result in zip(wanted, self.engine.align(items) if items else [], strict=True):
            results[index] = result
        return results

    def _finish(self, recording: Recording, out: list[Output]) -> None:
        del self._recordings[recording.key]
        out.append(RecordingDone(recording.key, recording.result()))


def decode_recordings(
    scheduler: Scheduler, recordings: Iterator[Recording | tuple[Hashable, FunASRNanoError]],
) -> Iterator[Output]:
    """Run the scheduler on this thread over recordings opened lazily (the next one only when the engine
    has room for more); every output, with each recording's RecordingDone in the order given."""
    waiting: list[Hashable] = []  # recordings in the order given, not yet reported done
    done: dict[Hashable, RecordingDone] = {}
    more = True
    while True:
        while more and scheduler.hungry:
            item = next(recordings, None)
            if item is None:
                more = False
            elif isinstance(item, tuple):
                waiting.append(item[0])
                done[item[0]] = RecordingDone(*item)
            else:
                waiting.append(item.key)
                scheduler.submit(item)
        while waiting and waiting[0] in done:
            yield done.pop(waiting.pop(0))
        if scheduler.idle and not more:
            return
        for output in scheduler.step():
            if isinstance(output, RecordingDone):
                done[output.recording] = output
            else:
                yield output
