"""Fun-ASR-Nano in PyTorch: weight loading, batched audio encoding and prompt embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import check_shapes, tie_lm_head
from ...config import ModelConfig
from ...frontend.features import extract_features
from ...text.prompt import PromptIds, num_audio_tokens
from ..positions import sinusoidal_positions
from .adaptor import AudioAdaptor
from .ctc_head import CTCHead
from .encoder import SenseVoiceEncoder, padding_masks
from .fused import supports_fused_decode
from .qwen3 import Qwen3ForCausalLM, RotaryTable

if TYPE_CHECKING:
    from .cuda_graphs import ShapeGraphs

# Encoder CUDA graphs: a batch is padded to a power of two rows and a multiple of this many LFR frames
# (1.92 s), so that a few dozen graphs cover every call.
GRAPH_FRAMES = 32
GRAPH_MAX_FRAMES = 1024  # 61 s of audio; longer calls (a whole upload without VAD) run eagerly
GRAPH_MAX_CELLS = 256 * 512  # rows x frames of the largest graph: 256 rows of 30 s, or 128 of 61 s
GRAPH_CAPACITY = 288  # every bucket of rows and frames under those bounds


def graph_shape(counts: list[int]) -> tuple[int, int] | None:
    """(rows, frames) of the encoder graph for a batch of these LFR frame counts, None where it runs eagerly."""
    rows = 1 << (len(counts) - 1).bit_length()
    frames = -(-max(counts) // GRAPH_FRAMES) * GRAPH_FRAMES
    return (rows, frames) if frames <= GRAPH_MAX_FRAMES and rows * frames <= GRAPH_MAX_CELLS else None


class FunASRNanoTorch(nn.Module):
    """The model's modules under their official names (``audio_encoder``, ``audio_adaptor``, ``llm``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = SenseVoiceEncoder(config.encoder)
        self.audio_adaptor = AudioAdaptor(config.adaptor)
        self.llm = Qwen3ForCausalLM(config.llm)
        self.encoder_graphs: ShapeGraphs | None = None  # see use_encoder_graphs

    @classmethod
    def from_state_dict(
        cls,
        config: ModelConfig,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        source: str = "model.pt",
    ) -> FunASRNanoTorch:
        """Build on the meta device and take each tensor over with one conversion: no second full copy."""
        with torch.device("meta"):
            model = cls(config)
        tied = config.llm.tie_word_embeddings
        tensors = tie_lm_head(tensors, tied)
        # Parameters, not the state dict: a tied head is the embedding's parameter and has no tensor of its own.
        check_shapes(tensors, {k: tuple(v.shape) for k, v in model.named_parameters()}, source)
        converted = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
        model.load_state_dict(converted, strict=False, assign=True)
        # The model now holds the only references: fusing below frees each layer's separate weights as it goes.
        del converted
        if tied:
            model.llm.tie_weights()  # assign=True gave the embedding a new parameter: the head shares it again
        if supports_fused_decode(device, dtype):
            model.llm.fuse_projections()
        # Buffers built on meta (rotary tables) are recomputed for real.
        model.llm.rotary = RotaryTable(config.llm).to(device)
        return model.eval()

    def encode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """LFR features [T_i, 560] -> audio embeddings [ceil(T_i/8), llm_dim] (one batched pass)."""
        return self.encode_with_ctc(features, None)[0]

    def encode_waveforms(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.encode_waveforms_with_ctc(waveforms, None)[0]

    @torch.inference_mode()
    def encode_with_ctc(
        self, features: list[torch.Tensor], ctc_head: CTCHead | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """LFR features [T_i, 560] -> audio embeddings [ceil(T_i/8), llm_dim] (one batched pass), and with
        ``ctc_head`` its ctc_decoder output [T_i, W] on the same encoder output (for alignment)."""
        param = self.llm.model.embed_tokens.weight
        counts = [f.shape[0] for f in features]
        if self.encoder_graphs is not None and ctc_head is None and graph_shape(counts) is not None:
            adapted = self.encoder_graphs(*self.graph_inputs(features))
            return [adapted[i, : num_audio_tokens(n)] for i, n in enumerate(counts)], None
        lengths = torch.tensor(counts, device=param.device)
        padded = nn.utils.rnn.pad_sequence(list(features), batch_first=True).to(device=param.device, dtype=param.dtype)
        encoded = self.audio_encoder(padded, lengths)
        _, key_mask = padding_masks(lengths, padded.shape[1], padded.dtype)
        adapted = self.audio_adaptor(encoded, key_mask)
        audio = [adapted[i, : num_audio_tokens(n)] for i, n in enumerate(counts)]
        if ctc_head is None:
            return audio, None
        hidden = ctc_head.hidden(encoded, lengths)
        return audio, [hidden[i, :n] for i, n in enumerate(counts)]

    def use_encoder_graphs(self) -> None:
        """Encode through CUDA graphs: one launch a call instead of ~1,900 (the eager encoder is bound by
        launches), and a server's many small calls hold no GIL meanwhile. Each row's output is the same as
        the eager batch's up to the float rounding a different batch shape gives (more padding, always a
        key mask)."""
        from .cuda_graphs import ShapeGraphs

        self.encoder_graphs = ShapeGraphs(self._encode_padded, capacity=GRAPH_CAPACITY)

    def graph_inputs(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder graph's inputs for a batch: features padded to a power of two rows and a multiple of
        ``GRAPH_FRAMES`` frames, the lengths (0 for the extra rows) and the position table."""
        param = self.llm.model.embed_tokens.weight
        counts = [f.shape[0] for f in features]
        shape = graph_shape(counts)
        assert shape is not None, "a batch past the graph bounds runs eagerly"
        rows, frames = shape
        batch = nn.utils.rnn.pad_sequence(list(features), batch_first=True).to(device=param.device, dtype=param.dtype)
        padded = F.pad(batch, (0, 0, 0, frames - batch.shape[1], 0, rows - batch.shape[0]))
        lengths = torch.tensor(counts + [0] * (rows - len(counts)), device=param.device)
        return padded, lengths, sinusoidal_positions(frames, padded.shape[2], padded.device)

    def _encode_padded(self, padded: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        encoded = self.audio_encoder(padded, lengths, positions)
        _, key_mask = padding_masks(lengths, padded.shape[1], padded.dtype, always=True)
        return self.audio_adaptor(encoded, key_mask)

    def encode_waveforms_with_ctc(
        self, waveforms: list[torch.Tensor], ctc_head: CTCHead | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        device = self.llm.model.embed_tokens.weight.device
        return self.encode_with_ctc(extract_features([w.to(device) for w in waveforms]), ctc_head)

    @torch.inference_mode()
    def prompt_embeddings(self, prompt: PromptIds, audio: torch.Tensor) -> torch.Tensor:
        """[len(prefix) + n_audio + len(suffix), H]: text embeddings around the audio embeddings."""
        device = audio.device
        prefix = self.llm.embed(torch.tensor(prompt.prefix, device=device, dtype=torch.long))
        suffix = self.llm.embed(torch.tensor(prompt.suffix, device=device, dtype=torch.long))
        return torch.cat([prefix, audio.to(prefix.dtype), suffix])

