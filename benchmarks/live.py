"""Live transcription quality and latency (model.stream) on the synthesized test set.

    python -m benchmarks.live --model demo --testset .cache/demo/testset [--per-language 20]
        [--per-stream 5] [--chunk-ms 100] [--hold-back 1] [--device cpu] [--json out.json]

Held-out clips are joined into streams (``--per-stream`` clips, each after 1.5 s of silence) and fed
in ``--chunk-ms`` chunks as a microphone would send them. The clock is simulated: a chunk "arrives" at
its audio time and its events are out when the work it caused is done (the compute of earlier chunks
delays later ones when the decoder falls behind real time), so latency = queueing + compute, without
sleeping. Measured:

- finals equal to the offline transcription of the same stream (``model.transcribe``, same VAD
  segments), and the error rates of both against the references (WER en, CER zh/ja);
- partial stability: of the words (characters for zh/ja) each partial shows, how many the final has
  at the same place; the same for the stable text;
- latency: first partial after the detected speech start, final after the detected speech stop
  (both from the audio time of the event to the simulated time it is out), p50 and p95.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.accuracy import error_rates, normalize, read_manifest
from benchmarks.common import provenance

GAP_S = 1.5


def streams(rows: list[dict[str, Any]], testset: Path, per_stream: int) -> list[tuple[str, np.ndarray, list[str]]]:
    """(language, audio, reference texts) per stream, clips of one language each."""
    out = []
    by_lang: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_lang.setdefault(row["lang"], []).append(row)
    gap = np.zeros(round(GAP_S * 16000), np.float32)
    for lang, lang_rows in by_lang.items():
        for first in range(0, len(lang_rows), per_stream):
            group = lang_rows[first : first + per_stream]
            parts = [gap]
            for row in group:
                parts += [soundfile.read(testset / row["path"], dtype="float32")[0], gap]
            out.append((lang, np.concatenate(parts), [row["text"] for row in group]))
    return out


def run_stream(model: Any, audio: np.ndarray, chunk: int, hold_back: int) -> tuple[list[tuple[float, Any]], float]:
    """Feed at simulated real time; each event with the simulated time it is out; total compute seconds."""
    stream = model.stream(hold_back=hold_back)
    clock = 0.0  # when the decoder is free again
    timed: list[tuple[float, Any]] = []
    compute = 0.0
    for start in range(0, audio.size, chunk):
        arrives = (start + chunk) / 16000
        began = time.perf_counter()
        stream.feed(audio[start : start + chunk])
        events = stream.poll()
        spent = time.perf_counter() - began
        compute += spent
        clock = max(clock, arrives) + spent
        timed += [(clock, event) for event in events]
    began = time.perf_counter()
    stream.close()
    spent = time.perf_counter() - began
    compute += spent
    clock = max(clock, audio.size / 16000) + spent
    timed += [(clock, event) for event in stream.poll()]
    return timed, compute


def _units_kept(shown: str, final: str, lang: str) -> tuple[int, int]:
    shown_units, final_units = normalize(shown, lang), normalize(final, lang)
    kept = sum(1 for i, unit in enumerate(shown_units) if i < len(final_units) and final_units[i] == unit)
    return kept, len(shown_units)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def measure(model: Any, testset: Path, per_language: int, per_stream: int, chunk_ms: int,
            hold_back: int = 1) -> dict[str, Any]:
    from funasr_nano import Final, Partial, SpeechStarted, SpeechStopped

    rows = read_manifest(testset, ["sentences"], per_language)
    chunk = round(chunk_ms * 16)
    equal = total = 0
    pairs_live, pairs_offline = [], []
    kept = shown = stable_kept = stable_shown = 0
    first_partial, final_after_stop = [], []
    audio_seconds = compute_seconds = 0.0
    for lang, audio, refs in streams(rows, testset, per_stream):
        timed, compute = run_stream(model, audio, chunk, hold_back)
        audio_seconds += audio.size / 16000
        compute_seconds += compute
        finals = {e.item: e for _, e in timed if isinstance(e, Final)}
        offline = [s.text.strip() for s in model.transcribe(audio).segments]
        live = [finals[i].text for i in sorted(finals)]
        total += max(len(offline), len(live))
        equal += sum(a == b for a, b in zip(live, offline, strict=False))
        joined_ref = " ".join(refs)
        pairs_live.append((lang, joined_ref, " ".join(live)))
        pairs_offline.append((lang, joined_ref, " ".join(offline)))
        starts = [(t, e) for t, e in timed if isinstance(e, SpeechStarted)]
        stops = [(t, e) for t, e in timed if isinstance(e, SpeechStopped)]
        for item, final in finals.items():
            partials = [(t, e) for t, e in timed if isinstance(e, Partial) and e.item == item]
            for _, partial in partials:
                k, n = _units_kept(partial.text, final.text, lang)
                kept, shown = kept + k, shown + n
                k, n = _units_kept(partial.stable_text, final.text, lang)
                stable_kept, stable_shown = stable_kept + k, stable_shown + n
            if item < len(starts) and partials:
                first_partial.append(partials[0][0] - starts[item][1].time)
            if item < len(stops):
                done = next(t for t, e in timed if e is final)
                final_after_stop.append(done - stops[item][1].time)
    return {
        "streams_clips": len(rows),
        "finals_equal_to_offline": {"equal": equal, "utterances": total, "fraction": round(equal / max(total, 1), 4)},
        "error_rate_live": error_rates(pairs_live),
        "error_rate_offline": error_rates(pairs_offline),
        "partial_units_kept": round(kept / max(shown, 1), 4),
        "stable_units_kept": round(stable_kept / max(stable_shown, 1), 4),
        "latency_s": {
            "first_partial_after_speech_start": {"p50": percentile(first_partial, 50),
                                                 "p95": percentile(first_partial, 95)},
            "final_after_speech_stop": {"p50": percentile(final_after_stop, 50),
                                        "p95": percentile(final_after_stop, 95)},
            "note": "speech stop = the first silent frame; the final waits for the silence timeout (0.5 s) too",
        },
        "compute_real_time_factor": round(compute_seconds / audio_seconds, 4),
        "audio_seconds": round(audio_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--testset", type=Path, default=Path(".cache/demo/testset"))
    parser.add_argument("--per-language", type=int, default=20)
    parser.add_argument("--per-stream", type=int, default=5)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--hold-back", type=int, default=1, help="words of a partial's unstable tail not shown")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from funasr_nano import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    result = {**provenance("live transcription (model.stream), demo test set", model.backend.device),
              "model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "chunk_ms": args.chunk_ms, "per_stream": args.per_stream, "gap_s": GAP_S, "hold_back": args.hold_back,
              **measure(model, args.testset, args.per_language, args.per_stream, args.chunk_ms, args.hold_back)}
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
