"""The PyTorch backend: device/dtype choice, model construction, batched encode + generate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...checkpoint import ModelConfig
from ...errors import UsageError
from ...prompt import PromptIds
from .. import TokenSink, dtype_name
from .engine import GenerationRequest, GreedyEngine
from .model import FunASRNano
from .quantize import quantize_llm_int8


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available: use device='cpu' or 'auto'")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    name = dtype_name(dtype)
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, torch.Tensor],
        stop_ids: Sequence[int],
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        source: str = "model.pt",
        int8: bool = False,
    ):
        """int8: dynamic int8 LLM linears (CPU only; faster decoding, ids may differ from fp32)."""
        self.torch_device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        self.device = str(self.torch_device)
        if int8 and (self.torch_device.type != "cpu" or self.dtype != torch.float32):
            raise UsageError("int8 weights are for the CPU path: use device='cpu' with dtype 'auto' or 'float32'")
        self.model = FunASRNano.from_state_dict(config, tensors, self.torch_device, self.dtype, source)
        if int8:
            quantize_llm_int8(self.model.llm)
        self.engine = GreedyEngine(self.model.llm, stop_ids, max_batch=batch_size)
        self.batch_size = batch_size

    @torch.inference_mode()
    def generate(
        self,
        waveforms: Sequence[np.ndarray],
        prompts: Sequence[PromptIds],
        max_new_tokens: Sequence[int],
        on_tokens: TokenSink | None = None,
    ) -> list[list[int]]:
        # Encoder batches of similar lengths waste little on padding; the engine sees input order.
        order = sorted(range(len(waveforms)), key=lambda i: -len(waveforms[i]))
        embeddings: list[torch.Tensor | None] = [None] * len(waveforms)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.model.encode_waveforms([torch.from_numpy(waveforms[i]) for i in chunk])
            for index, audio in zip(chunk, encoded, strict=True):
                embeddings[index] = self.model.prompt_embeddings(prompts[index], audio)
        return self.engine.generate(
            [GenerationRequest(e, n) for e, n in zip(embeddings, max_new_tokens, strict=True) if e is not None],
            on_tokens,
        )
