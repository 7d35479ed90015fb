"""What the scheduler decodes: recordings, cut into pieces (speech spans plus context), each settled
into a timed :class:`~funasr_nano.result.Segment`.

A piece is itself whatever its span (``eq=False``): it is the key its engine work and its text go by.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..backends.alignment import CTCResult
from ..errors import FunASRNanoError, UsageError
from ..frontend.audio import AudioInput, is_file_input
from ..frontend.features import SAMPLE_RATE
from ..frontend.prepared import PreparedAudio, ScannedAudio, cut_spans, prepare_audio, scan_audio
from ..frontend.vad import SpeechMap, VadOptions, add_context
from ..result import Segment
from ..text.ctc_tokenizer import CTCTokenizer, greedy_text
from ..text.prompt import PromptIds, PromptTokenizer, clean_text, strip_punctuation
from .guards import Finished
from .ordered_text import OrderedText
from .words import aligned_words, proportional_words

_NO_AUDIO = np.zeros(0, np.float32)

Span = tuple[int, int]  # [begin, end) in samples of the recording
# A speech span, the span the model hears (speech plus context padding) and that span's samples; None
# from a span source: no more cut yet (another thread is still cutting).
SpanAudio = tuple[Span, Span, np.ndarray]


@dataclass(frozen=True)
class DecodeSettings:
    """How one recording is decoded, resolved against the model (see ``options.TranscribeOptions``)."""

    prompt: PromptIds
    max_new_tokens: int | None  # None: from each segment's duration (guards.token_budget)
    vad: VadOptions | None  # None: the whole recording as one segment, unrepaired, as the official model
    sample_rate: int | None = None  # of array inputs
    resampler: str = "torchaudio"  # how inputs at other rates reach 16 kHz (see frontend/resample.py)
    language: str | None = None  # the trained language name in the prompt, None for automatic
    stream_text: bool = False  # report the text as it is decoded (TextDelta)
    word_timestamps: bool = False  # each segment's words (CTC-aligned where the model has a CTC head)
    max_seconds: float | None = None  # longer file inputs are refused (AudioTooLongError)
    urgent: bool = False  # cut, encoded and admitted before other work (someone waits on it: a live final)

    @property
    def repair(self) -> bool:
        """Guards split looping or truncated segments (with VAD on only, as the official model has none)."""
        return self.vad is not None


@dataclass
class DecodedRecording:
    segments: list[Segment]  # in time order
    duration: float
    timings: dict[str, float]


@dataclass(eq=False)
class Recording:
    key: Hashable  # the caller's name for it (an input index, a request)
    settings: DecodeSettings
    num_samples: int
    speech: SpeechMap | None
    spans: Iterator[SpanAudio | None]  # its audio, cut lazily
    timings: dict[str, float]
    started: float = field(default_factory=time.perf_counter)
    text: OrderedText | None = None
    pending: int = 0  # pieces cut and not yet settled
    cut: bool = False  # every piece has been cut
    heard_until: int = 0  # samples before this are cut or known to be non-speech
    segments: list[Segment] = field(default_factory=list)
    unsent: list[Piece] = field(default_factory=list)  # pieces, in time order, from the first not reported on
    error: FunASRNanoError | None = None
    first_decode: float | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or (self.cut and self.pending == 0)

    def result(self) -> DecodedRecording | FunASRNanoError:
        if self.error is not None:
            return self.error
        now = time.perf_counter()
        self.timings["decode"] = now - (self.first_decode or now)
        self.timings["total"] = now - self.started
        ordered = sorted(self.segments, key=lambda s: s.start)
        return DecodedRecording(ordered, self.num_samples / SAMPLE_RATE, self.timings)

    def settled_in_order(self) -> list[Segment]:
        """The segments of the settled pieces at the front of the time order, not reported before."""
        out = []
        while self.unsent and self.unsent[0].segment is not None:
            segment = self.unsent.pop(0).segment
            assert segment is not None
            out.append(segment)
        return out


@dataclass(eq=False)
class Piece:
    recording: Recording
    begin: int  # the speech span the segment reports, in samples
    end: int
    audio_begin: int  # the span the model hears: the speech plus context padding
    audio_end: int
    audio: np.ndarray  # samples [audio_begin, audio_end) of the recording
    budget: int = 0
    splits: int = 0
    tokens: list[int] = field(default_factory=list)
    segment: Segment | None = None  # once settled

    @property
    def seconds(self) -> float:
        """Of its speech span."""
        return (self.end - self.begin) / SAMPLE_RATE

    @property
    def audio_seconds(self) -> float:
        return (self.audio_end - self.audio_begin) / SAMPLE_RATE

    def halves(self, cut: int) -> list[Piece]:
        offset = cut - self.audio_begin
        return [
            Piece(self.recording, self.begin, cut, self.audio_begin, cut, self.audio[:offset], splits=self.splits + 1),
            Piece(self.recording, cut, self.end, cut, self.audio_end, self.audio[offset:], splits=self.splits + 1),
        ]

    def settle(self, finished: Finished, tokenizer: PromptTokenizer, ctc_tokenizer: CTCTokenizer | None,
               ctc: CTCResult | None) -> Segment:
        raw = tokenizer.decode(finished.tokens)
        segment = Segment(self.begin / SAMPLE_RATE, self.end / SAMPLE_RATE, clean_text(raw), strip_punctuation(raw),
                          finished.tokens, list(finished.flags))
        if self.recording.settings.word_timestamps:
            self._time_words(segment, ctc_tokenizer, ctc)
        self.segment, self.audio = segment, _NO_AUDIO  # its audio is not needed any more
        return segment

    def _time_words(self, segment: Segment, ctc_tokenizer: CTCTokenizer | None, ctc: CTCResult | None) -> None:
        """The segment's words; with an alignment, the segment's times become its first and last word's
        (so a cue does not begin in the silence VAD kept around the speech)."""
        if ctc is None or ctc_tokenizer is None:
            segment.words = proportional_words(segment.text, segment.start, segment.end)
            return
        segment.ctc_text = greedy_text(ctc_tokenizer, ctc.greedy)
        if ctc.alignment is None:
            segment.words = proportional_words(segment.text, segment.start, segment.end)
            return
        pieces = [ctc_tokenizer.token_bytes(t) for t in ctc_tokenizer.encode(segment.text)]
        segment.words = aligned_words(segment.text, pieces, ctc.alignment, self.audio_begin / SAMPLE_RATE,
                                      self.audio_end / SAMPLE_RATE)
        if segment.words:
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end


def open_recording(
    key: Hashable, source: AudioInput | PreparedAudio | ScannedAudio, settings: DecodeSettings, vad_device: str,
) -> Recording:
    """Read (or take) a source's audio, find its speech, and set up its lazily cut spans. Raises the
    FunASRNanoError a bad source gives."""
    started = time.perf_counter()
    if isinstance(source, (PreparedAudio, ScannedAudio)):
        prepared = source
    elif settings.vad is not None and is_file_input(source):
        prepared = scan_audio(source, settings.vad, settings.resampler, vad_device, settings.max_seconds)
    else:
        prepared = prepare_audio(source, settings.vad, settings.sample_rate, settings.resampler, vad_device,
                                 settings.max_seconds)
    if isinstance(prepared, ScannedAudio):
        num_samples = prepared.num_samples
        timings = {"load_audio": 0.0, "vad": prepared.scan_seconds}  # the scan does both
    else:
        num_samples = prepared.samples.size
        timings = {"load_audio": prepared.load_seconds}
    if settings.vad is None:
        if isinstance(prepared, ScannedAudio):
            raise UsageError("a ScannedAudio is cut by its VAD: it cannot be decoded with VAD off")
        speech, spans = None, [(0, num_samples)]
        heard = spans
    else:
        if prepared.speech is None:
            raise UsageError("this PreparedAudio was made with VAD off: prepare it with the same vad option")
        speech = prepared.speech
        if isinstance(prepared, PreparedAudio):
            timings["vad"] = prepared.vad_seconds
        spans = speech.spans
        heard = add_context(spans, settings.vad.pad, num_samples)
    if isinstance(prepared, ScannedAudio):
        audio: Iterator[np.ndarray] = cut_spans(prepared, heard)
    else:
        samples = prepared.samples
        audio = (samples[begin:end] for begin, end in heard)
    return Recording(key, settings, num_samples, speech, zip(spans, heard, audio, strict=True), timings, started)
