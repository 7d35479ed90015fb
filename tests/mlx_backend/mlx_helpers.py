"""Shared pieces of the MLX backend tests (tests/mlx_backend/): the tolerance, relative errors across numpy,
MLX and torch arrays, prompt ids of a reference prompt, and logits from the MLX and torch LLMs. Imports
mlx: the test modules import it after their own ``pytest.importorskip("mlx.core")``."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import torch

from funasr_nano.backends.mlx.qwen3 import KVCache
from funasr_nano.backends.torch import qwen3 as torch_qwen3

RELATIVE_TOLERANCE = 1e-4
Array = np.ndarray | mx.array | torch.Tensor


def relative_error(ours: Array, theirs: Array) -> float:
    a, b = (np.asarray(t.float() if isinstance(t, torch.Tensor) else t, np.float64) for t in (ours, theirs))
    return float(np.abs(a - b).max() / np.abs(b).max())


def prompt_ids(model, prompt):
    return model.tokenizer.prompt_ids(prompt["hotwords"], prompt["language"], prompt["itn"])


def mlx_logits(model, embeddings: mx.array, last: int) -> np.ndarray:
    """Logits [last, V] of the final ``last`` positions of one sequence (prefill from position 0)."""
    llm = model.backend.model.llm
    cache = KVCache(llm.config, 1, embeddings.shape[0], embeddings.dtype)
    hidden = llm(embeddings[None], cache, mx.array([0]), "causal")
    return np.array(llm.logits(hidden[0, -last:]))


def torch_last_logits(llm: torch_qwen3.Qwen3ForCausalLM, embeddings: torch.Tensor) -> torch.Tensor:
    length = embeddings.shape[0]
    cache = torch_qwen3.KVCache.allocate(llm.config, 1, length, torch.device("cpu"), torch.float32)
    positions = torch.arange(length)[None]
    group = llm.config.num_heads // llm.config.num_kv_heads
    mask = torch_qwen3.attention_mask(positions, torch.tensor([length]), length, group)
    with torch.inference_mode():
        return llm.logits(llm(embeddings[None], cache, torch.tensor([0]), positions, mask, length)[0, -1])


def teacher_forced_logits(model, prompt, wav: np.ndarray, ids: list[int]) -> np.ndarray:
    """Logits predicting each of ``ids`` given the prompt and the ids before it."""
    backend = model.backend
    audio = backend.encode_waveforms([wav])[0]
    embeddings = backend.model.prompt_embeddings(prompt_ids(model, prompt), audio)
    embeddings = mx.concatenate([embeddings, backend.model.llm.embed(mx.array(ids[:-1]))])
    return mlx_logits(model, embeddings, len(ids))
