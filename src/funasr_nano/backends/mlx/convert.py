"""``funasr-nano convert --backend mlx``: a ready-to-load MLX copy of a model directory.

The output keeps the hub layout (``config.yaml``, ``Qwen3-0.6B/`` with config and tokenizer) and
replaces ``model.pt`` with ``model.mlx.safetensors``: MLX parameter layout, optionally quantized.
Float tensors keep the checkpoint's precision (bf16 for the hub files); quantization scales and
biases are stored in float32, exactly as computed from the float32-upcast weights. A CTC head in the
checkpoint (``ctc_decoder.*``, ``ctc.*``, for word timestamps) is kept under its official keys, never
quantized, in the checkpoint's precision (it runs in float32), with its vocabulary file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx
import torch
from mlx.utils import tree_flatten

from ...checkpoint import LLM_SUBDIR, MLX_WEIGHTS, load_checkpoint
from ...config import VARIANT_KEY, read_config
from ...errors import ModelLoadError, UsageError
from ...text.ctc_tokenizer import VOCAB_FILE
from .model import FunASRNanoMLX, arrays_from_state_dict, load_arrays, to_mlx
from .quantization import DEFAULT_GROUP_SIZE, Quantization, quantize_model

FORMAT = "funasr-nano-mlx"
FORMAT_VERSION = "1"
# Files of the hub directory besides the weights that a converted copy keeps.
_COPIED_FILES = ("config.yaml", "configuration.json", VOCAB_FILE)


def read_converted(path: Path) -> tuple[dict[str, mx.array], Quantization | None]:
    """Arrays and quantization of a converted file; a clear error for anything else."""
    try:
        arrays, metadata = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path} is unreadable ({exc}): convert the model again") from exc
    if metadata.get("format") != FORMAT:
        raise ModelLoadError(f"{path} was not written by `funasr-nano convert --backend mlx`")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has format version {metadata.get('format_version')!r}, this release reads "
            f"{FORMAT_VERSION!r}: convert the model again"
        )
    if not metadata.get("quantization"):
        return arrays, None
    try:
        return arrays, Quantization.from_json(metadata["quantization"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} has unreadable quantization metadata ({exc}): convert again") from exc


def convert(
    model_dir: Path,
    out_dir: Path,
    bits: int | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    quantize_audio: bool = False,
    variant: str | None = None,
    name: str | None = None,
) -> Quantization | None:
    """Write the MLX copy of ``model_dir`` to ``out_dir`` (which must not exist or be empty); ``variant``
    and ``name`` as for :func:`~funasr_nano.config.read_config`."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"output {out_dir} already exists and is not an empty directory")
    if not (model_dir / "model.pt").is_file():
        raise ModelLoadError(f"{model_dir} has no model.pt: convert from the original hub directory")
    if quantize_audio and bits is None:
        raise UsageError("quantizing the audio encoder needs --bits 4 or 8")
    config = read_config(model_dir, variant, name)
    tensors, ctc = load_checkpoint(model_dir)
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    storage = mx.bfloat16 if float_dtypes == {torch.bfloat16} else mx.float32
    with mx.stream(mx.cpu):
        model = FunASRNanoMLX(config)
        load_arrays(model, arrays_from_state_dict(model, tensors, str(model_dir / "model.pt")), mx.float32)
        del tensors
        quantization = None
        if bits is not None:
            quantization = quantize_model(model, Quantization(bits, group_size, quantize_audio))
        modules = quantization.modules if quantization else ()
        exact = {f"{module}.{part}" for module in modules for part in ("scales", "biases")}

        def stored(name: str, array: mx.array) -> mx.array:
            keep = name in exact or not mx.issubdtype(array.dtype, mx.floating)
            return array if keep else array.astype(storage)

        arrays = {name: stored(name, array) for name, array in tree_flatten(model.parameters())}
        # The CTC head as the checkpoint holds it: same keys and layout in MLX (no FSMN), never quantized.
        arrays.update({name: to_mlx(name, tensor) for name, tensor in ctc.items()})
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "quantization": quantization.to_json() if quantization else "",
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(out_dir / MLX_WEIGHTS), arrays, metadata=metadata)
    for name in _COPIED_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    # read_config guesses nano/mlt from the directory name, which the copy need not keep.
    with (out_dir / "config.yaml").open("a", encoding="utf-8") as handle:
        handle.write(f"\n# added by funasr-nano convert\n{VARIANT_KEY}: {config.variant}\n")
    # Config and tokenizer only: the hub's LLM folder holds no weights.
    shutil.copytree(model_dir / LLM_SUBDIR, out_dir / LLM_SUBDIR)
    return quantization
