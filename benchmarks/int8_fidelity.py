"""How far the CPU int8 LLM is from fp32 on the L1 prompt (same inputs, so no free-running divergence).

    python -m benchmarks.int8_fidelity --model DIR [--steps 32] [--threads 2]

Prints the relative error of the last prefill position's logits and the teacher-forced greedy agreement
(every step is fed the fp32 run's previous token) over --steps decode steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import funasr_nano
from benchmarks.common import l1_audio
from funasr_nano.backends import generate
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine
from funasr_nano.backends.torch.quantize import quantize_llm_int8
from funasr_nano.backends.torch.qwen3 import KVCache, attention_mask


def last_logits(llm, embeddings: torch.Tensor) -> torch.Tensor:
    length = embeddings.shape[0]
    cache = KVCache.allocate(llm.config, 1, length, embeddings.device, embeddings.dtype)
    positions = torch.arange(length)[None]
    mask = attention_mask(positions, torch.tensor([length]), length, llm.config.num_heads // llm.config.num_kv_heads)
    hidden = llm(embeddings[None], cache, torch.tensor([0]), positions, mask, length)
    return llm.logits(hidden[0, -1:])[0]


def teacher_forced(engine: GreedyEngine, embeddings: torch.Tensor, target: list[int]) -> float:
    hits = [generate(engine, [GenerationRequest(embeddings, 1)])[0][0] == target[0]]
    for step in range(1, len(target)):
        engine.tokens[0] = target[step - 1]
        engine.positions[0] = embeddings.shape[0] + step - 1
        engine._step(1, engine.cache.max_len)
        hits.append(int(engine.tokens[0]) == target[step])
    return round(sum(hits) / len(hits), 4)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = funasr_nano.load_model(args.model, device="cpu", dtype="float32", batch_size=1)
    backend = model.backend
    audio = backend.model.encode_waveforms([torch.from_numpy(l1_audio())])[0]
    embeddings = backend.model.prompt_embeddings(model.tokenizer.prompt_ids([], None, True), audio)
    reference = generate(backend.engine, [GenerationRequest(embeddings, args.steps)])[0]
    exact = last_logits(backend.model.llm, embeddings)
    quantize_llm_int8(backend.model.llm)
    approximate = last_logits(backend.model.llm, embeddings)
    engine = GreedyEngine(backend.model.llm, [], max_batch=1)
    print(json.dumps({
        "prefill_last_logits_relative_error": round(float((approximate - exact).norm() / exact.norm()), 4),
        "teacher_forced_agreement": teacher_forced(engine, embeddings, reference),
        "steps": args.steps,
    }))


if __name__ == "__main__":
    main()
