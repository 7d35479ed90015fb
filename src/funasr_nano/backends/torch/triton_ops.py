"""Triton kernels for the CUDA decode step of the Qwen3 LLM.

At batch 1 a decode step is bound by the number of kernels, not by arithmetic: an fp32-accumulated
RMSNorm alone is seven torch kernels, rotary embedding another ten. These kernels fold each chain into
one launch and keep the reference rounding points (every place where the torch code materialises a
bf16 tensor, the kernel rounds too), so bf16 results track the eager path closely.

Import this module only where ``triton`` is installed (CUDA machines); ``fused.py`` checks first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_ATTENTION_BLOCK_N = 32
# tl.dot needs at least 16 rows: the query heads of one KV group (2 for Qwen3-0.6B) are padded to this.
_ATTENTION_BLOCK_M = 16
_MIN_SPLIT_KEYS = 256


@triton.jit
def _add_rmsnorm_kernel(
    residual, delta, weight, out, n_cols, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    dtype = residual.dtype.element_ty
    x = tl.load(residual + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_DELTA:
        # hidden = hidden + delta in the model dtype, stored back as the new residual stream.
        d = tl.load(delta + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        x = (x + d).to(dtype).to(tl.float32)
        tl.store(residual + row * n_cols + cols, x.to(dtype), mask=mask)
    inverse = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    normed = (x * inverse).to(dtype).to(tl.float32)
    w = tl.load(weight + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + row * n_cols + cols, (w * normed).to(out.dtype.element_ty), mask=mask)


def add_rmsnorm(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                out: torch.Tensor) -> None:
    """residual += delta (in place, when given); out = RMSNorm(residual). Rows of [T, H], contiguous."""
    rows, cols = residual.shape
    _add_rmsnorm_kernel[(rows,)](
        residual, residual if delta is None else delta, weight, out, cols, eps,
        HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(cols), num_warps=4,
    )


@triton.jit
def _norm_rotate(base, weight, cos_row, sin_row, eps, HEAD_DIM: tl.constexpr, dtype: tl.constexpr):
    """RMSNorm of one head (fp32 statistics, rounded like the torch module) then rotary embedding."""
    half: tl.constexpr = HEAD_DIM // 2
    d = tl.arange(0, HEAD_DIM)
    partner = (d + half) % HEAD_DIM
    x = tl.load(base + d).to(tl.float32)
    xp = tl.load(base + partner).to(tl.float32)
    inverse = tl.rsqrt(tl.sum(x * x, axis=0) / HEAD_DIM + eps)
    n = (tl.load(weight + d).to(tl.float32) * (x * inverse).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    np_ = (tl.load(weight + partner).to(tl.float32) * (xp * inverse).to(dtype).to(tl.float32))
    np_ = np_.to(dtype).to(tl.float32)
    rotated = tl.where(d < half, -np_, np_)
    cos = tl.load(cos_row + d).to(dtype).to(tl.float32)
    sin = tl.load(sin_row + d).to(dtype).to(tl.float32)
    return ((n * cos).to(dtype).to(tl.float32) + (rotated * sin).to(dtype).to(tl.float32)).to(dtype)


@triton.jit
def _qk_rope_store_kernel(
    qkv, q_out, k_cache, v_cache, q_weight, k_weight, cos, sin, positions, slots,
    qkv_stride, slot_stride, position_stride, eps,
    NUM_Q: tl.constexpr, NUM_KV: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    token = tl.program_id(0)
    head = tl.program_id(1)
    dtype = q_out.dtype.element_ty
    d = tl.arange(0, HEAD_DIM)
    base = qkv + token * qkv_stride + head * HEAD_DIM
    position = tl.load(positions + token)
    cache_row = tl.load(slots + token) * slot_stride + position * position_stride
    cos_row = cos + position * HEAD_DIM
    sin_row = sin + position * HEAD_DIM
    if head < NUM_Q:
        rotated = _norm_rotate(base, q_weight, cos_row, sin_row, eps, HEAD_DIM, dtype)
        tl.store(q_out + (token * NUM_Q + head) * HEAD_DIM + d, rotated)
    elif head < NUM_Q + NUM_KV:
        rotated = _norm_rotate(base, k_weight, cos_row, sin_row, eps, HEAD_DIM, dtype)
        tl.store(k_cache + cache_row + (head - NUM_Q) * HEAD_DIM + d, rotated)
    else:
        tl.store(v_cache + cache_row + (head - NUM_Q - NUM_KV) * HEAD_DIM + d, tl.load(base + d))


def qk_rope_store(
    qkv: torch.Tensor, q_out: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    q_weight: torch.Tensor, k_weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    positions: torch.Tensor, slots: torch.Tensor, eps: float,
) -> None:
    """Split qkv [T, (Hq + 2 Hkv) * D]; q/k RMSNorm + rotary; q -> q_out [T, Hq, D]; k, v -> cache[slot, pos]."""
    tokens = qkv.shape[0]
    num_q, head_dim = q_out.shape[1], q_out.shape[2]
    num_kv = k_cache.shape[2]
    _qk_rope_store_kernel[(tokens, num_q + 2 * num_kv)](
        qkv, q_out, k_cache, v_cache, q_weight, k_weight, cos, sin, positions, slots,
        qkv.stride(0), k_cache.stride(0), k_cache.stride(1), eps,
        NUM_Q=num_q, NUM_KV=num_kv, HEAD_DIM=head_dim, num_warps=1,
    )


@triton.jit
def _decode_attention_partial_kernel(
    q, k_cache, v_cache, slots, positions, part_out, part_max, part_sum,
    slot_stride, position_stride, scale,
    NUM_KV: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, SPLIT: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    batch = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    # The query at `position` sees keys 0..position: its own key was written just before.
    length = tl.load(positions + batch) + 1
    cache_base = tl.load(slots + batch) * slot_stride + kv_head * HEAD_DIM
    rows = tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    row_valid = rows < GROUP
    heads = kv_head * GROUP + rows
    query = tl.load(q + (batch * NUM_KV * GROUP + heads)[:, None] * HEAD_DIM + d[None, :],
                    mask=row_valid[:, None], other=0.0)
    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    start = split * SPLIT
    end = tl.minimum(start + SPLIT, length)
    for block in range(start, end, BLOCK_N):
        keys_at = block + tl.arange(0, BLOCK_N)
        key_valid = keys_at < end
        offsets = cache_base + keys_at[:, None] * position_stride + d[None, :]
        k = tl.load(k_cache + offsets, mask=key_valid[:, None], other=0.0)
        scores = tl.dot(query, tl.trans(k)) * scale
        scores = tl.where(key_valid[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        rescale = tl.exp(running_max - new_max)
        p = tl.exp(scores - new_max[:, None])
        running_sum = running_sum * rescale + tl.sum(p, axis=1)
        v = tl.load(v_cache + offsets, mask=key_valid[:, None], other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        running_max = new_max
    if NUM_SPLITS == 1:
        # One split holds every key: normalise here, no reduce kernel (part_out is the output).
        result = acc / running_sum[:, None]
        rows_at = (batch * NUM_KV * GROUP + heads)[:, None] * HEAD_DIM + d[None, :]
        tl.store(part_out + rows_at, result.to(part_out.dtype.element_ty), mask=row_valid[:, None])
    else:
        index = (batch * NUM_KV * GROUP + heads) * NUM_SPLITS + split
        tl.store(part_max + index, running_max, mask=row_valid)
        tl.store(part_sum + index, running_sum, mask=row_valid)
        tl.store(part_out + index[:, None] * HEAD_DIM + d[None, :], acc, mask=row_valid[:, None])


@triton.jit
def _decode_attention_reduce_kernel(
    part_out, part_max, part_sum, out, NUM_SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr
):
    row = tl.program_id(0)  # batch * num_q + head
    splits = tl.arange(0, NUM_SPLITS)
    d = tl.arange(0, HEAD_DIM)
    maxima = tl.load(part_max + row * NUM_SPLITS + splits)
    overall = tl.max(maxima, axis=0)
    # Splits past the sequence end hold max -inf and sum 0: their weight is exactly 0.
    weights = tl.exp(maxima - overall)
    total = tl.sum(tl.load(part_sum + row * NUM_SPLITS + splits) * weights, axis=0)
    partial = tl.load(part_out + (row * NUM_SPLITS + splits)[:, None] * HEAD_DIM + d[None, :])
    result = tl.sum(partial * weights[:, None], axis=0) / total
    tl.store(out + row * HEAD_DIM + d, result.to(out.dtype.element_ty))


def attention_splits(batch: int, num_kv: int, max_len: int, multiprocessors: int) -> tuple[int, int]:
    """(number of splits, keys per split): enough programs to fill the GPU twice over at small batch,
    but no split shorter than _MIN_SPLIT_KEYS: below that a second (reduce) launch costs more than
    the bandwidth it wins."""
    most = triton.next_power_of_2(triton.cdiv(max_len, _MIN_SPLIT_KEYS))
    wanted = triton.next_power_of_2(triton.cdiv(2 * multiprocessors, batch * num_kv))
    splits = max(1, min(wanted, most))
    per_split = triton.cdiv(triton.cdiv(max_len, splits), _ATTENTION_BLOCK_N) * _ATTENTION_BLOCK_N
    return splits, per_split


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
    positions: torch.Tensor, out: torch.Tensor, multiprocessors: int,
) -> None:
    """One query token per sequence against its slot's cache rows 0..position (GQA, split over keys).

    q [B, Hq, D]; caches [slots, max_len, Hkv, D]; slots/positions [B]; out [B, Hq, D].
    """
    batch, num_q, head_dim = q.shape
    max_len, num_kv = k_cache.shape[1], k_cache.shape[2]
    splits, per_split = attention_splits(batch, num_kv, max_len, multiprocessors)
    if splits == 1:
        part_out = part_max = part_sum = out
    else:
        part_out = torch.empty(batch, num_q, splits, head_dim, device=q.device, dtype=torch.float32)
        part_max = torch.empty(batch, num_q, splits, device=q.device, dtype=torch.float32)
        part_sum = torch.empty_like(part_max)
    _decode_attention_partial_kernel[(batch, num_kv, splits)](
        q, k_cache, v_cache, slots, positions, part_out, part_max, part_sum,
        k_cache.stride(0), k_cache.stride(1), head_dim**-0.5,
        NUM_KV=num_kv, GROUP=num_q // num_kv, HEAD_DIM=head_dim, SPLIT=per_split, NUM_SPLITS=splits,
        BLOCK_M=_ATTENTION_BLOCK_M, BLOCK_N=_ATTENTION_BLOCK_N, num_warps=4,
    )
    if splits > 1:
        _decode_attention_reduce_kernel[(batch * num_q,)](
            part_out, part_max, part_sum, out, NUM_SPLITS=splits, HEAD_DIM=head_dim, num_warps=4,
        )


@triton.jit
def _silu_mul_kernel(gate_up, out, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    dtype = out.dtype.element_ty
    gate = tl.load(gate_up + row * 2 * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gate_up + row * 2 * n_cols + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    activated = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out + row * n_cols + cols, (activated * up).to(dtype), mask=mask)


def silu_mul(gate_up: torch.Tensor, out: torch.Tensor) -> None:
    """out = silu(gate) * up for gate_up [T, 2I] = [gate | up]; out [T, I]."""
    rows, cols = out.shape
    block = 1024
    _silu_mul_kernel[(rows, triton.cdiv(cols, block))](gate_up, out, cols, BLOCK=block, num_warps=4)


PROLOGUE_NONE, PROLOGUE_NORM, PROLOGUE_SILU = 0, 1, 2
# The GEMV path serves batch 1 only: larger batches go to cuBLAS, whose GEMMs reuse each weight load.
GEMV_MAX_ROWS = 1


@triton.jit
def _gemv_kernel(
    x, delta, x_out, norm_weight, weight, out, K, N, eps,
    PROLOGUE: tl.constexpr, HAS_DELTA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out = prologue(x) @ weight.T for one row x (the batch-1 decode step); BLOCK_N outputs a program.

    PROLOGUE_NORM: operand = RMSNorm(x + delta) (fp32 statistics, rounded like the torch module), the
    whole row in one block (BLOCK_K >= K); program 0 also stores x + delta into x_out, the next residual
    stream. PROLOGUE_SILU: x = [gate | up] with 2K columns, operand = silu(gate) * up. Each program
    redoes the (2 KB) prologue for its outputs, which is cheaper than the launch it saves.
    """
    pid = tl.program_id(0)
    dtype = out.dtype.element_ty
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_valid = cols < N
    acc = tl.zeros([BLOCK_N], tl.float32)
    if PROLOGUE == 1:
        k = tl.arange(0, BLOCK_K)
        k_valid = k < K
        v = tl.load(x + k, mask=k_valid, other=0.0).to(tl.float32)
        if HAS_DELTA:
            v = (v + tl.load(delta + k, mask=k_valid, other=0.0).to(tl.float32)).to(dtype).to(tl.float32)
            if pid == 0:
                tl.store(x_out + k, v.to(dtype), mask=k_valid)
        inverse = tl.rsqrt(tl.sum(v * v, axis=0) / K + eps)
        w = tl.load(norm_weight + k, mask=k_valid, other=0.0).to(tl.float32)
        operand = (w * (v * inverse).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
        tile = tl.load(weight + cols[:, None] * K + k[None, :], mask=col_valid[:, None] & k_valid[None, :],
                       other=0.0)
        acc += tl.sum(tile.to(tl.float32) * operand[None, :], axis=1)
    else:
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_valid = k < K
            if PROLOGUE == 2:
                gate = tl.load(x + k, mask=k_valid, other=0.0).to(tl.float32)
                up = tl.load(x + K + k, mask=k_valid, other=0.0).to(tl.float32)
                operand = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
                operand = (operand * up).to(dtype).to(tl.float32)
            else:
                operand = tl.load(x + k, mask=k_valid, other=0.0).to(tl.float32)
            tile = tl.load(weight + cols[:, None] * K + k[None, :], mask=col_valid[:, None] & k_valid[None, :],
                           other=0.0)
            acc += tl.sum(tile.to(tl.float32) * operand[None, :], axis=1)
    tl.store(out + cols, acc.to(dtype), mask=col_valid)


def gemv(
    x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, prologue: int = PROLOGUE_NONE,
    delta: torch.Tensor | None = None, x_out: torch.Tensor | None = None, norm_weight: torch.Tensor | None = None,
    eps: float = 0.0, block_n: int = 8, block_k: int = 1024, num_warps: int = 4,
) -> None:
    """out [1, N] = prologue(x) @ weight.T with weight [N, K] (see _gemv_kernel)."""
    n, k = weight.shape
    if prologue == PROLOGUE_NORM:
        block_k = triton.next_power_of_2(k)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, x if delta is None else delta, x if x_out is None else x_out, weight if norm_weight is None else norm_weight,
        weight, out, k, n, eps,
        PROLOGUE=prologue, HAS_DELTA=delta is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
    )
