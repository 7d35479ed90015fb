"""Command line: ``funasr-nano transcribe FILE... --model DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import FunASRNanoError

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files and print the text")
    p.add_argument("inputs", nargs="+", help="audio files")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model directory or hub id (default: %(default)s)")
    p.add_argument("--language", "-l", default=None, help="zh, en, ja, ... or a Chinese name; default automatic")
    p.add_argument("--hotwords", default=None, help="comma-separated hotwords, e.g. '开放时间,Fun-ASR'")
    p.add_argument("--no-itn", action="store_true", help="keep spoken forms (no inverse text normalisation)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="token budget per segment")


def _transcribe(args: argparse.Namespace) -> int:
    from .pipeline import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    failures = 0
    for path in args.inputs:
        try:
            result = model.transcribe(
                path, language=args.language, hotwords=args.hotwords, itn=not args.no_itn,
                max_new_tokens=args.max_new_tokens,
            )
        except FunASRNanoError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        prefix = f"{path}\t" if len(args.inputs) > 1 else ""
        print(prefix + result.text, flush=True)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funasr-nano", description="Fast Fun-ASR-Nano speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_transcribe(sub)
    args = parser.parse_args(argv)
    try:
        return _transcribe(args)
    except FunASRNanoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
