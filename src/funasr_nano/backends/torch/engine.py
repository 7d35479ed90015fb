"""Greedy generation over a slot-indexed KV cache with continuous batching.

Requests are prompt embeddings. Up to ``max_batch`` of them occupy cache slots; new prompts are
prefilled together, every step decodes all active slots at once, and a finished slot is refilled
from the queue straight away.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .qwen3 import KVCache, Qwen3ForCausalLM, attention_mask

_KV_ROUND = 64


@dataclass
class GenerationRequest:
    embeddings: torch.Tensor  # [L, H] prompt embeddings (audio spliced in)
    max_new_tokens: int


@dataclass
class _Slot:
    request: int
    length: int  # tokens in the cache for this sequence
    budget: int
    tokens: list[int] = field(default_factory=list)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class GreedyEngine:
    def __init__(self, llm: Qwen3ForCausalLM, stop_ids: Sequence[int], max_batch: int = 32):
        self.llm = llm
        self.stop_ids = frozenset(stop_ids)
        self.max_batch = max_batch
        self.group = llm.config.num_heads // llm.config.num_kv_heads

    @property
    def device(self) -> torch.device:
        return self.llm.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.lm_head.weight.dtype

    def _run(
        self, cache: KVCache, hidden: torch.Tensor, slots: list[int], positions: torch.Tensor, lengths: list[int]
    ) -> torch.Tensor:
        kv_len = min(cache.max_len, _round_up(int(positions.max()) + 1, _KV_ROUND))
        lengths_t = torch.tensor(lengths, device=self.device)
        mask = attention_mask(positions, lengths_t, kv_len, self.group)
        slots_t = torch.tensor(slots, device=self.device)
        return self.llm(hidden, cache, slots_t, positions, mask, kv_len)

    def _prefill(self, cache: KVCache, prompts: list[torch.Tensor], slots: list[int]) -> list[int]:
        """Prefill several prompts (right-padded) into their slots; returns each one's first new token."""
        lengths = [p.shape[0] for p in prompts]
        longest = max(lengths)
        hidden = torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True).to(self.dtype)
        positions = torch.arange(longest, device=self.device).expand(len(prompts), longest)
        out = self._run(cache, hidden, slots, positions, lengths)
        last = out[torch.arange(len(prompts), device=self.device), torch.tensor(lengths, device=self.device) - 1]
        return self.llm.logits(last).argmax(-1).tolist()

    def _decode(self, cache: KVCache, tokens: list[int], slots: list[int], positions: list[int]) -> list[int]:
        hidden = self.llm.embed(torch.tensor(tokens, device=self.device))[:, None, :]
        positions_t = torch.tensor(positions, device=self.device)[:, None]
        out = self._run(cache, hidden, slots, positions_t, [p + 1 for p in positions])
        return self.llm.logits(out[:, 0]).argmax(-1).tolist()

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Greedy new token ids per request, without the stop token."""
        if not requests:
            return []
        max_len = _round_up(max(r.embeddings.shape[0] + r.max_new_tokens for r in requests), _KV_ROUND)
        limit = self.llm.rotary.cos.shape[0]
        if max_len > limit:
            raise ValueError(
                f"prompt plus max_new_tokens needs {max_len} positions, more than the {limit} supported; "
                "use shorter segments (VAD) or a smaller max_new_tokens"
            )
        cache = KVCache.allocate(self.llm.config, min(self.max_batch, len(requests)), max_len, self.device, self.dtype)
        results: list[list[int]] = [[] for _ in requests]
        pending = deque(range(len(requests)))
        free = list(range(cache.slots))
        active: dict[int, _Slot] = {}
        while pending or active:
            admitted: list[tuple[int, int]] = []
            while free and pending:
                admitted.append((free.pop(0), pending.popleft()))
            if admitted:
                prompts = [requests[i].embeddings.to(self.device) for _, i in admitted]
                firsts = self._prefill(cache, prompts, [s for s, _ in admitted])
                for (slot, index), token in zip(admitted, firsts, strict=True):
                    state = _Slot(index, requests[index].embeddings.shape[0], requests[index].max_new_tokens)
                    active[slot] = state
                    self._accept(state, token)
            for slot in [s for s, st in active.items() if self._finished(st)]:
                done = active.pop(slot)
                results[done.request] = done.tokens
                free.append(slot)
            if not active or (free and pending):
                continue
            slots = list(active)
            states = [active[s] for s in slots]
            nexts = self._decode(cache, [st.tokens[-1] for st in states], slots, [st.length for st in states])
            for state, token in zip(states, nexts, strict=True):
                state.length += 1
                self._accept(state, token)
        return results

    def _accept(self, state: _Slot, token: int) -> None:
        if token in self.stop_ids:
            state.budget = 0
        else:
            state.tokens.append(token)
            state.budget -= 1

    @staticmethod
    def _finished(state: _Slot) -> bool:
        return state.budget <= 0
