"""Model directories in the official hub layout: locate (or download) them, load their tensors safely,
and the facts of the official state dict that both backends load by (key prefixes, the tied LM head).

Layout (unchanged from the hub): ``model.pt`` (bf16 state dict, flat or wrapped), ``config.yaml``
(FunASR build config), ``Qwen3-0.6B/config.json`` and ``Qwen3-0.6B/tokenizer.json``; the configs are
read by :mod:`funasr_nano.config`.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .demo import MODEL_DIR as DEMO_MODEL_DIR
from .demo import MODEL_NAME as DEMO_MODEL_NAME
from .errors import ModelLoadError, UsageError, option, unreadable

HUB_MODELS = {
    "nano": "FunAudioLLM/Fun-ASR-Nano-2512",
    "mlt": "FunAudioLLM/Fun-ASR-MLT-Nano-2512",
}
HUBS = ("hf", "modelscope")
LLM_SUBDIR = "Qwen3-0.6B"
# `funasr-nano convert --backend mlx` writes this instead of model.pt.
MLX_WEIGHTS = "model.mlx.safetensors"
ENCODER_PREFIX, ADAPTOR_PREFIX, LLM_PREFIX = "audio_encoder.", "audio_adaptor.", "llm."
CORE_PREFIXES = (ENCODER_PREFIX, ADAPTOR_PREFIX, LLM_PREFIX)
EMBED_KEY = LLM_PREFIX + "model.embed_tokens.weight"
LM_HEAD_KEY = LLM_PREFIX + "lm_head.weight"
# The CTC head (word timestamps): trained only in the ModelScope Nano checkpoint (84 + 2 tensors).
CTC_PREFIXES = ("ctc_decoder.", "ctc.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


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
    if hub not in HUBS:
        raise UsageError(f"unknown hub {hub!r}: use {option('hub', 'hf')} or {option('hub', 'modelscope')}")
    if str(model).lower() == DEMO_MODEL_NAME:
        return DEMO_MODEL_DIR
    path = Path(model).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except PermissionError as exc:
        raise ModelLoadError(f"permission denied: cannot look up {path} (a parent directory is not readable)") from exc
    if is_dir:
        require_readable_dir(path)
        return path
    if exists:
        raise ModelLoadError(f"{path} is a file; pass the model directory that holds model.pt")
    alias = HUB_MODELS.get(str(model).lower())
    if alias or _looks_like_hub_id(str(model)):
        return _download(alias or str(model), hub)
    raise ModelLoadError(
        f"model directory not found: {model} (pass a local Fun-ASR-Nano directory or a hub id such as "
        f"{HUB_MODELS['nano']})"
    )


def model_name(model: str | os.PathLike[str]) -> str:
    """The name the variant is guessed from: a hub id's model name, else the directory's own name as the
    user gave it (not the target of a symlink, nor the folders above it)."""
    alias = HUB_MODELS.get(str(model).lower())
    if alias:
        return alias.split("/")[-1]
    return os.path.basename(os.path.abspath(os.path.expanduser(model)))


def require_readable_dir(path: Path) -> None:
    # Search permission is what opening the files by name needs (listing the directory is not).
    if not os.access(path, os.X_OK):
        raise ModelLoadError(f"permission denied: {path} is not readable by this user")


def is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file; a directory or other non-file of that name is an error."""
    try:
        if path.is_file():
            return True
        exists = path.exists()
    except PermissionError as exc:
        raise ModelLoadError(f"permission denied: cannot look into {path.parent}") from exc
    if exists:
        raise ModelLoadError(f"{path} is {'a directory' if path.is_dir() else 'not a regular file'}: "
                             "it must be the file of that name from the hub")
    return False


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


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``model.pt`` (``module.`` prefixes removed), memory-mapped, never unpickled freely."""
    try:
        # torch warns on stderr about pickle protocols it did not write; the outcome is reported below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # Legacy (non-zip) checkpoints cannot be memory-mapped.
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise unreadable(path, exc) from exc
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
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"{path}: entry {key!r} is not a tensor: not a Fun-ASR-Nano checkpoint")
        tensors[key.removeprefix("module.")] = value
    return tensors


def load_checkpoint(model_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The core tensors of ``model.pt`` and its CTC-head tensors (empty when it has none)."""
    path = model_dir / "model.pt"
    tensors = _read_checkpoint(path)
    ctc = {k: v for k, v in tensors.items() if k.startswith(CTC_PREFIXES)}
    core = {k: v for k, v in tensors.items() if not k.startswith(CTC_PREFIXES)}
    if not any(k.startswith(ENCODER_PREFIX) for k in core) or not any(k.startswith(LLM_PREFIX) for k in core):
        raise ModelLoadError(f"{path} has no audio_encoder.*/llm.* tensors: not a Fun-ASR-Nano checkpoint")
    return core, ctc


def tie_lm_head(tensors: Mapping[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """The tensors as a model loads them: with tied embeddings (``tie_word_embeddings``) one table under
    ``EMBED_KEY`` and no ``LM_HEAD_KEY``.

    The official load writes both keys into the one tied tensor and the head comes last, so where a
    checkpoint stores both (the hub files do, equal), the head's tensor is the one that counts.
    """
    tensors = dict(tensors)
    if tied:
        head = tensors.pop(LM_HEAD_KEY, None)
        if head is not None:
            tensors[EMBED_KEY] = head
    return tensors


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """The core tensors of ``model.pt`` (names as in the official model); the CTC head is left out."""
    return load_checkpoint(model_dir)[0]


def load_ctc_head(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``ctc_decoder.*`` and ``ctc.*`` tensors of another checkpoint (a ``model.pt`` or its directory),
    to lend its CTC head to a model of the same encoder that has none."""
    source = Path(path).expanduser()
    if source.is_dir():
        source = source / "model.pt"
    if not is_file(source):
        raise ModelLoadError(f"ctc head {path}: no such checkpoint (pass a model.pt or the directory holding it)")
    ctc = {k: v for k, v in _read_checkpoint(source).items() if k.startswith(CTC_PREFIXES)}
    if not ctc:
        raise ModelLoadError(f"{source} has no ctc_decoder.*/ctc.* tensors: it carries no CTC head to borrow")
    return ctc


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
