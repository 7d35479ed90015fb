"""funasr-nano's side of the speed benchmarks (benchmarks/README protocol: L1, D1, T1 on one device).

    python -m benchmarks.bench_ours --model DIR --json OUT.json [--device cuda] [--dtype bfloat16]
        [--workloads L1,D1,T1] [--repeats 5] [--int8] [--threads N]

Prints one JSON object of figures (also written to --json); run_gpu.py / bench_cpu.py merge it with the
peers' figures. Memory peaks are measured per workload, L1 first so the grow-only KV cache is L1's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

import funasr_nano
from benchmarks.common import (
    D1_BATCHES,
    D1_CONTEXT,
    L1_SAMPLES,
    L1_TOKENS,
    SAMPLE_RATE,
    T1_SAMPLES,
    T1_SEGMENTS,
    T1_TOKENS,
    agreement,
    decode_segments,
    device_name,
    l1_audio,
    peak_memory,
    provenance,
    reset_peak_memory,
    summary,
    sync,
    t1_audio,
    timed,
    versions,
)
from funasr_nano.backends import generate
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine
from funasr_nano.frontend.audio import load_audio
from funasr_nano.frontend.features import extract_features

# Decode-step time = difference of two generate calls, so prefill and setup cancel out.
D1_SHORT, D1_LONG = 4, 36


def file_decode_seconds(samples: np.ndarray, repeats: int) -> dict[str, float]:
    """load_audio of the clip as a 16-bit WAV file: the part of 'end to end' that L1 times apart."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l1.wav"
        with wave.open(str(path), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(SAMPLE_RATE)
            f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        seconds, _ = timed(lambda: load_audio(str(path)), "cpu", repeats)
    return summary(seconds)


@torch.inference_mode()
def l1(model, device: str, repeats: int, warmups: int) -> dict:
    samples = l1_audio()
    backend = model.backend

    def run():
        return model.transcribe(samples, max_new_tokens=L1_TOKENS, vad=False)

    for _ in range(warmups):  # on CUDA the second one finds its graphs captured and the allocator settled
        run()
    reset_peak_memory(device)
    seconds, result = timed(run, device, repeats)
    figures = {"end_to_end": summary(seconds), **peak_memory(device)}
    figures["rtf"] = round(figures["end_to_end"]["median_s"] / (L1_SAMPLES / SAMPLE_RATE), 5)
    figures["new_tokens"] = len(result.segments[0].tokens)
    ids = result.segments[0].tokens

    # Stage breakdown, each stage synchronised on its own.
    wav = torch.from_numpy(samples)
    seconds, features = timed(lambda: extract_features([wav.to(device)]), device, repeats)
    stages = {"features_s": summary(seconds)["median_s"]}
    seconds, audio = timed(lambda: backend.model.encode(features), device, repeats)
    stages["encoder_adaptor_s"] = summary(seconds)["median_s"]
    prompt = model.tokenizer.prompt_ids([], None, True)
    embeddings = backend.model.prompt_embeddings(prompt, audio[0])
    engine = backend.engine
    seconds, _ = timed(lambda: generate(engine, [GenerationRequest(embeddings, 1)]), device, repeats)
    stages["prefill_s"] = summary(seconds)["median_s"]
    seconds, _ = timed(lambda: generate(engine, [GenerationRequest(embeddings, L1_TOKENS)]), device, repeats)
    stages["decode_ms_per_token"] = round(
        (summary(seconds)["median_s"] - stages["prefill_s"]) / (L1_TOKENS - 1) * 1e3, 4
    )
    stages["prompt_tokens"] = int(embeddings.shape[0])
    figures["stages"] = stages
    figures["file_decode"] = file_decode_seconds(samples, repeats)

    if engine.fused is not None:
        # bf16 fused kernels + graphs against the eager reference step on the same prompt.
        eager = GreedyEngine(engine.llm, engine.stop_ids, max_batch=1, cuda_graphs=False)
        eager.fused = None
        reference = generate(eager, [GenerationRequest(embeddings, L1_TOKENS)])[0]
        eager.release()
        figures["fused_vs_eager_ids"] = agreement(ids, reference)
    return figures, ids


@torch.inference_mode()
def d1(model, device: str, repeats: int) -> dict:
    """Decode step at a 600-token context: graph replay alone, and inside the engine loop."""
    llm = model.backend.engine.llm
    model.backend.engine.release()
    engine = GreedyEngine(llm, [], max_batch=max(D1_BATCHES))
    hidden = llm.config.hidden_size
    generator = torch.Generator(device=device).manual_seed(0)
    figures = {}
    for batch in D1_BATCHES:
        prompts = [
            0.03 * torch.randn(D1_CONTEXT, hidden, generator=generator, device=device).to(engine.dtype)
            for _ in range(batch)
        ]

        def run(steps: int, prompts=prompts):
            return generate(engine, [GenerationRequest(p, steps) for p in prompts])

        run(D1_LONG)
        first, _ = timed(lambda: run(D1_SHORT), device, repeats)
        second, _ = timed(lambda: run(D1_LONG), device, repeats)
        loop_ms = (summary(second)["median_s"] - summary(first)["median_s"]) / (D1_LONG - D1_SHORT) * 1e3
        row = {"engine_loop_ms_per_step": round(loop_ms, 4), "tokens_per_s": round(batch / loop_ms * 1e3, 1)}
        if device == "cuda":
            engine.positions[:batch] = D1_CONTEXT
            engine._step(batch, engine.cache.max_len)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            steps = 50
            engine.positions[:batch] = D1_CONTEXT
            start.record()
            for _ in range(steps):
                engine._step(batch, engine.cache.max_len)
            end.record()
            sync(device)
            row["step_only_ms"] = round(start.elapsed_time(end) / steps, 4)
        figures[str(batch)] = row
    figures.update(peak_memory(device))
    engine.release()
    return figures


@torch.inference_mode()
def t1(model, device: str, repeats: int) -> dict:
    segments = t1_audio()
    model.backend.engine.release()

    def run():
        return list(model.transcribe_many(segments, vad=False, max_new_tokens=T1_TOKENS))

    run()
    reset_peak_memory(device)
    seconds, results = timed(run, device, repeats)
    audio_seconds = T1_SEGMENTS * T1_SAMPLES / SAMPLE_RATE
    figures = {"wall": summary(seconds), **peak_memory(device)}
    figures["rtfx"] = round(audio_seconds / figures["wall"]["median_s"], 1)
    figures["new_tokens"] = sum(len(r.segments[0].tokens) for r in results)
    figures["tokens_per_s"] = round(figures["new_tokens"] / figures["wall"]["median_s"], 1)
    backend = model.backend
    waves = [torch.from_numpy(s) for s in segments]

    def encode_all():
        for start in range(0, len(waves), backend.batch_size):
            backend.model.encode_waveforms(waves[start : start + backend.batch_size])

    seconds, _ = timed(encode_all, device, repeats)
    figures["features_encoder_adaptor_s"] = summary(seconds)["median_s"]
    # Batched equals single (bf16: agreement is reported, fp32 is exact in the CPU tests).
    prompt = model.tokenizer.prompt_ids([], None, True)
    few = [s for s in segments[:8]]
    batched = decode_segments(backend, few, [prompt] * len(few), [T1_TOKENS] * len(few))
    single = [decode_segments(backend, [s], [prompt], [T1_TOKENS])[0] for s in few]
    same = sum(a == b for x, y in zip(batched, single, strict=True) for a, b in zip(x, y, strict=False))
    figures["batched_vs_single_equal_fraction"] = round(same / sum(len(x) for x in batched), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--workloads", default="L1,D1,T1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = funasr_nano.load_model(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, int8=args.int8
    )
    backend = model.backend
    out = {
        "system": "funasr-nano",
        **{k: v for k, v in provenance(args.workloads, args.device).items() if k in ("date", "command", "git_commit")},
        "device": device_name(args.device),
        "versions": versions(),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "int8": args.int8,
        "fused_triton_decode": backend.engine.fused is not None,
        "cuda_graphs": backend.engine.cuda_graphs,
        "load_s": round(time.perf_counter() - started, 2),
        "threads": torch.get_num_threads(),
    }
    for workload in args.workloads.split(","):
        print(f"[ours] {workload} ...", flush=True)
        if workload == "L1":
            out["L1"], out["L1_ids"] = l1(model, args.device, args.repeats, args.warmups)
        elif workload == "D1":
            out["D1"] = d1(model, args.device, args.repeats)
        elif workload == "T1":
            out["T1"] = t1(model, args.device, args.repeats)
        print(json.dumps({k: v for k, v in out.items() if k != "L1_ids"}, indent=1), flush=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
