"""The CUDA decode step: fused projections, Triton kernels for everything between the GEMMs.

Per layer: add+RMSNorm, QKV GEMM, q/k-norm+rotary+cache write, split-K attention (2 kernels),
O GEMM, add+RMSNorm, gate/up GEMM, SiLU-gate, down GEMM: 10 launches instead of ~50 eager ones. The
step only reads and writes device tensors (no host values), so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from .qwen3 import KVCache, Qwen3ForCausalLM

HALF_DTYPES = (torch.bfloat16, torch.float16)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def supports_fused_decode(device: torch.device, dtype: torch.dtype) -> bool:
    # fp32 keeps the eager reference path: its ids must stay identical to the official model's.
    return device.type == "cuda" and dtype in HALF_DTYPES and triton_available()


def _rebind(modules: list[nn.Linear], fused: torch.Tensor) -> None:
    """Make each module's weight a row slice of ``fused``, so both paths share one copy in memory."""
    start = 0
    for module in modules:
        rows = module.weight.shape[0]
        module.weight = nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows


def fuse_projections(llm: Qwen3ForCausalLM) -> None:
    """Concatenate q/k/v and gate/up weights once (one GEMM each); idempotent."""
    for layer in llm.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        if hasattr(attention, "qkv_weight"):
            continue
        projections = [attention.q_proj, attention.k_proj, attention.v_proj]
        attention.qkv_weight = torch.cat([m.weight.detach() for m in projections])
        _rebind(projections, attention.qkv_weight)
        gates = [mlp.gate_proj, mlp.up_proj]
        mlp.gate_up_weight = torch.cat([m.weight.detach() for m in gates])
        _rebind(gates, mlp.gate_up_weight)


class TritonDecodeStep:
    """Greedy decode step for the slots [0, batch): reads each slot's token and position from the
    state, writes K/V into the cache, and leaves the next token and position in the state."""

    def __init__(self, llm: Qwen3ForCausalLM):
        from . import triton_ops

        self.ops = triton_ops
        self.llm = llm
        fuse_projections(llm)
        device = llm.model.embed_tokens.weight.device
        # Sizes the attention split; CPU tensors only reach here under the Triton interpreter (tests).
        self.multiprocessors = (
            torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        )

    def __call__(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> None:
        ops, llm, config = self.ops, self.llm, self.llm.config
        eps = config.rms_norm_eps
        batch = tokens.shape[0]
        hidden = F.embedding(tokens, llm.model.embed_tokens.weight)
        normed = torch.empty_like(hidden)
        queries = hidden.new_empty(batch, config.num_heads, config.head_dim)
        attended = hidden.new_empty(batch, config.num_heads, config.head_dim)
        gated = hidden.new_empty(batch, config.intermediate_size)
        delta = None
        for index, layer in enumerate(llm.model.layers):
            attention = layer.self_attn
            ops.add_rmsnorm(hidden, delta, layer.input_layernorm.weight, eps, normed)
            qkv = F.linear(normed, attention.qkv_weight)
            ops.qk_rope_store(
                qkv, queries, cache.keys[index], cache.values[index], attention.q_norm.weight,
                attention.k_norm.weight, llm.rotary.cos, llm.rotary.sin, positions, slots, eps,
            )
            ops.decode_attention(
                queries, cache.keys[index], cache.values[index], slots, positions, attended, self.multiprocessors
            )
            delta = F.linear(attended.view(batch, -1), attention.o_proj.weight)
            ops.add_rmsnorm(hidden, delta, layer.post_attention_layernorm.weight, eps, normed)
            ops.silu_mul(F.linear(normed, layer.mlp.gate_up_weight), gated)
            delta = F.linear(gated, layer.mlp.down_proj.weight)
        ops.add_rmsnorm(hidden, delta, llm.model.norm.weight, eps, normed)
        tokens.copy_(F.linear(normed, llm.lm_head.weight).argmax(-1))
        # A finished slot still inside the batch keeps stepping; clamping keeps its writes in its own rows.
        positions.add_(1).clamp_(max=cache.max_len - 1)
