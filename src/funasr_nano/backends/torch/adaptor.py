"""Audio adaptor: a 2-layer MLP projection to the LLM width followed by pre-norm Transformer blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import AdaptorConfig
from .encoder import FeedForward


class MultiHeadAttention(nn.Module):
    def __init__(self, size: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = size // heads
        self.linear_q = nn.Linear(size, size)
        self.linear_k = nn.Linear(size, size)
        self.linear_v = nn.Linear(size, size)
        self.linear_out = nn.Linear(size, size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, size = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, self.heads, self.head_dim).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x)), attn_mask=key_mask
        )
        return self.linear_out(context.transpose(1, 2).reshape(batch, frames, size))


class AdaptorBlock(nn.Module):
    def __init__(self, size: int, heads: int, eps: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(size, heads)
        # The official block FFN is llm_dim -> llm_dim // 4 -> llm_dim (not ffn_dim).
        self.feed_forward = FeedForward(size, size // 4)
        self.norm1 = nn.LayerNorm(size, eps=eps)
        self.norm2 = nn.LayerNorm(size, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), key_mask)
        return x + self.feed_forward(self.norm2(x))


class AudioAdaptor(nn.Module):
    def __init__(self, config: AdaptorConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.encoder_dim, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, config.llm_dim)
        self.blocks = nn.ModuleList(
            AdaptorBlock(config.llm_dim, config.attention_heads, config.layer_norm_eps) for _ in range(config.n_layer)
        )

    def forward(self, encoded: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """encoded [B, T, encoder_dim] -> [B, T, llm_dim]; key_mask as for the encoder."""
        x = self.linear2(torch.relu(self.linear1(encoded)))
        for block in self.blocks:
            x = block(x, key_mask)
        return x
