"""The peers' side of the speed benchmarks, on the same checkpoint, audio and token counts.

    python -m benchmarks.bench_peers official --model DIR --json OUT.json [--device cuda] [--workloads L1,T1]
    python -m benchmarks.bench_peers transformers --model DIR --json OUT.json [--workloads L1,D1]

official: the funasr toolkit's AutoModel built from the hub config.yaml with init_param=model.pt (what a
hub download does), dither 0, its default fp32 LLM and llm_dtype="bf16"; new tokens fixed with
llm_kwargs={"min_new_tokens": N} plus max_length=N. T1 uses its own batched path (a list input with
batch_size > 1 goes to _inference_llm_batch: per-segment encoder, left-padded batched generate).
transformers: Qwen3ForCausalLM (transformers' own implementation, sdpa attention) holding the same LLM
weights, fed our prompt embeddings of the L1 clip, generate() in bf16 with the default dynamic cache
(L1, D1) and with a reused StaticCache, which makes generate torch.compile the decode step (L1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

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
    device_name,
    l1_audio,
    peak_memory,
    reset_peak_memory,
    summary,
    t1_audio,
    timed,
    versions,
)
from oracle.hub import official_kwargs

OFFICIAL_T1_BATCH = 32
# transformers' steps are slow at batch 128: fewer of them than ours, the same difference method.
D1_SHORT, D1_LONG = 4, 20


def official(args: argparse.Namespace) -> dict:
    import logging

    from funasr import AutoModel

    logging.disable(logging.WARNING)
    started = time.perf_counter()
    config = yaml.safe_load((args.model / "config.yaml").read_text(encoding="utf-8"))
    kwargs = official_kwargs(config, args.model.resolve(), 0, args.model.resolve() / "model.pt")
    kwargs.update(device=args.device, ncpu=torch.get_num_threads())
    am = AutoModel(**kwargs)
    out: dict = {"system": "official funasr AutoModel", "load_s": round(time.perf_counter() - started, 2)}
    # Every tensor of the file must have arrived (the official loader only logs mismatches).
    stored = torch.load(args.model / "model.pt", map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    loaded = am.model.state_dict()
    out["checkpoint_keys_loaded"] = sum(
        torch.equal(loaded[k].detach().cpu().to(torch.bfloat16), v) for k, v in stored.items() if k in loaded
    )
    out["checkpoint_keys"] = len(stored)
    del stored, loaded
    generated: list[int] = []
    last_ids: list[list[int]] = []
    llm = am.model.llm
    original = llm.generate

    def counting_generate(*a, **kw):
        ids = original(*a, **kw)
        generated.append(int(ids.shape[-1]))
        last_ids[:] = [ids[0].tolist()]
        return ids

    llm.generate = counting_generate
    wav = torch.from_numpy(l1_audio())
    for llm_dtype in args.dtypes.split(","):
        if "L1" not in args.workloads:
            break

        def run(llm_dtype=llm_dtype):
            return am.generate(input=[wav], cache={}, batch_size=1, max_length=L1_TOKENS, llm_dtype=llm_dtype,
                               llm_kwargs={"min_new_tokens": L1_TOKENS}, disable_pbar=True)

        run()
        reset_peak_memory(args.device)
        seconds, _ = timed(run, args.device, args.repeats)
        figures = {"end_to_end": summary(seconds), **peak_memory(args.device), "new_tokens": generated[-1],
                   "ids": last_ids[0]}
        figures["rtf"] = round(figures["end_to_end"]["median_s"] / (L1_SAMPLES / SAMPLE_RATE), 5)
        out[f"L1_{llm_dtype}"] = figures
        print(json.dumps(out, indent=1), flush=True)
        args.json.write_text(json.dumps(out, indent=1))
    if "T1" in args.workloads:
        segments = [torch.from_numpy(s) for s in t1_audio()]
        reset_peak_memory(args.device)
        generated.clear()
        seconds, _ = timed(
            lambda: am.generate(input=segments, cache={}, batch_size=OFFICIAL_T1_BATCH, max_length=T1_TOKENS,
                                llm_kwargs={"min_new_tokens": T1_TOKENS}, disable_pbar=True),
            args.device, 1,
        )
        figures = {"wall": summary(seconds), **peak_memory(args.device), "batch_size": OFFICIAL_T1_BATCH,
                   "llm_dtype": "fp32", "new_tokens_per_segment": sorted(set(generated))}
        figures["rtfx"] = round(T1_SEGMENTS * T1_SAMPLES / SAMPLE_RATE / figures["wall"]["median_s"], 1)
        out["T1_fp32"] = figures
    return out


def transformers_peer(args: argparse.Namespace) -> dict:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    import funasr_nano
    from funasr_nano.backends import generate
    from funasr_nano.backends.torch.engine import GenerationRequest

    ours = funasr_nano.load_model(args.model, device=args.device, dtype="bfloat16", batch_size=1)
    backend = ours.backend
    audio = backend.model.encode_waveforms([torch.from_numpy(l1_audio())])[0]
    embeddings = backend.model.prompt_embeddings(ours.tokenizer.prompt_ids([], None, True), audio)
    our_ids = generate(backend.engine, [GenerationRequest(embeddings, L1_TOKENS)])[0]
    config = Qwen3Config.from_pretrained(args.model / "Qwen3-0.6B")
    with torch.device(args.device):
        hf = Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    hf.load_state_dict(backend.model.llm.state_dict(), strict=True)
    hf.tie_weights()
    del ours, backend
    torch.cuda.empty_cache()
    out: dict = {"system": "transformers Qwen3ForCausalLM.generate", "dtype": "bfloat16",
                 "attn_implementation": hf.config._attn_implementation}

    def generate(embeds: torch.Tensor, steps: int, cache=None) -> torch.Tensor:
        with torch.inference_mode():
            if cache is not None:
                cache.reset()
            return hf.generate(
                inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=args.device),
                max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=151643,
                past_key_values=cache,
            )

    def l1(name: str, cache=None) -> None:
        embeds = embeddings[None]
        generate(embeds, L1_TOKENS, cache)  # warm-up (for the static cache: torch.compile of the step)
        reset_peak_memory(args.device)
        seconds, ids = timed(lambda: generate(embeds, L1_TOKENS, cache), args.device, args.repeats)
        figures = {"llm_only": summary(seconds), **peak_memory(args.device)}
        figures["ids_vs_funasr_nano_bf16"] = agreement(our_ids, ids[0, -L1_TOKENS:].tolist())
        first, _ = timed(lambda: generate(embeds, 1, cache), args.device, args.repeats)
        figures["prefill_s"] = summary(first)["median_s"]
        figures["decode_ms_per_token"] = round(
            (summary(seconds)["median_s"] - figures["prefill_s"]) / (L1_TOKENS - 1) * 1e3, 3
        )
        out[f"L1_{name}"] = figures
        print(json.dumps(out, indent=1), flush=True)
        args.json.write_text(json.dumps(out, indent=1))

    if "L1" in args.workloads:
        l1("dynamic")
    if "D1" in args.workloads:
        rows = {}
        for batch in D1_BATCHES:
            embeds = (0.03 * torch.randn(batch, D1_CONTEXT, config.hidden_size, device=args.device)).bfloat16()
            generate(embeds, D1_LONG)
            a, _ = timed(lambda e=embeds: generate(e, D1_SHORT), args.device, 2)
            b, _ = timed(lambda e=embeds: generate(e, D1_LONG), args.device, 2)
            step_ms = (summary(b)["median_s"] - summary(a)["median_s"]) / (D1_LONG - D1_SHORT) * 1e3
            rows[str(batch)] = {"ms_per_step": round(step_ms, 3), "tokens_per_s": round(batch / step_ms * 1e3, 1)}
        out["D1_dynamic"] = rows
        print(json.dumps(out, indent=1), flush=True)
        args.json.write_text(json.dumps(out, indent=1))
    if "L1" in args.workloads:
        # One StaticCache object for every call: fixed shapes, so generate's automatic torch.compile of
        # the decode step happens once (in the warm-up), as a user reusing the cache would see it.
        from transformers import StaticCache

        l1("static_compiled", StaticCache(config=config, max_cache_len=embeddings.shape[0] + L1_TOKENS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("system", choices=["official", "transformers"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workloads", default="L1,T1")
    parser.add_argument("--dtypes", default="fp32,bf16", help="official llm_dtype values for L1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = official(args) if args.system == "official" else transformers_peer(args)
    out.update(device=device_name(args.device), versions=versions(), threads=torch.get_num_threads())
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
