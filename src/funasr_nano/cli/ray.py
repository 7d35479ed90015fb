"""``funasr-nano transcribe ... --ray``: the CLI's options mapped onto :func:`transcribe_collection`."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ..errors import UsageError
from .options import cue_limits, transcribe_options
from .transcribe import check_options, output_formats, read_hotwords


def run(args: argparse.Namespace) -> int:
    """Run the job; returns the exit status (0: every file done, 1: some failed)."""
    if not args.output_dir:
        raise UsageError("--ray writes files, not stdout: give --output-dir")
    if args.replicas < 1:
        raise UsageError("--replicas must be at least 1")
    if not 0 < args.replica_cpus < float("inf"):
        raise UsageError("--replica-cpus must be a positive number of cores")
    if "-" in args.inputs:
        raise UsageError("- (standard input) cannot be sent to a cluster: name files, folders or URLs")
    check_options(args)
    formats = output_formats(args, len(args.inputs))
    options = transcribe_options(args, read_hotwords(args.hotwords, args.hotwords_file))
    if importlib.util.find_spec("ray") is None:
        raise UsageError("--ray needs Ray: pip install 'funasr-nano[ray]'")
    from ..demo import announce_default
    from ..distributed.ray_job import ModelOptions, transcribe_collection

    announce_default(args)

    summary = transcribe_collection(
        args.inputs,
        args.output_dir,
        model=ModelOptions(args.model, args.device, args.dtype, args.batch_size, args.int8, args.hub, args.variant,
                           args.backend, args.ctc_head, args.ctc_drafts),
        decode=options,
        formats=formats,
        limits=cue_limits(args),
        replicas=args.replicas,
        cpus_per_replica=args.replica_cpus,
        address=None if args.ray == "local" else args.ray,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if not args.quiet:
        total = summary.done + summary.failed + summary.skipped
        parts = [
            f"transcribed {summary.done} of {total} files, {summary.audio_seconds:.1f} s of audio in "
            f"{summary.wall_seconds:.1f} s on Ray"
        ]
        if summary.skipped:
            parts.append(f"{summary.skipped} skipped (done before)")
        if summary.failed:
            parts.append(f"{summary.failed} errors")
        print("; ".join(parts) + f"; manifest {summary.manifest}", file=sys.stderr)
    return 1 if summary.failed else 0
