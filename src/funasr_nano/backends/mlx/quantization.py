"""MLX affine quantization of Fun-ASR-Nano: the LLM linears and the (tied) embedding/LM head, optionally
the audio encoder and adaptor."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mlx import nn

from ...checkpoint import ADAPTOR_PREFIX, ENCODER_PREFIX, LLM_PREFIX
from ...errors import UsageError

SUPPORTED_BITS = (4, 8)
DEFAULT_GROUP_SIZE = 64


@dataclass(frozen=True)
class Quantization:
    bits: int
    group_size: int = DEFAULT_GROUP_SIZE
    audio: bool = False  # also quantize the encoder and adaptor linears
    # Module paths that were quantized; recorded at conversion so loading never re-derives the choice.
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise UsageError(f"quantization bits must be 4 or 8, not {self.bits}")
        if self.group_size not in (32, 64, 128):
            raise UsageError(f"quantization group size must be 32, 64 or 128, not {self.group_size}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Quantization:
        fields = json.loads(text)
        return cls(
            int(fields["bits"]), int(fields["group_size"]), bool(fields["audio"]), tuple(fields["modules"])
        )


def _eligible(path: str, module: nn.Module, quantization: Quantization) -> bool:
    if not isinstance(module, (nn.Linear, nn.Embedding)):
        return False
    if not (path.startswith(LLM_PREFIX) or (quantization.audio and path.startswith((ENCODER_PREFIX, ADAPTOR_PREFIX)))):
        return False
    # Groups run along the input dimension; widths that do not divide (the 560-wide first encoder layer,
    # tiny test models) stay in full precision.
    return module.weight.shape[-1] % quantization.group_size == 0


def quantize_model(model: nn.Module, quantization: Quantization) -> Quantization:
    """Quantize eligible modules in place; returns the quantization with the module list filled in."""
    chosen: list[str] = []

    def predicate(path: str, module: nn.Module) -> bool:
        if _eligible(path, module, quantization):
            chosen.append(path)
            return True
        return False

    nn.quantize(model, quantization.group_size, quantization.bits, class_predicate=predicate)
    return Quantization(quantization.bits, quantization.group_size, quantization.audio, tuple(chosen))


def apply_layout(model: nn.Module, quantization: Quantization) -> None:
    """Give a freshly built model the quantized modules a converted file holds (weights loaded later)."""
    wanted = set(quantization.modules)
    nn.quantize(
        model, quantization.group_size, quantization.bits,
        class_predicate=lambda path, module: path in wanted and hasattr(module, "to_quantized"),
    )
