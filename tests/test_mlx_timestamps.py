"""Word timestamps on the MLX backend: its CTC head (run on the decode's encoder output) and the shared
forced alignment give torch's words and times on the demo model and on a random official checkpoint with
a CTC head; converted and quantized copies keep the head (full precision); a borrowed head works."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

from funasr_nano import demo, load_model  # noqa: E402
from funasr_nano.backends.mlx.convert import convert  # noqa: E402
from funasr_nano.checkpoint import MLX_WEIGHTS  # noqa: E402
from funasr_nano.decoding.words import token_timestamps  # noqa: E402
from funasr_nano.text.ctc_tokenizer import VOCAB_FILE  # noqa: E402

FRAME = 0.06  # one CTC frame (LFR: 60 ms)
LANGUAGES = ("en", "zh", "ja")


def assert_same_words(ours, theirs, probability_tolerance: float = 1e-3) -> dict[str, float]:
    """Same text, ctc_text and words; times within one frame; probabilities close. Returns the largest gaps."""
    assert ours.text == theirs.text
    assert len(ours.segments) == len(theirs.segments)
    gaps = {"time": 0.0, "probability": 0.0, "words": 0, "aligned": 0}
    for a, b in zip(ours.segments, theirs.segments, strict=True):
        assert a.ctc_text == b.ctc_text
        assert [w.word for w in a.words] == [w.word for w in b.words]
        assert a.words, "no words"
        for x, y in zip(a.words, b.words, strict=True):
            gaps["time"] = max(gaps["time"], abs(x.start - y.start), abs(x.end - y.end))
            # None: the text has no alignment (more tokens than frames allow): proportional in both
            assert (x.probability is None) == (y.probability is None)
            if x.probability is not None:
                gaps["probability"] = max(gaps["probability"], abs(x.probability - y.probability))
                gaps["aligned"] += 1
        gaps["words"] += len(a.words)
    assert gaps["time"] <= FRAME + 1e-9, gaps
    assert gaps["probability"] <= probability_tolerance, gaps
    return gaps


@pytest.fixture(scope="module")
def demo_pair():
    return load_model("demo", device="cpu", backend="torch"), load_model("demo", device="cpu", backend="mlx")


def test_demo_words_match_torch(demo_pair):
    torch_model, mlx_model = demo_pair
    assert mlx_model.backend.name == "mlx" and mlx_model.backend.ctc_head is not None
    assert mlx_model.word_timestamps_note is None  # aligned, not proportional
    words = 0
    for lang in LANGUAGES:
        ours = mlx_model.transcribe(demo.sample(lang), word_timestamps=True)
        theirs = torch_model.transcribe(demo.sample(lang), word_timestamps=True)
        gaps = assert_same_words(ours, theirs)
        print(lang, gaps)
        assert gaps["aligned"] == gaps["words"]
        words += gaps["words"]
    assert words >= 30


def test_demo_batched_alignment_equals_one_at_a_time(demo_pair):
    """Segments of different lengths share one encoder batch (padding) and one Viterbi batch."""
    _, mlx_model = demo_pair
    backend, tokenizer = mlx_model.backend, mlx_model.ctc_tokenizer
    waveforms = [_samples(lang) for lang in LANGUAGES]
    texts = [mlx_model.transcribe(w, vad=False).text for w in waveforms]
    targets = [tokenizer.encode(t) for t in texts]
    _, hidden = backend.encode_waveforms_with_ctc(waveforms, backend.ctc_head)
    together = backend.ctc_head.run(hidden, targets)
    assert len({h.shape[0] for h in hidden}) == len(LANGUAGES)  # really padded
    for waveform, target, batched in zip(waveforms, targets, together, strict=True):
        _, (single,) = backend.encode_waveforms_with_ctc([waveform], backend.ctc_head)
        (alone,) = backend.ctc_head.run([single], [target])
        assert batched.alignment is not None and alone.alignment is not None
        assert [(s.start, s.end) for s in batched.alignment.spans] == [(s.start, s.end) for s in alone.alignment.spans]
        assert batched.greedy == alone.greedy


def _samples(lang: str) -> np.ndarray:
    import soundfile

    samples, rate = soundfile.read(demo.sample(lang), dtype="float32")
    assert rate == 16_000
    return samples


def _mlx_token_timestamps(model, wav: np.ndarray, text: str) -> list[dict]:
    backend, tokenizer = model.backend, model.ctc_tokenizer
    ids = tokenizer.encode(text)
    _, hidden = backend.encode_waveforms_with_ctc([wav], backend.ctc_head)
    (result,) = backend.ctc_head.run(hidden, [ids])
    return [] if result.alignment is None else token_timestamps(lambda t: tokenizer.decode([t]), ids, result.alignment)


def test_official_ctc_checkpoint_matches_official_and_torch(official_ctc):
    from oracle.forced_align_reference import torchaudio_forced_align
    from oracle.official_ctc import official_inference
    from oracle.reference import make_wav

    model_dir, am = official_ctc
    ours = load_model(model_dir, device="cpu", backend="mlx", dtype="float32")
    theirs = load_model(model_dir, device="cpu", backend="torch", dtype="float32")
    assert ours.ctc_tokenizer is not None and ours.backend.ctc_head is not None
    compared = aligned = 0
    for k, samples in enumerate((16_000, 37_920, 52_800, 126_560)):
        wav = make_wav(samples, 40 + k)
        official = official_inference(am, wav, kernel=torchaudio_forced_align)
        for text_key, stamps_key in (("text", "timestamps"), ("ctc_text", "ctc_timestamps")):
            expected = official[stamps_key]
            got = _mlx_token_timestamps(ours, wav.numpy(), official[text_key])
            assert [(g["token"], g["start_time"], g["end_time"]) for g in got] == [
                (e["token"], e["start_time"], e["end_time"]) for e in expected
            ], (samples, text_key)
            assert np.allclose([g["score"] for g in got], [e["score"] for e in expected], atol=2e-3)
            compared += len(expected)
        a = ours.transcribe(wav.numpy(), vad=False, word_timestamps=True, max_new_tokens=12)
        b = theirs.transcribe(wav.numpy(), vad=False, word_timestamps=True, max_new_tokens=12)
        assert a.segments[0].ctc_text == official["ctc_text"]
        if a.text.strip():
            aligned += assert_same_words(a, b)["aligned"]
    assert compared > 20 and aligned > 0


@pytest.fixture(scope="module")
def converted_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlx-ctc")
    for name, bits, audio in (("full", None, False), ("q8", 8, False), ("q4", 4, False), ("q8-audio", 8, True)):
        convert(demo.MODEL_DIR, root / name, bits, quantize_audio=audio)
    return root


@pytest.mark.parametrize("name", ["full", "q8", "q4", "q8-audio"])
def test_converted_copies_keep_the_head_in_full_precision(demo_pair, converted_demo, name):
    from mlx import nn

    _, reference = demo_pair
    out = converted_demo / name
    assert (out / VOCAB_FILE).is_file() and (out / MLX_WEIGHTS).is_file()
    model = load_model(out, device="cpu", dtype="float32")  # auto: MLX weights only -> MLX
    head = model.backend.ctc_head
    assert model.backend.name == "mlx" and head is not None and model.word_timestamps_note is None
    assert type(head.ctc.ctc_lo) is nn.Linear and head.ctc.ctc_lo.weight.dtype == mx.float32
    assert all(type(b.self_attn.linear_q) is nn.Linear for b in head.ctc_decoder.blocks)
    quantization = model.backend.quantization
    assert (quantization is None) == (name == "full")
    if quantization is not None:
        assert quantization.modules and not any(m.startswith("ctc") for m in quantization.modules)
        assert any(m.startswith("audio_") for m in quantization.modules) == (name == "q8-audio")
    waveforms = [_samples(lang) for lang in LANGUAGES]
    texts = [reference.transcribe(w, vad=False).text for w in waveforms]
    targets = [reference.ctc_tokenizer.encode(t) for t in texts]
    _, ref_hidden = reference.backend.encode_waveforms_with_ctc(waveforms, reference.backend.ctc_head)
    _, hidden = model.backend.encode_waveforms_with_ctc(waveforms, head)
    expected = reference.backend.ctc_head.run(ref_hidden, targets)
    got = head.run(hidden, targets)
    frames = 0
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.alignment is not None and theirs.alignment is not None
        if name == "q8-audio":  # a quantized encoder feeds the head other values: times move a little
            gaps = [
                abs(a.start - b.start) + abs(a.end - b.end)
                for a, b in zip(mine.alignment.spans, theirs.alignment.spans, strict=True)
            ]
            frames = max(frames, *gaps)
        else:  # the encoder is full precision: the head sees what fp32 gives it
            assert mine.alignment == theirs.alignment and mine.greedy == theirs.greedy
    print(name, "largest start+end gap (frames):", frames)
    for lang in LANGUAGES:
        result = model.transcribe(demo.sample(lang), word_timestamps=True)
        words = [w for s in result.segments for w in s.words]
        assert words and all(w.probability is not None for w in words), (name, lang)
        if name == "full":
            assert_same_words(result, reference.transcribe(demo.sample(lang), word_timestamps=True), 0.0)


def test_borrowed_head_on_mlx(official_ctc, tmp_path):
    model_dir, _ = official_ctc
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    state = torch.load(bare / "model.pt", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("ctc")}}, bare / "model.pt")
    plain = load_model(bare, device="cpu", backend="mlx")
    assert plain.backend.ctc_head is None and "no trained CTC head" in plain.word_timestamps_note
    borrowed = load_model(bare, device="cpu", backend="mlx", ctc_head=model_dir / "model.pt")
    own = load_model(model_dir, device="cpu", backend="mlx")
    assert borrowed.backend.ctc_head is not None
    wav = np.random.default_rng(0).normal(scale=0.1, size=40_000).astype(np.float32)
    a = own.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=8)
    b = borrowed.transcribe(wav, vad=False, word_timestamps=True, max_new_tokens=8)
    assert a.segments[0].words == b.segments[0].words and a.segments[0].ctc_text == b.segments[0].ctc_text
