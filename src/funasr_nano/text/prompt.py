"""The chat prompt around the audio, built exactly as the official ``FunASRNano`` builds it.

The official code splits the chat string on the speech markers and tokenizes the text before and
after the audio *separately*; the audio occupies ``ceil(T_lfr / 8)`` positions in between.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import ModelLoadError, UsageError, unreadable

SYSTEM_PROMPT = "You are a helpful assistant."
HOTWORD_PREAMBLE = (
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"
)
ASSISTANT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
IM_END = "<|im_end|>"
SILENCE_MARKER = "/sil"  # the model writes it for pauses; the official text turns it into a space


def instruction(hotwords: list[str] | None, language: str | None, itn: bool) -> str:
    """The user instruction P placed before the audio (language must already be the trained name)."""
    text = ""
    if hotwords:
        text += HOTWORD_PREAMBLE + "热词列表：[" + ", ".join(hotwords) + "]\n"
    text += "语音转写" if language is None else "语音转写成" + language
    if not itn:
        text += "，不进行文本规整"
    return text + "："


def prompt_prefix(hotwords: list[str] | None, language: str | None, itn: bool) -> str:
    return f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n" + instruction(
        hotwords, language, itn
    )


def normalize_hotwords(hotwords: str | Sequence[str] | None) -> list[str]:
    """A list is used verbatim, as the official code joins it; a string (the official code would join a
    str char by char) is split at commas, full-width commas and line breaks (so the command line's
    --hotwords and the lines of its --hotwords-file come as one text), its items stripped and empty ones
    dropped."""
    if hotwords is None:
        return []
    if isinstance(hotwords, str):
        return [w.strip() for w in re.split(r"[,，\n]", hotwords) if w.strip()]
    if not isinstance(hotwords, Sequence) or not all(isinstance(w, str) for w in hotwords):
        raise UsageError("hotwords must be a list of strings or a comma-separated string, e.g. "
                         "hotwords=['开放时间', 'Fun-ASR']")
    return list(hotwords)


def num_audio_tokens(num_lfr_frames: int) -> int:
    """Audio positions in the prompt: three ceil-halvings of the LFR frame count (= ceil(T/8))."""
    count = num_lfr_frames
    for _ in range(3):
        count = 1 + (count - 3 + 2) // 2
    return count


@dataclass(frozen=True)
class PromptIds:
    prefix: list[int]
    suffix: list[int]

    def total_length(self, audio_tokens: int) -> int:
        return len(self.prefix) + audio_tokens + len(self.suffix)


_PUNCTUATION = re.compile(r"[^\w\s\u3000\u4e00-\u9fff]+")
_WHITESPACE = re.compile(r"\s+")


def clean_text(raw: str) -> str:
    """The official ``text``: ``/sil`` markers to spaces, whitespace runs collapsed (not stripped)."""
    return _WHITESPACE.sub(" ", raw.replace(SILENCE_MARKER, " "))


def strip_punctuation(raw: str) -> str:
    """The official punctuation-free ``text_tn``."""
    return _PUNCTUATION.sub("", raw)


class PromptTokenizer:
    """Qwen3 BPE tokenizer (``tokenizers``, no ``transformers``) plus the Fun-ASR prompt layout."""

    def __init__(self, tokenizer_file: Path):
        if tokenizer_file.is_dir():
            raise ModelLoadError(f"{tokenizer_file} is a directory: it must be the file of that name from the hub")
        if not tokenizer_file.is_file():
            raise ModelLoadError(
                f"tokenizer not found: {tokenizer_file} (the model directory needs Qwen3-0.6B/tokenizer.json)"
            )
        try:
            text = tokenizer_file.read_bytes().decode("utf-8")
        except OSError as exc:
            raise unreadable(tokenizer_file, exc) from exc
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{tokenizer_file} is not UTF-8 text: the file is damaged, download it again") from exc
        try:
            self._tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for any malformed file
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            raise ModelLoadError(
                f"{tokenizer_file} is not a valid tokenizer.json ({reason}): download it again"
            ) from exc
        self.im_end_id = self._tokenizer.token_to_id(IM_END)
        if self.im_end_id is None:
            raise ModelLoadError(f"{tokenizer_file} has no {IM_END} token: not a Qwen3 tokenizer")
        self._suffix = self.encode(ASSISTANT_SUFFIX)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def prompt_ids(self, hotwords: list[str] | None, language: str | None, itn: bool) -> PromptIds:
        return PromptIds(self.encode(prompt_prefix(hotwords, language, itn)), list(self._suffix))
