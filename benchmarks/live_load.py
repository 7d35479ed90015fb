"""S2: live streams through the Realtime WebSocket under load — how many microphones one server takes.

Starts ``funasr-nano serve`` on 127.0.0.1 (loopback only) and, for each level of ``--streams``, opens
that many sessions at once from ``--processes`` client processes. Each session sends demo clips, each
after 1.5 s of silence, as 16 kHz PCM16 in ``--chunk-ms`` appends at real-time pace (starts staggered
over one second) for ``--seconds`` of audio, then waits for its last final. Measured per level, from the
client's clock:

- first partial after speech start: from when the audio at the event's ``audio_start_ms`` was sent to
  the first ``...transcription.partial`` of that item;
- final after the stop event: from ``input_audio_buffer.speech_stopped`` (the server's end-of-turn
  decision, as a commit would be) to ``...transcription.completed``; and final after the speech end:
  from when the audio at ``audio_end_ms`` was sent, which adds the ``silence_duration_ms`` (500) the
  server waits to decide that speech ended;
- items started and completed, error and failed events, refused or broken sessions, and how far the
  senders fell behind real time (a level whose senders lag is not a fair measurement);
- the server's batching counters (``/health``) over the level, and the CPU time the server process used
  per second of it (``--silence`` sends silence, so that this is the cost of ingest alone: messages,
  VAD, the sessions' logic, with no decode).

    python -m benchmarks.live_load --model demo --device cpu --streams 2,4,8 --seconds 20
    python -m benchmarks.live_load --model FULL --device cuda --streams 64,256,512 --max-new-tokens 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.common import provenance
from benchmarks.load_test import Client, Server, add_server_arguments, batching, percentile, write_result
from benchmarks.pyspy_stacks import profile_later

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tests" / "data" / "demo"
RATE = 16000
GAP_S = 1.5
PARTIAL = "conversation.item.input_audio_transcription.partial"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def talk(index: int, seconds: float) -> np.ndarray:
    """Demo clips from the index-th on, each after 1.5 s of silence, for at least ``seconds``, as PCM16."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()]
    gap = np.zeros(round(GAP_S * RATE), np.float32)
    parts, total = [], 0
    while total < seconds * RATE:
        clip = soundfile.read(DEMO / rows[index % len(rows)]["path"], dtype="float32")[0]
        parts += [gap, clip]
        total += gap.size + clip.size
        index += 1
    parts.append(gap)
    return np.round(np.concatenate(parts) * 32767).astype("<i2")


async def session(url: str, index: int, args: argparse.Namespace, begin: float) -> dict[str, Any]:
    """One live session; its send times and the events it received, with their arrival times."""
    from websockets.asyncio.client import connect

    chunk = round(args.chunk_ms * RATE / 1000)
    pcm = talk(index, args.seconds)
    if args.silence:
        pcm = np.zeros_like(pcm)
    messages = [json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm[i : i + chunk].tobytes()).decode()})
                for i in range(0, pcm.size, chunk)]
    record: dict[str, Any] = {"sent": [], "planned": [], "events": [], "error": None, "audio_s": pcm.size / RATE}
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    try:
        async with connect(url, max_size=None, open_timeout=60) as ws:
            async def receive() -> None:
                async for message in ws:
                    record["events"].append((time.monotonic(), json.loads(message)))

            receiver = asyncio.ensure_future(receive())
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}}}}}))
            start = time.monotonic()
            for k, message in enumerate(messages):
                planned = start + k * args.chunk_ms / 1000
                await asyncio.sleep(max(0.0, planned - time.monotonic()))
                record["planned"].append(planned)
                record["sent"].append(time.monotonic())
                await ws.send(message)
            deadline = time.monotonic() + args.drain_s
            while time.monotonic() < deadline and receiver.done() is False:
                started = sum(e["type"] == "input_audio_buffer.speech_started" for _, e in record["events"])
                completed = sum(e["type"] == COMPLETED for _, e in record["events"])
                if started and completed >= started:
                    break
                await asyncio.sleep(0.05)
            receiver.cancel()
    except Exception as exc:  # a refused or broken session counts against the level; the report says why
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def client_process(url: str, indices: list[int], args: argparse.Namespace, begin: float) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return await asyncio.gather(*(session(url, i, args, begin + (i % 97) / 97) for i in indices))

    return asyncio.run(run())


def measure(record: dict[str, Any], chunk: int) -> dict[str, Any]:
    """Latencies and counts of one session."""
    sent = record["sent"]

    def sent_at(ms: float) -> float:
        return sent[min(len(sent) - 1, int(ms * RATE / 1000) // chunk)]

    items: dict[str, dict[str, float]] = {}
    errors = []
    for at, event in record["events"]:
        kind, item = event["type"], items.setdefault(event.get("item_id", ""), {})
        if kind == "input_audio_buffer.speech_started":
            item["start"] = sent_at(event["audio_start_ms"])
        elif kind == "input_audio_buffer.speech_stopped":
            item["end"], item["stop_event"] = sent_at(event["audio_end_ms"]), at
        elif kind == PARTIAL:
            item.setdefault("partial", at)
        elif kind == COMPLETED:
            item["completed"] = at
        elif kind == "error" or kind.endswith(".failed"):
            errors.append(event.get("error", {}).get("message", kind))
    started = [i for i in items.values() if "start" in i]
    return {
        "first_partial": [i["partial"] - i["start"] for i in started if "partial" in i],
        "final_after_stop_event": [i["completed"] - i["stop_event"] for i in started
                                   if "completed" in i and "stop_event" in i],
        "final_after_speech_end": [i["completed"] - i["end"] for i in started if "completed" in i and "end" in i],
        "started": len(started),
        "completed": sum("completed" in i for i in started),
        "errors": errors,
        "send_lag": max((s - p for s, p in zip(sent, record["planned"], strict=True)), default=0.0),
    }


def run_level(url: str, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    processes = max(1, min(args.processes, streams))
    groups = [list(range(p, streams, processes)) for p in range(processes)]
    begin = time.monotonic() + 2.0  # every process has built its messages by then
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        records = [r for part in pool.starmap(client_process, [(url, g, args, begin) for g in groups]) for r in part]
    wall = time.perf_counter() - started - 2.0
    chunk = round(args.chunk_ms * RATE / 1000)
    broken = [r["error"] for r in records if r["error"]]
    measured = [measure(r, chunk) for r in records if r["sent"]]  # a broken session's events still count

    def pooled(name: str) -> list[float]:
        return [v for m in measured for v in m[name]]

    def spread(name: str) -> dict[str, float | None]:
        values = pooled(name)
        return {"p50": percentile(values, 50), "p95": percentile(values, 95),
                "max": round(max(values), 4) if values else None, "count": len(values)}

    errors = [e for m in measured for e in m["errors"]]
    return {
        "streams": streams,
        "wall_s": round(wall, 2),
        "audio_s_per_wall_s": round(sum(r["audio_s"] for r in records) / wall, 1),
        "sessions_broken": len(broken),
        "broken_samples": broken[:3],
        "items_started": sum(m["started"] for m in measured),
        "items_completed": sum(m["completed"] for m in measured),
        "errors": len(errors),
        "error_samples": errors[:3],
        "latency_s": {"first_partial_after_speech_start": spread("first_partial"),
                      "final_after_stop_event": spread("final_after_stop_event"),
                      "final_after_speech_end": spread("final_after_speech_end")},
        "max_send_lag_s": round(max((m["send_lag"] for m in measured), default=0.0), 3),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser, batch_size=128)
    parser.add_argument("--streams", default="4,8", help="comma-separated levels of concurrent sessions")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio each session sends")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per append")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--drain-s", type=float, default=30.0, help="how long a session waits for its last final")
    parser.add_argument("--silence", action="store_true",
                        help="send silence: no speech, no decode; the level measures the server's ingest alone")
    parser.add_argument("--encode-interval-s", type=float, default=None,
                        help="the server's --encode-interval-s (default: the server's own)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/<date>-<device>-S2-live.json)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the server in each level (all threads, and who holds the GIL) from 5 s "
                             "into the sending for 10 s; stacks and their summaries go to DIR")
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    extra = ["--max-streams", str(max(levels))]
    if args.encode_interval_s is not None:
        extra += ["--encode-interval-s", str(args.encode_interval_s)]
    server = Server(args, *extra)
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    results = []
    try:
        client = Client(server.port, 60)
        for streams in levels:
            before, cpu_before = client.get("/health")["batching"], cpu_seconds(server.process.pid)
            # the level's sending begins 2 s after it starts
            profiler = args.profile and profile_later(server.process.pid, 7.0, args.profile / f"S2-{streams}")
            level = run_level(url, streams, args)
            if profiler:
                profiler.join()
            after, cpu_after = client.get("/health")["batching"], cpu_seconds(server.process.pid)
            level["batching"] = batching(before, after, level["wall_s"])
            # includes the level's 2 s start, when the sessions connect
            level["server_cpu_s_per_wall_s"] = round((cpu_after - cpu_before) / (level["wall_s"] + 2.0), 3)
            print(json.dumps(level), file=sys.stderr)
            results.append(level)
        device = client.get("/health")["device"]
    finally:
        clean = server.stop()
    result = {**provenance("S2-live", args.device), "server_command": " ".join(server.command[1:]),
              "server_device": device, "model": args.model, "seconds_per_session": args.seconds,
              "chunk_ms": args.chunk_ms, "silence": args.silence, "max_new_tokens": args.max_new_tokens,
              "turn_detection": "server_vad defaults (threshold 0.5, prefix 300 ms, silence 500 ms)", "levels": results,
              "server_shutdown_clean": clean}
    write_result(result, args.output, "S2-live")
    return 0


if __name__ == "__main__":
    sys.exit(main())
