"""SenseVoice SAN-M audio encoder (``SenseVoiceEncoderSmall``): self-attention plus an FSMN memory block.

Parameter names mirror the official module tree so checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config import EncoderConfig
from ..positions import sinusoidal_positions


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm evaluated in float32 whatever the activation dtype, as the official SAN-M one is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).to(x.dtype)


class SANMAttention(nn.Module):
    def __init__(self, in_size: int, size: int, heads: int, kernel_size: int, sanm_shift: int):
        super().__init__()
        self.heads = heads
        self.head_dim = size // heads
        self.size = size
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        left = (kernel_size - 1) // 2 + sanm_shift
        self.fsmn_padding = (left, kernel_size - 1 - left)

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, frames, _ = x.shape
        q, k, v = self.linear_q_k_v(x).split(self.size, dim=-1)

        masked_v = v * frame_mask
        memory = self.fsmn_block(F.pad(masked_v.transpose(1, 2), self.fsmn_padding)).transpose(1, 2)
        memory = (memory + masked_v) * frame_mask

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, self.heads, self.head_dim).transpose(1, 2)

        # The official code scales q before the matmul; SDPA applies the same 1/sqrt(d_k) factor.
        context = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=key_mask)
        context = context.transpose(1, 2).reshape(batch, frames, self.size)
        return self.linear_out(context) + memory


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class SANMEncoderLayer(nn.Module):
    def __init__(self, in_size: int, size: int, config: EncoderConfig):
        super().__init__()
        self.self_attn = SANMAttention(
            in_size, size, config.attention_heads, config.kernel_size, config.sanm_shift
        )
        self.feed_forward = FeedForward(size, config.linear_units)
        self.norm1 = FP32LayerNorm(in_size, eps=config.layer_norm_eps)
        self.norm2 = FP32LayerNorm(size, eps=config.layer_norm_eps)
        # The first layer changes width (560 -> 512) and so has no residual around attention.
        self.attention_residual = in_size == size

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        attended = self.self_attn(self.norm1(x), frame_mask, key_mask)
        x = x + attended if self.attention_residual else attended
        return x + self.feed_forward(self.norm2(x))


def padding_masks(
    lengths: torch.Tensor, frames: int, dtype: torch.dtype, always: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(frame mask [B, T, 1] in dtype, boolean key mask [B, 1, 1, T] or None when nothing is padded).
    ``always``: a key mask even then, without looking at the lengths on the host (a CUDA graph capture)."""
    valid = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    key_mask = None if not always and bool(valid.all()) else valid[:, None, None, :]
    return valid[:, :, None].to(dtype), key_mask


class SenseVoiceEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        size = config.output_size
        self.encoders0 = nn.ModuleList([SANMEncoderLayer(config.input_size, size, config)])
        self.encoders = nn.ModuleList(
            SANMEncoderLayer(size, size, config) for _ in range(config.num_blocks - 1)
        )
        self.after_norm = FP32LayerNorm(size, eps=config.layer_norm_eps)
        self.tp_encoders = nn.ModuleList(
            SANMEncoderLayer(size, size, config) for _ in range(config.tp_blocks)
        )
        self.tp_norm = FP32LayerNorm(size, eps=config.layer_norm_eps)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features [B, T, 560] (padded), lengths [B] -> [B, T, output_size]. ``positions``: the
        :func:`sinusoidal_positions` table given (a CUDA graph, which cannot copy from the host), and
        then a key mask whatever the lengths."""
        _, frames, depth = features.shape
        graphed = positions is not None
        if positions is None:
            positions = sinusoidal_positions(frames, depth, features.device)
        x = features * math.sqrt(self.config.output_size)
        x = (x.float() + positions).to(features.dtype)
        frame_mask, key_mask = padding_masks(lengths, frames, x.dtype, always=graphed)
        for layer in self.encoders0:
            x = layer(x, frame_mask, key_mask)
        for layer in self.encoders:
            x = layer(x, frame_mask, key_mask)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, frame_mask, key_mask)
        return self.tp_norm(x)
