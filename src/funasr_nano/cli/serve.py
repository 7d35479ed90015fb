"""The ``funasr-nano serve`` command: load the model, then serve the OpenAI-compatible API until
interrupted. Its defaults are the server's own (:class:`~funasr_nano.serve.config.ServerConfig`)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys

from ..errors import UsageError
from ..serve.config import ServerConfig
from .options import add_decode_options, add_load_options, check_load_options, load, print_note

MB = 1024 * 1024
BYTES_PER_S_PER_KBPS = 1000 / 8


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible transcription API over HTTP")
    add = p.add_argument
    default = ServerConfig()
    add_load_options(add)
    add_decode_options(add)
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback)")
    add("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    add("--api-key", default=os.environ.get("FUNASR_NANO_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $FUNASR_NANO_API_KEY, else no key)")
    add("--model-name", default=None, help="model id listed by /v1/models (default: the model's name)")
    add("--batch-window-ms", type=float, default=default.batch_window_s * 1000,
        help="how long an idle server waits for more requests to batch (default: %(default)s)")
    add("--max-upload-mb", type=float, default=default.max_upload_bytes / MB,
        help="larger uploads get 413 (default: %(default)s)")
    add("--max-audio-s", type=float, default=default.max_audio_s, help="longer audio gets 413 (default: %(default)s)")
    add("--max-queue", type=int, default=default.max_queue,
        help="uploaded requests waiting or decoding at once, more get 429 (default: %(default)s)")
    add("--max-uploads", type=int, default=default.max_uploads,
        help="uploads arriving at once, more get 429 (default: %(default)s)")
    add("--max-streams", type=int, default=default.max_streams,
        help="live sessions (the Realtime WebSocket) at once, more are refused (default: %(default)s)")
    add("--encode-interval-s", type=float, default=default.encode_interval_s,
        help="torch: while segments decode, encode new audio at most this often, so that running "
             "streams keep getting tokens (default: %(default)s; 0: whenever slots free)")
    add("--read-timeout-s", type=float, default=default.read_timeout_s,
        help="an upload that sends nothing for this long gets 408; a connection whose headers take this "
             "long is closed (default: %(default)s)")
    add("--min-upload-kbps", type=float, default=default.min_upload_bytes_per_s / BYTES_PER_S_PER_KBPS,
        help="after the first --read-timeout-s, slower uploads get 408 (kilobits/s; default: %(default)s)")
    add("--log-level", default="info", help="uvicorn log level (default: %(default)s)")


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


def _check_options(args: argparse.Namespace) -> None:
    for name in ("max_upload_mb", "max_audio_s", "max_queue", "max_uploads", "max_streams", "read_timeout_s",
                 "min_upload_kbps"):
        if not 0 < getattr(args, name) < float("inf"):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    if not 0 <= args.encode_interval_s < float("inf"):
        raise UsageError("--encode-interval-s must be zero or a positive number")
    if not 0 <= args.batch_window_ms < float("inf"):
        raise UsageError("--batch-window-ms must be zero or a positive number")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (0-65535)")
    check_load_options(args)


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve it until interrupted; returns the exit status."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UsageError("the server needs its extra: pip install 'funasr-nano[server]'")
    _check_options(args)
    from ..serve.app import create_app, run_server

    model = load(args)
    if model.word_timestamps_note:
        print_note(model.word_timestamps_note)
    config = ServerConfig(
        model_name=args.model_name or str(args.model).rstrip("/").split("/")[-1],
        api_key=args.api_key or None,
        max_upload_bytes=int(args.max_upload_mb * MB),
        max_audio_s=args.max_audio_s,
        max_queue=args.max_queue,
        max_uploads=args.max_uploads,
        max_streams=args.max_streams,
        read_timeout_s=args.read_timeout_s,
        min_upload_bytes_per_s=args.min_upload_kbps * BYTES_PER_S_PER_KBPS,
        max_new_tokens=args.max_new_tokens,
        batch_window_s=args.batch_window_ms / 1000,
        encode_interval_s=args.encode_interval_s or None,
        vad=not args.no_vad,
        resampler=args.resampler,
    )
    if not is_loopback(args.host) and config.api_key is None:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)
    run_server(create_app(model, config), args.host, args.port, args.log_level)
    return 0
