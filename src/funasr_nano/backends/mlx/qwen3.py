"""Qwen3 decoder in MLX (the Fun-ASR-Nano LLM) with a preallocated KV cache for left-padded batches.

Mirrors ``backends/torch/qwen3.py``. Sequences of one batch are left-padded to a common length, so
every step writes all rows at the same cache index; a row's RoPE position is that index minus its
padding, and the pad keys are masked out. A block sees one call through a :class:`CacheView`.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from mlx import nn

from ...config import LLMConfig


def rope_wavelengths(config: LLMConfig) -> mx.array:
    """Per-pair wavelengths (1 / inverse frequency), the inverse frequencies computed like the torch table.

    They are rounded to ``rotary_frequency_dtype`` as the official build does (it casts the LLM to
    bf16 before upcasting). ``mx.fast.rope(base=theta)`` derives frequencies its own way and is 3e-5
    off at position 200; passing them explicitly keeps RoPE within 5e-7 of the reference.
    """
    exponents = np.arange(0, config.head_dim, 2, dtype=np.float32) / np.float32(config.head_dim)
    inverse = np.float32(1.0) / np.power(np.float32(config.rope_theta), exponents, dtype=np.float32)
    rounded = mx.array(inverse).astype(getattr(mx, config.rotary_frequency_dtype)).astype(mx.float32)
    wavelengths = 1.0 / rounded
    # Computed now: a lazy array stays tied to this thread's stream, and the server decodes on another.
    mx.eval(wavelengths)
    return wavelengths


class KVCache:
    """keys/values per layer, [batch, kv_heads, capacity, head_dim], filled from index 0, all rows at once."""

    def __init__(self, config: LLMConfig, batch: int, capacity: int, dtype: mx.Dtype):
        shape = (batch, config.num_kv_heads, capacity, config.head_dim)
        self.keys = [mx.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [mx.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]
        self.capacity = capacity
        self.offset = 0  # tokens already written

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` tokens, what is written kept (a drafted batch's verify steps use more than
        one index per token)."""
        if capacity <= self.capacity:
            return
        for store in (self.keys, self.values):
            for layer, array in enumerate(store):
                extra = mx.zeros((*array.shape[:2], capacity - self.capacity, array.shape[3]), dtype=array.dtype)
                store[layer] = mx.concatenate([array, extra], axis=2)
        self.capacity = capacity

    def update(self, layer: int, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write [B, kv_heads, S, D] at the current offset; return everything written so far."""
        end = self.offset + keys.shape[2]
        self.keys[layer][:, :, self.offset : end, :] = keys
        self.values[layer][:, :, self.offset : end, :] = values
        return self.keys[layer][:, :, :end, :], self.values[layer][:, :, :end, :]


@dataclass(frozen=True)
class CacheView:
    """What one layer's attention needs for one call: its part of the cache, the RoPE of the call's
    positions and which keys each query may see."""

    cache: KVCache
    layer: int
    positions: mx.array  # [B] RoPE position of each row's first step
    mask: mx.array | str | None  # boolean [B, 1, S, offset + S] (True = may attend), "causal", or None
    wavelengths: mx.array  # see rope_wavelengths

    def rotate(self, x: mx.array) -> mx.array:
        """RoPE of [B, heads, S, head_dim] at this call's positions."""
        return mx.fast.rope(
            x, x.shape[-1], traditional=False, base=None, scale=1.0, offset=self.positions, freqs=self.wavelengths
        )

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write [B, kv_heads, S, D] at the cache's offset; return everything this layer holds so far."""
        return self.cache.update(self.layer, keys, values)


class Attention(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)
        self.q_norm = nn.RMSNorm(config.head_dim, eps=config.rms_norm_eps)
        self.k_norm = nn.RMSNorm(config.head_dim, eps=config.rms_norm_eps)

    def __call__(self, x: mx.array, view: CacheView) -> mx.array:
        batch, steps, _ = x.shape

        def heads(t: mx.array, count: int) -> mx.array:
            return t.reshape(batch, steps, count, self.head_dim)

        q = self.q_norm(heads(self.q_proj(x), self.num_heads)).transpose(0, 2, 1, 3)
        k = self.k_norm(heads(self.k_proj(x), self.num_kv_heads)).transpose(0, 2, 1, 3)
        v = heads(self.v_proj(x), self.num_kv_heads).transpose(0, 2, 1, 3)
        q = view.rotate(q)
        keys, values = view.update(view.rotate(k), v)
        # Grouped-query attention: the fused kernel shares each KV head among its query heads itself.
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.head_dim**-0.5, mask=view.mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(batch, steps, -1))


class MLP(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def __call__(self, x: mx.array, view: CacheView) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), view)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Body(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [DecoderLayer(config) for _ in range(config.num_layers)]
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.model = Qwen3Body(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Leading underscore: a constant, not a parameter (MLX treats public array attributes as weights).
        self._wavelengths = rope_wavelengths(config)

    def embed(self, ids: mx.array) -> mx.array:
        return self.model.embed_tokens(ids)

    def __call__(
        self, hidden: mx.array, cache: KVCache, positions: mx.array, mask: mx.array | str | None
    ) -> mx.array:
        """Run the decoder on [B, S, H] input embeddings written at ``cache.offset``; advance the cache.

        positions [B]: RoPE position of each row's first step. mask: boolean [B, 1, S, offset + S]
        (True = may attend), "causal", or None. Returns the final-normed hidden states [B, S, H].
        """
        for index, layer in enumerate(self.model.layers):
            hidden = layer(hidden, CacheView(cache, index, positions, mask, self._wavelengths))
        cache.offset += hidden.shape[1]
        return self.model.norm(hidden)

    def logits(self, hidden: mx.array) -> mx.array:
        """float32 logits; with tied embeddings the (possibly quantized) embedding doubles as the head."""
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(hidden).astype(mx.float32)
        return self.lm_head(hidden).astype(mx.float32)
