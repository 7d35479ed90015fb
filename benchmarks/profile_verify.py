"""Where a CUDA verify step's time goes: L1's prompt decoded plain and with k = 8 drafts (right, and all
wrong after each anchor), verify steps replayed from CUDA graphs and eager, with a torch.profiler table of
the graphed runs' kernels.

    python -m benchmarks.profile_verify --model DIR [--draft-tokens 8] > profile.txt

Needs a CUDA GPU. On random weights bf16 ids part from the plain ones after a few tokens (the verify rows
go through cuBLAS, the plain batch-1 step through the Triton GEMVs), so "right" drafts are right only
until then: the figures say what a verify step costs, not what right drafts gain.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import L1_TOKENS, l1_audio, timed
from benchmarks.drafts import synthetic_drafts
from funasr_nano import load_model
from funasr_nano.backends import generate
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--draft-tokens", type=int, default=8)
    args = parser.parse_args()
    model = load_model(args.model, device="cuda", dtype="auto")
    backend = model.backend
    audio = backend.model.encode_waveforms([torch.from_numpy(l1_audio())])
    request = GenerationRequest(backend.model.prompt_embeddings(model.tokenizer.prompt_ids([], None, True), audio[0]),
                                L1_TOKENS)
    llm, stops = backend.engine.llm, sorted(backend.engine.stop_ids)
    backend.engine.release()
    plain = GreedyEngine(llm, stops, max_batch=1)
    ids = generate(plain, [request])[0]
    k = args.draft_tokens
    for kind in ("right", "all_wrong"):
        draft = synthetic_drafts(ids, k, llm.config.vocab_size)[kind]
        drafted = [GenerationRequest(request.embeddings, L1_TOKENS, draft)]
        for graphs in (True, False):
            engine = GreedyEngine(llm, stops, max_batch=1, draft_tokens=k, cuda_graphs=graphs)
            generate(engine, drafted)  # warm-up: graphs, kernels
            before = engine.draft_stats.verify_steps
            seconds, got = timed(lambda e=engine, d=drafted: generate(e, d), "cuda", 1)
            ms = seconds[0] * 1e3
            steps = engine.draft_stats.verify_steps - before
            prefix = next((i for i, (a, b) in enumerate(zip(got[0], ids, strict=False)) if a != b), len(ids))
            print(f"{kind} drafts, verify graphs {graphs}: {ms:.1f} ms (prefill included), {steps} verify steps, "
                  f"{ms / max(steps, 1):.3f} ms a step; ids equal to plain for the first {prefix} of {len(ids)}",
                  flush=True)
            if graphs:
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
                    generate(engine, drafted)
                    torch.cuda.synchronize()
                print(trace.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)
            engine.release()
    seconds, _ = timed(lambda: generate(plain, [request]), "cuda", 1)
    print(f"plain: {seconds[0] * 1e3:.1f} ms for {len(ids)} tokens (prefill included)", flush=True)


if __name__ == "__main__":
    main()
