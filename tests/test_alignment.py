"""Forced alignment: the same frames as torchaudio's kernel (a transcription of it, and stored
outputs of torchaudio itself where available), ties included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from funasr_nano.backends.alignment import alignable, forced_align, token_labels
from oracle.forced_align_reference import torchaudio_forced_align


def _case(rng: np.random.Generator, frames: int, length: int, vocab: int, quantum: float | None):
    """Random log-probs [T, V] (blank = V-1) and targets; ``quantum`` rounds the log-probs so that ties
    between paths are common."""
    logits = rng.normal(size=(frames, vocab)).astype(np.float32) * 3
    log_probs = torch.log_softmax(torch.from_numpy(logits), -1).numpy()
    if quantum is not None:
        log_probs = (np.round(log_probs / quantum) * quantum).astype(np.float32)
    targets = [int(x) for x in rng.integers(0, min(vocab - 1, 4), size=length)]  # few ids: many repeats
    return log_probs, targets


def _ours(log_probs: np.ndarray, targets: list[int], blank: int):
    columns = [blank, *targets]
    return torch.from_numpy(log_probs[:, columns])


CASES = [
    (frames, length, quantum)
    for frames in (1, 2, 3, 5, 8, 17, 40)
    for length in (1, 2, 3, 5, 9, 16)
    for quantum in (None, 0.5, 2.0)
]


def test_frames_equal_torchaudio_kernel_random_batched() -> None:
    rng = np.random.default_rng(0)
    vocab = 7
    blank = vocab - 1
    inputs = [_case(rng, f, n, vocab, q) for f, n, q in CASES]
    emissions = [_ours(lp, t, blank) for lp, t in inputs]
    results = forced_align(emissions, [t for _, t in inputs])  # one batch: all lengths mixed
    compared = 0
    for (log_probs, targets), result in zip(inputs, results, strict=True):
        if not alignable(log_probs.shape[0], targets):
            assert result is None
            with pytest.raises(ValueError):
                torchaudio_forced_align(log_probs, targets, blank)
            continue
        expected = torchaudio_forced_align(log_probs, targets, blank)
        assert result is not None
        assert token_labels(result, targets, blank) == expected, (log_probs.shape, targets)
        compared += 1
    assert compared > 60


def test_single_equals_batched() -> None:
    rng = np.random.default_rng(1)
    inputs = [_case(rng, 30, n, 6, 1.0) for n in (3, 7, 12)]
    emissions = [_ours(lp, t, 5) for lp, t in inputs]
    batched = forced_align(emissions, [t for _, t in inputs])
    for emission, (_, targets), together in zip(emissions, inputs, batched, strict=True):
        assert forced_align([emission], [targets])[0] == together


def test_ties_prefer_staying_then_advancing() -> None:
    # All-equal log-probs: every path ties. torchaudio's back-pointers prefer staying, then advancing, and
    # the end prefers the last token over the final blank: each token is entered as early as possible.
    log_probs = np.full((6, 3), np.log(1 / 3), dtype=np.float32)
    targets = [0, 1]
    expected = torchaudio_forced_align(log_probs, targets, 2)
    (ours,) = forced_align([_ours(log_probs, targets, 2)], [targets])
    assert ours is not None
    assert token_labels(ours, targets, 2) == expected
    assert expected == [0, 1, 1, 1, 1, 1]


def test_spans_and_scores() -> None:
    log_probs = np.log(
        np.array(
            [
                [0.1, 0.1, 0.8],
                [0.7, 0.2, 0.1],
                [0.6, 0.3, 0.1],
                [0.1, 0.1, 0.8],
                [0.1, 0.8, 0.1],
            ],
            dtype=np.float32,
        )
    )
    (result,) = forced_align([_ours(log_probs, [0, 1], 2)], [[0, 1]])
    assert result is not None
    assert [(s.start, s.end) for s in result.spans] == [(1, 3), (4, 5)]
    assert result.spans[0].score == pytest.approx(0.7, abs=1e-6)
    assert result.spans[1].score == pytest.approx(0.8, abs=1e-6)


STORED = Path(__file__).parent / "data" / "torchaudio_forced_align.json"


@pytest.mark.skipif(not STORED.is_file(), reason="no stored torchaudio outputs")
def test_frames_equal_stored_torchaudio_outputs() -> None:
    """torchaudio's own labels (benchmarks/compare_torchaudio.py --store, on the GPU machine), ties
    included: one batch, every case."""
    stored = json.loads(STORED.read_text())
    cases = stored["cases"]
    emissions = [_ours(np.asarray(c["log_probs"], dtype=np.float32), c["targets"], c["blank"]) for c in cases]
    results = forced_align(emissions, [c["targets"] for c in cases])
    assert len(cases) > 100
    for case, result in zip(cases, results, strict=True):
        assert result is not None
        assert token_labels(result, case["targets"], case["blank"]) == case["labels"]
