"""The CTC vocabulary against the official SenseVoiceTokenizer (funasr), on the demo model's
multilingual.tiktoken and on a random one."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from funasr_nano.demo import MODEL_DIR
from funasr_nano.text.ctc_tokenizer import CTCTokenizer, greedy_text, special_tokens

TEXTS = [
    "She was born on September 26, 1967.",
    "我们在1977年9月8日。",
    "こんにちは、世界！ Hello <|nospeech|> world <|en|>",
    "  spaces   and\ttabs\n",
    "",
]


def _official(path: Path):
    whisper_lib = pytest.importorskip("funasr.models.sense_voice.whisper_lib.tokenizer")
    whisper_lib.get_tokenizer.cache_clear()
    return whisper_lib.get_tokenizer(True, num_languages=8749, vocab_path=str(path))


def _random_vocab(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    while len(tokens) < 700:  # merges of existing tokens (tiktoken needs every rank's pieces present)
        merged = rng.choice(tokens) + rng.choice(tokens)
        if merged not in seen and len(merged) <= 6:
            seen.add(merged)
            tokens.append(merged)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))


def test_specials_count_and_blank() -> None:
    assert len(special_tokens()) == 1679
    demo = CTCTokenizer(MODEL_DIR / "multilingual.tiktoken")
    assert demo.vocab_size == 4679  # config.yaml's ctc_vocab_size
    assert demo.blank_id == 4678


@pytest.mark.parametrize("vocab", ["demo", "random"])
def test_same_ids_as_official(vocab: str, tmp_path: Path) -> None:
    if vocab == "demo":
        path = MODEL_DIR / "multilingual.tiktoken"
    else:
        path = tmp_path / "multilingual.tiktoken"
        _random_vocab(path, 3)
    official = _official(path)
    ours = CTCTokenizer(path)
    assert ours.vocab_size == official.encoding.n_vocab
    assert ours.special == official.special_tokens
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == official.encode(text), text
        assert ours.decode(ids) == official.decode(ids)
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(ours.vocab_size) for _ in range(12)]
        assert ours.decode(ids) == official.decode(ids)


def test_greedy_text_merges_repeats_and_drops_blanks() -> None:
    tok = CTCTokenizer(MODEL_DIR / "multilingual.tiktoken")
    a, b = tok.encode("ab")[0], tok.encode(" c")[0]
    blank = tok.blank_id
    best = [blank, a, a, blank, a, b, b, tok.no_speech_id, blank]
    assert greedy_text(tok, best) == tok.decode([a, a, b])
