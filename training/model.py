"""The demo model for training: the package's own encoder, adaptor and Qwen3 modules (so the
parameter names are the official ones), a cache-free causal forward for the LLM, and the CTC head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from funasr_nano.backends.torch.adaptor import AudioAdaptor
from funasr_nano.backends.torch.encoder import SenseVoiceEncoder, padding_masks
from funasr_nano.backends.torch.qwen3 import Qwen3ForCausalLM, rotate_half
from funasr_nano.checkpoint import EMBED_KEY, LM_HEAD_KEY
from funasr_nano.config import AdaptorConfig, EncoderConfig, LLMConfig


@dataclass(frozen=True)
class DemoSizes:
    encoder: EncoderConfig
    adaptor: AdaptorConfig
    llm: LLMConfig
    ctc_decoder: AdaptorConfig
    ctc_vocab: int


def demo_sizes(llm_vocab: int, ctc_vocab: int) -> DemoSizes:
    encoder = EncoderConfig(output_size=256, attention_heads=4, linear_units=768, num_blocks=5, tp_blocks=2)
    llm = LLMConfig(
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        vocab_size=llm_vocab,
    )
    adaptor = AdaptorConfig(encoder_dim=256, llm_dim=256, ffn_dim=1024, n_layer=2, attention_heads=8)
    ctc_decoder = AdaptorConfig(encoder_dim=256, llm_dim=256, ffn_dim=512, n_layer=1, attention_heads=8)
    return DemoSizes(encoder, adaptor, llm, ctc_decoder, ctc_vocab)


class CTCHead(nn.Module):
    def __init__(self, size: int, vocab: int):
        super().__init__()
        self.ctc_lo = nn.Linear(size, vocab)


class DemoModel(nn.Module):
    def __init__(self, sizes: DemoSizes):
        super().__init__()
        self.sizes = sizes
        self.audio_encoder = SenseVoiceEncoder(sizes.encoder)
        self.audio_adaptor = AudioAdaptor(sizes.adaptor)
        self.llm = Qwen3ForCausalLM(sizes.llm)
        # Qwen's initialisation (std 0.02): torch's default N(0, 1) makes the tied head's logits huge.
        nn.init.normal_(self.llm.model.embed_tokens.weight, std=0.02)
        self.ctc_decoder = AudioAdaptor(sizes.ctc_decoder)
        self.ctc = CTCHead(sizes.ctc_decoder.llm_dim, sizes.ctc_vocab)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoded = self.audio_encoder(features, lengths)
        _, key_mask = padding_masks(lengths, features.shape[1], encoded.dtype)
        return encoded, key_mask

    def ctc_log_probs(self, encoded: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return F.log_softmax(self.ctc.ctc_lo(self.ctc_decoder(encoded, key_mask)).float(), dim=-1)

    def llm_hidden(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Causal forward over right-padded rows [B, L, H] (positions 0..L-1), no cache."""
        llm = self.llm
        cfg = llm.config
        batch, length, _ = embeddings.shape
        positions = torch.arange(length, device=embeddings.device)[None].expand(batch, length)
        cos, sin = (t[:, :, None, :] for t in llm.rotary(positions, embeddings.dtype))
        hidden = embeddings
        for layer in llm.model.layers:
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_norm(attn.q_proj(x).view(batch, length, cfg.num_heads, cfg.head_dim))
            k = attn.k_norm(attn.k_proj(x).view(batch, length, cfg.num_kv_heads, cfg.head_dim))
            v = attn.v_proj(x).view(batch, length, cfg.num_kv_heads, cfg.head_dim)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            )
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return llm.model.norm(hidden)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Keys as in the official checkpoint, with ``llm.lm_head.weight`` stored beside the embedding."""
        state = {k: v.detach() for k, v in self.state_dict().items() if not k.startswith("llm.rotary")}
        state[LM_HEAD_KEY] = state[EMBED_KEY].clone()
        return state
