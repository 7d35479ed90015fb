"""The CTC head in MLX, mirroring ``backends/torch/ctc_head.py``: ``ctc_decoder`` (the MLX adaptor's
Transformer, :class:`.adaptor.AudioAdaptor`, on the encoder output) and ``ctc.ctc_lo``; log-softmax over
the CTC vocabulary, always in float32 (the official head is fp32) and never quantized.

The forced alignment is the backend-neutral one (:func:`funasr_nano.backends.alignment.forced_align`, torchaudio's
algorithm): only the gathered columns of the log-softmax ([T, 1 + L] per segment) leave MLX, and the
Viterbi runs on them in torch on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mlx.core as mx
import numpy as np
import torch
from mlx import nn
from mlx.utils import tree_flatten

from ...checkpoint import check_shapes
from ...config import CTCConfig
from ..alignment import CTCResult, forced_align
from .adaptor import AudioAdaptor


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

    @classmethod
    def from_tensors(cls, config: CTCConfig, tensors: Mapping[str, torch.Tensor | mx.array], source: str) -> CTCHead:
        """Keys as in the official checkpoint (``ctc_decoder.*``, ``ctc.ctc_lo.*``), torch tensors (from a
        ``model.pt``) or MLX arrays (from a converted copy); a shape or key that does not match this model's
        config is one ModelLoadError line. The weights are held in float32."""
        head = cls(config)
        expected = {k: tuple(v.shape) for k, v in tree_flatten(head.parameters())}
        check_shapes(dict(tensors), expected, f"ctc head {source}")
        weights = [(k, _float32(v)) for k, v in tensors.items()]
        mx.eval([w for _, w in weights])
        head.load_weights(weights, strict=True)
        return head

    def hidden(self, encoded: mx.array, key_mask: mx.array | None) -> mx.array:
        """encoder output [B, T, D] (padded; key_mask as for the encoder) -> ctc_decoder output [B, T, W]."""
        return self.ctc_decoder(encoded.astype(mx.float32), key_mask)

    def greedy(self, hidden: Sequence[mx.array]) -> list[list[int]]:
        """Per segment (hidden [T_i, W]): the best id of each frame (as the argmax of ``run``'s log-probs)."""
        return [mx.argmax(self.ctc.ctc_lo(h), axis=-1).tolist() for h in hidden]

    def run(self, hidden: Sequence[mx.array | None], targets: Sequence[list[int] | None]) -> list[CTCResult | None]:
        """Per segment (hidden [T_i, W]): greedy ids and the alignment of its targets, all segments' Viterbi
        in one batch. None for segments whose targets are None (no CTC wanted)."""
        gathered: list[torch.Tensor] = []
        wanted: list[int] = []
        greedy: dict[int, list[int]] = {}
        for index, (h, target) in enumerate(zip(hidden, targets, strict=True)):
            if target is None or h is None:
                continue
            # One segment at a time: the full log-softmax is frames x vocabulary (60,515 for the hub head).
            log_probs = nn.log_softmax(self.ctc.ctc_lo(h), axis=-1)  # as the official CTC.log_softmax
            columns = mx.take(log_probs, mx.array([self.config.blank_id, *target], dtype=mx.int32), axis=1)
            ids = mx.argmax(log_probs, axis=-1)
            mx.eval(columns, ids)
            greedy[index] = ids.tolist()
            gathered.append(torch.from_numpy(np.array(columns, copy=True)))
            wanted.append(index)
        alignments = forced_align(gathered, [targets[i] or [] for i in wanted])
        results: list[CTCResult | None] = [None] * len(hidden)
        for index, alignment in zip(wanted, alignments, strict=True):
            results[index] = CTCResult(alignment, greedy[index])
        return results


def _float32(value: torch.Tensor | mx.array) -> mx.array:
    if isinstance(value, mx.array):
        return value.astype(mx.float32)
    return mx.array(value.detach().to(torch.float32).contiguous().numpy())
