"""CTC-draft speculative decoding: what a verify step costs and what drafts gain.

    python -m benchmarks.drafts --model DIR [--device cpu|cuda] [--dtype auto] [--draft-tokens 4,8,16]
        [--real [--testset tests/data/demo] [--ctc-head PATH ...]] [--synthetic] [--t1] [--threads N]
        [--repeats 3] [--json OUT]

--real (a model with a CTC head: the demo model): every clip of the test set decoded one at a time and all
together, plain and with the CTC head's drafts (``load_model(ctc_drafts=k)``) for each k; the texts are
compared with the plain ones, and the engine's counters give the acceptance (draft ids greedy agreed with,
of those verified) and the tokens a verifying row gained per step (summed over the timed runs).
``--ctc-head`` adds runs with other heads; ``--backend mlx`` runs it on MLX.

--synthetic (any model; the full-size random checkpoint, whose CTC head, if any, says nothing): L1's prompt
(41.26 s, 124 new tokens, batch 1) decoded by the engine plain and with drafts made from the plain greedy
ids: all right (the most drafts can give), one id in every 8 or 4 wrong, and all wrong after each anchor
(every step verifies k ids and keeps none: the most drafts can cost). ``--t1`` does the same for T1's
120 segments of 30 s at 90 tokens in one batch. Prefill and decode are timed together (the prompt is
encoded once beforehand); ids are compared with the plain ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from benchmarks.common import (
    L1_TOKENS,
    T1_TOKENS,
    agreement,
    l1_audio,
    provenance,
    summary,
    sync,
    t1_audio,
    timed,
)
from funasr_nano import load_model
from funasr_nano.backends import generate
from funasr_nano.backends.drafts import DraftStats
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine


def since(before: DraftStats, now: DraftStats) -> DraftStats:
    """The counts added between two readings of an engine's counters."""
    return DraftStats(*(getattr(now, f.name) - getattr(before, f.name) for f in fields(DraftStats)))


def stats_record(stats: DraftStats) -> dict:
    return {
        "plain_steps": stats.plain_steps,
        "verify_steps": stats.verify_steps,
        "rows_verifying": stats.rows,
        "drafted": stats.drafted,
        "accepted": stats.accepted,
        "acceptance": round(stats.accepted / stats.drafted, 4) if stats.drafted else None,
        "tokens_per_verifying_row": round(stats.tokens_per_row, 3),
    }


def real(args: argparse.Namespace) -> dict:
    rows = [json.loads(line) for line in (args.testset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    files = [str(args.testset / row["path"]) for row in rows]
    heads = [None, *args.ctc_head]
    out: dict = {"clips": len(files), "testset": str(args.testset), "runs": []}
    reference: list[str] | None = None
    for head in heads:
        for k in [0, *args.draft_tokens]:
            if k == 0 and head is not None:
                continue
            model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                               ctc_drafts=k, ctc_head=head)
            # warm-up of both timed passes: every prompt shape's graphs, the kernels' compilations, the allocator
            for path in files:
                model.transcribe(path)
            list(model.transcribe_many(files))
            backend = model.backend
            singles, texts = [], []
            before = replace(backend.draft_stats)
            for path in files:
                sync(args.device)
                started = time.perf_counter()
                texts.append(model.transcribe(path).text)
                sync(args.device)
                singles.append(time.perf_counter() - started)
            single_stats = stats_record(since(before, backend.draft_stats))
            before = replace(backend.draft_stats)
            seconds, results = timed(lambda m=model: list(m.transcribe_many(files)), args.device, args.repeats)
            batched = [r.text for r in results]
            if reference is None:
                reference = texts
            run = {
                "ctc_head": head or "the model's own",
                "draft_tokens": k,
                "one_at_a_time": {"total_s": round(sum(singles), 4),
                                  "median_clip_s": round(statistics.median(singles), 5),
                                  "drafts": single_stats},
                "all_together": {**summary(seconds), "drafts": stats_record(since(before, backend.draft_stats))},
                "texts_equal_plain_one_at_a_time": sum(a == b for a, b in zip(texts, reference, strict=True)),
                "texts_equal_plain_together": sum(a == b for a, b in zip(batched, reference, strict=True)),
            }
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
            del model
    return out


KINDS = ("right", "one_in_8_wrong", "one_in_4_wrong", "all_wrong")


def synthetic_drafts(ids: list[int], k: int, vocab: int) -> dict[str, list[int]]:
    """Drafts of known quality made from the plain greedy ids."""
    def wrong(token: int) -> int:
        return (token + 1) % vocab

    def every(n: int) -> list[int]:
        return [wrong(t) if i % n == n - 1 else t for i, t in enumerate(ids)]

    anchored = [x for t in ids for x in (t, *[wrong(t)] * k)]
    return {"right": list(ids), "one_in_8_wrong": every(8), "one_in_4_wrong": every(4), "all_wrong": anchored}


def engine_runs(llm, stop_ids, requests: list[GenerationRequest], ks: list[int], kinds: list[str], repeats: int,
                device: str) -> dict:
    """Plain and drafted decoding of the same prompts through fresh engines: seconds, ids, counters."""
    batch = len(requests)
    plain = GreedyEngine(llm, stop_ids, max_batch=batch)
    generate(plain, requests)  # warm-up: graphs and allocator
    seconds, ids = timed(lambda: generate(plain, requests), device, repeats)
    plain.release()
    tokens = sum(len(x) for x in ids)
    longest = max(len(x) for x in ids)
    out = {"plain": {**summary(seconds), "new_tokens": tokens,
                     "ms_per_step": round(summary(seconds)["median_s"] / longest * 1e3, 4)}}
    for k in ks:
        for kind in kinds:
            drafted = [GenerationRequest(r.embeddings, r.max_new_tokens,
                                         synthetic_drafts(x, k, llm.config.vocab_size)[kind])
                       for r, x in zip(requests, ids, strict=True)]
            engine = GreedyEngine(llm, stop_ids, max_batch=batch, draft_tokens=k)
            generate(engine, drafted)
            before = replace(engine.draft_stats)
            seconds, got = timed(lambda e=engine, d=drafted: generate(e, d), device, repeats)
            same = [agreement(a, b)["equal_fraction"] for a, b in zip(got, ids, strict=True)]
            median = summary(seconds)["median_s"]
            row = {**summary(seconds), "speedup_vs_plain": round(out["plain"]["median_s"] / median, 3),
                   "ids_equal_plain": sum(a == b for a, b in zip(got, ids, strict=True)), "rows": batch,
                   "mean_equal_fraction": round(statistics.mean(same), 4),
                   "drafts": stats_record(since(before, engine.draft_stats))}
            out[f"k{k}_{kind}"] = row
            print(json.dumps({f"k{k}_{kind}": row}), flush=True)
            engine.release()
    return out


@torch.inference_mode()
def synthetic(args: argparse.Namespace, segments: list, budget: int) -> dict:
    model = load_model(args.model, device=args.device, dtype=args.dtype, batch_size=max(32, len(segments)))
    backend = model.backend
    prompt = model.tokenizer.prompt_ids([], None, True)
    audio = []
    for start in range(0, len(segments), 32):
        audio += backend.model.encode_waveforms([torch.from_numpy(s) for s in segments[start : start + 32]])
    requests = [GenerationRequest(backend.model.prompt_embeddings(prompt, a), budget) for a in audio]
    backend.engine.release()
    return {"segments": len(segments), "new_tokens_each": budget, "prompt_tokens": int(requests[0].embeddings.shape[0]),
            **engine_runs(backend.engine.llm, sorted(backend.engine.stop_ids), requests, args.draft_tokens,
                          args.kinds, args.repeats, args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--backend", default="torch", choices=("torch", "mlx"), help="--real only")
    parser.add_argument("--draft-tokens", default="4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--testset", type=Path, default=Path("tests/data/demo"))
    parser.add_argument("--ctc-head", action="append", default=[])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--t1", action="store_true")
    parser.add_argument("--kinds", default=",".join(KINDS), type=lambda s: s.split(","),
                        help=f"synthetic draft qualities (default: all of {', '.join(KINDS)})")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    record: dict = {**provenance("ctc-drafts", args.device), "model": args.model, "dtype": args.dtype,
                    "threads": torch.get_num_threads()}
    if args.real:
        record["real_drafts"] = real(args)
    if args.synthetic:
        record["synthetic_l1"] = synthetic(args, [l1_audio()], L1_TOKENS)
    if args.t1:
        record["synthetic_t1"] = synthetic(args, t1_audio(), T1_TOKENS)
    text = json.dumps(record, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
