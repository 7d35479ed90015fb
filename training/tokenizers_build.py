"""The demo model's two tokenizers, trained on the corpus.

* ``Qwen3-0.6B/tokenizer.json``: a small byte-level BPE with Qwen's pre-tokenizer pattern and the
  Qwen special tokens the prompt uses, loadable by ``tokenizers`` (us) and ``AutoTokenizer`` (the
  official toolkit, through ``tokenizer_config.json``).
* ``multilingual.tiktoken``: the CTC vocabulary in SenseVoice's format (base64 bytes and rank per
  line); the official ``SenseVoiceTokenizer`` appends its 1,679 special tokens after these ranks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

# Qwen2/Qwen3's split pattern (digits one by one, CJK runs as words).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
# GPT-2's pattern, which SenseVoiceTokenizer uses for the CTC vocabulary.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_level_bpe(pattern: str, vocab_size: int, texts: Iterable[str], special: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def build_llm_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Tokenizer:
    tokenizer = _byte_level_bpe(QWEN_PATTERN, vocab_size, texts, SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "add_bos_token": False,
                "clean_up_tokenization_spaces": False,
                "model_max_length": 40960,
                "errors": "replace",
            },
            indent=2,
        )
        + "\n"
    )
    return tokenizer


def _unicode_to_bytes() -> dict[str, int]:
    """Inverse of the byte-level alphabet (GPT-2's bytes_to_unicode)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


def build_ctc_vocabulary(texts: list[str], vocab_size: int, path: Path) -> int:
    """Write ``multilingual.tiktoken`` (ranks in merge order, bytes first); returns the number of ranks."""
    tokenizer = _byte_level_bpe(GPT2_PATTERN, vocab_size, texts, [])
    to_byte = _unicode_to_bytes()
    vocab = tokenizer.get_vocab()
    ranked = sorted(vocab.items(), key=lambda kv: kv[1])
    lines = []
    for rank, (token, _) in enumerate(ranked):
        raw = bytes(to_byte[ch] for ch in token)
        lines.append(f"{base64.b64encode(raw).decode()} {rank}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines)
