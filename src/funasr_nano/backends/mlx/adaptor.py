"""Audio adaptor in MLX, mirroring ``backends/torch/adaptor.py``: MLP to the LLM width, pre-norm blocks."""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

from ...config import AdaptorConfig
from .encoder import FeedForward, layer_norm


class LayerNorm(nn.LayerNorm):
    """Two-pass LayerNorm as torch computes it (see :func:`.encoder.layer_norm`)."""

    def __call__(self, x: mx.array) -> mx.array:
        return layer_norm(x, self.weight, self.bias, self.eps)


class MultiHeadAttention(nn.Module):
    def __init__(self, size: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = size // heads
        self.linear_q = nn.Linear(size, size)
        self.linear_k = nn.Linear(size, size)
        self.linear_v = nn.Linear(size, size)
        self.linear_out = nn.Linear(size, size)

    def __call__(self, x: mx.array, key_mask: mx.array | None) -> mx.array:
        batch, frames, size = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, frames, self.heads, self.head_dim).transpose(0, 2, 1, 3)

        context = mx.fast.scaled_dot_product_attention(
            heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x)),
            scale=self.head_dim**-0.5, mask=key_mask,
        )
        return self.linear_out(context.transpose(0, 2, 1, 3).reshape(batch, frames, size))


class AdaptorBlock(nn.Module):
    def __init__(self, size: int, heads: int, eps: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(size, heads)
        # The official block FFN is llm_dim -> llm_dim // 4 -> llm_dim (not ffn_dim).
        self.feed_forward = FeedForward(size, size // 4)
        self.norm1 = LayerNorm(size, eps=eps)
        self.norm2 = LayerNorm(size, eps=eps)

    def __call__(self, x: mx.array, key_mask: mx.array | None) -> mx.array:
        x = x + self.self_attn(self.norm1(x), key_mask)
        return x + self.feed_forward(self.norm2(x))


class AudioAdaptor(nn.Module):
    def __init__(self, config: AdaptorConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.encoder_dim, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, config.llm_dim)
        self.blocks = [
            AdaptorBlock(config.llm_dim, config.attention_heads, config.layer_norm_eps) for _ in range(config.n_layer)
        ]

    def __call__(self, encoded: mx.array, key_mask: mx.array | None) -> mx.array:
        """encoded [B, T, encoder_dim] -> [B, T, llm_dim]; key_mask as for the encoder."""
        x = self.linear2(nn.relu(self.linear1(encoded)))
        for block in self.blocks:
            x = block(x, key_mask)
        return x
