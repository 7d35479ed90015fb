"""Command line: ``funasr-nano transcribe FILE... --model DIR``, ``serve``, ``convert``.

Each command is a module with its options (``add_parser``) and its ``run``; the options they share are
in :mod:`~funasr_nano.cli.options`. Only argparse, the error classes and the option tables are imported up
front, so ``--help``, ``--version`` and mistakes in the arguments answer at once; torch is imported when a
model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import FunASRNanoError, cli_spelling
from . import convert, listen, ray, serve, transcribe
from .memory import return_large_buffers
from .options import DEFAULT_MODEL

COMMANDS = {"transcribe": transcribe, "listen": listen, "serve": serve, "convert": convert}
# What a program killed by SIGPIPE reports: the reader of our output has gone (`... | head`).
BROKEN_PIPE_STATUS = 141


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="funasr-nano", description="Fast Fun-ASR-Nano speech recognition")
    top.add_argument("--version", action="version", version=f"funasr-nano {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
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
    try:
        args = parser().parse_args(argv)
        # Said when the model is loaded (demo.announce_default), not before an option error.
        args.default_model = getattr(args, "model", "") is None
        if args.default_model:
            args.model = DEFAULT_MODEL
        if args.command in ("transcribe", "serve", "listen"):
            return_large_buffers()
        with cli_spelling():
            on_ray = args.command == "transcribe" and args.ray is not None  # the same command, on a cluster
            return (ray if on_ray else COMMANDS[args.command]).run(args)
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
