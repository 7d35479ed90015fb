"""The user-facing model: audio in, ``Transcription`` out, on any backend."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .backends import Engine
from .backends.drafts import MAX_DRAFTS, CTCDrafter
from .backends.selection import choose_backend
from .checkpoint import LLM_SUBDIR, load_checkpoint, load_ctc_head, model_name, resolve_model_dir
from .config import ModelConfig, ctc_config_for_borrowed, read_config
from .decoding.live import LiveStream
from .decoding.live_decodes import Decodes, InlineDecodes
from .decoding.live_events import LiveOptions
from .decoding.pieces import DecodedRecording, DecodeSettings, Recording, open_recording
from .decoding.scheduler import RecordingDone, Scheduler, SegmentDone, TextDelta, decode_recordings
from .dtypes import dtype_name
from .errors import FunASRNanoError, ModelLoadError, UsageError, option
from .frontend.audio import AudioInput, check_max_seconds, check_resampler, check_sample_rate
from .frontend.endpoint import EndpointOptions, SpeechDetector
from .frontend.prepared import PreparedAudio, ScannedAudio
from .frontend.vad import VadOptions
from .options import TranscribeOptions
from .result import Segment, Transcription, join_texts
from .text.ctc_tokenizer import VOCAB_FILE, CTCTokenizer
from .text.languages import resolve_language
from .text.prompt import PromptTokenizer, normalize_hotwords

ProgressCallback = Callable[[float], None]  # called with the seconds of audio just finished
SegmentCallback = Callable[[int, Segment], None]  # (input index, segment), in time order within an input
TextCallback = Callable[[str], None]  # called with each new piece of a recording's text

NO_CTC_NOTE = "this model has no trained CTC head: word times are proportional estimates ({why})"


class FunASRNano:
    """A loaded Fun-ASR-Nano model. Create it with :func:`funasr_nano.load_model`."""

    def __init__(
        self, config: ModelConfig, tokenizer: PromptTokenizer, backend: Engine, model_dir: Path,
        ctc_tokenizer: CTCTokenizer | None = None, no_ctc_reason: str = "",
    ):
        """ctc_tokenizer: the CTC vocabulary, given when the backend runs a CTC head (word timestamps)."""
        self.config = config
        self.tokenizer = tokenizer
        self.backend = backend
        self.model_dir = model_dir
        self.ctc_tokenizer = ctc_tokenizer
        self.no_ctc_reason = no_ctc_reason
        self._noted = False

    @property
    def word_timestamps_note(self) -> str | None:
        """Why word times are estimates, or None when a CTC head aligns them."""
        if self.ctc_tokenizer is not None:
            return None
        return NO_CTC_NOTE.format(why=self.no_ctc_reason or "none in the checkpoint; pass ctc_head=PATH")

    @property
    def languages(self) -> tuple[str, ...]:
        return self.config.languages

    def transcribe(
        self,
        audio: AudioInput,
        *,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
        on_text: TextCallback | None = None,
        **option_values: Any,
    ) -> Transcription:
        """Transcribe one recording (path, bytes, file object, or samples at ``sample_rate``, default 16 kHz).

        The options are those of :class:`~funasr_nano.options.TranscribeOptions`, given as keywords
        (``language="en"``, ``hotwords=[...]``, ``itn``, ``sample_rate``, ``max_new_tokens``, ``vad``,
        ``resampler``, ``word_timestamps``, ``max_seconds``) or as one ``options=TranscribeOptions(...)``.

        vad: True (default) cuts speech into segments of at most 30 s with silero-vad, decodes them
        batched, splits and retries a segment whose output loops or hits its token budget, and cuts a
        loop that survives (flag "repetition"); a ``VadOptions`` tunes the cutting. False decodes the
        whole recording as ONE segment with nothing repaired, exactly as the official model does
        (long recordings then loop or stop early). progress: called with the seconds of audio each
        finished piece covered. on_text: called with each new piece of the text as soon as it is decoded
        and final, in order (the pieces add up to the returned ``text``); a segment whose text has begun
        to stream is not split and decoded again, so a loop in it is cut and a token-budget overrun only
        flagged. resampler: how audio at other rates is brought to 16 kHz: "torchaudio" (default: the
        filter the official toolkit uses where torchaudio is installed, computed without torchaudio) or
        "soxr" (librosa's, which the official toolkit uses otherwise). word_timestamps: give each segment
        its ``words`` (``Word(start, end, word, probability)``), timed by CTC forced alignment of the text
        against the model's CTC head, as the official ``timestamps``; the segment's times then come from its
        first and last word. Without a trained CTC head the word times are proportional estimates (said
        once, as a warning). max_seconds: refuse longer audio (``AudioTooLongError``), from a file's
        header or as soon as decoding passes the limit.

        Files (paths, bytes, file objects) are read in chunks, in memory that does not grow with their
        length (with VAD on): a first pass finds the speech, a second cuts each segment's audio as the
        decoding reaches it; the result is the same as for the whole recording's samples.
        """
        settings = self.settings(_options(options, option_values), stream_text=on_text is not None)
        (result,) = self._run([audio], settings, progress, on_text)
        if isinstance(result, FunASRNanoError):
            raise result
        return result

    def stream(
        self,
        *,
        language: str | None = None,
        hotwords: str | Sequence[str] | None = None,
        itn: bool = True,
        word_timestamps: bool = False,
        vad: bool | EndpointOptions = True,
        interval: float = 0.5,
        hold_back: int = 1,
        max_utterance: float = 20.0,
        resampler: str = "torchaudio",
        max_new_tokens: int | None = None,
        decodes: Decodes | None = None,
    ) -> LiveStream:
        """A live stream: ``feed(samples, sample_rate)`` audio as it arrives and take its events with
        ``poll()`` or ``events()``: ``SpeechStarted(time, item)``, ``Partial(item, text, stable_text)`` every
        ``interval`` seconds of an open utterance, ``SpeechStopped(time, item)``, ``Final(item, text, start, end,
        words, flags)``; ``close()`` at the end. max_new_tokens: each decode's budget (default: from the
        duration of its audio). vad: True finds utterances with silero-vad as they end
        (an ``EndpointOptions`` tunes the threshold, silence and prefix padding); False leaves it to the
        caller, who ends each utterance with ``commit()``. An utterance is ended at ``max_utterance``
        seconds. A final text is decoded as a file's segment is (the same guards; word times with
        ``word_timestamps``). decodes: where the decodes run (default: on the caller's thread, inside
        ``feed``; the server passes its worker's)."""
        if not isinstance(vad, (bool, EndpointOptions)):
            raise UsageError(f"vad must be True, False or an EndpointOptions, not {type(vad).__name__}")
        settings = self.settings(TranscribeOptions(language=language, hotwords=hotwords, itn=itn,
                                                   word_timestamps=word_timestamps, resampler=resampler,
                                                   max_new_tokens=max_new_tokens))
        endpoint = EndpointOptions() if vad is True else vad or None
        options = LiveOptions(interval=interval, hold_back=hold_back, max_utterance=max_utterance, endpoint=endpoint)
        # the VAD where the model runs: on a GPU, hundreds of live streams' passes cost the CPU next to nothing
        detector = SpeechDetector(endpoint, device=self.backend.device) if endpoint is not None else None
        decodes = decodes or InlineDecodes(self.scheduler())
        return LiveStream(decodes, self.tokenizer.decode, settings, options, detector)

    def transcribe_many(
        self,
        audios: Iterable[AudioInput],
        *,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        **option_values: Any,
    ) -> Iterator[Transcription | FunASRNanoError]:
        """Transcribe many recordings in shared batches; yields, in input order, each one's
        ``Transcription`` or the ``FunASRNanoError`` that input raised (unreadable audio), so one bad file
        does not stop the rest. Inputs are read lazily; options are those of :meth:`transcribe`.
        on_segment: called with (input index, segment) as soon as a segment and every earlier one of its
        input are final, in time order within each input (to write outputs progressively)."""
        settings = self.settings(_options(options, option_values))
        return self._run(audios, settings, progress, on_segment=on_segment)

    def settings(self, options: TranscribeOptions, stream_text: bool = False) -> DecodeSettings:
        """The options resolved against this model (language name, prompt ids); a bad one is a UsageError."""
        language_name = resolve_language(options.language, self.languages)
        sample_rate = None if options.sample_rate is None else check_sample_rate(options.sample_rate)
        prompt = self.tokenizer.prompt_ids(normalize_hotwords(options.hotwords), language_name, options.itn)
        if options.max_new_tokens is not None and options.max_new_tokens < 1:
            raise UsageError(f"{option('max_new_tokens')} must be at least 1")
        vad = options.vad
        if not isinstance(vad, (bool, VadOptions)):
            raise UsageError(f"vad must be True, False or a VadOptions, not {type(vad).__name__}")
        vad_options = VadOptions() if vad is True else vad or None
        if options.word_timestamps and self.word_timestamps_note and not self._noted:
            self._noted = True
            warnings.warn(self.word_timestamps_note, stacklevel=3)
        check_max_seconds(options.max_seconds)
        return DecodeSettings(prompt, options.max_new_tokens, vad_options, sample_rate,
                              check_resampler(options.resampler), language_name, stream_text,
                              bool(options.word_timestamps), options.max_seconds)

    def recording(self, key: Hashable, source: AudioInput | PreparedAudio | ScannedAudio,
                  settings: DecodeSettings, vad_device: str | None = None) -> Recording:
        """A source opened for the scheduler: read (files: a first pass in chunks) and cut by VAD, on
        ``vad_device`` (default: the model's device)."""
        return open_recording(key, source, settings, vad_device or self.backend.device)

    def scheduler(self) -> Scheduler:
        """A scheduler stepping this model's engine (one per thread that drives the engine)."""
        return Scheduler(self.backend, self.tokenizer, self.ctc_tokenizer)

    def _run(
        self, audios: Iterable[AudioInput], settings: DecodeSettings, progress: ProgressCallback | None,
        on_text: TextCallback | None = None, on_segment: SegmentCallback | None = None,
    ) -> Iterator[Transcription | FunASRNanoError]:
        def recordings() -> Iterator[Recording | tuple[Hashable, FunASRNanoError]]:
            for index, source in enumerate(audios):
                try:
                    yield self.recording(index, source, settings)
                except FunASRNanoError as exc:
                    yield index, exc

        for output in decode_recordings(self.scheduler(), recordings()):
            if isinstance(output, RecordingDone):
                result = output.result
                yield result if isinstance(result, FunASRNanoError) else transcription(result, settings.language)
            elif isinstance(output, TextDelta):
                if on_text is not None:
                    on_text(output.text)
            elif isinstance(output, SegmentDone):
                if on_segment is not None:
                    on_segment(output.recording, output.segment)  # type: ignore[arg-type]
            elif progress is not None:
                progress(output.seconds)


def _options(options: TranscribeOptions | None, values: dict[str, Any]) -> TranscribeOptions:
    unknown = sorted(set(values) - set(TranscribeOptions.names()))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    if options is not None and values:
        raise UsageError("pass the options either as options=TranscribeOptions(...) or as keywords, not both")
    return options or TranscribeOptions(**values)


def transcription(decoded: DecodedRecording, language: str | None) -> Transcription:
    return Transcription(
        text=join_texts([s.text for s in decoded.segments]),
        text_tn=join_texts([s.text_tn for s in decoded.segments]),
        segments=decoded.segments,
        language=language,
        duration=decoded.duration,
        timings=decoded.timings,
    )


def load_model(
    model: str | os.PathLike[str] = "FunAudioLLM/Fun-ASR-Nano-2512",
    *,
    device: str = "auto",
    dtype: str = "auto",
    backend: str = "auto",
    batch_size: int = 32,
    hub: str = "hf",
    variant: str | None = None,
    int8: bool = False,
    ctc_head: str | os.PathLike[str] | None = None,
    ctc_drafts: int = 0,
) -> FunASRNano:
    """Load a model from a local hub-layout directory or a hub id (downloaded on first use).

    device: "auto" | "cpu" | "cuda[:N]" | "gpu" (MLX); dtype: "auto" (bf16 on a GPU, fp32 on CPU) | "float32" |
    "bfloat16"; backend: "auto" (MLX on Apple Silicon when mlx is installed, else torch) | "torch" | "mlx";
    hub: "hf" | "modelscope" (where a hub id is downloaded from); variant: "nano" | "mlt" (guessed from the
    hub id or the directory's own name when None); int8: weight-only int8 LLM weights (torch on CPU only: faster
    decoding, greedy ids may differ from fp32). Generation stops on config.json's ``eos_token_id``, as the
    official model's does (``<|im_end|>`` when the config names none). ctc_head: a checkpoint (``model.pt``
    or its directory) of the same encoder whose trained CTC head times the words of a model that has none
    (the ModelScope Nano ``model.pt`` for the Hugging Face Nano); a head that does not fit is refused.
    ctc_drafts: speculative decoding with the CTC head's transcript as the draft, verifying up to this many
    draft tokens per step (8 is a good value; 0: off). The tokens are greedy decoding's all the same; only
    fewer steps are taken when the draft is right. Needs a CTC head (the checkpoint's or ``ctc_head``).
    """
    dtype_name(dtype)  # a bad dtype fails before anything is read
    if isinstance(ctc_drafts, bool) or not isinstance(ctc_drafts, int) or not 0 <= ctc_drafts <= MAX_DRAFTS:
        raise UsageError(f"{option('ctc_drafts', ctc_drafts)} must be a whole number from 0 (off) to {MAX_DRAFTS}")
    model_dir = resolve_model_dir(model, hub)
    config = read_config(model_dir, variant, model_name(model))
    tokenizer = PromptTokenizer(model_dir / LLM_SUBDIR / "tokenizer.json")
    stop_ids = config.llm.eos_token_ids or (tokenizer.im_end_id,)
    borrowed = load_ctc_head(ctc_head) if ctc_head is not None else None
    engine: Engine
    if choose_backend(backend, model_dir) == "mlx":
        if int8:
            raise UsageError(f"{option('int8', True)} is a torch-backend option; MLX quantizes with "
                             "`funasr-nano convert --bits 8`")
        from .backends.mlx.backend import MLXBackend, read_weights

        weights = read_weights(model_dir)
        ctc_config, ctc_tensors, ctc_tokenizer, why = _ctc_parts(config, model_dir, weights.ctc, ctc_head, borrowed)
        weights.ctc = {}
        config = replace(config, ctc=ctc_config)
        engine = MLXBackend.load(
            config, model_dir, stop_ids, device, dtype, batch_size, weights,
            ctc_tensors, str(ctc_head) if borrowed is not None else None,
            _drafter(ctc_drafts, ctc_tokenizer, tokenizer, stop_ids, why), ctc_drafts or 8,
        )
        return FunASRNano(config, tokenizer, engine, model_dir, ctc_tokenizer, why)
    else:
        from .backends.torch import TorchBackend

        core, own_ctc = load_checkpoint(model_dir)
        ctc_config, ctc_tensors, ctc_tokenizer, why = _ctc_parts(config, model_dir, own_ctc, ctc_head, borrowed)
        config = replace(config, ctc=ctc_config)
        engine = TorchBackend(
            config, core, stop_ids, device, dtype, batch_size, str(model_dir / "model.pt"), int8,
            ctc_tensors, str(ctc_head) if borrowed is not None else None,
            _drafter(ctc_drafts, ctc_tokenizer, tokenizer, stop_ids, why), ctc_drafts or 8,
        )
        return FunASRNano(config, tokenizer, engine, model_dir, ctc_tokenizer, why)


def _drafter(count: int, ctc_tokenizer: CTCTokenizer | None, tokenizer: PromptTokenizer, stop_ids: Sequence[int],
             why: str) -> CTCDrafter | None:
    """What turns the CTC head's greedy ids into drafts, when ``ctc_drafts`` asks for them."""
    if not count:
        return None
    if ctc_tokenizer is None:
        raise UsageError(f"{option('ctc_drafts', count)} needs a CTC head, and there is none: {why}")
    return CTCDrafter(ctc_tokenizer, tokenizer.encode, stop_ids[0])


def _ctc_parts(
    config: ModelConfig, model_dir: Path, own: dict, ctc_head: object, borrowed: dict | None,
) -> tuple[object, dict | None, CTCTokenizer | None, str]:
    """The CTC config, tensors and tokenizer to run (or Nones), and why there is no CTC head otherwise.

    A model's own head is used only when complete (as the official toolkit, which disables an incomplete
    one); a borrowed head must fit exactly."""
    if borrowed is not None:
        ctc_config = config.ctc or ctc_config_for_borrowed(config)
        vocab = model_dir / VOCAB_FILE
        if not vocab.is_file():
            vocab = Path(str(ctc_head)).expanduser()
            vocab = (vocab if vocab.is_dir() else vocab.parent) / VOCAB_FILE
        if not vocab.is_file():
            raise ModelLoadError(f"ctc head {ctc_head}: no {VOCAB_FILE} beside it or in {model_dir}")
        tokenizer = CTCTokenizer(vocab)
        if tokenizer.vocab_size != ctc_config.vocab_size:
            raise ModelLoadError(
                f"ctc head {ctc_head}: {vocab} has {tokenizer.vocab_size} ids, config.yaml's ctc_vocab_size is "
                f"{ctc_config.vocab_size}: they do not belong together"
            )
        return ctc_config, borrowed, tokenizer, ""
    if config.ctc is None:
        return None, None, None, "config.yaml declares none"
    if not own:
        return None, None, None, "the checkpoint has no ctc_decoder.*/ctc.* tensors; pass ctc_head=PATH"
    from .backends.torch.ctc_head import CTCHead

    expected = CTCHead.expected_shapes(config.ctc)
    if {k: tuple(v.shape) for k, v in own.items()} != expected:
        return None, None, None, "the checkpoint's CTC head is incomplete or does not fit config.yaml"
    vocab = model_dir / VOCAB_FILE
    if not vocab.is_file():
        return None, None, None, f"{VOCAB_FILE} is missing"
    tokenizer = CTCTokenizer(vocab)
    if tokenizer.vocab_size != config.ctc.vocab_size:
        return None, None, None, f"{VOCAB_FILE} does not fit config.yaml's ctc_vocab_size"
    return config.ctc, own, tokenizer, ""


__all__ = ["FunASRNano", "load_model", "join_texts"]
