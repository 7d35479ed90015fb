"""The bundled demo model: it hears, the official funasr loads it unchanged and agrees with us, and every
path (batched, streamed, long-form VAD, MLX, the server) gives the text of a plain decode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import funasr_nano
from funasr_nano import demo
from funasr_nano.result import join_texts

ORACLE = Path(__file__).parent / "oracle" / "official_demo.py"
LANGUAGES = ("en", "zh", "ja")


@pytest.fixture(scope="module")
def model() -> funasr_nano.FunASRNano:
    return funasr_nano.load_model("demo", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    out = {}
    for lang in LANGUAGES:
        audio, rate = soundfile.read(demo.sample(lang), dtype="float32")
        assert rate == 16000
        out[lang] = audio
    return out


def test_demo_is_the_bundled_hub_directory():
    assert funasr_nano.checkpoint.resolve_model_dir("demo") == demo.MODEL_DIR
    for name in ("model.pt", "config.yaml", "multilingual.tiktoken", "Qwen3-0.6B/config.json",
                 "Qwen3-0.6B/tokenizer.json", "README.md"):
        assert (demo.MODEL_DIR / name).is_file(), name
    assert sum(p.stat().st_size for p in demo.MODEL_DIR.rglob("*") if p.is_file()) < 30e6


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_sample_is_transcribed_word_for_word(model, lang):
    result = model.transcribe(demo.sample(lang))
    assert result.text == demo.sample_text(lang)
    assert all(not segment.flags for segment in result.segments)


def test_batched_equals_single(model, samples):
    single = [model.transcribe(samples[lang], vad=False).text for lang in LANGUAGES]
    batched = [r.text for r in model.transcribe_many([samples[lang] for lang in LANGUAGES], vad=False)]
    assert batched == single


def test_streamed_pieces_add_up_to_the_plain_text(model, samples):
    for lang in LANGUAGES:
        pieces: list[str] = []
        result = model.transcribe(samples[lang], on_text=pieces.append)
        assert "".join(pieces) == result.text == demo.sample_text(lang)
        assert len(pieces) > 1


def test_long_recording_through_vad_equals_the_utterances_joined(model, samples):
    """Three utterances with pauses and faint noise: VAD finds them and the text is theirs, in order."""
    rng = np.random.default_rng(0)
    pause = np.zeros(int(1.2 * 16000), dtype=np.float32)
    parts = [pause]
    for lang in LANGUAGES:
        parts += [samples[lang], pause]
    recording = np.concatenate(parts)
    recording += rng.normal(0, 1e-3, recording.size).astype(np.float32)
    result = model.transcribe(recording)
    assert len(result.segments) == 3
    assert result.text == join_texts([demo.sample_text(lang) for lang in LANGUAGES])
    assert all(not segment.flags for segment in result.segments)


def test_official_funasr_loads_the_demo_unchanged_and_gives_our_text(model, tmp_path):
    """The official FunASRNano reads the bundled directory as it is (text path; its CTC timestamps need
    torchaudio, absent here) and decodes every sample to the text we produce."""
    pytest.importorskip("funasr")
    files = [str(demo.sample(lang)) for lang in LANGUAGES]
    out = tmp_path / "official.json"
    proc = subprocess.run([sys.executable, str(ORACLE), str(demo.MODEL_DIR), str(out), *files],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = json.loads(out.read_text(encoding="utf-8"))["texts"]
    ours = [model.transcribe(path, vad=False).text for path in files]
    assert official == ours == [demo.sample_text(lang) for lang in LANGUAGES]


def test_mlx_fp32_gives_the_torch_text(samples):
    pytest.importorskip("mlx.core")
    mlx_model = funasr_nano.load_model("demo", backend="mlx", device="cpu", dtype="float32")
    for lang in LANGUAGES:
        assert mlx_model.transcribe(samples[lang], vad=False).text == demo.sample_text(lang)
