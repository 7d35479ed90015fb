"""S1: the transcription server under load (protocol in ../shared/spec/benchmark.md).

Starts ``funasr-nano serve`` on 127.0.0.1 (loopback only), first posts every clip alone to get the
single-request reference, then runs N concurrent clients, each posting 5-30 s speech clips back to back
for a bounded time and count. Reports requests/s, audio seconds per wall second, p50/p95 latency,
errors (must be 0) and responses that differ from the single-request result (must be 0), and writes
benchmarks/results/<date>-<device>-S1.json. With ``--stream`` every request asks for server-sent events and
the time to its first text delta is reported too; the deltas must add up to the final text.

    python -m benchmarks.load_test --model DIR --device cpu --clients 4 --duration 30 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.common import agreement, provenance
from benchmarks.pyspy_stacks import profile_later

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech.ogg"
CLIP_SECONDS = (5, 8, 11, 14, 17, 20, 23, 26, 30)


def make_clips(seed: int = 0) -> list[tuple[float, bytes]]:
    """Speech clips of 5-30 s cut from the espeak-ng fixture at seeded offsets, as 16-bit WAV."""
    samples, rate = soundfile.read(SPEECH, dtype="float32")
    rng = np.random.default_rng(seed)
    clips = []
    for seconds in CLIP_SECONDS:
        length = seconds * rate
        start = int(rng.integers(0, samples.size - length + 1))
        buffer = io.BytesIO()
        soundfile.write(buffer, samples[start : start + length], rate, format="WAV", subtype="PCM_16")
        clips.append((float(seconds), buffer.getvalue()))
    return clips


def multipart(audio: bytes, stream: bool) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nfun-asr-nano\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nverbose_json\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="stream"\r\n\r\n{str(stream).lower()}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.connection: HTTPConnection | None = None

    def post(self, audio: bytes, stream: bool = False) -> tuple[int, str, float | None, list[int] | None]:
        """(status, final text or error body, seconds to the first streamed text, token ids when not
        streaming)."""
        body, content_type = multipart(audio, stream)
        for attempt in range(2):  # a keep-alive connection the server closed is reopened once
            if self.connection is None:
                self.connection = HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                headers = {"Content-Type": content_type}
                started = time.perf_counter()
                self.connection.request("POST", "/v1/audio/transcriptions", body, headers)
                response = self.connection.getresponse()
                if response.status != 200:
                    return response.status, response.read().decode(), None, None
                if stream:
                    return (200, *read_events(response, started), None)
                reply = json.loads(response.read())
                return 200, reply["text"], None, [t for segment in reply["segments"] for t in segment["tokens"]]
            except (ConnectionError, OSError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        connection = HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())


def read_events(response: Any, started: float) -> tuple[str, float | None]:
    """The done event's text and the time of the first delta; checks that the deltas add up to it."""
    deltas: list[str] = []
    first: float | None = None
    for raw in iter(response.readline, b""):
        if not raw.startswith(b"data: "):
            continue
        event = json.loads(raw[6:])
        if event["type"] == "transcript.text.delta":
            first = first if first is not None else time.perf_counter() - started
            deltas.append(event["delta"])
        elif event["type"] == "transcript.text.done":
            response.read()  # the end of the chunked body, so the connection can be reused
            if "".join(deltas) != event["text"]:
                raise ValueError("streamed deltas do not add up to the final text")
            return event["text"], first
        else:
            raise ValueError(f"error event: {event}")
    raise ValueError("the stream ended without a transcript.text.done event")


class Server:
    """``funasr-nano serve`` on 127.0.0.1 at a free port (``extra``: more of its options), its stderr
    drained into ``log``."""

    def __init__(self, args: argparse.Namespace, *extra: str):
        """args: those of :func:`add_server_arguments`."""
        self.command = [sys.executable, "-m", "funasr_nano.cli.main", "serve", "--model", args.model,
                        "--host", "127.0.0.1", "--port", "0", "--device", args.device, "--dtype", args.dtype,
                        "--batch-size", str(args.batch_size), "--batch-window-ms", str(args.batch_window_ms), *extra]
        if args.max_new_tokens:
            self.command += ["--max-new-tokens", str(args.max_new_tokens)]
        self.process = subprocess.Popen(self.command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.log: list[str] = []
        self.port = self._wait_for_port(args.startup_timeout)
        # keep draining the log so the server never blocks on a full pipe
        self._drain = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)
        self._drain.start()

    def _wait_for_port(self, timeout: float) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            self.log.append(line)
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                return int(match.group(1))
        self.process.kill()
        sys.exit("server did not start:\n" + "".join(self.log[-40:]))

    def stop(self) -> bool:
        """SIGTERM, as a supervisor would; True when the server shut down cleanly."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return False
        self._drain.join(5)
        # uvicorn re-raises SIGTERM after shutting down, so the exit status alone says little
        return code in (0, -signal.SIGTERM) and any("Application shutdown complete" in x for x in self.log)


def add_server_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """The options of the server a load test starts (:class:`Server`)."""
    parser.add_argument("--model", required=True, help="model directory (hub layout) or demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="fixed token budget per decode (random weights never stop on their own)")
    parser.add_argument("--startup-timeout", type=float, default=600.0)


def batching(before: dict[str, Any], after: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """What the server's worker did between two /health readings."""
    return {"steps": after["steps"] - before["steps"], "segments": after["segments"] - before["segments"],
            "largest_batch": after["largest_batch"],
            # share of the wall time the model spent decoding: near 1 means decode-bound
            "decode_busy_fraction": round((after["busy_s"] - before["busy_s"]) / wall_s, 3)}


def write_result(result: dict[str, Any], output: Path | None, workload: str) -> None:
    """Print the result and write it (default: benchmarks/results/<date>-<device>-<workload>.json)."""
    print(json.dumps(result, indent=1, ensure_ascii=False))
    slug = re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")[:40]
    output = output or ROOT / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-{slug}-{workload}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {output}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def run_load(port: int, clips: list[tuple[float, bytes]], references: list[tuple[str, list[int] | None]],
             args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    first_text: list[float] = []
    audio_done = 0.0
    errors: list[str] = []
    mismatches = 0
    divergence: list[int] = []  # where mismatching responses first differ, in tokens
    issued = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + args.duration

    def client_loop(client_id: int) -> None:
        nonlocal audio_done, mismatches, issued
        client = Client(port, args.request_timeout)
        turn = client_id  # clients start on different clips so every length is in flight together
        while time.monotonic() < stop_at:
            with lock:
                if issued >= args.max_requests:
                    return
                issued += 1
            index = turn % len(clips)
            turn += 1
            started = time.perf_counter()
            try:
                status, body, first, tokens = client.post(clips[index][1], args.stream)
            except Exception as exc:  # any failure counts as an error; the report says which
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            with lock:
                if status != 200:
                    errors.append(f"HTTP {status}: {body[:200]}")
                    continue
                latencies.append(elapsed)
                if first is not None:
                    first_text.append(first)
                audio_done += clips[index][0]
                if body != references[index][0]:
                    mismatches += 1
                    if tokens is not None and references[index][1] is not None:
                        divergence.append(agreement(tokens, references[index][1])["common_prefix"])

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 3),
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "mismatches": mismatches,
        **({"first_differing_token": {"min": min(divergence), "p50": percentile(divergence, 50),
                                      "max": max(divergence)}} if divergence else {}),
        "requests_per_s": round(len(latencies) / wall, 3),
        "audio_s_per_wall_s": round(audio_done / wall, 2),
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                      "mean": round(float(np.mean(latencies)), 4) if latencies else None,
                      "max": round(max(latencies), 4) if latencies else None},
        **({"first_text_s": {"p50": percentile(first_text, 50), "p95": percentile(first_text, 95)}}
           if args.stream else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser, batch_size=32)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=2000, help="stop after this many requests")
    parser.add_argument("--no-vad", action="store_true", help="each clip as one segment: no VAD, no retries")
    parser.add_argument("--stream", action="store_true", help="stream=true: server-sent text deltas")
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/<date>-<device>-S1.json)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the server (all threads, and who holds the GIL) from 5 s into the load "
                             "for 10 s; stacks and their summaries go to DIR")
    args = parser.parse_args()

    clips = make_clips()
    # the server sized for the load: every client's upload may be arriving at once
    server = Server(args, "--max-queue", str(max(64, 2 * args.clients)), "--max-uploads", str(max(64, args.clients)),
                    *(["--no-vad"] if args.no_vad else []))
    try:
        client = Client(server.port, args.request_timeout)
        references, single = [], []
        for _, audio in clips:  # alone on an idle server: the single-request result and latency
            started = time.perf_counter()
            status, body, _, tokens = client.post(audio, args.stream)
            single.append(time.perf_counter() - started)
            if status != 200:
                sys.exit(f"reference request failed: HTTP {status}: {body[:300]}")
            references.append((body, tokens))
        health_before = client.get("/health")
        profiler = args.profile and profile_later(server.process.pid, 5.0, args.profile / f"S1-{args.clients}")
        load = run_load(server.port, clips, references, args)
        if profiler:
            profiler.join()
        health = client.get("/health")
    finally:
        clean_shutdown = server.stop()

    before, after = health_before["batching"], health["batching"]
    result = {
        **provenance("S1", args.device),
        "server_command": " ".join(server.command[1:]),
        "server_device": health["device"],
        "model": args.model,
        "clients": args.clients,
        "duration_s": args.duration,
        "max_new_tokens": args.max_new_tokens,
        "vad": not args.no_vad,
        "stream": args.stream,
        "clip_seconds": list(CLIP_SECONDS),
        "single_request_latency_s": [round(s, 4) for s in single],
        **load,
        "batching": batching(before, after, load["wall_s"]),
        "server_shutdown_clean": clean_shutdown,
    }
    write_result(result, args.output, "S1-stream" if args.stream else "S1")
    return 0 if load["errors"] == 0 and load["mismatches"] == 0 and clean_shutdown else 1


if __name__ == "__main__":
    sys.exit(main())
