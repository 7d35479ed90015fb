"""The CTC head in PyTorch: ``ctc_decoder`` (the adaptor's Transformer on the encoder output) and
``ctc.ctc_lo``; log-softmax over the CTC vocabulary, always in float32 (the official head is fp32)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import check_shapes
from ...config import CTCConfig
from ..alignment import CTCResult, forced_align
from .adaptor import AudioAdaptor
from .encoder import padding_masks


class _CTC(nn.Module):
    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(width, vocab_size)


class CTCHead(nn.Module):
    def __init__(self, config: CTCConfig):
        super().__init__()
        self.config = config
        self.ctc_decoder = AudioAdaptor(config.decoder)
        self.ctc = _CTC(config.decoder.llm_dim, config.vocab_size)

    @staticmethod
    def expected_shapes(config: CTCConfig) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            head = CTCHead(config)
        return {k: tuple(v.shape) for k, v in head.state_dict().items()}

    @classmethod
    def from_tensors(
        cls, config: CTCConfig, tensors: dict[str, torch.Tensor], device: torch.device, source: str
    ) -> CTCHead:
        """Keys as in the official checkpoint (``ctc_decoder.*``, ``ctc.ctc_lo.*``); a shape or key that does
        not match this model's config is one ModelLoadError line."""
        check_shapes(tensors, cls.expected_shapes(config), f"ctc head {source}")
        with torch.device("meta"):
            head = cls(config)
        head.load_state_dict({k: v.to(device=device, dtype=torch.float32) for k, v in tensors.items()}, assign=True)
        return head.eval()

    @torch.inference_mode()
    def hidden(self, encoded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """encoder output [B, T, D] -> ctc_decoder output [B, T, W] (float32)."""
        _, key_mask = padding_masks(lengths, encoded.shape[1], torch.float32)
        return self.ctc_decoder(encoded.float(), key_mask)

    @torch.inference_mode()
    def greedy(self, hidden: Sequence[torch.Tensor]) -> list[list[int]]:
        """Per segment (hidden [T_i, W]): the best id of each frame (as the argmax of ``run``'s log-probs)."""
        return [self.ctc.ctc_lo(h).argmax(-1).tolist() for h in hidden]

    @torch.inference_mode()
    def run(self, hidden: Sequence[torch.Tensor], targets: Sequence[list[int] | None]) -> list[CTCResult | None]:
        """Per segment (hidden [T_i, W]): greedy ids and the alignment of its targets, all segments' Viterbi
        in one batch. None for segments whose targets are None (no CTC wanted)."""
        gathered: list[torch.Tensor] = []
        wanted: list[int] = []
        greedy: dict[int, list[int]] = {}
        for index, (h, target) in enumerate(zip(hidden, targets, strict=True)):
            if target is None:
                continue
            log_probs = F.log_softmax(self.ctc.ctc_lo(h), dim=-1)  # as the official CTC.log_softmax
            greedy[index] = log_probs.argmax(-1).tolist()
            columns = torch.tensor([self.config.blank_id, *target], device=log_probs.device)
            gathered.append(log_probs[:, columns])
            wanted.append(index)
        alignments = forced_align(gathered, [targets[i] or [] for i in wanted])
        results: list[CTCResult | None] = [None] * len(hidden)
        for index, alignment in zip(wanted, alignments, strict=True):
            results[index] = CTCResult(alignment, greedy[index])
        return results
