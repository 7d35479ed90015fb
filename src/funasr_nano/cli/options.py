"""The option groups the commands share, each option spelled once, with the checks of their values that
need no model and the loading of the model they name."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..demo import MODEL_NAME, announce_default
from ..errors import UsageError, option

if TYPE_CHECKING:
    from ..api import FunASRNano
    from ..options import TranscribeOptions
    from ..output.subtitles import CueLimits

# The bundled demo model works offline on a first run; it has heard synthetic voices only, so using it
# without asking is said once on stderr (demo.announce_default).
DEFAULT_MODEL = MODEL_NAME

AddArgument = Callable[..., argparse.Action]


def add_model_options(add: AddArgument) -> None:
    """Which model: every command that reads one (transcribe, serve, convert)."""
    add("--model", "-m", default=None,
        help=f"demo (bundled, synthetic voices only), nano, mlt, a hub id or a model directory "
             f"(default: {DEFAULT_MODEL})")
    add("--hub", default="hf", choices=("hf", "modelscope"),
        help="where a hub id is downloaded from (default: %(default)s)")
    add("--variant", default=None, choices=("nano", "mlt"),
        help="nano (zh/en/ja) or mlt (31 languages); default: from the hub id or the directory's own name")


def add_load_options(add: AddArgument) -> None:
    """The model and how it runs: the commands that decode (transcribe, serve)."""
    add_model_options(add)
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
    add("--batch-size", type=int, default=32, help="segments decoded together (default: %(default)s)")
    add("--ctc-drafts", type=int, default=0, metavar="N",
        help="speculative decoding: verify up to N tokens of the CTC head's transcript per step (8 is a good "
             "value; the text is the same, it comes in fewer steps; torch, needs a CTC head; default: off)")


def add_decode_options(add: AddArgument) -> None:
    """How each recording is decoded: the commands that decode (transcribe, serve)."""
    add("--max-new-tokens", type=int, default=None, help="token budget per segment (default: by duration)")
    add("--no-vad", action="store_true",
        help="decode each file as ONE segment like the official model (loops on long audio)")


def check_at_least_one(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Whole-number options that count something; None (not given) passes."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{option(name)} must be at least 1")


def check_load_options(args: argparse.Namespace) -> None:
    """The mistakes in the load options (and the decode options, where the command has them) that need
    no model to notice, found before anything heavy is imported."""
    from ..backends.drafts import MAX_DRAFTS
    from ..dtypes import dtype_name

    check_at_least_one(args, ("batch_size", "max_new_tokens") if hasattr(args, "max_new_tokens") else ("batch_size",))
    dtype_name(args.dtype)
    if not 0 <= args.ctc_drafts <= MAX_DRAFTS:
        raise UsageError(f"{option('ctc_drafts')} must be from 0 (off) to {MAX_DRAFTS}")


def load(args: argparse.Namespace, int8: bool = False) -> FunASRNano:
    """The model the load options name (the demo model said first, when it is the default)."""
    from ..api import load_model

    announce_default(args)
    return load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                      batch_size=args.batch_size, int8=int8, hub=args.hub, variant=args.variant,
                      ctc_head=args.ctc_head, ctc_drafts=args.ctc_drafts)


def transcribe_options(args: argparse.Namespace, hotwords: str | None) -> TranscribeOptions:
    """What the decode options say, as the library's options (the word options imply word times)."""
    from ..options import TranscribeOptions

    word_timestamps = args.word_timestamps or args.highlight_words or args.max_words_per_line is not None
    return TranscribeOptions(language=args.language, hotwords=hotwords, itn=not args.no_itn,
                             max_new_tokens=args.max_new_tokens, vad=not args.no_vad, resampler=args.resampler,
                             word_timestamps=word_timestamps)


def cue_limits(args: argparse.Namespace) -> CueLimits:
    """How the subtitle options cut srt/vtt cues."""
    from ..output.subtitles import CueLimits

    return CueLimits(args.max_line_width, args.max_line_count, args.max_cue_duration, args.max_words_per_line,
                     args.highlight_words)


def print_note(note: str) -> None:
    """A library note on stderr, in the command line's words."""
    print(f"note: {note.replace('ctc_head=PATH', '--ctc-head PATH')}", file=sys.stderr)
