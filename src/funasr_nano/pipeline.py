"""The user-facing model: audio in, ``Transcription`` out, on any backend."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path


from .audio import AudioInput, load_audio
from .backends import Backend
from .checkpoint import LLM_SUBDIR, ModelConfig, load_state_dict, read_config, resolve_model_dir
from .errors import UsageError
from .features import SAMPLE_RATE
from .guards import token_budget
from .languages import resolve_language
from .prompt import PromptTokenizer, clean_text, normalize_hotwords, strip_punctuation
from .result import Segment, Transcription


def join_texts(texts: Sequence[str]) -> str:
    """Concatenate segment texts: no space between CJK neighbours, one space otherwise."""
    joined = ""
    for text in (t.strip() for t in texts):
        if not text:
            continue
        if joined and not (_is_cjk(joined[-1]) or _is_cjk(text[0])):
            joined += " "
        joined += text
    return joined


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3000 <= code <= 0x303F  # CJK punctuation
        or 0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


class FunASRNano:
    """A loaded Fun-ASR-Nano model. Create it with :func:`funasr_nano.load_model`."""

    def __init__(self, config: ModelConfig, tokenizer: PromptTokenizer, backend: Backend, model_dir: Path):
        self.config = config
        self.tokenizer = tokenizer
        self.backend = backend
        self.model_dir = model_dir

    @property
    def languages(self) -> tuple[str, ...]:
        return self.config.languages

    def transcribe(
        self,
        audio: AudioInput,
        *,
        language: str | None = None,
        hotwords: str | Sequence[str] | None = None,
        itn: bool = True,
        sample_rate: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Transcription:
        """Transcribe one recording (path, bytes, or samples at ``sample_rate``, default 16 kHz)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        samples = load_audio(audio, sample_rate)
        timings["load_audio"] = time.perf_counter() - started
        language_name = resolve_language(language, self.languages)
        prompt = self.tokenizer.prompt_ids(normalize_hotwords(hotwords), language_name, itn)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise UsageError("max_new_tokens must be at least 1")
        duration = samples.size / SAMPLE_RATE
        spans = [(0, samples.size)]
        budgets = [max_new_tokens or token_budget((end - begin) / SAMPLE_RATE) for begin, end in spans]
        decode_started = time.perf_counter()
        token_lists = self.backend.generate([samples[b:e] for b, e in spans], [prompt] * len(spans), budgets)
        timings["decode"] = time.perf_counter() - decode_started
        segments = []
        for (begin, end), tokens, budget in zip(spans, token_lists, budgets, strict=True):
            raw = self.tokenizer.decode(tokens)
            flags = ["truncated"] if len(tokens) >= budget else []
            segments.append(
                Segment(begin / SAMPLE_RATE, end / SAMPLE_RATE, clean_text(raw), strip_punctuation(raw), tokens, flags)
            )
        timings["total"] = time.perf_counter() - started
        return Transcription(
            text=join_texts([s.text for s in segments]),
            text_tn=join_texts([s.text_tn for s in segments]),
            segments=segments,
            language=language_name,
            duration=duration,
            timings=timings,
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
) -> FunASRNano:
    """Load a model from a local hub-layout directory or a hub id (downloaded on first use).

    device: "auto" | "cpu" | "cuda[:N]"; dtype: "auto" (bf16 on CUDA, fp32 on CPU) | "float32" | "bfloat16";
    backend: "auto" | "torch"; variant: "nano" | "mlt" (guessed from the directory name when None).
    """
    model_dir = resolve_model_dir(model, hub)
    config = read_config(model_dir, variant)
    tokenizer = PromptTokenizer(model_dir / LLM_SUBDIR / "tokenizer.json")
    if backend not in ("auto", "torch"):
        raise UsageError(f"unknown backend {backend!r}: use 'auto' or 'torch'")
    from .backends.torch import TorchBackend

    engine = TorchBackend(
        config, load_state_dict(model_dir), tokenizer.stop_ids, device, dtype, batch_size,
        str(model_dir / "model.pt"),
    )
    return FunASRNano(config, tokenizer, engine, model_dir)


__all__ = ["FunASRNano", "load_model", "join_texts"]
