"""SenseVoice SAN-M audio encoder in MLX, mirroring ``backends/torch/encoder.py`` (parameter names included).

The only layout difference from the official checkpoint: ``fsmn_block.weight`` is stored as MLX's
depthwise-conv layout ``[channels, kernel, 1]`` instead of torch's ``[channels, 1, kernel]``.
"""

from __future__ import annotations

import math

import mlx.core as mx
import torch
from mlx import nn

from ...config import EncoderConfig
from ..positions import sinusoidal_positions as torch_positions


@mx.compile
def layer_norm(x: mx.array, weight: mx.array, bias: mx.array, eps: float) -> mx.array:
    """LayerNorm with a corrected mean: centre, then subtract the mean of the centred values.

    MLX's CPU reductions add sequentially, so the mean of the first SAN-M layer's input (log-mel x
    sqrt(512) plus positions: mean ~100, spread ~20) comes out ~1e-4 off. Against a float64 reference
    ``mx.fast.layer_norm`` and a plain two-pass version were 3e-5 (relative) off, this is 5e-7 (torch 3e-6).
    Python scalars such as ``eps`` are compile-time constants: each value gets its own compiled graph.
    """
    centred = x - x.mean(axis=-1, keepdims=True)
    centred = centred - centred.mean(axis=-1, keepdims=True)
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred * mx.rsqrt(variance + eps) * weight + bias


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm evaluated in float32 whatever the activation dtype, as the official SAN-M one is."""

    def __call__(self, x: mx.array) -> mx.array:
        f32 = mx.float32
        normed = layer_norm(x.astype(f32), self.weight.astype(f32), self.bias.astype(f32), self.eps)
        return normed.astype(x.dtype)


@mx.compile
def fsmn_memory(values: mx.array, weight: mx.array, frame_mask: mx.array, left: int) -> mx.array:
    """``(depthwise_conv(pad(v * mask)) + v * mask) * mask`` as a sum of shifted products.

    One fused elementwise kernel after compilation: measured 6x faster than ``mx.conv1d(groups=C)``
    on CPU (4.6 vs 27 ms for 688 frames x 512 channels), with the same result up to rounding.
    """
    masked = values * frame_mask
    frames = values.shape[1]
    kernel = weight.shape[1]
    padded = mx.pad(masked, [(0, 0), (left, kernel - 1 - left), (0, 0)])
    taps = weight[:, :, 0].T  # [kernel, channels]
    memory = masked
    for tap in range(kernel):
        memory = memory + padded[:, tap : tap + frames] * taps[tap]
    return memory * frame_mask


class SANMAttention(nn.Module):
    def __init__(self, in_size: int, size: int, heads: int, kernel_size: int, sanm_shift: int):
        super().__init__()
        self.heads = heads
        self.head_dim = size // heads
        self.size = size
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        self.fsmn_left = (kernel_size - 1) // 2 + sanm_shift

    def __call__(self, x: mx.array, frame_mask: mx.array, key_mask: mx.array | None) -> mx.array:
        batch, frames, _ = x.shape
        q, k, v = mx.split(self.linear_q_k_v(x), 3, axis=-1)
        memory = fsmn_memory(v, self.fsmn_block.weight, frame_mask, self.fsmn_left)

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, frames, self.heads, self.head_dim).transpose(0, 2, 1, 3)

        # The official code scales q before the matmul; the fused kernel applies the same factor to q.
        context = mx.fast.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), scale=self.head_dim**-0.5, mask=key_mask
        )
        context = context.transpose(0, 2, 1, 3).reshape(batch, frames, self.size)
        return self.linear_out(context) + memory


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w_2(nn.relu(self.w_1(x)))


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

    def __call__(self, x: mx.array, frame_mask: mx.array, key_mask: mx.array | None) -> mx.array:
        attended = self.self_attn(self.norm1(x), frame_mask, key_mask)
        x = x + attended if self.attention_residual else attended
        return x + self.feed_forward(self.norm2(x))


def sinusoidal_positions(frames: int, depth: int) -> mx.array:
    """[frames, depth] position table, computed in torch as the torch encoder's (see :mod:`..positions`)."""
    return mx.array(torch_positions(frames, depth, torch.device("cpu")).numpy())


def padding_masks(lengths: list[int], frames: int, dtype: mx.Dtype) -> tuple[mx.array, mx.array | None]:
    """(frame mask [B, T, 1] in dtype, boolean key mask [B, 1, 1, T] or None when nothing is padded)."""
    valid = mx.arange(frames)[None, :] < mx.array(lengths)[:, None]
    key_mask = None if min(lengths) == frames else valid[:, None, None, :]
    return valid[:, :, None].astype(dtype), key_mask


class SenseVoiceEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.output_size = config.output_size
        size = config.output_size
        self.encoders0 = [SANMEncoderLayer(config.input_size, size, config)]
        self.encoders = [SANMEncoderLayer(size, size, config) for _ in range(config.num_blocks - 1)]
        self.after_norm = FP32LayerNorm(size, eps=config.layer_norm_eps)
        self.tp_encoders = [SANMEncoderLayer(size, size, config) for _ in range(config.tp_blocks)]
        self.tp_norm = FP32LayerNorm(size, eps=config.layer_norm_eps)

    def __call__(self, features: mx.array, frame_mask: mx.array, key_mask: mx.array | None) -> mx.array:
        """features [B, T, 560] (padded) -> [B, T, output_size]; masks from :func:`padding_masks`."""
        _, frames, depth = features.shape
        x = features * math.sqrt(self.output_size)
        x = (x.astype(mx.float32) + sinusoidal_positions(frames, depth)).astype(features.dtype)
        for layer in (*self.encoders0, *self.encoders):
            x = layer(x, frame_mask, key_mask)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, frame_mask, key_mask)
        return self.tp_norm(x)
