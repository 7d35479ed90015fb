"""Sanity checks of the official-funasr oracle fixture itself (not of our reimplementation)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

PREFIXES = ("audio_encoder.", "audio_adaptor.", "llm.")


@pytest.fixture(scope="module")
def state_dict(official_tiny):
    ckpt = torch.load(official_tiny.model_dir / "model.pt", weights_only=True, map_location="cpu")
    assert isinstance(ckpt, dict) and list(ckpt) == ["state_dict"]
    return ckpt["state_dict"]


def test_hub_layout(official_tiny):
    d = official_tiny.model_dir
    for rel in ("model.pt", "config.yaml", "Qwen3-0.6B/config.json", "Qwen3-0.6B/tokenizer.json"):
        assert (d / rel).is_file(), rel
    cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"] == "FunASRNano"
    assert cfg["llm_conf"]["init_param_path"] == "Qwen3-0.6B"
    assert cfg["audio_adaptor_conf"]["use_low_frame_rate"] is True
    qcfg = json.loads((d / "Qwen3-0.6B" / "config.json").read_text())
    assert qcfg["model_type"] == "qwen3" and qcfg["vocab_size"] == 151936 and qcfg["tie_word_embeddings"]
    assert qcfg["hidden_size"] == official_tiny.reference["config"]["llm"]["hidden_size"]


def test_tokenizer_special_ids(official_tiny):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(official_tiny.model_dir / "Qwen3-0.6B" / "tokenizer.json"))
    for text, tid in (("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645)):
        assert tok.encode(text, add_special_tokens=False).ids == [tid]
    assert official_tiny.reference["config"]["special_ids"]["<|im_end|>"] == 151645


def test_checkpoint_format(state_dict):
    assert 120 <= len(state_dict) <= 140
    assert all(k.startswith(PREFIXES) for k in state_dict)
    for prefix in PREFIXES:
        assert any(k.startswith(prefix) for k in state_dict), prefix
    assert all(v.dtype == torch.bfloat16 for v in state_dict.values())
    lm_head, embed = state_dict["llm.lm_head.weight"], state_dict["llm.model.embed_tokens.weight"]
    assert torch.equal(lm_head, embed) and lm_head.data_ptr() != embed.data_ptr()  # stored twice


def test_every_norm_is_perturbed(state_dict):
    norms = {k: v for k, v in state_dict.items() if "norm" in k}
    assert len(norms) > 20
    for k, v in norms.items():
        init = 1.0 if k.endswith("weight") else 0.0
        assert not torch.all(v == init), f"{k} still at its init value"


def test_fake_token_len_is_ceil_t_over_8(official_tiny):
    clips = official_tiny.reference["clips"]
    assert len(clips) == 6
    t_lfr = [c["fbank_lfr_len"] for c in clips]
    assert any(t % 2 == 1 for t in t_lfr) and len({t % 8 for t in t_lfr}) >= 4
    for c in clips:
        t = c["fbank_lfr_len"]
        assert c["fake_token_len"] == math.ceil(t / 8)
        assert c["fbank_lfr"].shape == (t, 560)
        assert c["encoder_out"].shape[0] == t and c["adaptor_out"].shape[0] == t
        assert c["wav"].dtype == torch.float32


def test_prompt_placeholders(official_tiny):
    prompts = official_tiny.reference["prompts"]
    assert len(prompts) == 8
    for p in prompts:
        ids, beg, fake = p["source_ids"], p["fbank_beg"], p["fake_token_len"]
        zeros = (ids == 0).nonzero().flatten().tolist()
        assert zeros == list(range(beg, beg + fake)), p["prompt_text"]
        assert p["inputs_embeds"].shape[0] == ids.numel()
        assert p["logits_last"].shape == (151936,) and p["logits_last"].dtype == torch.float32
        assert p["gen_ids"].numel() >= 20 or (p["gen_ids"][-1].item() in (151643, 151645))
        # the official end-to-end call generated the same ids as the direct greedy call
        assert torch.equal(p["official_gen_ids"], p["gen_ids"])
