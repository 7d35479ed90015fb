"""The CUDA paths CI cannot run (skipped without a GPU; run on the GPU machine): requests joining a running
engine through the prefill CUDA graphs give the same ids as single runs (fp32), and the fused bf16 step
with decode CUDA graphs returns every token as events and honours budgets while requests join; a live
stream of demo clips gives the offline segments on CUDA too; verify steps with drafts (CUDA graphs, fp32 and
bf16, the demo model's CTC drafts) give the plain ids and texts."""

from __future__ import annotations

import pytest
import torch
from test_engine import SHAPES, requests, tiny_llm

from funasr_nano.backends import generate
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def on_cuda(dtype: torch.dtype) -> list[GenerationRequest]:
    return [GenerationRequest(r.embeddings.cuda(), r.max_new_tokens) for r in requests(dtype)]


def run_with_joiners(engine: GreedyEngine, wanted: list[GenerationRequest]) -> tuple[list[list[int]], int]:
    """Two requests first; the rest join as slots free up (several at once: they prefill together).
    Returns each request's tokens and how many events carried them."""
    for index in range(2):
        engine.add(index, wanted[index])
    joining = list(range(2, len(wanted)))
    tokens: dict[int, list[int]] = {i: [] for i in range(len(wanted))}
    events = 0
    while not engine.idle or joining:
        while joining and engine.free_slots > engine.waiting:
            index = joining.pop(0)
            engine.add(index, wanted[index])
        for event in engine.step():
            tokens[event.key].extend(event.tokens)
            events += 1
    return [tokens[i] for i in range(len(wanted))], events


def test_joining_requests_through_prefill_graphs_give_single_run_ids_in_fp32():
    llm = tiny_llm().cuda()
    wanted = on_cuda(torch.float32)
    singles = [generate(GreedyEngine(llm, [], max_batch=1), [r])[0] for r in wanted]
    engine = GreedyEngine(llm, [], max_batch=4)
    assert engine.prefill_graphs
    result, _ = run_with_joiners(engine, wanted)
    assert result == singles


def test_fused_bf16_step_with_joiners_returns_every_token():
    llm = tiny_llm(torch.bfloat16).cuda()
    llm.fuse_projections()  # as FunASRNanoTorch.from_state_dict does for this device and dtype
    engine = GreedyEngine(llm, [], max_batch=4)
    if engine.fused is None:
        pytest.skip("no triton")
    assert engine.cuda_graphs
    result, events = run_with_joiners(engine, on_cuda(torch.bfloat16))
    assert [len(r) for r in result] == [k for _, k in SHAPES]
    assert events >= sum(k for _, k in SHAPES) // 4  # step by step



def test_a_live_stream_on_cuda_gives_the_cuda_offline_segments():
    from test_live import demo_talk, feed

    import funasr_nano
    from funasr_nano import Final, Partial

    audio = demo_talk()
    model = funasr_nano.load_model("demo", device="cuda", dtype="float32")
    events = feed(model.stream(), audio)
    offline = model.transcribe(audio).segments
    assert [e.text for e in events if isinstance(e, Final)] == [s.text.strip() for s in offline]
    assert any(isinstance(e, Partial) for e in events)


def test_encoder_graphs_replay_the_eager_encoder_in_fp32():
    """The server's encoder CUDA graphs: captured on a shape's first call, replayed after; each row equal
    to the eager batch's, also for a batch of other lengths in the same bucket."""
    import numpy as np

    from funasr_nano import load_model

    model = load_model("demo", device="cuda", dtype="float32").backend.model
    rng = np.random.default_rng(0)
    eager = model.encode  # before the graphs are switched on
    batches = [[torch.from_numpy(rng.normal(size=(n, 560)).astype(np.float32)).cuda() for n in sizes]
               for sizes in ((50, 17, 33), (60, 40, 12), (5,))]
    expected = [eager(batch) for batch in batches]
    model.use_encoder_graphs()
    try:
        for _ in range(2):  # first: run and capture; then: replay
            for batch, wanted in zip(batches, expected, strict=True):
                for got, want in zip(model.encode(batch), wanted, strict=True):
                    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert len(model.encoder_graphs._graphs) == 2  # (4 rows, 64 frames) and (1 row, 32 frames)
    finally:
        model.encoder_graphs = None


def test_half_precision_encodes_through_the_graphs_with_the_eager_texts_and_fp32_stays_eager():
    from funasr_nano import load_model
    from funasr_nano.demo import sample

    assert load_model("demo", device="cuda", dtype="float32").backend.model.encoder_graphs is None
    half = load_model("demo", device="cuda", dtype="bfloat16")
    model = half.backend.model
    assert model.encoder_graphs is not None
    clips = [str(sample(language)) for language in ("en", "zh", "ja")]
    graphed = [half.transcribe(clip).text for clip in clips]
    assert model.encoder_graphs._graphs  # the clips went through captured graphs
    model.encoder_graphs = None
    assert graphed == [half.transcribe(clip).text for clip in clips]


def test_drafts_through_verify_graphs_give_single_run_ids_in_fp32():
    """Verify steps replayed from CUDA graphs (one per batch bucket, captured on first use), with right,
    damaged and missing drafts and requests joining: greedy's ids."""
    from test_drafts import damaged

    llm = tiny_llm().cuda()
    plain = on_cuda(torch.float32)
    singles = [generate(GreedyEngine(llm, [], max_batch=1), [r])[0] for r in plain]
    drafts = [s if i % 3 == 0 else damaged(s, i) if i % 3 == 1 else None for i, s in enumerate(singles)]
    wanted = [GenerationRequest(r.embeddings, r.max_new_tokens, d) for r, d in zip(plain, drafts, strict=True)]
    engine = GreedyEngine(llm, [], max_batch=4, draft_tokens=4)
    result, _ = run_with_joiners(engine, wanted)
    assert result == singles
    assert engine._verify_graphs is not None and engine._verify_graphs._graphs
    assert engine.draft_stats.accepted > 0


def test_fused_bf16_with_right_drafts_returns_every_token_in_fewer_steps():
    llm = tiny_llm(torch.bfloat16).cuda()
    llm.fuse_projections()
    plain = on_cuda(torch.bfloat16)
    engine = GreedyEngine(llm, [], max_batch=4)
    if engine.fused is None:
        pytest.skip("no triton")
    reference = generate(engine, plain)
    wanted = [GenerationRequest(r.embeddings, r.max_new_tokens, d) for r, d in zip(plain, reference, strict=True)]
    drafted = GreedyEngine(llm, [], max_batch=4, draft_tokens=4)
    result = generate(drafted, wanted)
    # bf16: the verify pass (cuBLAS) and the fused step (Triton GEMVs) round differently, so on random
    # weights with near-flat logits a row may part from the fused step's; budgets and counts hold.
    assert [len(r) for r in result] == [k for _, k in SHAPES]
    assert drafted.draft_stats.tokens_per_row > 1.5


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_demo_model_with_ctc_drafts_on_cuda_gives_the_plain_texts(dtype):
    import json
    from pathlib import Path

    from funasr_nano import load_model

    subset = Path(__file__).parent / "data" / "demo"
    rows = [json.loads(line) for line in (subset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    files = [str(subset / row["path"]) for row in rows]
    plain = load_model("demo", device="cuda", dtype=dtype)
    drafted = load_model("demo", device="cuda", dtype=dtype, ctc_drafts=8)
    assert [t.text for t in drafted.transcribe_many(files)] == [t.text for t in plain.transcribe_many(files)]
    for path in files[::4]:
        assert drafted.transcribe(path).text == plain.transcribe(path).text
    assert drafted.backend.engine.draft_stats.accepted > 0
