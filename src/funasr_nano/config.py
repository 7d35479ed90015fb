"""The settings of a model directory: ``config.yaml`` (FunASR's build config) and
``Qwen3-0.6B/config.json`` read into frozen dataclasses, every value checked.

The defaults are the hub models' values (architecture.md §1.3, §5.1); the facts the official code
fixes rather than reads (layer-norm eps) are fields with those values, so both backends take them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from .checkpoint import LLM_SUBDIR, MLX_WEIGHTS, is_file, require_readable_dir
from .dtypes import DTYPE_ALIASES
from .errors import ModelLoadError, UsageError, option, unreadable
from .frontend.features import FEATURE_DIM
from .text.languages import MLT_LANGUAGES, NANO_LANGUAGES

# `funasr-nano convert` records the variant in the copy's config.yaml under this key.
VARIANT_KEY = "funasr_nano_variant"
CTC_VOCAB_SIZE = 60515  # the official default when config.yaml gives no ctc_vocab_size
# The most positions a sequence (prompt plus new tokens) may take, whatever config.json allows (40960
# for Qwen3-0.6B). Far beyond what the model decodes well: it is trained on segments of at most 30 s,
# about 100 prompt positions and their text, and repeats itself on much longer ones. The cap keeps the
# torch backend's precomputed rotary table (cos and sin, float32) at 8 MiB instead of 40 MiB.
POSITION_CAP = 8192


@dataclass(frozen=True)
class EncoderConfig:
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    tp_blocks: int = 20
    kernel_size: int = 11
    sanm_shift: int = 0
    input_size: int = FEATURE_DIM
    # Not in config.yaml: the official SAN-M layers' LayerNorm default (every norm of the encoder).
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class AdaptorConfig:
    encoder_dim: int = 512
    llm_dim: int = 1024
    ffn_dim: int = 2048
    n_layer: int = 2
    attention_heads: int = 8
    downsample_rate: int = 1
    # Not in config.yaml: funasr.models.transformer.layer_norm.LayerNorm is torch's with eps 1e-12.
    layer_norm_eps: float = 1e-12


@dataclass(frozen=True)
class LLMConfig:
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_layers: int = 28
    num_heads: int = 16
    num_kv_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 151936
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40960
    # The official build casts the whole LLM to config.yaml's llm_dtype (bf16 on the hub) before
    # upcasting it for inference, which rounds the rotary inverse frequencies to that dtype.
    rotary_frequency_dtype: str = "bfloat16"
    # Generation stops on these (config.json's eos_token_id, as the official generate does); () = not given.
    eos_token_ids: tuple[int, ...] = ()

    @property
    def max_positions(self) -> int:
        """The one position limit of both backends: the rotary table's length and the longest sequence."""
        return min(self.max_position_embeddings, POSITION_CAP)


@dataclass(frozen=True)
class CTCConfig:
    """The CTC head: a Transformer adaptor on the encoder output (``ctc_decoder``), then ``ctc.ctc_lo``."""

    decoder: AdaptorConfig
    vocab_size: int = CTC_VOCAB_SIZE

    @property
    def blank_id(self) -> int:
        """The last id, as the official ``blank_id`` default."""
        return self.vocab_size - 1


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    adaptor: AdaptorConfig
    llm: LLMConfig
    variant: str  # "nano" (zh/en/ja) or "mlt" (31 languages)
    ctc: CTCConfig | None = None  # None: config.yaml declares no CTC head

    @property
    def languages(self) -> tuple[str, ...]:
        return MLT_LANGUAGES if self.variant == "mlt" else NANO_LANGUAGES


def guess_variant(name: str) -> str:
    return "mlt" if "mlt" in name.lower() else "nano"




def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path} is not UTF-8 text: the file is damaged, download it again") from exc


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _section(value: object, where: str) -> dict:
    """A mapping of settings; an absent (or empty) section means the defaults."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelLoadError(f"{where} must be a mapping of settings, not {type(value).__name__} {_short(value)}")
    return value


def _integer(section: dict, key: str, default: int, where: str, minimum: int = 1) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ModelLoadError(f"{where}: {key} must be {need}, not {_short(value)}")
    return value


def _positive_number(section: dict, key: str, default: float, where: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ModelLoadError(f"{where}: {key} must be a positive number, not {_short(value)}")
    return float(value)


def _eos_ids(qwen: dict, vocab_size: int, where: str) -> tuple[int, ...]:
    """``eos_token_id``: one id or a list of ids (as transformers reads it); () when absent."""
    value = qwen.get("eos_token_id")
    if value is None:
        return ()
    ids = value if isinstance(value, list) else [value]
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab_size for i in ids):
        raise ModelLoadError(
            f"{where}: eos_token_id must be a token id below vocab_size {vocab_size} (or a list of them), "
            f"not {_short(value)}"
        )
    return tuple(ids)


def _load_yaml(path: Path) -> dict:
    try:
        build = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path} is not valid YAML ({type(exc).__name__}): download it again") from exc
    if build is None:  # nothing but blanks or comments: the full-size defaults would be taken silently
        raise ModelLoadError(f"{path} is empty: download it again (it holds the model's build settings)")
    return _section(build, str(path))


def _load_json(path: Path) -> dict:
    try:
        qwen = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): download it again") from exc
    if not isinstance(qwen, dict):
        raise ModelLoadError(f"{path} must hold a JSON object of settings, not a {type(qwen).__name__}")
    return qwen


def _encoder_config(enc: dict, where: str) -> EncoderConfig:
    d = EncoderConfig()
    return EncoderConfig(
        output_size=_integer(enc, "output_size", d.output_size, where),
        attention_heads=_integer(enc, "attention_heads", d.attention_heads, where),
        linear_units=_integer(enc, "linear_units", d.linear_units, where),
        num_blocks=_integer(enc, "num_blocks", d.num_blocks, where),
        tp_blocks=_integer(enc, "tp_blocks", d.tp_blocks, where, minimum=0),
        kernel_size=_integer(enc, "kernel_size", d.kernel_size, where),
        sanm_shift=_integer(enc, "sanm_shfit", d.sanm_shift, where, minimum=0),  # sic: the official key
    )


def _llm_config(qwen: dict, where: str, llm_dtype: object) -> LLMConfig:
    d = LLMConfig()
    hidden = _integer(qwen, "hidden_size", d.hidden_size, where)
    num_heads = _integer(qwen, "num_attention_heads", d.num_heads, where)
    num_kv_heads = _integer(qwen, "num_key_value_heads", d.num_kv_heads, where)
    if num_heads % num_kv_heads:
        raise ModelLoadError(
            f"{where}: num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads ({num_kv_heads})"
        )
    if qwen.get("head_dim") is None and hidden < num_heads:
        raise ModelLoadError(f"{where}: hidden_size ({hidden}) is smaller than num_attention_heads ({num_heads}) "
                             "and no head_dim is given")
    head_dim = hidden // num_heads if qwen.get("head_dim") is None else _integer(qwen, "head_dim", 0, where)
    tie = qwen.get("tie_word_embeddings", True)
    if not isinstance(tie, bool):
        raise ModelLoadError(f"{where}: tie_word_embeddings must be true or false, not {_short(tie)}")
    vocab_size = _integer(qwen, "vocab_size", d.vocab_size, where)
    return LLMConfig(
        hidden_size=hidden,
        intermediate_size=_integer(qwen, "intermediate_size", d.intermediate_size, where),
        num_layers=_integer(qwen, "num_hidden_layers", d.num_layers, where),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        rms_norm_eps=_positive_number(qwen, "rms_norm_eps", d.rms_norm_eps, where),
        rope_theta=_positive_number(qwen, "rope_theta", d.rope_theta, where),
        tie_word_embeddings=tie,
        max_position_embeddings=_integer(qwen, "max_position_embeddings", d.max_position_embeddings, where),
        rotary_frequency_dtype=DTYPE_ALIASES.get(str(llm_dtype), d.rotary_frequency_dtype),
        eos_token_ids=_eos_ids(qwen, vocab_size, where),
    )


def read_config(model_dir: Path, variant: str | None = None, name: str | None = None) -> ModelConfig:
    """The configs of a model directory, every value checked; ``name`` (default: the directory's own
    name) is what the variant is guessed from when neither ``variant`` nor config.yaml gives it."""
    if variant not in (None, "nano", "mlt"):
        raise UsageError(f"unknown variant {variant!r}: use {option('variant', 'nano')} or {option('variant', 'mlt')}")
    require_readable_dir(model_dir)
    if not is_file(model_dir / "model.pt") and not is_file(model_dir / MLX_WEIGHTS):
        raise ModelLoadError(f"{model_dir} has no model.pt: not a Fun-ASR-Nano model directory")
    config_yaml = model_dir / "config.yaml"
    if not is_file(config_yaml):
        raise ModelLoadError(f"{model_dir} has no config.yaml: copy the complete hub directory (it ships that file)")
    llm_dir = model_dir / LLM_SUBDIR
    if llm_dir.is_dir():
        require_readable_dir(llm_dir)
    llm_config_path = llm_dir / "config.json"
    if not is_file(llm_config_path):
        raise ModelLoadError(
            f"{model_dir} has no {LLM_SUBDIR}/config.json: copy the complete hub directory (it ships that folder)"
        )
    build = _load_yaml(config_yaml)
    qwen = _load_json(llm_config_path)
    encoder = _encoder_config(_section(build.get("audio_encoder_conf"), f"{config_yaml}: audio_encoder_conf"),
                              f"{config_yaml}: audio_encoder_conf")
    llm_conf = _section(build.get("llm_conf"), f"{config_yaml}: llm_conf")
    llm = _llm_config(qwen, str(llm_config_path), llm_conf.get("llm_dtype", "bf16"))
    where = f"{config_yaml}: audio_adaptor_conf"
    ada = _section(build.get("audio_adaptor_conf"), where)
    adaptor = AdaptorConfig(
        encoder_dim=_integer(ada, "encoder_dim", encoder.output_size, where),
        llm_dim=llm.hidden_size,  # the official build takes it from the LLM's embedding width
        ffn_dim=_integer(ada, "ffn_dim", AdaptorConfig.ffn_dim, where),
        n_layer=_integer(ada, "n_layer", AdaptorConfig.n_layer, where),
        attention_heads=_integer(ada, "attention_heads", AdaptorConfig.attention_heads, where),
        downsample_rate=_integer(ada, "downsample_rate", AdaptorConfig.downsample_rate, where),
    )
    if adaptor.downsample_rate != 1:
        raise ModelLoadError(
            f"audio_adaptor_conf.downsample_rate={adaptor.downsample_rate} is not supported (1 is)"
        )
    ctc = _ctc_config(build, config_yaml, encoder)
    recorded = build.get(VARIANT_KEY)
    if recorded not in (None, "nano", "mlt"):
        raise ModelLoadError(f"{config_yaml}: {VARIANT_KEY} must be nano or mlt, not {_short(recorded)}")
    chosen = variant or recorded or guess_variant(name if name is not None else model_dir.name)
    return ModelConfig(encoder, adaptor, llm, chosen, ctc)


def ctc_config_for_borrowed(config: ModelConfig) -> CTCConfig:
    """The hub config.yaml's CTC head (architecture.md §1.3), for a model whose config.yaml declares none."""
    decoder = AdaptorConfig(encoder_dim=config.encoder.output_size, llm_dim=512, ffn_dim=2048, n_layer=5,
                            attention_heads=8)
    return CTCConfig(decoder, CTC_VOCAB_SIZE)


def _ctc_config(build: dict, config_yaml: Path, encoder: EncoderConfig) -> CTCConfig | None:
    if not build.get("ctc_decoder"):
        return None
    where = f"{config_yaml}: ctc_decoder_conf"
    conf = _section(build.get("ctc_decoder_conf"), where)
    decoder = AdaptorConfig(
        encoder_dim=_integer(conf, "encoder_dim", encoder.output_size, where),
        llm_dim=_integer(conf, "llm_dim", 512, where),
        ffn_dim=_integer(conf, "ffn_dim", AdaptorConfig.ffn_dim, where),
        n_layer=_integer(conf, "n_layer", 5, where),
        attention_heads=_integer(conf, "attention_heads", AdaptorConfig.attention_heads, where),
        downsample_rate=_integer(conf, "downsample_rate", 1, where),
    )
    if decoder.downsample_rate != 1:
        raise ModelLoadError(f"{where}: downsample_rate={decoder.downsample_rate} is not supported (1 is)")
    return CTCConfig(decoder, _integer(build, "ctc_vocab_size", CTC_VOCAB_SIZE, str(config_yaml), minimum=2))
