"""Optional int8 weights for the CPU path: weight-only int8 LLM linears and LM head.

Decoding on a CPU reads every LLM weight once per token, so it runs at memory speed: int8 weights
with one scale per output channel read a quarter of the fp32 bytes. Activations stay in floating
point (rounded to bf16 for the matmul, the input type of PyTorch's int8-weight CPU kernel), so the
error is the weights' rounding alone, not the activations' as with dynamic quantization. The audio
encoder keeps the chosen dtype: it runs once per segment and is compute bound, and its errors would
feed every generated token.
"""

from __future__ import annotations

import torch
from torch import nn

from .qwen3 import Qwen3ForCausalLM


class Int8Linear(nn.Module):
    """A bias-free linear layer whose weight is int8 with a bf16 scale per output channel."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        weight = weight.detach().float()
        # The kernel takes bf16 scales: round the scale up to bf16 first (2**-7 is bf16's relative
        # step) and quantise with the rounded value, so no weight needs clamping.
        largest = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.bfloat16).tiny)
        scale = (largest / 127 * (1 + 2**-7)).to(torch.bfloat16)
        self.register_buffer("qweight", torch.round(weight / scale.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale)
        return out.reshape(*x.shape[:-1], -1).to(x.dtype)


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.bias is None:
            setattr(module, name, Int8Linear(child.weight))
        else:
            _swap_linears(child)


def quantize_llm_int8(llm: Qwen3ForCausalLM) -> None:
    """Swap every linear of the decoder layers and the LM head for a weight-only int8 one (in place).

    The tied embedding table keeps its float copy for lookups.
    """
    _swap_linears(llm.model.layers)
    llm.lm_head = Int8Linear(llm.lm_head.weight)
