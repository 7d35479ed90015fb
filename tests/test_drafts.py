"""Speculative decoding with drafts: where a draft resumes (``propose``), and that verifying drafts gives
exactly greedy decoding's ids, whatever the draft (right, wrong, shifted, none), batched and single, with
stop tokens and budgets; with the demo model's CTC head the transcripts are the plain ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_engine import requests, tiny_llm

from funasr_nano.backends import generate
from funasr_nano.backends.drafts import propose
from funasr_nano.backends.torch.engine import GenerationRequest, GreedyEngine
from funasr_nano.errors import UsageError

SUBSET = Path(__file__).parent / "data" / "demo"


def test_a_draft_that_is_followed_goes_on_where_it_was():
    assert propose([5, 6, 7, 8, 9], [1, 5, 6], 2, 2) == (2, [7, 8])
    assert propose([6, 7, 6, 8], [6], 3, 4) == (3, [8])


def test_after_a_departure_the_newest_tokens_find_their_place_again():
    draft = [10, 11, 12, 13, 14, 15]
    # "12 13" decoded where 11 was expected: the longest matching tail decides
    assert propose(draft, [10, 99, 12, 13], 2, 3) == (4, [14, 15])
    # a token in place of the draft's: the draft goes on after it
    assert propose(draft, [10, 99], 2, 3) == (2, [12, 13, 14])
    # with no place to go on from, nothing is proposed
    assert propose(draft, [10, 99], 6, 3) == (6, [])


def test_of_several_places_the_one_nearest_the_expected_wins():
    draft = [1, 2, 3, 1, 2, 4, 1, 2, 5]
    assert propose(draft, [7, 1, 2], 6, 1) == (5, [4])
    assert propose(draft, [7, 1, 2], 8, 1) == (8, [5])


def test_a_longer_match_wins_over_a_nearer_short_one():
    draft = [3, 9, 4, 5, 9, 6]
    assert propose(draft, [4, 5, 9], 0, 1) == (5, [6])


def test_no_room_or_no_tokens_proposes_nothing():
    assert propose([1, 2], [1], 1, 0)[1] == []
    assert propose([1, 2], [], 0, 4)[1] == []
    assert propose([1, 2], [2], 2, 4)[1] == []  # the draft is used up


@pytest.fixture(scope="module")
def llm():
    return tiny_llm()


@pytest.fixture(scope="module")
def singles(llm):
    return [generate(GreedyEngine(llm, [], max_batch=1), [r])[0] for r in requests()]


def with_drafts(drafts):
    return [GenerationRequest(r.embeddings, r.max_new_tokens, d) for r, d in zip(requests(), drafts, strict=True)]


def damaged(tokens: list[int], seed: int) -> list[int]:
    """A draft that is mostly right: a token changed, one dropped, a stray one added, a piece repeated."""
    out = list(tokens)
    if len(out) > 3:
        out[seed % len(out)] = 639 - out[seed % len(out)]
        del out[(seed * 7) % len(out)]
        out.insert((seed * 3) % len(out), 1)
        out[len(out) // 2 : len(out) // 2] = out[1:3]
    return out


@pytest.mark.parametrize("draft_tokens", [1, 3, 8])
@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_right_drafts_give_the_greedy_ids_in_fewer_steps(llm, singles, draft_tokens, max_batch):
    # the draft after the first token (which the prefill gives), as the CTC text would continue
    engine = GreedyEngine(llm, [], max_batch=max_batch, draft_tokens=draft_tokens)
    assert generate(engine, with_drafts(singles)) == singles
    assert engine.idle  # after the last event: its cache can go
    engine.release()
    stats = engine.draft_stats
    assert stats.accepted > 0 and stats.tokens_per_row > 1.0
    if max_batch == 1:
        # every row follows its draft from the start: draft_tokens + 1 tokens per step, the budget's rest aside
        expected = sum(-(-(len(s) - 1) // (draft_tokens + 1)) for s in singles)
        assert stats.verify_steps + stats.plain_steps == expected


@pytest.mark.parametrize("max_batch", [1, 3])
def test_wrong_and_shifted_drafts_change_no_id(llm, singles, max_batch):
    drafts = [damaged(s, i) for i, s in enumerate(singles)]
    drafts[2] = None  # a request without a draft decodes plainly beside the others
    drafts[4] = list(reversed(singles[4]))
    engine = GreedyEngine(llm, [], max_batch=max_batch, draft_tokens=4)
    assert generate(engine, with_drafts(drafts)) == singles
    assert 0 < engine.draft_stats.accepted < engine.draft_stats.drafted


def test_a_stop_token_in_the_accepted_run_ends_the_sequence_there(llm, singles):
    stop = singles[1][3]
    expected = [s[: s.index(stop)] if stop in s else s for s in singles]
    drafts = [s + [stop] for s in singles]
    assert generate(GreedyEngine(llm, [stop], max_batch=3, draft_tokens=6), with_drafts(drafts)) == expected


def test_a_draft_longer_than_the_budget_stops_at_the_budget(llm, singles):
    drafts = [s + s for s in singles]
    assert generate(GreedyEngine(llm, [], max_batch=2, draft_tokens=16), with_drafts(drafts)) == singles


def test_an_engine_without_draft_tokens_ignores_drafts(llm, singles):
    engine = GreedyEngine(llm, [], max_batch=3)
    assert generate(engine, with_drafts(singles)) == singles
    assert engine.draft_stats.verify_steps == 0


@pytest.fixture(scope="module")
def demo_pair():
    from funasr_nano import load_model

    return load_model("demo"), load_model("demo", ctc_drafts=8)


def test_the_demo_model_transcribes_the_same_with_ctc_drafts(demo_pair):
    plain, drafted = demo_pair
    rows = [json.loads(line) for line in (SUBSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    files = [str(SUBSET / row["path"]) for row in rows]
    assert [t.text for t in drafted.transcribe_many(files)] == [t.text for t in plain.transcribe_many(files)]
    # one at a time too (batch 1: every step can verify)
    for path in files[::6]:
        assert drafted.transcribe(path).text == plain.transcribe(path).text
    stats = drafted.backend.engine.draft_stats
    assert stats.verify_steps > 0 and stats.accepted > 0


@pytest.mark.parametrize("value", [-1, 65, 2.5, True])
def test_a_bad_draft_count_is_one_usage_line(value):
    from funasr_nano import load_model

    with pytest.raises(UsageError, match="ctc_drafts"):
        load_model("demo", ctc_drafts=value)
