"""A tiny random OFFICIAL Fun-ASR-Nano WITH a CTC head, in the hub layout, and the official char
timestamps of it (``FunASRNano.inference`` → ``timestamps`` / ``ctc_timestamps`` / ``ctc_text``).

The official timestamps need ``torchaudio.functional.forced_align``. Where torchaudio is missing (this
CPU machine) ``official_inference(..., kernel=...)`` swaps in another Viterbi kernel for torchaudio's
C++ op only (the official grouping, scores and 60 ms conversion stay the official code); with
``kernel=None`` the official code runs unchanged (needs torchaudio: the GPU machine).
"""

from __future__ import annotations

import base64
import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from oracle.hub import LLM_DIR_NAME, TINY, hub_config, official_kwargs, perturb_state_dict, write_llm_dir

SPECIALS = 1679
CTC_LAYERS = 2


def write_vocab(path: Path, size: int, seed: int) -> int:
    """A random tiktoken vocabulary: the 256 bytes plus merges of them (every rank's pieces present)."""
    rng = random.Random(seed)
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    while len(tokens) < size:
        merged = rng.choice(tokens) + rng.choice(tokens)
        if merged not in seen and len(merged) <= 6:
            seen.add(merged)
            tokens.append(merged)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    return len(tokens)


def _kwargs(cfg: dict[str, Any], out_dir: Path, seed: int, init_param: Path | None) -> dict[str, Any]:
    kw = official_kwargs(cfg, out_dir, seed, init_param)
    for key in ("ctc_decoder", "ctc_decoder_conf", "ctc_conf", "ctc_weight", "detach_ctc_decoder", "ctc_vocab_size"):
        if key in cfg:
            kw[key] = copy.deepcopy(cfg[key])
    kw["ctc_tokenizer"] = "SenseVoiceTokenizer"
    kw["ctc_tokenizer_conf"] = {
        "vocab_path": str(out_dir / "multilingual.tiktoken"),
        "is_multilingual": True,
        "num_languages": 8749,
    }
    return kw


def build(out_dir: Path, seed: int = 0, ranks: int = 600) -> Any:
    """Write the hub directory (model.pt with ctc_decoder.* + ctc.*, config.yaml, multilingual.tiktoken,
    Qwen3-0.6B/) and return the official model reloaded from it, in eval mode."""
    from funasr import AutoModel

    out_dir.mkdir(parents=True, exist_ok=True)
    write_llm_dir(out_dir / LLM_DIR_NAME, TINY["llm"])
    ranks = write_vocab(out_dir / "multilingual.tiktoken", ranks, seed)
    cfg = hub_config(TINY)
    cfg["ctc_decoder_conf"]["n_layer"] = CTC_LAYERS
    cfg["ctc_vocab_size"] = ranks + SPECIALS
    cfg["dataset_conf"]["ctc_tokenizer_conf"]["vocab_path"] = "multilingual.tiktoken"
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    am = AutoModel(**_kwargs(cfg, out_dir, seed, None))
    state = perturb_state_dict(am.model.state_dict(), seed)
    # A sharper CTC head than random init: large logits make the alignment depend on the audio.
    generator = torch.Generator().manual_seed(seed + 7)
    for key in ("ctc.ctc_lo.weight", "ctc.ctc_lo.bias"):
        state[key] = (state[key].float() * 40 + torch.randn(state[key].shape, generator=generator)).to(torch.bfloat16)
    torch.save({"state_dict": state}, out_dir / "model.pt")
    del am
    am = AutoModel(**_kwargs(cfg, out_dir, seed, out_dir / "model.pt"))
    model = am.model.eval()
    model.llm.to(torch.float32)
    assert model.ctc_decoder is not None, "the official build dropped the CTC head"
    return am


Kernel = Callable[[Any, list[int], int], list[int]]  # (log_probs [T, V] numpy, targets, blank) -> labels


def official_inference(am: Any, wav: torch.Tensor, max_length: int = 12, kernel: Kernel | None = None) -> dict:
    """The official result dict (text, ctc_text, timestamps, ctc_timestamps) for one clip."""
    import funasr.models.fun_asr_nano.model as official

    original = official.forced_align
    if kernel is not None:

        def forced_align(log_probs: torch.Tensor, targets: torch.Tensor, blank: int = 0) -> list[dict]:
            from itertools import groupby

            items: list[dict] = []
            try:  # the official body (tools/utils.py) with the Viterbi kernel swapped
                lp, tg = log_probs.unsqueeze(0).cpu(), targets.unsqueeze(0).cpu()
                assert lp.shape[1] >= tg.shape[1]
                labels = torch.tensor(kernel(lp[0].numpy(), tg[0].tolist(), blank))
                scores = torch.exp(lp[0, torch.arange(labels.numel()), labels]).tolist()
                for token, group in groupby(enumerate(labels), key=lambda item: item[1]):
                    if token == blank:
                        continue
                    group = list(group)
                    start = group[0][0]
                    end = start + len(group)
                    items.append(
                        {
                            "token": token.item(),
                            "start_time": start,
                            "end_time": end,
                            "score": round(max(scores[start:end]), 3),
                        }
                    )
            except Exception:
                pass
            return items

        official.forced_align = forced_align
    try:
        with torch.no_grad():
            results, _ = am.model.inference(
                data_in=[wav.clone()],
                key=["k"],
                tokenizer=am.kwargs["tokenizer"],
                frontend=am.kwargs["frontend"],
                device="cpu",
                max_length=max_length,
            )
    finally:
        official.forced_align = original
    return results[0]
