"""Greedy decoding of one left-padded batch of prompt embeddings on the MLX Qwen3, a token per step."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from ...errors import UsageError
from .. import position_limit_message
from .qwen3 import KVCache, Qwen3ForCausalLM


def attention_mask(pads: Sequence[int], start: int, steps: int) -> mx.array | str | None:
    """Mask for queries at cache indices start..start+steps-1 over keys 0..start+steps-1.

    Without padding this is plain causal attention. With left padding a row's pad keys are hidden from
    its real queries; a pad query (which nobody reads) sees the pad keys before it, so that no row is
    fully masked: a NaN there would reach the real rows through 0 * NaN in the value product.
    """
    if not any(pads):
        return "causal" if steps > 1 else None
    keys = mx.arange(start + steps)[None, None, :]
    queries = mx.arange(start, start + steps)[None, :, None]
    pad = mx.array(pads)[:, None, None]
    allowed = (keys <= queries) & ((keys >= pad) | (queries < pad))
    return allowed[:, None]


class StaticBatch:
    """Greedy decoding of one left-padded batch of prompt embeddings [L_i, H], at most ``budgets[i]`` new
    tokens each, a token per :meth:`step`.

    Decoding is pipelined: step n+1 is queued before the ids of step n are read back, so the device never
    waits on Python between tokens.
    """

    def __init__(self, llm: Qwen3ForCausalLM, prompts: Sequence[mx.array], budgets: Sequence[int],
                 stop_ids: frozenset[int]):
        lengths = [p.shape[0] for p in prompts]
        longest = max(lengths)
        self.budgets = list(budgets)
        self.longest_budget = max(budgets)
        limit = llm.config.max_positions
        if longest + self.longest_budget > limit:
            raise UsageError(position_limit_message(longest + self.longest_budget, limit))
        self.llm = llm
        self.stop_ids = stop_ids
        self.pads = [longest - n for n in lengths]
        batch = mx.stack([mx.pad(p, [(pad, 0), (0, 0)]) for p, pad in zip(prompts, self.pads, strict=True)])
        # The last queued step writes index longest + longest_budget - 1.
        self.cache = KVCache(llm.config, len(prompts), longest + self.longest_budget, batch.dtype)
        self.pad_offsets = mx.array(self.pads)
        self.counts = [0] * len(prompts)
        self.done = [False] * len(prompts)
        self.produced = 0
        self.tokens: mx.array | None = self._forward(batch)
        mx.async_eval(self.tokens)

    @property
    def finished(self) -> bool:
        return self.tokens is None

    def cancel(self, row: int) -> None:
        self.done[row] = True
        if all(self.done):
            self.tokens = None

    def step(self) -> list[tuple[int, list[int], bool]]:
        """(row, [token], False) for each row that got one, (row, [], True) for a row that just stopped."""
        assert self.tokens is not None
        self.produced += 1
        upcoming = None
        if self.produced < self.longest_budget:
            upcoming = self._forward(self.llm.embed(self.tokens)[:, None, :])
            mx.async_eval(upcoming)
        out: list[tuple[int, list[int], bool]] = []
        for row, token in enumerate(self.tokens.tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                out.append((row, [], True))
            else:
                self.counts[row] += 1
                self.done[row] = self.counts[row] >= self.budgets[row]
                out.append((row, [token], False))
        self.tokens = None if all(self.done) or upcoming is None else upcoming
        return out

    def _forward(self, hidden: mx.array) -> mx.array:
        mask = attention_mask(self.pads, self.cache.offset, hidden.shape[1])
        out = self.llm(hidden, self.cache, self.cache.offset - self.pad_offsets, mask)
        return mx.argmax(self.llm.logits(out[:, -1]), axis=-1)
