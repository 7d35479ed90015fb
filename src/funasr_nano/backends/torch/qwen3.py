"""Qwen3 decoder (the Fun-ASR-Nano LLM) with a preallocated, slot-indexed KV cache.

Every sequence owns a cache slot; keys/values are written at the sequence's own positions, so
prompts of different lengths prefill together and decode steps of many slots run as one batch.
A block sees one call through a :class:`CacheView`, which the LM builds for each layer: the blocks
know nothing of slots or lengths beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config import LLMConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same order of operations as the reference: normalise in fp32, cast, then scale.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


@dataclass
class KVCache:
    """keys/values [layers][slots, max_len, kv_heads, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @classmethod
    def allocate(
        cls, config: LLMConfig, slots: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        shape = (slots, max_len, config.num_kv_heads, config.head_dim)
        return cls(
            [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
            [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
        )

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[1]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


@dataclass(frozen=True, slots=True)
class CacheView:
    """What one layer's attention needs for one call: its part of the KV cache, where this call's keys and
    values go in it, which cached keys each query may see, and the rotary angles of the call's positions."""

    keys: torch.Tensor  # this layer's cache [slots, max_len, kv_heads, head_dim]
    values: torch.Tensor
    slots: torch.Tensor  # [B] cache row of each batch row
    positions: torch.Tensor  # [B, S] position of each step, also where its key and value go in the row
    mask: torch.Tensor  # [B, 1, S * group, kv_len] boolean, True = may attend
    kv_len: int  # cache positions attended over (the rest of each row is masked or unwritten)
    cos: torch.Tensor  # [B, S, 1, head_dim], broadcast over the heads
    sin: torch.Tensor

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of [B, S, heads, head_dim] at this call's positions."""
        return x * self.cos + rotate_half(x) * self.sin

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this call's [B, S, kv_heads, head_dim] keys/values; return the first ``kv_len`` of each row,
        [B, kv_heads, kv_len, head_dim]."""
        self.keys[self.slots[:, None], self.positions] = keys
        self.values[self.slots[:, None], self.positions] = values
        return (
            self.keys[self.slots, : self.kv_len].transpose(1, 2),
            self.values[self.slots, : self.kv_len].transpose(1, 2),
        )


class RotaryTable(nn.Module):
    """cos/sin of the ``config.max_positions`` positions, precomputed so a step only gathers rows (CUDA-graph
    friendly)."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.int64).float() / config.head_dim
        inverse = 1.0 / (config.rope_theta**exponents)
        inverse = inverse.to(getattr(torch, config.rotary_frequency_dtype)).float()
        freqs = torch.arange(config.max_positions, dtype=torch.float32)[:, None] * inverse[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)


# Up to this many rows go through Linear's CPU path (decode steps of small batches, verify steps).
_FEW_ROWS = 32


class Linear(nn.Linear):
    """A bias-free ``nn.Linear`` whose CPU float32 product for up to 32 rows is computed as ``W @ x^T``, which
    MKL spreads over all cores without repacking the weight: for ``x @ W^T`` it runs one row on one thread
    (a decode step then reads the weights at one core's bandwidth) and repacks the weight for a few rows
    (a two-row LM head cost twice a one-row one). A single row goes in twice, as two columns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if 0 < rows <= _FEW_ROWS and x.device.type == "cpu" and x.dtype == torch.float32 and self.bias is None:
            columns = x.reshape(rows, x.shape[-1])
            if rows == 1:
                columns = torch.cat([columns, columns])
            product = self.weight @ columns.T
            return product[:, :rows].T.reshape(*x.shape[:-1], self.out_features)
        return super().forward(x)


def _fuse_rows(projections: list[nn.Linear]) -> torch.Tensor:
    """The weights of bias-free projections of one input as one [total rows, in] tensor, each module's weight
    then a row slice of it: one GEMM does them all, and both paths share one copy in memory."""
    fused = torch.cat([module.weight.detach() for module in projections])
    start = 0
    for module in projections:
        rows = module.weight.shape[0]
        module.weight = nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return fused


class Attention(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.group = config.num_heads // config.num_kv_heads
        self.q_proj = Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
        # q/k/v weights as one tensor for the fused decode step: set at load (Qwen3ForCausalLM.fuse_projections)
        # only where that step runs. Elsewhere it would be a second copy: int8 replaces the projections, and
        # CPU weights in the checkpoint's dtype stay memory-mapped from model.pt.
        self.qkv_weight: torch.Tensor | None = None

    def fuse(self) -> None:
        self.qkv_weight = _fuse_rows([self.q_proj, self.k_proj, self.v_proj])

    def forward(self, x: torch.Tensor, view: CacheView) -> torch.Tensor:
        batch, steps, _ = x.shape
        cfg = self.config
        q = self.q_norm(self.q_proj(x).view(batch, steps, cfg.num_heads, cfg.head_dim))
        k = self.k_norm(self.k_proj(x).view(batch, steps, cfg.num_kv_heads, cfg.head_dim))
        v = self.v_proj(x).view(batch, steps, cfg.num_kv_heads, cfg.head_dim)
        q = view.rotate(q)
        keys, values = view.update(view.rotate(k), v)
        # Grouped-query attention without repeating K/V: the query heads sharing a KV head are laid
        # out as extra query rows of that head ([B, kv_heads, steps * group, head_dim]).
        q = q.view(batch, steps, cfg.num_kv_heads, self.group, cfg.head_dim).permute(0, 2, 1, 3, 4)
        q = q.reshape(batch, cfg.num_kv_heads, steps * self.group, cfg.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=view.mask)
        out = out.view(batch, cfg.num_kv_heads, steps, self.group, cfg.head_dim).permute(0, 2, 1, 3, 4)
        return self.o_proj(out.reshape(batch, steps, cfg.num_heads * cfg.head_dim))


class MLP(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.gate_proj = Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)
        # gate/up weights as one tensor for the fused decode step, as Attention.qkv_weight.
        self.gate_up_weight: torch.Tensor | None = None

    def fuse(self) -> None:
        self.gate_up_weight = _fuse_rows([self.gate_proj, self.up_proj])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, view: CacheView) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), view)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Body(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.model = Qwen3Body(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        self.rotary = RotaryTable(config)

    def tie_weights(self) -> None:
        self.lm_head.weight = self.model.embed_tokens.weight

    def fuse_projections(self) -> None:
        """Concatenate each layer's q/k/v and gate/up weights, once, at load: the fused decode step runs one
        GEMM for each group (the eager path keeps using the projections, now slices of those tensors)."""
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def forward(
        self,
        hidden: torch.Tensor,
        cache: KVCache,
        slots: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        kv_len: int,
    ) -> torch.Tensor:
        """Run the decoder and write the cache.

        hidden [B, S, H] input embeddings; slots [B] cache rows; positions [B, S] absolute positions
        (also the cache write index); mask [B, 1, S * group, kv_len] boolean, True = may attend.
        Returns the final-normed hidden states [B, S, H].
        """
        cos, sin = (t[:, :, None, :] for t in self.rotary(positions, hidden.dtype))
        for layer, keys, values in zip(self.model.layers, cache.keys, cache.values, strict=True):
            hidden = layer(hidden, CacheView(keys, values, slots, positions, mask, kv_len, cos, sin))
        return self.model.norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()


def attention_mask(
    positions: torch.Tensor, lengths: torch.Tensor, kv_len: int, group: int
) -> torch.Tensor:
    """Causal mask over the cache: query at position p sees keys 0..p that belong to its sequence.

    positions [B, S] query positions; lengths [B] number of valid keys after this step's writes.
    Returns [B, 1, S * group, kv_len] with the query rows repeated for the heads of a KV group.
    """
    keys = torch.arange(kv_len, device=positions.device)
    allowed = (keys[None, None, :] <= positions[:, :, None]) & (keys[None, None, :] < lengths[:, None, None])
    return allowed.repeat_interleave(group, dim=1)[:, None]


@torch.inference_mode()
def prompt_logits(llm: Qwen3ForCausalLM, embeddings: torch.Tensor) -> torch.Tensor:
    """Next-token logits [V] (fp32) after one prompt [L, H] run alone in a fresh cache (for parity checks)."""
    length = embeddings.shape[0]
    device = embeddings.device
    cache = KVCache.allocate(llm.config, 1, length, device, embeddings.dtype)
    positions = torch.arange(length, device=device)[None]
    group = llm.config.num_heads // llm.config.num_kv_heads
    mask = attention_mask(positions, torch.tensor([length], device=device), length, group)
    hidden = llm(embeddings[None], cache, torch.tensor([0], device=device), positions, mask, length)
    return llm.logits(hidden[0, -1])
