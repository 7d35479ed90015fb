"""Greedy decoding of one left-padded batch with drafts on the MLX Qwen3 (see ``backends/drafts.py``): each
step feeds every row its newest token and up to k draft ids and keeps what greedy decoding agrees with.

The cache is written by all rows at one offset, as in :class:`~.generate.StaticBatch`, so a row that keeps
fewer ids than the step fed leaves holes: each row's cache indices carry a validity flag that the mask
honours, and RoPE positions count only a row's kept tokens. The steps are synchronous (the next draft
depends on what was kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from ...errors import UsageError
from .. import position_limit_message
from ..drafts import DraftStats, RowDraft, step_width
from .generate import attention_mask
from .qwen3 import KVCache, Qwen3ForCausalLM


class DraftedBatch:
    """:class:`~.generate.StaticBatch`'s work (the same ``step``, ``cancel``, ``finished``) with a
    draft per row (None: the row decodes a token per step) and up to ``draft_tokens`` of it per step."""

    def __init__(self, llm: Qwen3ForCausalLM, prompts: Sequence[mx.array], budgets: Sequence[int],
                 stop_ids: frozenset[int], drafts: Sequence[list[int] | None], draft_tokens: int,
                 stats: DraftStats):
        lengths = [p.shape[0] for p in prompts]
        longest = max(lengths)
        self.budgets = list(budgets)
        limit = llm.config.max_positions
        if longest + max(budgets) > limit:
            raise UsageError(position_limit_message(longest + max(budgets), limit))
        self.llm = llm
        self.stop_ids = stop_ids
        self.most = draft_tokens
        self.stats = stats
        rows = len(prompts)
        pads = [longest - n for n in lengths]
        batch = mx.stack([mx.pad(p, [(pad, 0), (0, 0)]) for p, pad in zip(prompts, pads, strict=True)])
        self.cache = KVCache(llm.config, rows, longest + max(budgets) + draft_tokens + 1, batch.dtype)
        self.valid = np.zeros((rows, self.cache.capacity), bool)  # which cache indices hold a row's keys
        for row, pad in enumerate(pads):
            self.valid[row, pad:longest] = True
        self.positions = np.array(lengths)  # RoPE position of each row's next input
        self.drafts = [RowDraft(list(d), draft_tokens) if d else None for d in drafts]
        self.tokens: list[list[int]] = [[] for _ in prompts]  # reported so far
        self.done = [False] * rows
        out = llm(batch, self.cache, mx.array([-pad for pad in pads]), attention_mask(pads, 0, longest))
        self.pending: list[list[int]] = [[t] for t in mx.argmax(llm.logits(out[:, -1]), axis=-1).tolist()]

    @property
    def finished(self) -> bool:
        return all(self.done)

    def cancel(self, row: int) -> None:
        self.done[row] = True

    def step(self) -> list[tuple[int, list[int], bool]]:
        """(row, its new tokens, whether it stopped) for each row still running; then the next verify step."""
        out = []
        for row, new in enumerate(self.pending):
            if self.done[row]:
                continue
            kept: list[int] = []
            stopped = False
            for token in new:
                stopped = token in self.stop_ids
                if stopped or len(self.tokens[row]) + len(kept) >= self.budgets[row]:
                    break
                kept.append(token)
            self.tokens[row] += kept
            self.done[row] = stopped or len(self.tokens[row]) >= self.budgets[row]
            out.append((row, kept, stopped))
        if not self.finished:
            self._verify()
        return out

    def _verify(self) -> None:
        rows = len(self.tokens)
        proposals: dict[int, list[int]] = {}
        for row, draft in enumerate(self.drafts):
            if draft is not None and not self.done[row]:
                ids = draft.propose(self.tokens[row], self.budgets[row] - len(self.tokens[row]) - 1)
                if ids:
                    proposals[row] = ids
        steps = step_width(proposals.values(), self.most) + 1
        inputs = np.zeros((rows, steps), np.int32)
        for row in range(rows):
            inputs[row, 0] = self.tokens[row][-1] if self.tokens[row] else 0
            ids = proposals.get(row, [])
            inputs[row, 1 : 1 + len(ids)] = ids
        offset = self.cache.offset
        if offset + steps > self.cache.capacity:
            grown = max(offset + steps, 2 * self.cache.capacity)
            self.cache.grow(grown)
            self.valid = np.pad(self.valid, ((0, 0), (0, grown - self.valid.shape[1])))
        mask = np.zeros((rows, 1, steps, offset + steps), bool)
        mask[:, 0, :, :offset] = self.valid[:, None, :offset]
        mask[:, 0, :, offset:] = np.tril(np.ones((steps, steps), bool))
        hidden = self.llm(self.llm.embed(mx.array(inputs)), self.cache, mx.array(self.positions), mx.array(mask))
        greedy = mx.argmax(self.llm.logits(hidden), axis=-1).tolist()
        if proposals:
            self.stats.verify_steps += 1
        else:
            self.stats.plain_steps += 1
        for row in range(rows):
            if self.done[row]:
                continue
            ids = proposals.get(row, [])
            kept = 0
            while kept < len(ids) and ids[kept] == greedy[row][kept]:
                kept += 1
            draft = self.drafts[row]
            if ids and draft is not None:
                draft.accepted(kept, self.stats)
            self.valid[row, offset : offset + kept + 1] = True
            self.positions[row] += kept + 1
            self.pending[row] = greedy[row][: kept + 1]
