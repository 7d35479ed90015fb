"""Optional int8 weights for the CPU path: dynamic quantization of the LLM linears and the LM head.

Decoding on a CPU reads every LLM weight once per token, so it runs at memory speed: int8 weights
(per output channel) with per-token int8 activations read a quarter of the fp32 bytes. The audio
encoder stays fp32: it runs once per segment and is compute bound, and its errors would feed every
generated token. Greedy ids then differ from fp32 wherever the top two logits are close; the
benchmarks report the agreement.
"""

from __future__ import annotations

import warnings

from torch import nn

from .qwen3 import Qwen3ForCausalLM


def quantize_llm_int8(llm: Qwen3ForCausalLM) -> None:
    """Swap every linear of the decoder layers and the LM head for a dynamic int8 one (in place)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {nn.Linear: per_channel_dynamic_qconfig}
    with warnings.catch_warnings():
        # torch >= 2.10 warns that quantized tensor types are deprecated; they still work through 2.13.
        warnings.simplefilter("ignore")
        quantize_dynamic(llm.model.layers, spec, inplace=True)
        # quantize_dynamic swaps children only: wrap the head so it is a child. The tied embedding
        # table keeps its float copy for lookups.
        holder = nn.Sequential(llm.lm_head)
        quantize_dynamic(holder, spec, inplace=True)
        llm.lm_head = holder[0]
