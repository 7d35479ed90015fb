"""The ``funasr-nano serve`` command: load the model, then serve the OpenAI-compatible API until
interrupted."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..errors import UsageError
from ..serve.config import ServerConfig


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve it until interrupted; returns the exit status."""
    from ..api import load_model
    from ..backends import dtype_name
    from ..demo import announce_default
    from ..serve.app import create_app, run_server

    for name in ("max_upload_mb", "max_audio_s", "max_queue", "max_uploads", "batch_size", "read_timeout_s",
                 "min_upload_kbps"):
        if not 0 < getattr(args, name) < float("inf"):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    if not 0 <= args.batch_window_ms < float("inf"):
        raise UsageError("--batch-window-ms must be zero or a positive number")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (0-65535)")
    dtype_name(args.dtype)
    announce_default(args)
    model = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend,
                       batch_size=args.batch_size, hub=args.hub, variant=args.variant, ctc_head=args.ctc_head)
    if model.word_timestamps_note:
        print(f"note: {model.word_timestamps_note.replace('ctc_head=PATH', '--ctc-head PATH')}", file=sys.stderr)
    config = ServerConfig(
        model_name=args.model_name or str(args.model).rstrip("/").split("/")[-1],
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_audio_s=args.max_audio_s,
        max_queue=args.max_queue,
        max_uploads=args.max_uploads,
        read_timeout_s=args.read_timeout_s,
        min_upload_bytes_per_s=args.min_upload_kbps * 1000 / 8,
        max_new_tokens=args.max_new_tokens,
        batch_window_s=args.batch_window_ms / 1000,
        batch_segments=args.batch_size,
        vad=not args.no_vad,
        resampler=args.resampler,
    )
    if not is_loopback(args.host) and config.api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)
    run_server(create_app(model, config), args.host, args.port, args.log_level)
    return 0
