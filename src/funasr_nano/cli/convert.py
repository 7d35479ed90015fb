"""The ``funasr-nano convert`` command: a ready-to-load MLX copy of a model, optionally quantized."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import announce_default
from ..errors import UsageError
from .options import add_model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write a ready-to-load MLX copy of a model (optionally 4/8-bit)")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    add_model_options(p.add_argument)
    p.add_argument("--backend", default="mlx", choices=("mlx",), help="target backend (default: mlx)")
    p.add_argument("--bits", type=int, default=None, choices=(4, 8),
                   help="quantize the LLM linears and embedding/LM head (default: keep bf16)")
    p.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128),
                   help="weights sharing one scale and bias (default: %(default)s)")
    p.add_argument("--quantize-encoder", action="store_true", help="also quantize the audio encoder, adaptor")


def run(args: argparse.Namespace) -> int:
    from ..backends.selection import MLX_INSTALL_HINT, mlx_import_error
    from ..checkpoint import model_name, resolve_model_dir

    error = mlx_import_error()
    if error is not None:
        raise UsageError(f"converting for MLX needs mlx, which does not import here ({error}): {MLX_INSTALL_HINT}")
    from ..backends.mlx.convert import convert

    announce_default(args)
    quantization = convert(
        resolve_model_dir(args.model, args.hub), Path(args.out), args.bits, args.group_size, args.quantize_encoder,
        args.variant, model_name(args.model),
    )
    detail = (
        f"{quantization.bits}-bit, group {quantization.group_size}, {len(quantization.modules)} modules"
        if quantization else "unquantized"
    )
    print(f"wrote {args.out} (MLX, {detail}); use it with --model {args.out}")
    return 0
