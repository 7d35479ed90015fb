"""The CUDA decode step: fused projections, Triton kernels for everything between the GEMMs.

Per layer: add+RMSNorm, QKV GEMM, q/k-norm+rotary+cache write, split-K attention (2 kernels),
O GEMM, add+RMSNorm, gate/up GEMM, SiLU-gate, down GEMM: 10 launches instead of ~50 eager ones. The
step only reads and writes device tensors (no host values), so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from .qwen3 import KVCache, Qwen3ForCausalLM

HALF_DTYPES = (torch.bfloat16, torch.float16)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def supports_fused_decode(device: torch.device, dtype: torch.dtype) -> bool:
    # fp32 keeps the eager reference path: its ids must stay identical to the official model's.
    return device.type == "cuda" and dtype in HALF_DTYPES and triton_available()


def _fused_weights(llm: Qwen3ForCausalLM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (qkv, gate_up) weights, made at load by ``llm.fuse_projections()``."""
    weights = []
    for layer in llm.model.layers:
        qkv, gate_up = layer.self_attn.qkv_weight, layer.mlp.gate_up_weight
        if qkv is None or gate_up is None:
            raise ValueError("the fused decode step needs the LLM's projections fused at load: "
                             "call fuse_projections() on it first")
        weights.append((qkv, gate_up))
    return weights


# (block_n, block_k, num_warps) of the batch-1 GEMV per projection (block_k is the whole row for norms).
# Tuned on an H100 (benchmarks/profile_gpu.py --tune): 3.6-5.0 us for the layer projections, 1.2-1.5x
# faster than cuBLAS at batch 1 before counting the norm/gate launches they absorb.
GEMV_CONFIGS: dict[str, tuple[int, int, int]] = {
    "qkv": (4, 1024, 4),
    "o": (2, 1024, 4),
    "gate_up": (4, 1024, 4),
    "down": (2, 1024, 8),
    "head": (4, 1024, 8),
}


class TritonDecodeStep:
    """Greedy decode step for the slots [0, batch): reads each slot's token and position from the
    state, writes K/V into the cache, and leaves the next token and position in the state.

    At batch 1 the projections are Triton GEMVs that also do the residual add + RMSNorm (or SiLU-gate)
    of their input: 6 launches a layer. Larger batches use cuBLAS GEMMs with the norms and the gate as
    separate kernels.
    """

    def __init__(self, llm: Qwen3ForCausalLM, small_batch_gemv: bool = True):
        self.fused_weights = _fused_weights(llm)
        from . import triton_ops

        self.ops = triton_ops
        self.llm = llm
        self.small_batch_gemv = small_batch_gemv
        device = llm.model.embed_tokens.weight.device
        # Sizes the attention split; CPU tensors only reach here under the Triton interpreter (tests).
        self.multiprocessors = (
            torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        )

    def __call__(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> None:
        tokens.copy_(self.logits(cache, tokens, positions, slots).argmax(-1))
        # A finished slot still inside the batch keeps stepping; clamping keeps its writes in its own rows.
        positions.add_(1).clamp_(max=cache.max_len - 1)

    def logits(
        self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits [T, V] of T tokens, each at its own (slot, position): writes their K/V first, and each
        attends to its slot's keys 0..position. Several tokens of one slot at consecutive positions are a causal
        block (a verify step's drafts): every layer stores all keys before any token attends."""
        if self.small_batch_gemv and tokens.shape[0] <= self.ops.GEMV_MAX_ROWS:
            return self._gemv_layers(cache, tokens, positions, slots)
        return self._gemm_layers(cache, tokens, positions, slots)

    def _attend(self, cache: KVCache, index: int, qkv: torch.Tensor, positions: torch.Tensor,
                slots: torch.Tensor) -> torch.Tensor:
        llm, config = self.llm, self.llm.config
        attention = llm.model.layers[index].self_attn
        batch = qkv.shape[0]
        queries = qkv.new_empty(batch, config.num_heads, config.head_dim)
        attended = torch.empty_like(queries)
        self.ops.qk_rope_store(
            qkv, queries, cache.keys[index], cache.values[index], attention.q_norm.weight,
            attention.k_norm.weight, llm.rotary.cos, llm.rotary.sin, positions, slots, config.rms_norm_eps,
        )
        self.ops.decode_attention(
            queries, cache.keys[index], cache.values[index], slots, positions, attended, self.multiprocessors
        )
        return attended.view(batch, -1)

    def _gemm_layers(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
                     slots: torch.Tensor) -> torch.Tensor:
        ops, llm, config = self.ops, self.llm, self.llm.config
        eps = config.rms_norm_eps
        hidden = F.embedding(tokens, llm.model.embed_tokens.weight)
        normed = torch.empty_like(hidden)
        gated = hidden.new_empty(tokens.shape[0], config.intermediate_size)
        delta = None
        for index, layer in enumerate(llm.model.layers):
            qkv_weight, gate_up_weight = self.fused_weights[index]
            ops.add_rmsnorm(hidden, delta, layer.input_layernorm.weight, eps, normed)
            attended = self._attend(cache, index, F.linear(normed, qkv_weight), positions, slots)
            delta = F.linear(attended, layer.self_attn.o_proj.weight)
            ops.add_rmsnorm(hidden, delta, layer.post_attention_layernorm.weight, eps, normed)
            ops.silu_mul(F.linear(normed, gate_up_weight), gated)
            delta = F.linear(gated, layer.mlp.down_proj.weight)
        ops.add_rmsnorm(hidden, delta, llm.model.norm.weight, eps, normed)
        return F.linear(normed, llm.lm_head.weight)

    def _gemv(self, name: str, x: torch.Tensor, weight: torch.Tensor, prologue: int, delta=None, x_out=None,
              norm_weight=None) -> torch.Tensor:
        block_n, block_k, warps = GEMV_CONFIGS[name]
        out = x.new_empty(x.shape[0], weight.shape[0])
        self.ops.gemv(x, weight, out, prologue, delta, x_out, norm_weight, self.llm.config.rms_norm_eps,
                      block_n, block_k, warps)
        return out

    def _gemv_layers(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
                     slots: torch.Tensor) -> torch.Tensor:
        ops, llm = self.ops, self.llm
        norm, silu, plain = ops.PROLOGUE_NORM, ops.PROLOGUE_SILU, ops.PROLOGUE_NONE
        # Two residual buffers in turn: a norm-GEMV reads one and writes residual + delta into the other.
        residual = F.embedding(tokens, llm.model.embed_tokens.weight)
        spare = torch.empty_like(residual)
        delta = None
        for index, layer in enumerate(llm.model.layers):
            qkv_weight, gate_up_weight = self.fused_weights[index]
            qkv = self._gemv("qkv", residual, qkv_weight, norm, delta, spare, layer.input_layernorm.weight)
            if delta is not None:
                residual, spare = spare, residual
            attended = self._attend(cache, index, qkv, positions, slots)
            delta = self._gemv("o", attended, layer.self_attn.o_proj.weight, plain)
            gate_up = self._gemv("gate_up", residual, gate_up_weight, norm, delta, spare,
                                 layer.post_attention_layernorm.weight)
            residual, spare = spare, residual
            delta = self._gemv("down", gate_up, layer.mlp.down_proj.weight, silu)
        return self._gemv("head", residual, llm.lm_head.weight, norm, delta, spare, llm.model.norm.weight)
