"""Where the time of one transcription goes: loading, audio and features, encoding, generation.

    python examples/benchmark.py [AUDIO] [--model demo] [--device auto] [--dtype auto] [--repeats 5]

Prints model loading time, then (median of the repeats, after one warm-up run) reading and
resampling the audio, fbank + LFR features, the audio encoder and adaptor, the whole transcription,
the tokens generated, the time per generated token (what the transcription spends beyond features
and encoding, divided by the tokens) and the real-time factor. For the project's measured
benchmarks see ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import funasr_nano
from funasr_nano import demo
from funasr_nano.frontend.audio import load_audio
from funasr_nano.frontend.features import SAMPLE_RATE, extract_features


def median_seconds(run, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("audio", nargs="?", default=str(demo.sample("en")))
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    model = funasr_nano.load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"load model            {time.perf_counter() - started:8.3f} s")
    torch_model = getattr(model.backend, "model", None)
    if torch_model is None:
        raise SystemExit("the stage breakdown needs the PyTorch backend (--device cpu or cuda)")
    device = next(torch_model.parameters()).device

    samples = load_audio(args.audio)
    duration = samples.size / SAMPLE_RATE
    waveform = torch.from_numpy(samples).to(device)
    result = model.transcribe(samples, vad=False)  # warm-up (CUDA: kernels and graphs)
    tokens = sum(len(s.tokens) for s in result.segments)

    audio_s = median_seconds(lambda: load_audio(args.audio), args.repeats, device)
    features_s = median_seconds(lambda: extract_features([waveform]), args.repeats, device)
    features = extract_features([waveform])
    with torch.inference_mode():
        encode_s = median_seconds(lambda: torch_model.encode(features), args.repeats, device)
    total_s = median_seconds(lambda: model.transcribe(samples, vad=False), args.repeats, device)
    generation_s = max(0.0, total_s - features_s - encode_s)

    print(f"audio file            {audio_s * 1000:8.1f} ms  ({duration:.2f} s of audio)")
    print(f"features (fbank+LFR)  {features_s * 1000:8.1f} ms")
    print(f"encoder + adaptor     {encode_s * 1000:8.1f} ms")
    print(f"transcribe (no VAD)   {total_s * 1000:8.1f} ms  ({tokens} tokens)")
    print(f"per generated token   {generation_s / max(1, tokens) * 1000:8.2f} ms")
    print(f"real-time factor      {total_s / duration:8.4f}")
    print(f"text: {result.text}")


if __name__ == "__main__":
    main()
