"""Greedy decoding of one left-padded batch of prompt embeddings on the MLX Qwen3."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from ...errors import UsageError, option
from .. import TokenSink
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


def greedy_generate(
    llm: Qwen3ForCausalLM,
    prompts: Sequence[mx.array],
    budgets: Sequence[int],
    stop_ids: frozenset[int],
    on_tokens: TokenSink | None = None,
) -> list[list[int]]:
    """New token ids (stop token excluded) for each prompt [L_i, H], at most ``budgets[i]`` of them;
    ``on_tokens`` gets each row's token as soon as it is read back.

    Decoding is pipelined: step n+1 is queued before the ids of step n are read back, so the device
    never waits on Python between tokens.
    """
    lengths = [p.shape[0] for p in prompts]
    longest = max(lengths)
    longest_budget = max(budgets)
    limit = llm.config.max_position_embeddings
    if longest + longest_budget > limit:
        raise UsageError(
            f"prompt plus {option('max_new_tokens')} needs {longest + longest_budget} positions, more than the "
            f"{limit} supported; use shorter segments (VAD) or a smaller {option('max_new_tokens')}"
        )
    pads = [longest - n for n in lengths]
    batch = mx.stack([mx.pad(p, [(pad, 0), (0, 0)]) for p, pad in zip(prompts, pads, strict=True)])
    # The last queued step writes index longest + longest_budget - 1.
    cache = KVCache(llm.config, len(prompts), longest + longest_budget, batch.dtype)
    pad_offsets = mx.array(pads)

    def step(hidden: mx.array) -> mx.array:
        mask = attention_mask(pads, cache.offset, hidden.shape[1])
        out = llm(hidden, cache, cache.offset - pad_offsets, mask)
        return mx.argmax(llm.logits(out[:, -1]), axis=-1)

    results: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    tokens = step(batch)
    mx.async_eval(tokens)
    for produced in range(1, longest_budget + 1):
        upcoming = step(llm.embed(tokens)[:, None, :]) if produced < longest_budget else None
        if upcoming is not None:
            mx.async_eval(upcoming)
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token in stop_ids:
                done[row] = True
            else:
                results[row].append(token)
                done[row] = len(results[row]) >= budgets[row]
                if on_tokens is not None:
                    on_tokens(row, [token])
        if all(done) or upcoming is None:
            break
        tokens = upcoming
    return results
