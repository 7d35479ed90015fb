"""BatchingBackend: concurrent callers share batched calls on one worker thread, get their own results,
and one caller's failure does not fail the others. A fake backend makes every case deterministic."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from funasr_nano.serve.batching import BatcherClosedError, BatchingBackend
from funasr_nano.text.prompt import PromptIds


class FakeBackend:
    """Returns [segment id, budget] per segment; a segment whose first sample is -1 breaks the batch."""

    name = "fake"
    device = "cpu"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()

    def generate(self, waveforms, prompts, max_new_tokens, on_tokens=None):  # type: ignore[no-untyped-def]
        self.threads.add(threading.current_thread().name)
        ids = [int(w[0]) for w in waveforms]
        self.calls.append(ids)
        time.sleep(self.delay)
        if -1 in ids:
            raise ValueError("bad segment")
        results = [[i, n] for i, n in zip(ids, max_new_tokens, strict=True)]
        if on_tokens is not None:
            for step in range(2):  # one token at a time, interleaved across segments, as an engine does
                for index, tokens in enumerate(results):
                    on_tokens(index, [tokens[step]])
        return results


PROMPT = PromptIds([1], [2])


def segments(*ids: int) -> list[np.ndarray]:
    return [np.full(4, i, np.float32) for i in ids]


def call(batcher: BatchingBackend, *ids: int) -> list[list[int]]:
    return batcher.generate(segments(*ids), [PROMPT] * len(ids), [10 + i for i in ids])


def test_concurrent_calls_share_one_batch_and_get_their_own_results():
    fake = FakeBackend()
    batcher = BatchingBackend(fake, window_s=0.5, max_segments=32)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(call, batcher, 10 * k, 10 * k + 1) for k in range(4)]
            results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert results == [[[10 * k, 10 + 10 * k], [10 * k + 1, 11 + 10 * k]] for k in range(4)]
    assert len(fake.calls) == 1 and sorted(fake.calls[0]) == sorted([*range(0, 40, 10), *range(1, 41, 10)])
    assert fake.threads == {"funasr-nano-batcher"}  # the model is only ever touched by the worker
    assert batcher.stats.as_dict()["calls"] == 4 and batcher.stats.largest_batch == 8


def test_batches_respect_max_segments_but_never_split_a_call():
    fake = FakeBackend(delay=0.05)
    batcher = BatchingBackend(fake, window_s=0.3, max_segments=3)
    try:
        with ThreadPoolExecutor(3) as pool:
            big = pool.submit(call, batcher, 1, 2, 3, 4, 5)
            time.sleep(0.05)
            small = [pool.submit(call, batcher, 6), pool.submit(call, batcher, 7)]
            assert big.result(timeout=10) == [[i, 10 + i] for i in range(1, 6)]
            assert [f.result(timeout=10) for f in small] == [[[6, 16]], [[7, 17]]]
    finally:
        batcher.close()
    assert fake.calls[0] == [1, 2, 3, 4, 5]
    assert all(len(c) <= 3 for c in fake.calls[1:])


def test_a_failing_caller_does_not_fail_the_others():
    fake = FakeBackend()
    batcher = BatchingBackend(fake, window_s=0.5)
    try:
        with ThreadPoolExecutor(3) as pool:
            good = [pool.submit(call, batcher, 1), pool.submit(call, batcher, 2)]
            bad = pool.submit(call, batcher, -1)
            assert [f.result(timeout=10) for f in good] == [[[1, 11]], [[2, 12]]]
            with pytest.raises(ValueError, match="bad segment"):
                bad.result(timeout=10)
    finally:
        batcher.close()
    assert len(fake.calls[0]) == 3  # tried together first, then each caller alone


def test_each_caller_gets_its_own_tokens_and_a_failing_sink_fails_only_its_caller():
    fake = FakeBackend()
    batcher = BatchingBackend(fake, window_s=0.5)
    handed: dict[str, list[tuple[int, list[int]]]] = {"a": [], "b": []}

    def streaming_call(name: str, *ids: int) -> list[list[int]]:
        def sink(index: int, tokens: list[int]) -> None:
            handed[name].append((index, tokens))

        return batcher.generate(segments(*ids), [PROMPT] * len(ids), [10 + i for i in ids], sink)

    def broken_sink(index: int, tokens: list[int]) -> None:
        raise RuntimeError("client went away")

    try:
        with ThreadPoolExecutor(4) as pool:
            a = pool.submit(streaming_call, "a", 3, 4)
            b = pool.submit(streaming_call, "b", 5)
            plain = pool.submit(call, batcher, 6)
            broken = pool.submit(lambda: batcher.generate(segments(7), [PROMPT], [17], broken_sink))
            assert a.result(timeout=10) == [[3, 13], [4, 14]] and b.result(timeout=10) == [[5, 15]]
            assert plain.result(timeout=10) == [[6, 16]]
            with pytest.raises(RuntimeError, match="client went away"):
                broken.result(timeout=10)
    finally:
        batcher.close()
    assert len(fake.calls) == 1  # all four decoded together
    assert sorted(handed["a"]) == [(0, [3]), (0, [13]), (1, [4]), (1, [14])]
    assert handed["b"] == [(0, [5]), (0, [15])]


def test_close_finishes_queued_work_then_refuses_new_calls():
    fake = FakeBackend(delay=0.1)
    batcher = BatchingBackend(fake, window_s=0.0, max_segments=1)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call, batcher, i) for i in range(3)]
        deadline = time.monotonic() + 10
        while batcher.stats.calls < 3:  # all three queued (the first one is decoding)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        batcher.close()
        assert [f.result(timeout=10) for f in futures] == [[[i, 10 + i]] for i in range(3)]
    with pytest.raises(BatcherClosedError):
        call(batcher, 9)
    assert batcher.generate([], [], []) == []


def test_callers_run_their_own_device_work_on_the_cpu_when_the_model_is_on_cuda():
    fake = FakeBackend()
    fake.device = "cuda:0"
    batcher = BatchingBackend(fake)
    try:
        assert batcher.model_device == "cuda:0" and batcher.device == "cpu"
    finally:
        batcher.close()
    cpu_batcher = BatchingBackend(FakeBackend())
    assert cpu_batcher.device == "cpu"
    cpu_batcher.close()


class RefillingFake:
    """Decodes like an engine with ``slots`` slots: one token per step per segment (its id, ``budget``
    times), takes more segments into free slots while it runs, and reports each one when it ends."""

    name = "refilling"
    device = "cpu"
    accepts_refill = True

    def __init__(self, slots: int = 4, step_s: float = 0.005, max_budget: int = 1000):
        self.slots, self.step_s, self.max_budget = slots, step_s, max_budget
        self.calls = 0

    def generate(self, waveforms, prompts, max_new_tokens, on_tokens=None, refill=None, on_done=None):
        self.calls += 1
        work = [(int(w[0]), n) for w, n in zip(waveforms, max_new_tokens, strict=True)]
        produced = [0] * len(work)
        running: list[int] = []
        queue = list(range(len(work)))
        while True:
            running = [i for i in running if produced[i] < work[i][1]]
            if refill is not None and not queue and len(running) < self.slots:
                fits = lambda w, p, n: n <= self.max_budget  # noqa: E731
                for w, _, n in refill(self.slots - len(running), fits):
                    queue.append(len(work))
                    work.append((int(w[0]), n))
                    produced.append(0)
            while queue and len(running) < self.slots:
                running.append(queue.pop(0))
            if not running:
                break
            time.sleep(self.step_s)
            for i in running:
                produced[i] += 1
                if on_tokens is not None:
                    on_tokens(i, [work[i][0]])
                if produced[i] == work[i][1] and on_done is not None:
                    on_done(i, [work[i][0]] * work[i][1])
        return [[ident] * budget for ident, budget in work]


def test_a_call_joins_the_running_decode_and_is_answered_when_its_own_segments_end():
    fake = RefillingFake()
    batcher = BatchingBackend(fake, window_s=0.0)
    try:
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(batcher.generate, segments(1), [PROMPT], [60])  # 60 steps: ~0.3 s
            time.sleep(0.05)
            short = pool.submit(batcher.generate, segments(2, 3), [PROMPT] * 2, [3, 4])
            assert short.result(timeout=10) == [[2] * 3, [3] * 4]
            assert not long.done()  # answered while the long one still decodes
            assert long.result(timeout=10) == [[1] * 60]
    finally:
        batcher.close()
    assert fake.calls == 1 and batcher.stats.batches == 1 and batcher.stats.segments == 3


def test_a_call_that_does_not_fit_waits_for_the_next_batch_and_nothing_overtakes_it():
    fake = RefillingFake(slots=2, max_budget=50)
    batcher = BatchingBackend(fake, window_s=0.0)
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(batcher.generate, segments(1), [PROMPT], [40])
            time.sleep(0.03)
            too_long = pool.submit(batcher.generate, segments(2), [PROMPT], [80])  # more than the cache holds
            time.sleep(0.03)
            small = pool.submit(batcher.generate, segments(3), [PROMPT], [2])
            assert first.result(timeout=10) == [[1] * 40]
            assert too_long.result(timeout=10) == [[2] * 80] and small.result(timeout=10) == [[3] * 2]
    finally:
        batcher.close()
    assert fake.calls == 2  # the first batch drained; the long call and the small one behind it went next


def test_the_torch_backend_knows_whether_a_segment_fits_without_encoding_it(official_tiny):
    from funasr_nano import load_model

    model = load_model(official_tiny.model_dir, device="cpu")
    prompt = model.tokenizer.prompt_ids(["Fun-ASR"], "英文", True)
    backend = model.backend
    for seconds in (0.05, 0.4, 1.0, 3.3, 7.91, 29.99):
        waveform = np.zeros(int(seconds * 16000), np.float32)
        (embeddings,), _ = backend._prompt_embeddings([waveform], [prompt])
        length = embeddings.shape[0]
        assert backend.fits(length + 10)(waveform, prompt, 10)
        assert not backend.fits(length + 9)(waveform, prompt, 10)
