"""The generation engine on CPU: batched equals single (fp32, identical ids), continuous batching with slot
refills, stop tokens read late, the grow-only cache, buckets, chunked prefill, int8 weights; the Triton
decode step under the Triton interpreter where triton is installed."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch

from funasr_nano.backends import generate
from funasr_nano.backends.torch import engine as engine_module
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine, bucket_for
from funasr_nano.backends.torch.qwen3 import Qwen3ForCausalLM
from funasr_nano.config import POSITION_CAP, LLMConfig

CONFIG = LLMConfig(
    hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=640,
    max_position_embeddings=512,
)
# (prompt length, new tokens): different lengths so that prompts pad differently in a batch.
SHAPES = [(7, 12), (70, 9), (3, 15), (50, 6), (11, 10), (33, 1), (24, 14)]


def tiny_llm(dtype: torch.dtype = torch.float32) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    llm = Qwen3ForCausalLM(CONFIG)
    with torch.no_grad():
        # Large random weights: greedy ids then change from step to step and depend on the prompt.
        for parameter in llm.parameters():
            parameter.copy_(torch.randn_like(parameter) * (1.0 if parameter.ndim == 1 else 0.3))
    return llm.to(dtype).eval()


@pytest.fixture(scope="module")
def llm() -> Qwen3ForCausalLM:
    return tiny_llm()


def requests(dtype: torch.dtype = torch.float32) -> list[GenerationRequest]:
    generator = torch.Generator().manual_seed(1)
    return [GenerationRequest(torch.randn(n, CONFIG.hidden_size, generator=generator).to(dtype), k) for n, k in SHAPES]


@pytest.fixture(scope="module")
def singles(llm) -> list[list[int]]:
    """Each request decoded alone, in a fresh engine."""
    return [generate(GreedyEngine(llm, [], max_batch=1), [r])[0] for r in requests()]


def test_single_runs_are_diverse(singles):
    # Guards the other tests: a model that repeats one token would make them pass trivially.
    assert [len(s) for s in singles] == [k for _, k in SHAPES]
    assert len({t for s in singles for t in s}) > 20


@pytest.mark.parametrize("max_batch", [2, 3, 8])
def test_batched_equals_single_with_refills(llm, singles, max_batch):
    # max_batch < 7 requests: finished slots are refilled while others are mid-sequence.
    assert generate(GreedyEngine(llm, [], max_batch=max_batch), requests()) == singles


@pytest.mark.parametrize("lag", [0, 2])
def test_stop_token_ends_a_sequence_and_frees_its_slot(llm, singles, lag):
    stop = singles[0][4]
    expected = [s[: s.index(stop)] if stop in s else s for s in singles]
    assert expected[0] == singles[0][:4]
    # lag 2: the host learns of the stop two steps late; the tokens decoded meanwhile are dropped.
    assert generate(GreedyEngine(llm, [stop], max_batch=2, lag=lag), requests()) == expected


@pytest.mark.parametrize("lag", [0, 2])
def test_tokens_come_back_as_events_as_they_are_read(llm, singles, lag):
    stop = singles[0][4]
    engine = GreedyEngine(llm, [stop], max_batch=3, lag=lag)
    keys = [f"r{i}" for i in range(len(SHAPES))]
    for key, request in zip(keys, requests(), strict=True):
        engine.add(key, request)
    tokens: dict[str, list[int]] = {key: [] for key in keys}
    ends: dict[str, str] = {}
    events = 0
    while not engine.idle:
        for event in engine.step():
            assert event.key not in ends  # nothing after a request's last event
            tokens[event.key].extend(event.tokens)
            events += 1
            if event.done:
                ends[event.key] = event.reason
    expected = [s[: s.index(stop)] if stop in s else s for s in singles]
    assert [tokens[k] for k in keys] == expected  # nothing after a stop token, each in its own key
    assert ends["r0"] == "stop" and ends["r1"] == ("stop" if stop in singles[1] else "length")
    assert events >= sum(len(t) for t in expected) // 3  # step by step, not all at the end


def test_cancelled_requests_leave_no_tokens_behind(llm, singles):
    engine = GreedyEngine(llm, [], max_batch=3, lag=2)  # rows are still being read back when cancelled
    for index, request in enumerate(requests()):
        engine.add(("old", index), request)
    for _ in range(4):
        engine.step()
    engine.cancel([("old", index) for index in range(len(SHAPES))])
    assert generate(engine, requests()) == singles


def test_requests_that_join_a_running_engine_give_the_same_ids_and_finish_early(llm, singles):
    engine = GreedyEngine(llm, [], max_batch=3)
    joining = list(enumerate(requests()))
    for index, request in joining[:2]:
        engine.add(index, request)
    joining = joining[2:]
    tokens: dict[int, list[int]] = {i: [] for i in range(len(SHAPES))}
    finished: list[int] = []
    while not engine.idle or joining:
        if joining and engine.free_slots:
            engine.add(*joining.pop(0))  # one at a time, as requests arrive
        for event in engine.step():
            tokens[event.key].extend(event.tokens)
            if event.done:
                finished.append(event.key)
    assert [tokens[i] for i in range(len(SHAPES))] == singles
    assert sorted(finished) == list(range(len(SHAPES)))  # each reported once, when finished
    # requests that joined while 2 (15 new tokens) was decoding finished before it
    assert any(finished.index(k) < finished.index(2) for k in (3, 4, 5, 6))
    assert engine.cache is not None and engine.cache.slots == 3


def test_stop_token_first_ends_with_no_tokens(llm, singles):
    first = singles[1][0]
    result = generate(GreedyEngine(llm, [first], max_batch=3), requests())
    assert result[1] == []
    assert all(r == (s[: s.index(first)] if first in s else s) for r, s in zip(result, singles, strict=True))


def test_cache_grows_only_and_is_reused(llm, singles):
    engine = GreedyEngine(llm, [], max_batch=4)
    assert generate(engine, requests()[:1]) == singles[:1]
    small = engine.cache
    assert small is not None and small.slots == 1 and small.max_len >= 19
    assert generate(engine, requests()) == singles  # needs 4 slots and 79 positions
    grown = engine.cache
    assert grown is not small and grown.slots == 4 and grown.max_len >= 79
    assert generate(engine, requests()[:2]) == singles[:2]
    assert engine.cache is grown
    engine.release()
    assert engine.cache is None
    assert generate(engine, requests()[2:3]) == singles[2:3]


def test_too_long_request_is_refused(llm):
    engine = GreedyEngine(llm, [], max_batch=1)
    with pytest.raises(ValueError, match="positions"):
        generate(engine, [GenerationRequest(torch.randn(500, CONFIG.hidden_size), 20)])


def test_fused_projections_share_one_copy_and_keep_the_ids(singles):
    llm = tiny_llm()
    llm.fuse_projections()
    for layer in llm.model.layers:
        groups = [
            (layer.self_attn.qkv_weight, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
            (layer.mlp.gate_up_weight, [layer.mlp.gate_proj, layer.mlp.up_proj]),
        ]
        for fused, projections in groups:
            assert fused is not None and fused.shape[0] == sum(p.weight.shape[0] for p in projections)
            # Row slices of the fused tensor: no second copy of the weights.
            assert all(p.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr() for p in projections)
            assert torch.equal(torch.cat([p.weight for p in projections]), fused)
    assert generate(GreedyEngine(llm, [], max_batch=3), requests()) == singles


def test_the_fused_step_needs_projections_fused_at_load(llm):
    from funasr_nano.backends.torch.fused import TritonDecodeStep

    with pytest.raises(ValueError, match="fuse_projections"):
        TritonDecodeStep(llm)


def test_the_rotary_table_covers_the_one_position_limit(llm):
    assert llm.rotary.cos.shape[0] == CONFIG.max_positions == 512
    assert replace(CONFIG, max_position_embeddings=40960).max_positions == POSITION_CAP


def test_empty_request_list(llm):
    assert generate(GreedyEngine(llm, []), []) == []


def test_buckets():
    assert [bucket_for(n, 128) for n in (1, 2, 3, 5, 9, 33, 65, 128)] == [1, 2, 4, 8, 16, 64, 128, 128]
    # The slot count is the last bucket: no step is wider than the cache.
    assert [bucket_for(n, 120) for n in (64, 65, 120)] == [64, 120, 120]
    assert bucket_for(3, 3) == 3 and bucket_for(1, 1) == 1


def test_chunked_prefill_gives_the_same_ids(llm, singles, monkeypatch):
    monkeypatch.setattr(engine_module, "_PREFILL_TOKENS", 80)  # forces several prefill groups
    assert generate(GreedyEngine(llm, [], max_batch=8), requests()) == singles


def test_int8_linears_keep_the_model_close():
    from funasr_nano.backends.torch.quantize import Int8Linear, quantize_llm_int8

    reference, quantized = tiny_llm(), tiny_llm()
    quantize_llm_int8(quantized)
    assert isinstance(quantized.lm_head, Int8Linear)
    assert isinstance(quantized.model.layers[0].mlp.down_proj, Int8Linear)
    # weight-only: every weight is within half a quantisation step of the original
    down = quantized.model.layers[0].mlp.down_proj
    exact_down = reference.model.layers[0].mlp.down_proj.weight
    step = down.scale.float()[:, None]
    assert bool(((down.qweight.float() * step - exact_down).abs() <= step * 0.51).all())
    # the tied embedding keeps its float table for lookups
    assert torch.equal(quantized.model.embed_tokens.weight, reference.model.embed_tokens.weight)
    ids = generate(GreedyEngine(quantized, [], max_batch=4), requests())
    assert [len(i) for i in ids] == [k for _, k in SHAPES]
    hidden = torch.randn(1, 1, CONFIG.hidden_size)
    with torch.inference_mode():
        exact = reference.lm_head(hidden)
        approximate = quantized.lm_head(hidden)
    assert float((exact - approximate).abs().max() / exact.abs().max()) < 0.02


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
# Once a real kernel has been compiled in the process the interpreter switch has no effect any more;
# on a GPU the kernels run for real instead (tests/test_cuda.py).
@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton interpreter check is for CPU-only machines")
@pytest.mark.parametrize("small_batch_gemv", [True, False])
def test_triton_decode_step_matches_the_reference_step(monkeypatch, small_batch_gemv):
    # The Triton interpreter runs the kernels on CPU tensors (fp16: its bf16 emulation is unreliable).
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from funasr_nano.backends.torch.fused import TritonDecodeStep

    llm = tiny_llm(torch.float16)
    llm.fuse_projections()
    wanted = requests(torch.float16)[:3]
    step = TritonDecodeStep(llm, small_batch_gemv)
    for max_batch in (1, 2):  # batch 1 takes the GEMV path when it is on
        reference = generate(GreedyEngine(llm, [], max_batch=max_batch), wanted)
        fused = GreedyEngine(llm, [], max_batch=max_batch)
        fused.fused = step
        assert generate(fused, wanted) == reference


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton interpreter check is for CPU-only machines")
def test_verify_steps_through_the_fused_step_give_the_reference_ids(monkeypatch):
    """The drafts of a verify step run as rows of the fused step (each attending up to its own position):
    right and damaged drafts give the reference step's ids."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from test_drafts import damaged

    from funasr_nano.backends.torch.fused import TritonDecodeStep

    llm = tiny_llm(torch.float16)
    llm.fuse_projections()
    wanted = requests(torch.float16)[:3]
    reference = generate(GreedyEngine(llm, [], max_batch=2), wanted)
    drafted = [GenerationRequest(r.embeddings, r.max_new_tokens, ids if i % 2 == 0 else damaged(ids, i))
               for i, (r, ids) in enumerate(zip(wanted, reference, strict=True))]
    engine = GreedyEngine(llm, [], max_batch=2, draft_tokens=4)
    engine.fused = TritonDecodeStep(llm, small_batch_gemv=False)
    assert generate(engine, drafted) == reference
    assert engine.draft_stats.verify_steps > 0 and engine.draft_stats.accepted > 0
