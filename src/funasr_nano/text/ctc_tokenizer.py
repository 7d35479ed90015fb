"""The CTC head's vocabulary: the official ``SenseVoiceTokenizer`` (a tiktoken BPE from
``multilingual.tiktoken`` plus 1,679 special tokens appended in the official order).

The specials matter for two things only: the vocabulary size (the blank is the last id, ``<|30.00|>``)
and decoding a greedy CTC transcript, where the head may emit them. Encoding treats special-token
strings as plain text, as the official encoder does (``disallowed_special=()``).
"""

from __future__ import annotations

import base64
from functools import cached_property
from pathlib import Path

from ..errors import ModelLoadError, unreadable

VOCAB_FILE = "multilingual.tiktoken"
# funasr/models/sense_voice/whisper_lib/tokenizer.py: LANGUAGES (all of them: num_languages 8749), in order.
LANGUAGE_CODES = [
    "en",
    "zh",
    "de",
    "es",
    "ru",
    "ko",
    "fr",
    "ja",
    "pt",
    "tr",
    "pl",
    "ca",
    "nl",
    "ar",
    "sv",
    "it",
    "id",
    "hi",
    "fi",
    "vi",
    "he",
    "uk",
    "el",
    "ms",
    "cs",
    "ro",
    "da",
    "hu",
    "ta",
    "no",
    "th",
    "ur",
    "hr",
    "bg",
    "lt",
    "la",
    "mi",
    "ml",
    "cy",
    "sk",
    "te",
    "fa",
    "lv",
    "bn",
    "sr",
    "az",
    "sl",
    "kn",
    "et",
    "mk",
    "br",
    "eu",
    "is",
    "hy",
    "ne",
    "mn",
    "bs",
    "kk",
    "sq",
    "sw",
    "gl",
    "mr",
    "pa",
    "si",
    "km",
    "sn",
    "yo",
    "so",
    "af",
    "oc",
    "ka",
    "be",
    "tg",
    "sd",
    "gu",
    "am",
    "yi",
    "lo",
    "uz",
    "fo",
    "ht",
    "ps",
    "tk",
    "nn",
    "mt",
    "sa",
    "lb",
    "my",
    "bo",
    "tl",
    "mg",
    "as",
    "tt",
    "haw",
    "ln",
    "ha",
    "ba",
    "jw",
    "su",
    "yue",
    "minnan",
    "wuyu",
    "dialect",
    "zh/en",
    "en/zh",
]
AUDIO_EVENTS = (
    "ASR",
    "AED",
    "SER",
    "Speech",
    "/Speech",
    "BGM",
    "/BGM",
    "Laughter",
    "/Laughter",
    "Applause",
    "/Applause",
)
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
TIMESTAMP_TOKENS = 1501  # <|0.00|> .. <|30.00|>
# The GPT-2 split pattern the official encoding uses.
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
NO_SPEECH = "<|nospeech|>"


def special_tokens() -> list[str]:
    """The 1,679 specials in the official order (they take the ids after the BPE ranks)."""
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{code}|>" for code in LANGUAGE_CODES],
        *[f"<|{event}|>" for event in AUDIO_EVENTS],
        *[f"<|{emotion}|>" for emotion in EMOTIONS],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        NO_SPEECH,
        "<|notimestamps|>",
        *[f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, 51)],
        *[f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMP_TOKENS)],
    ]


def read_ranks(path: Path) -> dict[bytes, int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise unreadable(path, exc) from exc
    ranks: dict[bytes, int] = {}
    try:
        for line in lines:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except ValueError as exc:
        raise ModelLoadError(
            f"{path} is not a tiktoken vocabulary (lines of 'base64 rank'): download it again"
        ) from exc
    return ranks


class CTCTokenizer:
    """Ids of the CTC vocabulary; ``blank_id`` is the last one, as the official ``blank_id`` default."""

    def __init__(self, path: Path):
        import tiktoken

        self.path = path
        ranks = read_ranks(path)
        specials = special_tokens()
        first_special = len(ranks)
        self.special = {token: first_special + i for i, token in enumerate(specials)}
        self.vocab_size = first_special + len(specials)
        self.timestamp_begin = self.special["<|0.00|>"]
        self.blank_id = self.vocab_size - 1
        self._encoding = tiktoken.Encoding(
            name=path.name,
            pat_str=SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special,
            explicit_n_vocab=self.vocab_size,
        )

    def encode(self, text: str) -> list[int]:
        """As the official encoder: special-token strings in ``text`` are ordinary text."""
        return self._encoding.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        """As the official ``decode``: timestamp tokens (the blank among them) are dropped."""
        return self._encoding.decode([i for i in ids if i < self.timestamp_begin])

    def token_bytes(self, token: int) -> bytes:
        return self._encoding.decode_single_token_bytes(token)

    @cached_property
    def no_speech_id(self) -> int:
        return self.special[NO_SPEECH]


def greedy_text(tokenizer: CTCTokenizer, best: list[int]) -> str:
    """The official ``ctc_text``: per-frame argmax ids, repeats merged, blanks dropped, ``<|nospeech|>`` removed."""
    merged = [token for i, token in enumerate(best) if i == 0 or token != best[i - 1]]
    return tokenizer.decode([t for t in merged if t != tokenizer.blank_id]).replace(NO_SPEECH, "")
