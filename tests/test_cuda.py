"""The CUDA paths CI cannot run (skipped without a GPU; run on the GPU machine): requests joining a running
decode through the prefill CUDA graphs give the same ids as single runs (fp32), and the fused bf16 step
with decode CUDA graphs hands every token to the sink and honours budgets and refills."""

from __future__ import annotations

import pytest
import torch
from test_engine import SHAPES, Collected, requests, tiny_llm

from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def on_cuda(dtype: torch.dtype) -> list[GenerationRequest]:
    return [GenerationRequest(r.embeddings.cuda(), r.max_new_tokens) for r in requests(dtype)]


def run_with_refills(engine: GreedyEngine, wanted: list[GenerationRequest]) -> tuple[list[list[int]], Collected]:
    waiting = wanted[2:]

    def refill(free: int, max_positions: int) -> list[GenerationRequest]:
        taken = waiting[:free]  # as many as fit: several prompts prefill together
        del waiting[:free]
        return taken

    sink = Collected(len(wanted))
    return engine.generate(wanted[:2], sink, refill), sink


def test_joining_requests_through_prefill_graphs_give_single_run_ids_in_fp32():
    llm = tiny_llm().cuda()
    wanted = on_cuda(torch.float32)
    singles = [GreedyEngine(llm, [], max_batch=1).generate([r])[0] for r in wanted]
    engine = GreedyEngine(llm, [], max_batch=4)
    assert engine.prefill_graphs
    result, sink = run_with_refills(engine, wanted)
    assert result == singles == sink.tokens


def test_fused_bf16_step_with_refills_hands_over_every_token():
    llm = tiny_llm(torch.bfloat16).cuda()
    llm.fuse_projections()  # as FunASRNanoTorch.from_state_dict does for this device and dtype
    engine = GreedyEngine(llm, [], max_batch=4)
    if engine.fused is None:
        pytest.skip("no triton")
    assert engine.cuda_graphs
    result, sink = run_with_refills(engine, on_cuda(torch.bfloat16))
    assert sink.tokens == result
    assert [len(r) for r in result] == [k for _, k in SHAPES]
