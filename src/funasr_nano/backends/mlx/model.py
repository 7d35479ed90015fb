"""Fun-ASR-Nano in MLX: the module tree, weights from ``model.pt`` or a converted file, audio encoding and
prompt embedding. Parameter paths equal the official state-dict keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch
from mlx import nn
from mlx.utils import tree_flatten

from ...checkpoint import check_shapes, tie_lm_head
from ...config import ModelConfig
from ...errors import ModelLoadError
from ...text.prompt import PromptIds, num_audio_tokens
from .adaptor import AudioAdaptor
from .ctc_head import CTCHead
from .encoder import SenseVoiceEncoder, padding_masks
from .qwen3 import Qwen3ForCausalLM

FSMN_SUFFIX = ".fsmn_block.weight"


class FunASRNanoMLX(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = SenseVoiceEncoder(config.encoder)
        self.audio_adaptor = AudioAdaptor(config.adaptor)
        self.llm = Qwen3ForCausalLM(config.llm)

    @property
    def dtype(self) -> mx.Dtype:
        return self.llm.model.norm.weight.dtype

    def encode(self, features: Sequence[np.ndarray]) -> list[mx.array]:
        """LFR features [T_i, 560] -> audio embeddings [ceil(T_i/8), llm_dim] (one batched pass)."""
        return self.encode_with_ctc(features, None)[0]

    def encode_with_ctc(
        self, features: Sequence[np.ndarray], ctc_head: CTCHead | None
    ) -> tuple[list[mx.array], list[mx.array] | None]:
        """LFR features [T_i, 560] -> audio embeddings [ceil(T_i/8), llm_dim] (one batched pass), and with
        ``ctc_head`` its ctc_decoder output [T_i, W] (float32) on the same encoder output (for alignment)."""
        lengths = [f.shape[0] for f in features]
        frames = max(lengths)
        padded = np.stack([np.pad(f, ((0, frames - f.shape[0]), (0, 0))) for f in features])
        frame_mask, key_mask = padding_masks(lengths, frames, self.dtype)
        encoded = self.audio_encoder(mx.array(padded).astype(self.dtype), frame_mask, key_mask)
        adapted = self.audio_adaptor(encoded, key_mask)
        audio = [adapted[i, : num_audio_tokens(n)] for i, n in enumerate(lengths)]
        if ctc_head is None:
            return audio, None
        hidden = ctc_head.hidden(encoded, key_mask)
        return audio, [hidden[i, :n] for i, n in enumerate(lengths)]

    def prompt_embeddings(self, prompt: PromptIds, audio: mx.array) -> mx.array:
        """[len(prefix) + n_audio + len(suffix), H]: text embeddings around the audio embeddings."""
        prefix = self.llm.embed(mx.array(prompt.prefix, dtype=mx.int32))
        suffix = self.llm.embed(mx.array(prompt.suffix, dtype=mx.int32))
        return mx.concatenate([prefix, audio.astype(prefix.dtype), suffix])


def _torch_layout(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # MLX depthwise conv weights are [channels, kernel, 1]; the checkpoint has torch's [channels, 1, kernel].
    return (shape[0], shape[2], shape[1]) if name.endswith(FSMN_SUFFIX) else shape


def to_mlx(name: str, tensor: torch.Tensor) -> mx.array:
    tensor = tensor.contiguous()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: move the raw bits
        array = mx.array(tensor.view(torch.int16).numpy()).view(mx.bfloat16)
    else:
        array = mx.array(tensor.numpy())
    return array.transpose(0, 2, 1) if name.endswith(FSMN_SUFFIX) else array


def arrays_from_state_dict(
    model: FunASRNanoMLX, tensors: Mapping[str, torch.Tensor], source: str
) -> dict[str, mx.array]:
    """Official tensors (checked against the model's shapes) -> MLX arrays keyed by parameter path."""
    tensors = tie_lm_head(tensors, model.config.llm.tie_word_embeddings)
    expected = {k: _torch_layout(k, tuple(v.shape)) for k, v in tree_flatten(model.parameters())}
    check_shapes(tensors, expected, source)
    return {k: to_mlx(k, v) for k, v in tensors.items()}


def check_array_shapes(model: FunASRNanoMLX, arrays: Mapping[str, mx.array], source: Path) -> None:
    """One clear line for a converted file that does not fit this config (not MLX's multi-line list)."""
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    wrong = [k for k in expected if k in arrays and tuple(arrays[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise ModelLoadError(
            f"{source} does not match config.yaml/Qwen3-0.6B/config.json ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} misshapen tensors; first: {first}): convert again"
        )


def load_arrays(model: FunASRNanoMLX, arrays: dict[str, mx.array], dtype: mx.Dtype) -> None:
    """Assign the arrays (emptying the dict), floating ones cast to dtype one at a time, so a source array
    is released as soon as its cast copy exists."""
    loaded: list[tuple[str, mx.array]] = []
    while arrays:
        name, array = arrays.popitem()
        if mx.issubdtype(array.dtype, mx.floating):
            array = array.astype(dtype)
        mx.eval(array)
        loaded.append((name, array))
    model.load_weights(loaded, strict=True)
