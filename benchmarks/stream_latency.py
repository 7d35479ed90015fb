"""Streaming latency of one transcription on an idle model: time to the first piece of text versus the
whole transcription, for ``transcribe(on_text=...)``. Also checks that the pieces add up to the text and,
without VAD, that streaming gives exactly the plain result.

    python -m benchmarks.stream_latency --model DIR --device cuda --output benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

import funasr_nano
from benchmarks.common import provenance

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech.ogg"


class Pieces:
    """An ``on_text`` callback that keeps each piece and when it arrived."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.arrivals: list[float] = []

    def __call__(self, delta: str) -> None:
        self.arrivals.append(time.perf_counter())
        self.deltas.append(delta)


def measure(model: funasr_nano.FunASRNano, audio: np.ndarray, vad: bool, max_new_tokens: int | None,
            repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        pieces = Pieces()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        streamed = model.transcribe(audio, vad=vad, max_new_tokens=max_new_tokens, on_text=pieces)
        total = time.perf_counter() - started
        if "".join(pieces.deltas) != streamed.text:
            raise SystemExit("streamed pieces do not add up to the text")
        runs.append({"first_text_s": pieces.arrivals[0] - started if pieces.arrivals else None,
                     "total_s": total, "pieces": len(pieces.deltas), "text": streamed.text})
    plain = model.transcribe(audio, vad=vad, max_new_tokens=max_new_tokens)
    best = min(runs[1:] or runs, key=lambda r: r["total_s"])  # the first run includes warm-up
    return {
        "vad": vad,
        "max_new_tokens": max_new_tokens,
        "audio_s": round(audio.size / 16000, 2),
        "segments": len(plain.segments),
        "tokens": sum(len(s.tokens) for s in plain.segments),
        "first_text_s": round(best["first_text_s"], 4) if best["first_text_s"] is not None else None,
        "total_s": round(best["total_s"], 4),
        "pieces": best["pieces"],
        "streamed_equals_plain": best["text"] == plain.text,
        "first_run_total_s": round(runs[0]["total_s"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seconds", type=float, default=28.0, help="clip length for the no-VAD case")
    parser.add_argument("--max-new-tokens", type=int, default=200,
                        help="budget per segment (random weights never stop on their own)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    model = funasr_nano.load_model(args.model, device=args.device, dtype=args.dtype)
    speech, rate = soundfile.read(SPEECH, dtype="float32")
    assert rate == 16000
    cases = [
        measure(model, speech[: int(args.seconds * rate)], False, args.max_new_tokens, args.repeats),
        measure(model, speech, True, None, args.repeats),  # the whole fixture, VAD segments, default budgets
    ]
    result = {
        **provenance("stream latency (one request, idle model)", args.device),
        "model_device": model.backend.device,
        "cases": cases,
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
