"""Drafts on MLX: a drafted batch (holes in the shared cache, masked; RoPE over the kept tokens) gives the
official greedy ids whatever its drafts say, alone and batched with uneven budgets and stop tokens; the
demo model's texts with its CTC drafts are the plain ones."""

from __future__ import annotations

import pytest

mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

from mlx_helpers import prompt_ids  # noqa: E402
from test_drafts import damaged  # noqa: E402

from funasr_nano.backends.drafts import DraftStats  # noqa: E402
from funasr_nano.backends.mlx.drafted import DraftedBatch  # noqa: E402


def embeddings(model, clips, prompts):
    backend = model.backend
    audio = backend.encode_waveforms([clips[p["clip"]]["wav"].numpy() for p in prompts])
    return [backend.model.prompt_embeddings(prompt_ids(model, p), a) for p, a in zip(prompts, audio, strict=True)]


def run(batch: DraftedBatch) -> list[list[int]]:
    tokens: list[list[int]] = [[] for _ in batch.budgets]
    while not batch.finished:
        for row, new, _ in batch.step():
            tokens[row] += new
    return tokens


@pytest.mark.parametrize("draft_tokens", [1, 4])
def test_drafted_batches_give_the_official_ids(mlx_model, clips, prompts, draft_tokens):
    expected = [p["gen_ids"].tolist() for p in prompts]
    llm = mlx_model.backend.model.llm
    prompts_in = embeddings(mlx_model, clips, prompts)
    budgets = [len(e) for e in expected]
    drafts = [e if i % 3 == 0 else damaged(e, i) if i % 3 == 1 else None for i, e in enumerate(expected)]
    stats = DraftStats()
    batch = DraftedBatch(llm, prompts_in, budgets, frozenset(), drafts, draft_tokens, stats)
    assert run(batch) == expected
    assert stats.accepted > 0 and stats.verify_steps > 0
    for index in (0, 1):  # alone, with its draft
        alone = DraftedBatch(llm, prompts_in[index : index + 1], budgets[index : index + 1], frozenset(),
                             drafts[index : index + 1], draft_tokens, DraftStats())
        assert run(alone) == expected[index : index + 1]


def test_budgets_and_stop_tokens_hold_with_drafts(mlx_model, clips, prompts):
    expected = [p["gen_ids"].tolist() for p in prompts]
    llm = mlx_model.backend.model.llm
    stop = expected[0][3]
    budgets = [max(1, len(e) - i) for i, e in enumerate(expected)]
    wanted = [e[:n] for e, n in zip(expected, budgets, strict=True)]
    wanted = [w[: w.index(stop)] if stop in w else w for w in wanted]
    batch = DraftedBatch(llm, embeddings(mlx_model, clips, prompts), budgets, frozenset({stop}),
                         [e + e for e in expected], 4, DraftStats())
    assert run(batch) == wanted


def test_the_demo_model_on_mlx_gives_the_plain_texts_with_ctc_drafts():
    import json
    from pathlib import Path

    from funasr_nano import load_model

    subset = Path(__file__).parents[1] / "data" / "demo"
    rows = [json.loads(line) for line in (subset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    files = [str(subset / row["path"]) for row in rows[::3]]
    plain = load_model("demo", backend="mlx")
    drafted = load_model("demo", backend="mlx", ctc_drafts=8)
    assert [t.text for t in drafted.transcribe_many(files)] == [t.text for t in plain.transcribe_many(files)]
    assert drafted.backend.draft_stats.accepted > 0
