"""Command line: ``funasr-nano transcribe FILE... --model DIR``, ``serve``, ``convert``.

Only argparse and the error classes are imported up front, so ``--help``, ``--version`` and mistakes in
the arguments answer at once; torch is imported when a model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..demo import MODEL_NAME, announce_default
from ..errors import FunASRNanoError, UsageError, cli_spelling

# The bundled demo model works offline on a first run; it has heard synthetic voices only, so using it
# without asking is said once on stderr (demo.announce_default).
DEFAULT_MODEL = MODEL_NAME
# What a program killed by SIGPIPE reports: the reader of our output has gone (`... | head`).
BROKEN_PIPE_STATUS = 141


AddArgument = Callable[..., argparse.Action]


def _add_model_options(add: AddArgument) -> None:
    """Options every command that loads a model shares."""
    add("--model", "-m", default=None,
        help=f"demo (bundled, synthetic voices only), nano, mlt, a hub id or a model directory "
             f"(default: {DEFAULT_MODEL})")
    add("--hub", default="hf", choices=("hf", "modelscope"),
        help="where a hub id is downloaded from (default: %(default)s)")
    add("--variant", default=None, choices=("nano", "mlt"),
        help="nano (zh/en/ja) or mlt (31 languages); default: from the hub id or the directory's own name")


def _add_load_options(add: AddArgument) -> None:
    _add_model_options(add)
    add("--device", default="auto", help="auto, cpu, cuda, cuda:1, gpu (MLX) (default: %(default)s)")
    add("--dtype", default="auto", help="auto, float32, bfloat16 (default: %(default)s; float16 overflows)")
    add("--backend", default="auto", choices=("auto", "torch", "mlx"),
        help="auto = MLX on Apple Silicon when installed, else torch (default: %(default)s)")
    add("--resampler", default="torchaudio", choices=("torchaudio", "soxr"),
        help="how audio at other rates reaches 16 kHz: the official toolkit's torchaudio filter (default) "
             "or soxr, as it resamples without torchaudio")
    add("--ctc-head", default=None, metavar="PATH",
        help="time words with the trained CTC head of another checkpoint of the same encoder (a model.pt or "
             "its directory), for a model that has none")


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio; print the text or write txt/json/srt/vtt/tsv")
    add = p.add_argument
    add("inputs", nargs="+", help="audio files, directories (searched recursively), globs, or - (standard input)")
    _add_load_options(add)
    add("--language", "-l", default=None, help="zh, en, ja, ... or a Chinese name; default automatic")
    add("--hotwords", default=None, help="comma-separated hotwords, e.g. '开放时间,Fun-ASR'")
    add("--no-itn", action="store_true", help="keep spoken forms (no inverse text normalisation)")
    add("--max-new-tokens", type=int, default=None, help="token budget per segment")
    add("--output-dir", "-o", default=None,
        help="write <path>.<format> here, mirroring the inputs' folders (default: stdout)")
    add("--output-format", "-f", default=None, choices=("txt", "json", "srt", "vtt", "tsv", "all"),
        help="default: txt on stdout, all with --output-dir")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true",
                          help="with -o: leave out inputs whose outputs all exist (resume a batch)")
    existing.add_argument("--overwrite", action="store_true",
                          help="with -o: replace existing outputs without a warning")
    add("--hotwords-file", default=None, help="hotwords, one per line (added to --hotwords)")
    add("--batch-size", type=int, default=32, help="segments decoded together (default: 32)")
    add("--int8", action="store_true",
        help="CPU: int8 LLM weights (about 3x faster decoding; greedy ids may differ from fp32)")
    add("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    add("--no-vad", action="store_true",
        help="decode each file as ONE segment like the official model (loops on long audio)")
    add("--max-line-width", type=int, default=42, help="srt/vtt columns per line (default: 42)")
    add("--max-line-count", type=int, default=2, help="srt/vtt lines per cue (default: 2)")
    add("--max-cue-duration", type=float, default=7.0, help="srt/vtt seconds per cue (default: 7)")
    add("--word-timestamps", action="store_true",
        help="time every word by CTC alignment: json gets segments[].words[], srt/vtt cues are cut at word times")
    add("--highlight-words", action="store_true",
        help="srt/vtt: one cue per word with the word underlined (karaoke; implies --word-timestamps)")
    add("--max-words-per-line", type=int, default=None,
        help="srt/vtt: at most this many words per cue (implies --word-timestamps)")
    add("--quiet", "-q", action="store_true", help="no progress bar, warnings or summary")
    cluster = p.add_argument_group("on a Ray cluster (pip install 'funasr-nano[ray]')")
    cluster.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                         help="run the job on Ray: a running cluster's ADDRESS (auto, ray://host:10001) or, "
                              "without one, a local cluster; needs -o; writes manifest.jsonl there and skips "
                              "files already done (--overwrite redoes them)")
    cluster.add_argument("--replicas", type=int, default=1,
                         help="model replicas (one GPU each where the cluster has GPUs; default: 1)")
    cluster.add_argument("--replica-cpus", type=float, default=1.0,
                         help="CPU cores per CPU replica, also its torch threads (default: 1)")


def _transcribe(args: argparse.Namespace) -> int:
    if args.ray is not None:
        from ..distributed.command import run as run_on_ray

        return run_on_ray(args)
    from .transcribe import run

    return run(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible transcription API over HTTP")
    add = p.add_argument
    _add_load_options(add)
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback)")
    add("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    add("--api-key", default=os.environ.get("FUNASR_NANO_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $FUNASR_NANO_API_KEY, else no key)")
    add("--model-name", default=None, help="model id listed by /v1/models (default: the model's name)")
    add("--batch-size", type=int, default=32, help="segments decoded together (default: %(default)s)")
    add("--no-vad", action="store_true", help="decode each upload as ONE segment (loops on long audio)")
    add("--batch-window-ms", type=float, default=10.0,
        help="how long an idle server waits for more requests to batch (default: %(default)s)")
    add("--max-upload-mb", type=float, default=25.0, help="larger uploads get 413 (default: %(default)s)")
    add("--max-audio-s", type=float, default=3600.0, help="longer audio gets 413 (default: %(default)s)")
    add("--max-queue", type=int, default=64,
        help="uploaded requests waiting or decoding at once, more get 429 (default: %(default)s)")
    add("--max-uploads", type=int, default=64,
        help="uploads arriving at once, more get 429 (default: %(default)s)")
    add("--read-timeout-s", type=float, default=30.0,
        help="an upload that sends nothing for this long gets 408; a connection whose headers take this "
             "long is closed (default: %(default)s)")
    add("--min-upload-kbps", type=float, default=64.0,
        help="after the first --read-timeout-s, slower uploads get 408 (kilobits/s; default: %(default)s)")
    add("--max-new-tokens", type=int, default=None, help="token budget per segment (default: by duration)")
    add("--log-level", default="info", help="uvicorn log level (default: %(default)s)")


def _serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UsageError("the server needs its extra: pip install 'funasr-nano[server]'")
    from .serve import run

    return run(args)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write a ready-to-load MLX copy of a model (optionally 4/8-bit)")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    _add_model_options(p.add_argument)
    p.add_argument("--backend", default="mlx", choices=("mlx",), help="target backend (default: mlx)")
    p.add_argument("--bits", type=int, default=None, choices=(4, 8),
                   help="quantize the LLM linears and embedding/LM head (default: keep bf16)")
    p.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128),
                   help="weights sharing one scale and bias (default: %(default)s)")
    p.add_argument("--quantize-encoder", action="store_true", help="also quantize the audio encoder, adaptor")


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="funasr-nano", description="Fast Fun-ASR-Nano speech recognition")
    top.add_argument("--version", action="version", version=f"funasr-nano {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    _add_transcribe(sub)
    _add_serve(sub)
    _add_convert(sub)
    return top


def _silence_output() -> None:
    """Point stdout and stderr at /dev/null, so that nothing more (Python's flush at exit included) fails
    on the pipe whose reader has gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        # Not a real file (a test's capture, say): nothing of it is flushed to a pipe at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    commands = {"transcribe": _transcribe, "serve": _serve, "convert": _convert}
    try:
        args = parser().parse_args(argv)
        # Said when the model is loaded (demo.announce_default), not before an option error.
        args.default_model = getattr(args, "model", "") is None
        if args.default_model:
            args.model = DEFAULT_MODEL
        with cli_spelling():
            return commands[args.command](args)
    except FunASRNanoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `funasr-nano ... | head`: the reader has all it wants; stop quietly
        _silence_output()
        return BROKEN_PIPE_STATUS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
