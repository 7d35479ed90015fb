"""The PyTorch backend: device/dtype choice, model construction, batched encode + generate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import UsageError, option
from ...frontend.features import num_samples_to_lfr_frames
from ...text.prompt import PromptIds, num_audio_tokens
from .. import AlignRequest, SegmentFits, SegmentRefill, TokenSink, dtype_name
from .ctc_head import CTCHead
from .engine import GenerationRequest, GreedyEngine, Refill
from .model import FunASRNanoTorch as FunASRNano
from .quantize import quantize_llm_int8


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(
            f"unknown device {device!r}: use {option('device', 'auto')}, {option('device', 'cpu')} or "
            f"{option('device', 'cuda')}[:N]"
        ) from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{option('device', device)} requested but no CUDA GPU is available: use {option('device', 'cpu')} "
            f"or {option('device', 'auto')}"
        )
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
        ctc_tensors: dict[str, torch.Tensor] | None = None,
        ctc_source: str | None = None,
    ):
        """int8: weight-only int8 LLM linears and LM head (CPU only; faster decoding, ids may differ from fp32).
        ctc_tensors: the CTC head's tensors (``ctc_decoder.*``, ``ctc.*``), from ``ctc_source``; without them
        (or without a CTC head in the config) there is no alignment."""
        self.torch_device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        self.device = str(self.torch_device)
        if int8 and self.torch_device.type != "cpu":
            raise UsageError(f"int8 weights are for the CPU path: use {option('device', 'cpu')}")
        self.model = FunASRNano.from_state_dict(config, tensors, self.torch_device, self.dtype, source)
        if int8:
            quantize_llm_int8(self.model.llm)
        self.ctc_head: CTCHead | None = None
        if ctc_tensors and config.ctc is not None:
            self.ctc_head = CTCHead.from_tensors(config.ctc, ctc_tensors, self.torch_device, ctc_source or source)
        self.engine = GreedyEngine(self.model.llm, stop_ids, max_batch=batch_size)
        self.batch_size = batch_size
        # Taking segments into a running decode needs a cache sized for a full batch from the start:
        # cheap on a GPU, but gigabytes of fp32 on a CPU, where it stays off.
        self.accepts_refill = self.torch_device.type == "cuda"

    def fits(self, max_positions: int) -> SegmentFits:
        """Whether a segment's prompt, audio and budget fit in ``max_positions`` (without encoding it)."""

        def fit(waveform: np.ndarray, prompt: PromptIds, budget: int) -> bool:
            audio_tokens = num_audio_tokens(num_samples_to_lfr_frames(len(waveform)))
            return prompt.total_length(audio_tokens) + budget <= max_positions

        return fit

    @torch.inference_mode()
    def generate(
        self,
        waveforms: Sequence[np.ndarray],
        prompts: Sequence[PromptIds],
        max_new_tokens: Sequence[int],
        on_tokens: TokenSink | None = None,
        refill: SegmentRefill | None = None,
        on_done: TokenSink | None = None,
        align: AlignRequest | None = None,
    ) -> list[list[int]]:
        """align: run the CTC head on the encoder output of this call and align each input's text (the
        call then takes no refill: the alignments are computed together at its end)."""
        head = self.ctc_head if align is not None else None
        engine_refill: Refill | None = None
        if refill is not None and head is None:

            def engine_refill(free: int, max_positions: int) -> list[GenerationRequest]:
                work = refill(free, self.fits(max_positions))
                embeddings, _ = self._prompt_embeddings([w for w, _, _ in work], [p for _, p, _ in work])
                return [GenerationRequest(e, n) for e, (_, _, n) in zip(embeddings, work, strict=True)]

        embeddings, hidden = self._prompt_embeddings(waveforms, prompts, head)
        requests = [GenerationRequest(e, n) for e, n in zip(embeddings, max_new_tokens, strict=True)]
        generated = self.engine.generate(requests, on_tokens, engine_refill, on_done)
        if head is not None and align is not None and hidden is not None:
            targets = [align.targets(i, tokens) for i, tokens in enumerate(generated)]
            for index, result in enumerate(head.run(hidden, targets)):
                if result is not None:
                    align.on_aligned(index, result)
        return generated

    def _prompt_embeddings(
        self, waveforms: Sequence[np.ndarray], prompts: Sequence[PromptIds], head: CTCHead | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Prompt embeddings in input order, and with ``head`` the ctc_decoder output of each input."""
        # Encoder batches of similar lengths waste little on padding; the result is in input order.
        order = sorted(range(len(waveforms)), key=lambda i: -len(waveforms[i]))
        embeddings: list[torch.Tensor] = [torch.empty(0)] * len(waveforms)
        hidden: list[torch.Tensor] = [torch.empty(0)] * len(waveforms)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded, ctc_hidden = self.model.encode_waveforms_with_ctc(
                [torch.from_numpy(waveforms[i]) for i in chunk], head)
            for slot, (index, audio) in enumerate(zip(chunk, encoded, strict=True)):
                embeddings[index] = self.model.prompt_embeddings(prompts[index], audio)
                if ctc_hidden is not None:
                    hidden[index] = ctc_hidden[slot]
        return embeddings, hidden if head is not None else None
