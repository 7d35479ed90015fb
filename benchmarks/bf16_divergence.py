"""Where and why bf16 results decoded in a batch differ from the same clips decoded alone (S1 mismatches).

Decodes the S1 clips alone and all together in bf16, finds each clip's first differing token, then asks
the fp32 model, fed the common prefix, how far apart the two competing tokens' logits are, next to the
spacing of bf16 numbers at that logit size and next to how far bf16 arithmetic moves those two logits
(the same prefix through the bf16 model alone). Gaps within that error mean the choice is decided by
rounding, which the batch size changes, not by a batching bug.

    python -m benchmarks.bf16_divergence --model DIR --output benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import soundfile
import torch

import funasr_nano
from benchmarks.common import decode_segments, provenance
from benchmarks.load_test import make_clips
from funasr_nano.backends.torch.qwen3 import prompt_logits


def bf16_spacing(value: float) -> float:
    """Distance between neighbouring bf16 numbers around ``value`` (8 significant bits)."""
    return 2.0 ** (math.floor(math.log2(abs(value))) - 7) if value else 0.0


def teacher_forced(model, prompt, clip, history: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """fp32 copy of the next-token logits after the prompt, the clip and ``history``, run alone."""
    with torch.inference_mode():
        audio = model.encode_waveforms([torch.from_numpy(clip)])[0]
        embeddings = model.prompt_embeddings(prompt, audio)
        previous = model.llm.embed(torch.tensor(history, device=embeddings.device, dtype=torch.long))
        return prompt_logits(model.llm, torch.cat([embeddings, previous])).float().cpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    half = funasr_nano.load_model(args.model, device=args.device, dtype="bfloat16")
    full = funasr_nano.load_model(args.model, device=args.device, dtype="float32")
    clips = [soundfile.read(io.BytesIO(audio), dtype="float32")[0] for _, audio in make_clips()]
    prompt = half.tokenizer.prompt_ids([], None, True)
    budgets = [args.tokens] * len(clips)
    alone = [decode_segments(half.backend, [clip], [prompt], [args.tokens])[0] for clip in clips]
    together = decode_segments(half.backend, clips, [prompt] * len(clips), budgets)
    cases = []
    for clip, single, batched in zip(clips, alone, together, strict=True):
        if single == batched:
            cases.append({"audio_s": round(clip.size / 16000, 2), "first_difference": None})
            continue
        k = next(i for i in range(min(len(single), len(batched))) if single[i] != batched[i])
        logits, half_logits = (teacher_forced(m.backend.model, prompt, clip, single[:k]) for m in (full, half))
        top2 = torch.topk(logits, 2).values
        errors = (half_logits - logits)[[single[k], batched[k]]].abs()
        gap = float(logits[single[k]] - logits[batched[k]])
        cases.append({
            "audio_s": round(clip.size / 16000, 2),
            "first_difference": k,
            "fp32_logit_of_alone_choice": round(float(logits[single[k]]), 5),
            "fp32_logit_of_batched_choice": round(float(logits[batched[k]]), 5),
            "fp32_gap_between_the_two": round(abs(gap), 6),
            "fp32_top1_top2_gap": round(float(top2[0] - top2[1]), 6),
            "bf16_spacing_at_that_logit": bf16_spacing(float(logits[single[k]])),
            "fp32_picks": "alone" if gap > 0 else "batched" if gap < 0 else "tie",
            # the same prefix through the eager bf16 model, alone: how far bf16 moves these two logits
            "bf16_error_on_the_two_logits": round(float(errors.max()), 6),
        })
    result = {
        **provenance("bf16 batched-vs-alone divergence (S1 clips)", args.device),
        "tokens": args.tokens,
        "clips": cases,
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
