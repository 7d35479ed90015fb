"""Stage-by-stage parity with the official funasr FunASRNano (tiny random checkpoint, fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

import funasr_nano
from funasr_nano.backends.torch.qwen3 import prompt_logits
from funasr_nano.frontend.features import extract_features, num_samples_to_lfr_frames
from funasr_nano.text.prompt import clean_text, instruction, num_audio_tokens, strip_punctuation

# Our fbank follows torchaudio's Kaldi semantics; the oracle machine has no torchaudio, so the official
# frontend falls back to kaldi-native-fbank, which differs from torchaudio by up to ~6e-4 in log-mel.
FBANK_TOLERANCE = 1.5e-3
RELATIVE_TOLERANCE = 1e-4


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


@pytest.fixture(scope="module")
def model(official_tiny):
    return funasr_nano.load_model(official_tiny.model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clips(official_tiny):
    return {c["name"]: c for c in official_tiny.reference["clips"]}


def test_clip_set_covers_short_and_odd_lengths(official_tiny):
    lengths = [c["fbank_lfr_len"] for c in official_tiny.reference["clips"]]
    assert (
        min(c["wav"].numel() for c in official_tiny.reference["clips"]) < 400
    )  # shorter than one 25 ms window
    assert any(n % 2 for n in lengths) and len({n % 8 for n in lengths}) >= 4


def test_features_match_official(clips):
    for clip in clips.values():
        ours = extract_features([clip["wav"]])[0]
        assert ours.shape == clip["fbank_lfr"].shape, clip["name"]
        assert num_samples_to_lfr_frames(clip["wav"].numel()) == clip["fbank_lfr_len"]
        assert float((ours - clip["fbank_lfr"]).abs().max()) < FBANK_TOLERANCE, clip["name"]


def test_encoder_and_adaptor_match_official(model, clips):
    torch_model = model.backend.model
    for clip in clips.values():
        features = clip["fbank_lfr"]
        with torch.inference_mode():
            encoded = torch_model.audio_encoder(features[None].clone(), torch.tensor([features.shape[0]]))[0]
            adapted = torch_model.audio_adaptor(encoded[None], None)[0]
        assert relative_error(encoded, clip["encoder_out"]) < RELATIVE_TOLERANCE, clip["name"]
        assert relative_error(adapted, clip["adaptor_out"]) < RELATIVE_TOLERANCE, clip["name"]
        assert num_audio_tokens(features.shape[0]) == clip["fake_token_len"]
        audio = torch_model.encode([features])[0]
        assert audio.shape[0] == clip["fake_token_len"]
        torch.testing.assert_close(audio, clip["adaptor_out"][: clip["fake_token_len"]], rtol=1e-4, atol=1e-4)


def test_audio_token_rule_is_ceil_of_eighth():
    for frames in range(1, 2000):
        assert num_audio_tokens(frames) == -(-frames // 8)


def test_prompt_ids_match_official_for_every_variant(model, official_tiny):
    variants = set()
    for prompt in official_tiny.reference["prompts"]:
        ids = model.tokenizer.prompt_ids(prompt["hotwords"], prompt["language"], prompt["itn"])
        n_audio = prompt["fake_token_len"]
        assert instruction(prompt["hotwords"], prompt["language"], prompt["itn"]) == prompt["prompt_text"]
        assert ids.prefix + [0] * n_audio + ids.suffix == prompt["source_ids"].tolist()
        assert len(ids.prefix) == prompt["fbank_beg"]
        variants.add((bool(prompt["hotwords"]), prompt["language"], prompt["itn"]))
    assert len(variants) >= 6


def test_spliced_embeddings_and_logits_match_official(model, clips, official_tiny):
    torch_model = model.backend.model
    for prompt in official_tiny.reference["prompts"]:
        ids = model.tokenizer.prompt_ids(prompt["hotwords"], prompt["language"], prompt["itn"])
        audio = torch_model.encode([clips[prompt["clip"]]["fbank_lfr"]])[0]
        embeddings = torch_model.prompt_embeddings(ids, audio)
        assert relative_error(embeddings, prompt["inputs_embeds"]) < RELATIVE_TOLERANCE
        logits = prompt_logits(model.backend.model.llm, prompt["inputs_embeds"])
        assert relative_error(logits, prompt["logits_last"]) < RELATIVE_TOLERANCE


def test_greedy_tokens_and_text_match_official_end_to_end(model, clips, official_tiny):
    for prompt in official_tiny.reference["prompts"]:
        expected = prompt["gen_ids"].tolist()
        assert len(expected) >= 16
        clip = clips[prompt["clip"]]
        result = model.transcribe(
            clip["wav"].numpy(),
            hotwords=prompt["hotwords"],
            language=prompt["language"],
            itn=prompt["itn"],
            max_new_tokens=len(expected),
            vad=False,
        )
        assert len(result.segments) == 1
        segment = result.segments[0]
        assert segment.tokens == expected, (prompt["clip"], prompt["language"], prompt["hotwords"])
        assert segment.text == prompt["text"]
        assert segment.text_tn == prompt["text_tn"]
        raw = model.tokenizer.decode(expected)
        assert clean_text(raw) == prompt["text"] and strip_punctuation(raw) == prompt["text_tn"]
