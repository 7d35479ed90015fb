"""Recordings of any length as batches of segments: VAD cuts, one batched decode for the segments of
many files, guard retries, and each recording's timed segments.

The backend sees segments only. Segments of consecutive files share ``generate`` calls of
``4 x batch_size`` segments (longest first, so the engine's continuous batching drains little), and
a file is handed back as soon as its last segment is decoded, in input order.

Files (paths, bytes, file objects) are read in chunks, twice, in bounded memory whatever their length:
a first pass finds the speech (:func:`scan_audio`; the cut scores need the whole file's loudness range),
a second cuts each segment's audio out as the decoding reaches it. The segments and their text are those
of the whole-file path that arrays and :class:`PreparedAudio` take.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..backends import AlignRequest, Backend, TokenSink
from ..errors import AudioError, FunASRNanoError, UsageError
from ..frontend.audio import AudioInput, is_file_input, load_audio, stream_audio
from ..frontend.features import SAMPLE_RATE
from ..frontend.vad import SpeechMap, SpeechScanner, VadOptions, add_context, find_speech, split_point
from ..result import Segment
from ..text.ctc_tokenizer import CTCTokenizer, greedy_text
from ..text.prompt import PromptIds, PromptTokenizer, clean_text, strip_punctuation
from .alignment import CTCResult
from .guards import REPETITION, TRUNCATED, cut_repetition, find_repetition, is_truncated, token_budget
from .streaming import TextCallback, TextStream
from .words import aligned_words, proportional_words

ProgressCallback = Callable[[float], None]  # called with the seconds of audio just finished
SegmentCallback = Callable[[int, Segment], None]  # (input index, segment), in time order within an input

_NO_AUDIO = np.zeros(0, np.float32)
MAX_SPLITS = 1  # a looping or truncated segment is split once and retried; a loop that survives is cut
MIN_SPLIT_SECONDS = 3.0  # shorter segments are not split: halves under ~1 s lose too much context
SEGMENTS_PER_BATCH_SLOT = 4


@dataclass(frozen=True)
class DecodeSettings:
    prompt: PromptIds
    max_new_tokens: int | None  # None: from each segment's duration (guards.token_budget)
    vad: VadOptions | None  # None: the whole recording as one segment, unrepaired, as the official model
    sample_rate: int | None  # of array inputs
    resampler: str = "torchaudio"  # how inputs at other rates reach 16 kHz (see resample.py)
    language: str | None = None  # the trained language name in the prompt, None for automatic
    on_text: TextCallback | None = None  # each recording's text as it is decoded (see streaming.py)
    word_timestamps: bool = False  # each segment's words (CTC-aligned where the model has a CTC head)
    on_segment: SegmentCallback | None = None  # each segment once final, in time order (see SegmentDecoder.run)
    max_seconds: float | None = None  # longer file inputs are refused (AudioTooLongError)


@dataclass(frozen=True)
class PreparedAudio:
    """A recording already decoded to 16 kHz mono and, with VAD on, cut into speech (by
    :func:`prepare_audio`, possibly in another process or on another machine)."""

    samples: np.ndarray
    speech: SpeechMap | None = None
    load_seconds: float = 0.0
    vad_seconds: float = 0.0


def prepare_audio(
    source: AudioInput,
    vad: VadOptions | None,
    sample_rate: int | None = None,
    resampler: str = "torchaudio",
    vad_device: str = "cpu",
    max_seconds: float | None = None,
) -> PreparedAudio:
    """Decode, resample and (when ``vad`` is given) run the VAD: everything before the model."""
    started = time.perf_counter()
    samples = load_audio(source, sample_rate, resampler=resampler, max_seconds=max_seconds)
    loaded = time.perf_counter()
    speech = None if vad is None else find_speech(samples, vad, vad_device)
    return PreparedAudio(samples, speech, loaded - started, time.perf_counter() - loaded)


@dataclass(frozen=True)
class ScannedAudio:
    """A file whose speech was found by a first pass over it in chunks (:func:`scan_audio`); its samples
    are read again, in chunks, as its segments are decoded. ``source`` must read the same the second time
    (a path, bytes, or a seekable file object left open until the decoding ends)."""

    source: AudioInput
    speech: SpeechMap
    num_samples: int
    resampler: str = "torchaudio"
    scan_seconds: float = 0.0


def scan_audio(
    source: AudioInput, vad: VadOptions, resampler: str = "torchaudio", vad_device: str = "cpu",
    max_seconds: float | None = None,
) -> ScannedAudio:
    """Decode, resample and run the VAD over a file in chunks, keeping only what the VAD found."""
    started = time.perf_counter()
    scanner = SpeechScanner(vad, vad_device)
    for chunk in stream_audio(source, resampler=resampler, max_seconds=max_seconds):
        scanner.add(chunk)
    speech = scanner.finish()
    return ScannedAudio(source, speech, scanner.samples, resampler, time.perf_counter() - started)


def _cut(scanned: ScannedAudio, spans: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """The audio of each (begin, end) sample span, in order (spans ascending, not overlapping), from a
    second pass over the file that keeps only the samples between the previous span and the next."""
    buffer, base = np.zeros(0, np.float32), 0  # samples [base, base + buffer.size) of the recording
    chunks = stream_audio(scanned.source, resampler=scanned.resampler)
    for begin, end in spans:
        while base + buffer.size < end:
            chunk = next(chunks, None)
            if chunk is None:
                raise AudioError("the file changed while it was being transcribed: it is shorter now")
            drop = min(max(0, begin - base), buffer.size)  # samples before the span are not needed
            buffer, base = np.concatenate([buffer[drop:], chunk]), base + drop
        yield buffer[begin - base : end - base].copy()
        buffer, base = buffer[end - base :], end


@dataclass
class DecodedRecording:
    segments: list[Segment]  # in time order
    duration: float
    timings: dict[str, float]


@dataclass
class _Recording:
    index: int  # its place among the inputs
    num_samples: int
    speech: SpeechMap | None
    started: float
    timings: dict[str, float]
    stream: TextStream | None = None
    pending: int = 0  # pieces cut and not yet settled
    cut: bool = False  # every piece has been cut
    segments: list[Segment] = field(default_factory=list)
    error: FunASRNanoError | None = None  # the second pass over the file failed
    unsent: list[_Piece] = field(default_factory=list)  # pieces, in time order, from the first not sent on
    on_segment: SegmentCallback | None = None

    @property
    def done(self) -> bool:
        return self.cut and self.pending == 0

    def result(self) -> DecodedRecording:
        self.timings["total"] = time.perf_counter() - self.started
        ordered = sorted(self.segments, key=lambda s: s.start)
        return DecodedRecording(ordered, self.num_samples / SAMPLE_RATE, self.timings)

    def send_settled(self) -> None:
        """Hand the segments of the settled pieces at the front of the time order to ``on_segment``."""
        while self.unsent and self.unsent[0].segment is not None:
            segment = self.unsent.pop(0).segment
            if self.on_segment is not None:
                assert segment is not None
                self.on_segment(self.index, segment)


@dataclass(eq=False)  # a piece is itself, whatever its span: TextStream keys on it
class _Piece:
    recording: _Recording
    begin: int  # the speech span the segment reports, in samples
    end: int
    audio_begin: int  # the span the model hears: the speech plus context padding
    audio_end: int
    audio: np.ndarray  # samples [audio_begin, audio_end) of the recording
    splits: int = 0
    segment: Segment | None = None  # once settled

    @property
    def audio_seconds(self) -> float:
        return (self.audio_end - self.audio_begin) / SAMPLE_RATE


def _reported_tokens(tokens: list[int], repair: bool) -> tuple[list[int], tuple[int, int] | None]:
    """The ids a finished segment reports (a surviving loop cut when repairing) and the loop found."""
    repetition = find_repetition(tokens) if repair else None
    return (cut_repetition(tokens, repetition) if repetition is not None else tokens), repetition


class SegmentDecoder:
    def __init__(
        self, backend: Backend, tokenizer: PromptTokenizer, batch_size: int = 32,
        ctc_tokenizer: CTCTokenizer | None = None,
    ):
        """ctc_tokenizer: given when the backend has a CTC head, whose alignments then time the words."""
        self.backend = backend
        self.tokenizer = tokenizer
        self.ctc_tokenizer = ctc_tokenizer
        self.group_size = max(1, SEGMENTS_PER_BATCH_SLOT * batch_size)
        self.vad_device = backend.device

    def run(
        self,
        sources: Iterable[AudioInput],
        settings: DecodeSettings,
        progress: ProgressCallback | None = None,
    ) -> Iterator[DecodedRecording | FunASRNanoError]:
        """Each source's segments, or the error that source raised, in input order. ``settings.on_segment``
        gets each segment as soon as it and every earlier one of its recording are final."""
        report = progress or (lambda seconds: None)
        waiting: deque[_Piece] = deque()
        in_order: deque[_Recording | FunASRNanoError] = deque()
        for index, source in enumerate(sources):
            prepared = self._prepare(index, source, settings, report)
            if isinstance(prepared, FunASRNanoError):
                in_order.append(prepared)
                yield from self._completed(in_order)
                continue
            recording, pieces = prepared
            in_order.append(recording)
            try:
                for piece in pieces:  # cut as the decoding needs them: a file's audio is never all held
                    waiting.append(piece)
                    if len(waiting) >= self.group_size:
                        self._decode([waiting.popleft() for _ in range(self.group_size)], settings, report)
                        yield from self._completed(in_order)
            except FunASRNanoError as exc:  # the second pass over a file failed
                recording.error = exc
            yield from self._completed(in_order)
        while waiting:
            group = [waiting.popleft() for _ in range(min(self.group_size, len(waiting)))]
            self._decode(group, settings, report)
            yield from self._completed(in_order)

    @staticmethod
    def _completed(
        in_order: deque[_Recording | FunASRNanoError],
    ) -> Iterator[DecodedRecording | FunASRNanoError]:
        while in_order and (isinstance(in_order[0], FunASRNanoError) or in_order[0].done):
            item = in_order.popleft()
            yield item if isinstance(item, FunASRNanoError) else item.error or item.result()

    def _prepare(
        self, index: int, source: AudioInput, settings: DecodeSettings, report: ProgressCallback
    ) -> tuple[_Recording, Iterator[_Piece]] | FunASRNanoError:
        """The recording and its pieces, cut lazily (files: from a second pass over them)."""
        started = time.perf_counter()
        try:
            if isinstance(source, (PreparedAudio, ScannedAudio)):
                prepared = source
            elif settings.vad is not None and is_file_input(source):
                prepared = scan_audio(source, settings.vad, settings.resampler, self.vad_device, settings.max_seconds)
            else:
                prepared = prepare_audio(source, settings.vad, settings.sample_rate, settings.resampler,
                                         self.vad_device, settings.max_seconds)
        except FunASRNanoError as exc:
            return exc
        if isinstance(prepared, ScannedAudio):
            num_samples = prepared.num_samples
            timings = {"load_audio": 0.0, "vad": prepared.scan_seconds, "decode": 0.0}  # the scan does both
        else:
            num_samples = prepared.samples.size
            timings = {"load_audio": prepared.load_seconds, "decode": 0.0}
        recording = _Recording(index, num_samples, None, started, timings, on_segment=settings.on_segment)
        if settings.vad is None:
            if isinstance(prepared, ScannedAudio):
                raise UsageError("a ScannedAudio is cut by its VAD: it cannot be decoded with VAD off")
            spans = heard = [(0, num_samples)]
        else:
            if prepared.speech is None:
                raise UsageError("this PreparedAudio was made with VAD off: prepare it with the same vad option")
            recording.speech = prepared.speech
            if isinstance(prepared, PreparedAudio):
                recording.timings["vad"] = prepared.vad_seconds
            spans = recording.speech.spans
            heard = add_context(spans, settings.vad.pad, num_samples)
        if settings.on_text is not None:
            recording.stream = TextStream(self.tokenizer.decode, settings.on_text, cut_loops=settings.vad is not None)
        if isinstance(prepared, ScannedAudio):
            audio: Iterator[np.ndarray] = _cut(prepared, heard)
        else:
            audio = (prepared.samples[begin:end] for begin, end in heard)
        return recording, self._pieces(recording, spans, heard, audio, report)

    @staticmethod
    def _pieces(
        recording: _Recording, spans: list[tuple[int, int]], heard: list[tuple[int, int]],
        audio: Iterator[np.ndarray], report: ProgressCallback,
    ) -> Iterator[_Piece]:
        heard_until = 0
        try:
            for (begin, end), (audio_begin, audio_end) in zip(spans, heard, strict=True):
                piece = _Piece(recording, begin, end, audio_begin, audio_end, next(audio))
                recording.pending += 1
                recording.unsent.append(piece)
                if recording.stream is not None:
                    recording.stream.start([piece])
                report((audio_begin - heard_until) / SAMPLE_RATE)  # the non-speech before it is done
                heard_until = audio_end
                yield piece
            report((recording.num_samples - heard_until) / SAMPLE_RATE)
        finally:
            recording.cut = True

    def _decode(self, pieces: list[_Piece], settings: DecodeSettings, report: ProgressCallback) -> None:
        """Decode pieces in one backend call, then their retries in another, until all are settled."""
        while pieces:
            budgets = [settings.max_new_tokens or token_budget(p.audio_seconds) for p in pieces]
            order = sorted(range(len(pieces)), key=lambda i: -pieces[i].audio_seconds)
            ordered = [pieces[i] for i in order]
            started = time.perf_counter()
            aligned: dict[int, CTCResult] = {}
            extra = {}
            if settings.word_timestamps and self.ctc_tokenizer is not None:
                extra["align"] = AlignRequest(self._ctc_targets(settings.vad is not None), aligned.__setitem__)
            generated = self.backend.generate(
                [p.audio for p in ordered], [settings.prompt] * len(order), [budgets[i] for i in order],
                _stream_sink(ordered), **extra,
            )
            elapsed = time.perf_counter() - started
            tokens: list[list[int]] = [[] for _ in pieces]
            ctc: list[CTCResult | None] = [None] * len(pieces)
            for slot, index in enumerate(order):
                tokens[index] = generated[slot]
                ctc[index] = aligned.get(slot)
            for recording in {id(p.recording): p.recording for p in pieces}.values():
                recording.timings["decode"] += elapsed  # shared by every file in the call
            retries: list[_Piece] = []
            # Latest first: finishing a streamed recording's head sends the text of the pieces after it,
            # which commits them, so those must have been settled (or split) already.
            for piece, ids, budget, head in reversed(list(zip(pieces, tokens, budgets, ctc, strict=True))):
                retries.extend(self._settle(piece, ids, budget, settings, report, head))
            pieces = retries

    def _ctc_targets(self, repair: bool):  # type: ignore[no-untyped-def]
        """The CTC ids of the text each segment will report (what the official ``timestamps`` aligns)."""
        assert self.ctc_tokenizer is not None
        ctc_tokenizer = self.ctc_tokenizer

        def targets(_: int, ids: list[int]) -> list[int]:
            return ctc_tokenizer.encode(clean_text(self.tokenizer.decode(_reported_tokens(ids, repair)[0])))

        return targets

    def _settle(
        self, piece: _Piece, tokens: list[int], budget: int, settings: DecodeSettings, report: ProgressCallback,
        ctc: CTCResult | None = None,
    ) -> list[_Piece]:
        """Finish a piece, or return the two halves to retry it as."""
        repair = settings.vad is not None
        truncated = is_truncated(tokens, budget)
        reported, repetition = _reported_tokens(tokens, repair)
        speech = piece.recording.speech
        stream = piece.recording.stream
        if (
            repair and (truncated or repetition) and speech is not None and piece.splits < MAX_SPLITS
            and (piece.end - piece.begin) / SAMPLE_RATE >= MIN_SPLIT_SECONDS
            and not (stream is not None and stream.is_committed(piece))
        ):
            cut = split_point(speech.score, piece.begin, piece.end)
            recording = piece.recording
            recording.pending += 1
            offset = cut - piece.audio_begin
            halves = [
                _Piece(recording, piece.begin, cut, piece.audio_begin, cut, piece.audio[:offset], piece.splits + 1),
                _Piece(recording, cut, piece.end, cut, piece.audio_end, piece.audio[offset:], piece.splits + 1),
            ]
            place = recording.unsent.index(piece)
            recording.unsent[place : place + 1] = halves
            if stream is not None:
                stream.split(piece, halves)
            return halves
        flags = []
        if repetition is not None:
            flags.append(REPETITION)
        if truncated:
            flags.append(TRUNCATED)
        raw = self.tokenizer.decode(reported)
        start, end = piece.begin / SAMPLE_RATE, piece.end / SAMPLE_RATE
        segment = Segment(start, end, clean_text(raw), strip_punctuation(raw), reported, flags)
        if settings.word_timestamps:
            self._time_words(segment, piece, ctc)
        piece.recording.segments.append(segment)
        if stream is not None:
            stream.finish(piece, segment.text)
        piece.recording.pending -= 1
        report(piece.audio_seconds)
        piece.segment, piece.audio = segment, _NO_AUDIO  # its audio is not needed any more
        piece.recording.send_settled()
        return []


    def _time_words(self, segment: Segment, piece: _Piece, ctc: CTCResult | None) -> None:
        """The segment's words; with an alignment, the segment's times become its first and last word's
        (so a cue does not begin in the silence VAD kept around the speech)."""
        if ctc is None or self.ctc_tokenizer is None:
            segment.words = proportional_words(segment.text, segment.start, segment.end)
            return
        segment.ctc_text = greedy_text(self.ctc_tokenizer, ctc.greedy)
        if ctc.alignment is None:
            segment.words = proportional_words(segment.text, segment.start, segment.end)
            return
        pieces = [self.ctc_tokenizer.token_bytes(t) for t in self.ctc_tokenizer.encode(segment.text)]
        segment.words = aligned_words(segment.text, pieces, ctc.alignment, piece.audio_begin / SAMPLE_RATE,
                                      piece.audio_end / SAMPLE_RATE)
        if segment.words:
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end


def _stream_sink(pieces: list[_Piece]) -> TokenSink | None:
    """Routes a generate call's tokens to the text streams of the pieces' recordings, if any streams."""
    if all(p.recording.stream is None for p in pieces):
        return None

    def send(index: int, tokens: list[int]) -> None:
        stream = pieces[index].recording.stream
        if stream is not None:
            stream.add_tokens(pieces[index], tokens)

    return send
