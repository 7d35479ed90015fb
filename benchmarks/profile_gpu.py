"""Where the milliseconds go on the GPU: GEMV configs against cuBLAS, decode-step time per batch bucket
for both decode variants, a kernel table of one step, encoder/prefill launch counts, and bf16 agreement
with the eager reference under teacher forcing.

    python -m benchmarks.profile_gpu --model DIR --json OUT.json [--tune]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import funasr_nano
from benchmarks.common import L1_TOKENS, agreement, l1_audio
from funasr_nano.backends import generate
from funasr_nano.backends.torch import fused as fused_module
from funasr_nano.backends.torch import triton_ops as ops
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine
from funasr_nano.backends.torch.qwen3 import attention_mask
from funasr_nano.frontend.features import extract_features


def bench_ms(fn, repeats: int = 200) -> float:
    """Median ms of fn replayed from a CUDA graph (launch cost as in the decode graph)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def tune_gemv(llm, grid: bool) -> dict:
    layer = llm.model.layers[0]
    hidden = llm.config.hidden_size
    x = torch.randn(1, hidden, device="cuda", dtype=torch.bfloat16)
    delta = torch.randn_like(x)
    spare = torch.empty_like(x)
    shapes = {
        "qkv": (x, layer.self_attn.qkv_weight, ops.PROLOGUE_NORM, layer.input_layernorm.weight),
        "o": (torch.randn(1, layer.self_attn.o_proj.weight.shape[1], device="cuda", dtype=torch.bfloat16),
              layer.self_attn.o_proj.weight, ops.PROLOGUE_NONE, None),
        "gate_up": (x, layer.mlp.gate_up_weight, ops.PROLOGUE_NORM, layer.post_attention_layernorm.weight),
        "down": (torch.randn(1, 2 * llm.config.intermediate_size, device="cuda", dtype=torch.bfloat16),
                 layer.mlp.down_proj.weight, ops.PROLOGUE_SILU, None),  # cuBLAS gets the activated half
        "head": (x, llm.lm_head.weight, ops.PROLOGUE_NORM, llm.model.norm.weight),
    }
    grid_configs = list(itertools.product((2, 4, 8, 16), (512, 1024), (2, 4, 8)))
    results = {}
    for name, (inp, weight, prologue, norm_weight) in shapes.items():
        out = inp.new_empty(1, weight.shape[0])
        row = {"bytes_mb": round(weight.numel() * 2 / 1e6, 2)}
        plain = inp[:, : weight.shape[1]]
        row["cublas_ms"] = round(bench_ms(lambda plain=plain, weight=weight: F.linear(plain, weight)), 4)
        best = None
        for config in grid_configs if grid else [fused_module.GEMV_CONFIGS[name]]:
            block_n, block_k, warps = config
            if prologue == ops.PROLOGUE_NORM and block_k != 1024:
                continue  # the norm prologue takes the whole row anyway
            use_delta = delta if prologue == ops.PROLOGUE_NORM else None

            def call(inp=inp, weight=weight, out=out, prologue=prologue, norm_weight=norm_weight,
                     use_delta=use_delta, block_n=block_n, block_k=block_k, warps=warps):
                ops.gemv(inp, weight, out, prologue, use_delta, spare, norm_weight, 1e-6, block_n, block_k, warps)

            try:
                ms = bench_ms(call)
            except Exception as error:  # a config the compiler rejects (too many registers/smem)
                row.setdefault("failed", []).append(f"{config}: {type(error).__name__}")
                continue
            if best is None or ms < best[0]:
                best = (ms, config)
        row["triton_ms"], row["triton_config"] = round(best[0], 4), best[1]
        row["triton_gb_s"] = round(row["bytes_mb"] / best[0], 1)
        results[name] = row
        fused_module.GEMV_CONFIGS[name] = best[1]
    return results


def step_times(engine: GreedyEngine, position: int) -> dict:
    rows = {}
    for batch in (1, 2, 8, 32, 128):
        row = {}
        for gemv in (True, False) if batch <= ops.GEMV_MAX_ROWS else (False,):
            engine.fused.small_batch_gemv = gemv
            engine.release()
            engine.reserve(batch, position + 64)
            engine.positions[:batch] = position
            engine._step(batch, engine.cache.max_len)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            engine.positions[:batch] = position
            start.record()
            for _ in range(30):
                engine._step(batch, engine.cache.max_len)
            end.record()
            torch.cuda.synchronize()
            row["gemv_ms" if gemv else "cublas_ms"] = round(start.elapsed_time(end) / 30, 4)
        rows[str(batch)] = row
    engine.fused.small_batch_gemv = True
    engine.release()
    return rows


def kernel_table(fn, limit: int = 14) -> dict:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sorted(((e.key, e.count, e.self_device_time_total) for e in events), key=lambda r: -r[2])
    return {
        "gpu_busy_ms": round(sum(k[2] for k in kernels) / 1e3, 3),
        "launches": sum(k[1] for k in kernels),
        "top": [[name[:70], count, round(us / 1e3, 4)] for name, count, us in kernels[:limit]],
    }


def teacher_forced(engine: GreedyEngine, embeddings: torch.Tensor, target: list[int]) -> float:
    """Share of steps whose greedy token equals target's when every step is fed target's previous token."""
    first = generate(engine, [GenerationRequest(embeddings, 1)])[0]
    hits = [bool(first) and first[0] == target[0]]
    length = embeddings.shape[0]
    for step in range(1, len(target)):
        engine.tokens[0] = target[step - 1]
        engine.positions[0] = length + step - 1
        engine._step(1, engine.cache.max_len)
        hits.append(int(engine.tokens[0]) == target[step])
    return round(sum(hits) / len(hits), 4)


def step_logits_error(engine: GreedyEngine, reference: GreedyEngine, embeddings: torch.Tensor) -> dict:
    """Relative error ||logits - fp32|| / ||fp32|| of one decode step after the same prompt, per bf16 path."""
    def eager_step(target: GreedyEngine, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        llm, cache = target.llm, target.cache
        kv_len = cache.max_len
        mask = attention_mask(position[:, None], position + 1, kv_len, target.group)
        hidden = llm(llm.embed(token)[:, None], cache, target.slot_ids[:1], position[:, None], mask, kv_len)
        return llm.logits(hidden[:, 0])

    generate(engine, [GenerationRequest(embeddings, 1)])
    generate(reference, [GenerationRequest(embeddings.float(), 1)])
    token, position = engine.tokens[:1].clone(), engine.positions[:1].clone()
    exact = eager_step(reference, token, position).float()
    slot = engine.slot_ids[:1]
    variants = {
        "bf16_eager": eager_step(engine, token, position),
        "bf16_fused_gemv": engine.fused._gemv_layers(engine.cache, token.clone(), position.clone(), slot),
        "bf16_fused_cublas": engine.fused._gemm_layers(engine.cache, token.clone(), position.clone(), slot),
    }
    return {name: float((v.float() - exact).norm() / exact.norm()) for name, v in variants.items()}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--tune", action="store_true", help="search GEMV configs (else the built-in ones)")
    args = parser.parse_args()
    out: dict = {"device": torch.cuda.get_device_name()}
    model = funasr_nano.load_model(args.model, device="cuda", dtype="bfloat16", batch_size=128)
    backend = model.backend
    engine = backend.engine
    out["gemv"] = tune_gemv(engine.llm, args.tune)
    print(json.dumps(out, indent=1), flush=True)
    out["step_ms_at_200"] = step_times(engine, 200)
    out["step_ms_at_600"] = step_times(engine, 600)
    print(json.dumps(out, indent=1), flush=True)
    for batch in (1, 128):
        engine.fused.small_batch_gemv = True
        engine.reserve(batch, 256)
        engine.positions[:batch] = 200
        out[f"step_kernels_b{batch}"] = kernel_table(lambda batch=batch: engine._fused_step(batch))
    engine.release()
    features = extract_features([torch.from_numpy(l1_audio()).cuda()])
    out["encoder_kernels"] = kernel_table(lambda: backend.model.encode(features))
    audio = backend.model.encode(features)[0]
    embeddings = backend.model.prompt_embeddings(model.tokenizer.prompt_ids([], None, True), audio)
    out["prefill_kernels"] = kernel_table(lambda: generate(engine, [GenerationRequest(embeddings, 1)]))
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1), flush=True)
    # Agreement under teacher forcing, against the fp32 eager trajectory.
    eager = GreedyEngine(engine.llm, [], max_batch=1, cuda_graphs=False)
    eager.fused = None
    bf16_ids = generate(eager, [GenerationRequest(embeddings, L1_TOKENS)])[0]
    fused_ids = generate(engine, [GenerationRequest(embeddings, L1_TOKENS)])[0]
    reference = funasr_nano.load_model(args.model, device="cuda", dtype="float32", batch_size=1)
    fp32_ids = generate(reference.backend.engine, [GenerationRequest(embeddings.float(), L1_TOKENS)])[0]
    out["teacher_forced_vs_fp32"] = {
        "bf16_eager": teacher_forced(eager, embeddings, fp32_ids),
        "bf16_fused_gemv": teacher_forced(engine, embeddings, fp32_ids),
    }
    engine.fused.small_batch_gemv = False
    engine.release()
    out["teacher_forced_vs_fp32"]["bf16_fused_cublas"] = teacher_forced(engine, embeddings, fp32_ids)
    out["teacher_forced_vs_bf16_eager"] = {"bf16_fused_cublas": teacher_forced(engine, embeddings, bf16_ids)}
    engine.fused.small_batch_gemv = True
    engine.release()
    out["teacher_forced_vs_bf16_eager"]["bf16_fused_gemv"] = teacher_forced(engine, embeddings, bf16_ids)
    out["step_logits_relative_error_vs_fp32"] = step_logits_error(engine, reference.backend.engine, embeddings)
    out["free_running_vs_fp32"] = {"bf16_eager": agreement(bf16_ids, fp32_ids),
                                   "bf16_fused": agreement(fused_ids, fp32_ids)}
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
