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
from benchmarks.accuracy import error_rates
from funasr_nano import demo
from funasr_nano.result import join_texts

ROOT = Path(__file__).resolve().parents[1]  # where ``python -m oracle.official_demo`` finds the package
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


def official_texts(files: list[str], tmp_path: Path) -> list[str]:
    """The official funasr's text for each file, loading the bundled directory unchanged (a subprocess:
    importing funasr takes ~12 s and sets global logging)."""
    pytest.importorskip("funasr")
    out = tmp_path / "official.json"
    proc = subprocess.run([sys.executable, "-m", "oracle.official_demo", str(demo.MODEL_DIR), str(out), *files],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))["texts"]


def test_demo_is_the_bundled_hub_directory():
    from funasr_nano.checkpoint import resolve_model_dir

    assert resolve_model_dir("demo") == demo.MODEL_DIR
    for name in (
        "model.pt",
        "config.yaml",
        "multilingual.tiktoken",
        "Qwen3-0.6B/config.json",
        "Qwen3-0.6B/tokenizer.json",
        "README.md",
    ):
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


def test_the_command_defaults_to_the_demo_model_and_says_so():
    proc = subprocess.run(
        [sys.executable, "-m", "funasr_nano", "transcribe", str(demo.sample("zh")), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == demo.sample_text("zh")
    assert "demo model" in proc.stderr and "--model nano" in proc.stderr
    explicit = subprocess.run(
        [sys.executable, "-m", "funasr_nano", "transcribe", str(demo.sample("en")), "--model", "demo", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert explicit.returncode == 0 and explicit.stdout.strip() == demo.sample_text("en")
    assert explicit.stderr == ""


def test_official_funasr_loads_the_demo_unchanged_and_gives_our_text(model, tmp_path):
    """The official FunASRNano reads the bundled directory as it is (text path; its CTC timestamps need
    torchaudio, absent here) and decodes every sample to the text we produce."""
    files = [str(demo.sample(lang)) for lang in LANGUAGES]
    official = official_texts(files, tmp_path)
    ours = [model.transcribe(path, vad=False).text for path in files]
    assert official == ours == [demo.sample_text(lang) for lang in LANGUAGES]


def test_mlx_fp32_gives_the_torch_text(samples):
    pytest.importorskip("mlx.core")
    mlx_model = funasr_nano.load_model("demo", backend="mlx", device="cpu", dtype="float32")
    for lang in LANGUAGES:
        assert mlx_model.transcribe(samples[lang], vad=False).text == demo.sample_text(lang)


# --- the held-out subset bundled for CI (tests/data/demo: 8 held-out sentences per language spoken by
# training voices, 4 by held-out voices) -------------------------------------------------------------------

SUBSET = Path(__file__).parent / "data" / "demo"
# Below the targets (zh CER 5 %, ja CER 10 %) with a margin; English misses its 5 % target (17 % WER on this
# subset: names and the corpus's random word strings), so its ceiling is its measured level plus a margin.
# benchmarks/results/*-accuracy-demo-*.json has the full test splits.
CEILINGS = {"en": 0.30, "zh": 0.04, "ja": 0.08}


@pytest.fixture(scope="module")
def subset() -> list[dict]:
    return [json.loads(line) for line in (SUBSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def subset_results(model, subset) -> list[funasr_nano.Transcription]:
    return list(model.transcribe_many([str(SUBSET / row["path"]) for row in subset], vad=False))


def test_subset_error_rates_stay_at_the_measured_level(subset, subset_results):
    rates = error_rates(
        (row["lang"], row["text"], result.text) for row, result in zip(subset, subset_results, strict=True)
    )
    for lang, ceiling in CEILINGS.items():
        assert rates[lang]["error_rate"] < ceiling, (lang, rates[lang])
    assert all(not s.flags for result in subset_results for s in result.segments)


def test_subset_batched_equals_single(model, subset, subset_results):
    for row, batched in list(zip(subset, subset_results, strict=True))[::4]:
        assert model.transcribe(str(SUBSET / row["path"]), vad=False).text == batched.text


def test_official_funasr_agrees_on_the_subset(subset, subset_results, tmp_path):
    files = [str(SUBSET / row["path"]) for row in subset]
    assert official_texts(files, tmp_path) == [r.text for r in subset_results]


def test_server_json_and_stream_give_the_direct_text(model, subset, subset_results):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    openai = pytest.importorskip("openai")
    from server_helpers import running

    from funasr_nano.serve.config import ServerConfig

    with running(model, ServerConfig(model_name="demo")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        for row, expected in list(zip(subset, subset_results, strict=True))[::6]:
            audio = (SUBSET / row["path"]).read_bytes()
            plain = client.audio.transcriptions.create(model="demo", file=(row["path"], audio))
            assert plain.text == expected.text
            deltas, done = [], None
            for event in client.audio.transcriptions.create(model="demo", file=(row["path"], audio), stream=True):
                if event.type == "transcript.text.delta":
                    deltas.append(event.delta)
                elif event.type == "transcript.text.done":
                    done = event.text
            assert "".join(deltas) == done == expected.text
