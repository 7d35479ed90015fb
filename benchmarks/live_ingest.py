"""How much live audio a server's ingest takes per second: the VAD and the streams' own logic, no model.

Each of ``--streams`` live streams gets demo speech (the S2 talk: clips after 1.5 s of silence) in
100 ms appends of 16 kHz PCM16, one append per stream per tick, as fast as they are taken, for
``--seconds`` of audio. Two ways, timed in turn (``--rounds`` times each, alternating):

- ``ingest``: the server's way, every append through the ingest thread (rounds of
  ``LiveStream.feed_together``: one batched VAD pass for every stream fed in the round);
- ``threads``: the way before it, each append a ``LiveStream.feed`` call on a pool of request threads
  (asyncio's default executor size for this machine), each call waiting for its share of a VAD pass.

Decodes are dropped (so no partial or final is decoded, and each stream asks for one partial and then
waits for it), which leaves what ingest itself costs. ``audio_s_per_s`` is the stream-seconds taken per
wall second: the number of streams that this machine can take at real time, ingest alone.

    python -m benchmarks.live_ingest --streams 64,256,512 --seconds 10 [--device cuda] --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import funasr_nano
from benchmarks.common import provenance
from benchmarks.live_load import talk
from funasr_nano.decoding.live import LiveStream
from funasr_nano.decoding.live_events import LiveOptions
from funasr_nano.decoding.live_ingest import Ingest
from funasr_nano.decoding.pieces import Recording
from funasr_nano.frontend.endpoint import EndpointOptions, SpeechDetector
from funasr_nano.options import TranscribeOptions

CHUNK = 1600  # 100 ms at 16 kHz, live_load's appends


class Dropped:
    """Decodes that never run: ingest alone."""

    def submit(self, recording: Recording, deliver: object) -> None:
        pass

    def cancel(self, key: Hashable) -> None:
        pass

    def run(self) -> None:
        pass


def make_streams(model: funasr_nano.FunASRNano, count: int, device: str) -> list[LiveStream]:
    settings = model.settings(TranscribeOptions())
    return [LiveStream(Dropped(), model.tokenizer.decode, settings, LiveOptions(),
                       SpeechDetector(EndpointOptions(), device=device)) for _ in range(count)]


def run(way: str, model: funasr_nano.FunASRNano, count: int, seconds: float, device: str) -> dict[str, float]:
    streams = make_streams(model, count, device)
    audio = [talk(k, seconds)[: round(seconds * 16000)] for k in range(count)]
    ticks = round(seconds * 16000) // CHUNK
    ingest = Ingest() if way == "ingest" else None
    pool = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4)) if way == "threads" else None
    try:
        started = time.perf_counter()
        for tick in range(ticks):
            chunks = [pcm[tick * CHUNK : (tick + 1) * CHUNK] for pcm in audio]
            if ingest is not None:
                futures = [ingest.feed(s, c, 16000) for s, c in zip(streams, chunks, strict=True)]
            else:
                assert pool is not None
                futures = [pool.submit(s.feed, c, 16000) for s, c in zip(streams, chunks, strict=True)]
            wait(futures)
            for future in futures:
                future.result()
        wall = time.perf_counter() - started
        rounds = ingest.stats.rounds if ingest is not None else None
    finally:
        if ingest is not None:
            ingest.close()
        if pool is not None:
            pool.shutdown()
    heard = sum(s.heard_seconds for s in streams)
    return {"wall_s": round(wall, 3), "audio_s_per_s": round(heard / wall, 1),
            "appends_per_s": round(count * ticks / wall, 1), **({"rounds": rounds} if rounds is not None else {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="64,256,512", help="comma-separated stream counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each way, alternating")
    parser.add_argument("--device", default="cpu", help="where the VAD runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = funasr_nano.load_model("demo", device="cpu", dtype="float32")  # for its prompt settings only
    run("ingest", model, 4, 1.0, args.device)  # warm up the VAD on this device
    levels = []
    for count in (int(x) for x in args.streams.split(",")):
        timings: dict[str, list[dict[str, float]]] = {"ingest": [], "threads": []}
        for _ in range(args.rounds):
            for way in timings:
                timings[way].append(run(way, model, count, args.seconds, args.device))
        best = {way: max(r["audio_s_per_s"] for r in runs) for way, runs in timings.items()}
        level = {"streams": count, "runs": timings, "best_audio_s_per_s": best}
        print(json.dumps(level), file=sys.stderr)
        levels.append(level)
    result = {**provenance("live-ingest", args.device), "seconds_per_stream": args.seconds, "chunk_ms": 100,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "levels": levels}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
