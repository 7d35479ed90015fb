"""One verify step of draft tokens on the slot-indexed KV cache (see ``backends/drafts.py``): device work
only, so the engine replays it from CUDA graphs."""

from __future__ import annotations

import torch

from .fused import TritonDecodeStep
from .qwen3 import KVCache, Qwen3ForCausalLM, attention_mask


def verify_step(
    llm: Qwen3ForCausalLM, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, slot_ids: torch.Tensor,
    drafts: torch.Tensor, counts: torch.Tensor, group: int, kv_len: int, fused: TritonDecodeStep | None = None,
) -> torch.Tensor:
    """Feed each of the first B slots its newest token (``tokens``, at ``positions``) and its drafts [B, k]
    (the first counts[b] of row b real); advance each slot's token and position past the drafts greedy
    agrees with and greedy's next token. Returns [B, k + 2]: greedy's token after each input, then the
    number of drafts accepted. With ``fused`` (CUDA, half precision) the B * (k + 1) inputs run as rows of the
    fused decode step, whose attention reads each row's keys up to its own position; otherwise through the
    eager forward with a causal mask over ``kv_len`` cache positions."""
    batch, k = drafts.shape
    last = cache.max_len - 1
    steps = torch.arange(k + 1, device=drafts.device)
    ids = torch.cat([tokens[:batch, None], drafts], dim=1)
    # Columns past a row's drafts are padding: what they write lies beyond the accepted tokens, where
    # later steps write before anything attends there.
    where = (positions[:batch, None] + steps).clamp(max=last)
    if fused is not None:
        rows = slot_ids[:batch].repeat_interleave(k + 1)
        greedy = fused.logits(cache, ids.reshape(-1), where.reshape(-1), rows).argmax(-1).view(batch, k + 1)
    else:
        mask = attention_mask(where, where[:, -1] + 1, kv_len, group)
        greedy = llm.logits(llm(llm.embed(ids), cache, slot_ids[:batch], where, mask, kv_len)).argmax(-1)
    agree = (drafts == greedy[:, :-1]) & (steps[None, :k] < counts[:, None])
    accepted = agree.long().cumprod(dim=1).sum(dim=1)
    tokens[:batch] = greedy.gather(1, accepted[:, None])[:, 0]
    positions[:batch] = (positions[:batch] + accepted + 1).clamp(max=last)
    return torch.cat([greedy, accepted[:, None]], dim=1)
