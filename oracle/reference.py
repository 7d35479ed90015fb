"""What the oracle's reference records: deterministic test audio and the OFFICIAL model's output at every
stage for a clip (fbank+LFR, encoder, adaptor) and for a prompt (ids, spliced embeddings, last logits, greedy
ids, the end-to-end ``m.inference`` text). oracle.build_official runs these over its clips and prompts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from oracle.hub import SR


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
def check_hotwords_none(m: Any) -> str:
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
