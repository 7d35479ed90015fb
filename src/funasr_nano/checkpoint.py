"""Model directories in the official hub layout: locate (or download), read configs, load weights safely.

Layout (unchanged from the hub): ``model.pt`` (bf16 state dict, flat or wrapped), ``config.yaml``
(FunASR build config), ``Qwen3-0.6B/config.json`` and ``Qwen3-0.6B/tokenizer.json``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .backends import DTYPE_ALIASES
from .demo import MODEL_DIR as DEMO_MODEL_DIR
from .demo import MODEL_NAME as DEMO_MODEL_NAME
from .errors import ModelLoadError
from .features import FEATURE_DIM
from .languages import MLT_LANGUAGES, NANO_LANGUAGES

HUB_MODELS = {
    "nano": "FunAudioLLM/Fun-ASR-Nano-2512",
    "mlt": "FunAudioLLM/Fun-ASR-MLT-Nano-2512",
}
LLM_SUBDIR = "Qwen3-0.6B"
# `funasr-nano convert --backend mlx` writes this instead of model.pt, and records the variant in config.yaml.
MLX_WEIGHTS = "model.mlx.safetensors"
VARIANT_KEY = "funasr_nano_variant"
CORE_PREFIXES = ("audio_encoder.", "audio_adaptor.", "llm.")
# The ModelScope Nano checkpoint carries a CTC head that the text path never uses.
IGNORED_PREFIXES = ("ctc_decoder.", "ctc.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


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


@dataclass(frozen=True)
class AdaptorConfig:
    encoder_dim: int = 512
    llm_dim: int = 1024
    ffn_dim: int = 2048
    n_layer: int = 2
    attention_heads: int = 8
    downsample_rate: int = 1


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


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    adaptor: AdaptorConfig
    llm: LLMConfig
    variant: str  # "nano" (zh/en/ja) or "mlt" (31 languages)

    @property
    def languages(self) -> tuple[str, ...]:
        return MLT_LANGUAGES if self.variant == "mlt" else NANO_LANGUAGES


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _download(repo_id: str, hub: str) -> Path:
    try:
        if hub == "modelscope":
            try:
                from modelscope import snapshot_download as ms_download
            except ImportError as exc:
                raise ModelLoadError(
                    "ModelScope downloads need `pip install funasr-nano[modelscope]`"
                ) from exc
            return Path(ms_download(repo_id))
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:  # not cached yet: fetch it
            return Path(snapshot_download(repo_id))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not download {repo_id!r} from {hub} ({type(exc).__name__}); "
            "check the network or pass a local model directory"
        ) from exc


def resolve_model_dir(model: str | os.PathLike[str], hub: str = "hf") -> Path:
    """``demo`` (the bundled model), a local directory as given, or a hub id
    (``FunAudioLLM/Fun-ASR-Nano-2512``, aliases ``nano``/``mlt``) downloaded to the cache."""
    if str(model).lower() == DEMO_MODEL_NAME:
        return DEMO_MODEL_DIR
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{path} is a file; pass the model directory that holds model.pt")
    alias = HUB_MODELS.get(str(model).lower())
    if alias or _looks_like_hub_id(str(model)):
        return _download(alias or str(model), hub)
    raise ModelLoadError(
        f"model directory not found: {model} (pass a local Fun-ASR-Nano directory or a hub id such as "
        f"{HUB_MODELS['nano']})"
    )


def _guess_variant(model_dir: Path) -> str:
    return "mlt" if "mlt" in str(model_dir.resolve()).lower() else "nano"


def read_config(model_dir: Path, variant: str | None = None) -> ModelConfig:
    llm_config_path = model_dir / LLM_SUBDIR / "config.json"
    if not (model_dir / "model.pt").is_file() and not (model_dir / MLX_WEIGHTS).is_file():
        raise ModelLoadError(f"{model_dir} has no model.pt: not a Fun-ASR-Nano model directory")
    if not llm_config_path.is_file():
        raise ModelLoadError(
            f"{model_dir} has no {LLM_SUBDIR}/config.json: copy the complete hub directory (it ships that folder)"
        )
    build: dict = {}
    config_yaml = model_dir / "config.yaml"
    if config_yaml.is_file():
        try:
            build = yaml.safe_load(config_yaml.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ModelLoadError(f"{config_yaml} is not valid YAML: {exc}") from exc
    try:
        qwen = json.loads(llm_config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{llm_config_path} is not valid JSON: {exc}") from exc

    enc = build.get("audio_encoder_conf") or {}
    ada = build.get("audio_adaptor_conf") or {}
    defaults = EncoderConfig()
    encoder = EncoderConfig(
        output_size=int(enc.get("output_size", defaults.output_size)),
        attention_heads=int(enc.get("attention_heads", defaults.attention_heads)),
        linear_units=int(enc.get("linear_units", defaults.linear_units)),
        num_blocks=int(enc.get("num_blocks", defaults.num_blocks)),
        tp_blocks=int(enc.get("tp_blocks", defaults.tp_blocks)),
        kernel_size=int(enc.get("kernel_size", defaults.kernel_size)),
        sanm_shift=int(enc.get("sanm_shfit", defaults.sanm_shift)),
    )
    hidden = int(qwen.get("hidden_size", LLMConfig.hidden_size))
    num_heads = int(qwen.get("num_attention_heads", LLMConfig.num_heads))
    llm = LLMConfig(
        hidden_size=hidden,
        intermediate_size=int(qwen.get("intermediate_size", LLMConfig.intermediate_size)),
        num_layers=int(qwen.get("num_hidden_layers", LLMConfig.num_layers)),
        num_heads=num_heads,
        num_kv_heads=int(qwen.get("num_key_value_heads", LLMConfig.num_kv_heads)),
        head_dim=int(qwen.get("head_dim") or hidden // num_heads),
        vocab_size=int(qwen.get("vocab_size", LLMConfig.vocab_size)),
        rms_norm_eps=float(qwen.get("rms_norm_eps", LLMConfig.rms_norm_eps)),
        rope_theta=float(qwen.get("rope_theta", LLMConfig.rope_theta)),
        tie_word_embeddings=bool(qwen.get("tie_word_embeddings", True)),
        max_position_embeddings=int(qwen.get("max_position_embeddings", LLMConfig.max_position_embeddings)),
        rotary_frequency_dtype=DTYPE_ALIASES.get(
            str((build.get("llm_conf") or {}).get("llm_dtype", "bf16")), LLMConfig.rotary_frequency_dtype
        ),
    )
    adaptor = AdaptorConfig(
        encoder_dim=int(ada.get("encoder_dim", encoder.output_size)),
        llm_dim=hidden,  # the official build takes it from the LLM's embedding width
        ffn_dim=int(ada.get("ffn_dim", AdaptorConfig.ffn_dim)),
        n_layer=int(ada.get("n_layer", AdaptorConfig.n_layer)),
        attention_heads=int(ada.get("attention_heads", AdaptorConfig.attention_heads)),
        downsample_rate=int(ada.get("downsample_rate", AdaptorConfig.downsample_rate)),
    )
    if adaptor.downsample_rate != 1:
        raise ModelLoadError(
            f"audio_adaptor_conf.downsample_rate={adaptor.downsample_rate} is not supported (1 is)"
        )
    if variant not in (None, "nano", "mlt"):
        raise ModelLoadError(f"variant must be 'nano' or 'mlt', not {variant!r}")
    return ModelConfig(encoder, adaptor, llm, variant or build.get(VARIANT_KEY) or _guess_variant(model_dir))


def _unwrap(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict):
        for key in _WRAPPER_KEYS:
            inner = checkpoint.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                checkpoint = inner
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ModelLoadError(f"{path} holds no state dict: not a Fun-ASR-Nano checkpoint")
    return checkpoint


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """The core tensors of ``model.pt`` (names as in the official model), memory-mapped, never unpickled freely."""
    path = model_dir / "model.pt"
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Legacy (non-zip) checkpoints cannot be memory-mapped.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path} contains objects other than tensors and was not loaded (only weights_only checkpoints "
            "are accepted)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is unreadable ({type(exc).__name__}): the file is truncated or not a torch checkpoint; "
            "download it again"
        ) from exc
    state = _unwrap(checkpoint, path)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(IGNORED_PREFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"{path}: entry {key!r} is not a tensor: not a Fun-ASR-Nano checkpoint")
        tensors[name] = value
    if not any(k.startswith(CORE_PREFIXES[0]) for k in tensors) or not any(
        k.startswith(CORE_PREFIXES[2]) for k in tensors
    ):
        raise ModelLoadError(f"{path} has no audio_encoder.*/llm.* tensors: not a Fun-ASR-Nano checkpoint")
    return tensors


def check_shapes(
    tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], path: str | Path
) -> None:
    """One clear error naming the first mismatch instead of a deep load_state_dict traceback."""
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ModelLoadError(
            f"{path} lacks {len(missing)} tensors (first: {missing[0]}): wrong or incomplete checkpoint "
            "for this config"
        )
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ModelLoadError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, config.yaml/Qwen3-0.6B/config.json "
                f"expect {shape}: checkpoint and config do not match"
            )
    unexpected = [k for k in tensors if k not in expected]
    if unexpected:
        raise ModelLoadError(
            f"{path} has {len(unexpected)} unexpected tensors (first: {unexpected[0]}): checkpoint and config "
            "do not match"
        )
