"""Command line: ``funasr-nano transcribe FILE... --model DIR``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence

from .errors import FunASRNanoError, UsageError

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio; print the text or write txt/json/srt/vtt/tsv")
    p.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or globs")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model directory or hub id (default: %(default)s)")
    p.add_argument("--language", "-l", default=None, help="zh, en, ja, ... or a Chinese name; default automatic")
    p.add_argument("--hotwords", default=None, help="comma-separated hotwords, e.g. '开放时间,Fun-ASR'")
    p.add_argument("--no-itn", action="store_true", help="keep spoken forms (no inverse text normalisation)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, gpu (MLX) (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "mlx"),
                   help="auto = MLX on Apple Silicon when installed, else torch (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="token budget per segment")
    p.add_argument("--output-dir", "-o", default=None, help="write <name>.<format> here (default: stdout)")
    p.add_argument("--output-format", "-f", default=None, choices=("txt", "json", "srt", "vtt", "tsv", "all"),
                   help="default: txt on stdout, all with --output-dir")
    p.add_argument("--hotwords-file", default=None, help="hotwords, one per line (added to --hotwords)")
    p.add_argument("--batch-size", type=int, default=32, help="segments decoded together (default: 32)")
    p.add_argument("--int8", action="store_true",
                   help="CPU: int8 LLM weights (about 3x faster decoding; greedy ids may differ from fp32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-vad", action="store_true",
                   help="decode each file as ONE segment like the official model (loops on long audio)")
    p.add_argument("--max-line-width", type=int, default=42, help="srt/vtt columns per line (default: 42)")
    p.add_argument("--max-line-count", type=int, default=2, help="srt/vtt lines per cue (default: 2)")
    p.add_argument("--max-cue-duration", type=float, default=7.0, help="srt/vtt seconds per cue (default: 7)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, warnings or summary")


def _transcribe(args: argparse.Namespace) -> int:
    from .transcribe_command import run

    return run(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible transcription API over HTTP")
    add = p.add_argument
    add("--model", "-m", default=DEFAULT_MODEL, help="model directory or hub id (default: %(default)s)")
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback)")
    add("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    add("--api-key", default=os.environ.get("FUNASR_NANO_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $FUNASR_NANO_API_KEY, else no key)")
    add("--model-name", default=None, help="model id listed by /v1/models (default: the model's name)")
    add("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: %(default)s)")
    add("--dtype", default="auto", help="auto, float32, bfloat16 (default: %(default)s)")
    add("--backend", default="auto", choices=("auto", "torch", "mlx"), help="as for transcribe")
    add("--batch-size", type=int, default=32, help="segments decoded together (default: %(default)s)")
    add("--no-vad", action="store_true", help="decode each upload as ONE segment (loops on long audio)")
    add("--batch-window-ms", type=float, default=10.0,
        help="how long an idle server waits for more requests to batch (default: %(default)s)")
    add("--max-upload-mb", type=float, default=25.0, help="larger uploads get 413 (default: %(default)s)")
    add("--max-audio-s", type=float, default=3600.0, help="longer audio gets 413 (default: %(default)s)")
    add("--max-queue", type=int, default=64, help="requests in progress at once, more get 429 (default: 64)")
    add("--max-new-tokens", type=int, default=None, help="token budget per segment (default: by duration)")
    add("--log-level", default="info", help="uvicorn log level (default: %(default)s)")


def _serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UsageError("the server needs its extra: pip install 'funasr-nano[server]'")
    from .server import serve_main

    return serve_main(args)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write a ready-to-load MLX copy of a model (optionally 4/8-bit)")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model directory or hub id (default: %(default)s)")
    p.add_argument("--backend", default="mlx", choices=("mlx",), help="target backend (default: mlx)")
    p.add_argument("--bits", type=int, default=None, choices=(4, 8),
                   help="quantize the LLM linears and embedding/LM head (default: keep bf16)")
    p.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128),
                   help="weights sharing one scale and bias (default: %(default)s)")
    p.add_argument("--quantize-encoder", action="store_true", help="also quantize the audio encoder, adaptor")


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .backends.selection import MLX_INSTALL_HINT, mlx_import_error
    from .checkpoint import resolve_model_dir

    error = mlx_import_error()
    if error is not None:
        raise UsageError(f"converting for MLX needs mlx, which does not import here ({error}): {MLX_INSTALL_HINT}")
    from .backends.mlx.convert import convert

    quantization = convert(
        resolve_model_dir(args.model), Path(args.out), args.bits, args.group_size, args.quantize_encoder
    )
    detail = (
        f"{quantization.bits}-bit, group {quantization.group_size}, {len(quantization.modules)} modules"
        if quantization else "unquantized"
    )
    print(f"wrote {args.out} (MLX, {detail}); use it with --model {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funasr-nano", description="Fast Fun-ASR-Nano speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_transcribe(sub)
    _add_serve(sub)
    _add_convert(sub)
    args = parser.parse_args(argv)
    commands = {"transcribe": _transcribe, "serve": _serve, "convert": _convert}
    try:
        return commands[args.command](args)
    except FunASRNanoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
