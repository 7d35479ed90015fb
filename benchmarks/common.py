"""Shared pieces of the benchmark scripts: workloads, inputs, timing, environment records.

The scripts are modules of the ``benchmarks`` package, run from the repository root as
``python -m benchmarks.NAME ...``; their test audio comes from the oracle package (oracle.reference).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oracle.reference import make_wav

ROOT = Path(__file__).resolve().parents[1]

SAMPLE_RATE = 16000
TOKENS_PER_SECOND = 3  # benchmark.md: fixed new-token count, 3 per second of audio, rounded up
L1_SAMPLES = 660_160  # 41.26 s
L1_TOKENS = 124
T1_SEGMENTS = 120
T1_SAMPLES = 480_000  # 30 s
T1_TOKENS = 90
D1_BATCHES = (1, 8, 32, 128)
D1_CONTEXT = 600


def l1_audio(seed: int = 0) -> np.ndarray:
    return make_wav(L1_SAMPLES, seed).numpy()


def t1_audio(seed: int = 0) -> list[np.ndarray]:
    return [make_wav(T1_SAMPLES, seed * 1000 + i).numpy() for i in range(T1_SEGMENTS)]


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device, repeats: int) -> tuple[list[float], object]:
    """Wall seconds of each call (device synchronised around it) and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        result = fn()
        sync(device)
        seconds.append(time.perf_counter() - started)
    return seconds, result


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(seconds), 5),
        "min_s": round(min(seconds), 5),
        "max_s": round(max(seconds), 5),
        "runs": len(seconds),
    }


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)


def reset_peak_memory(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str | torch.device) -> dict[str, float]:
    if torch.device(device).type == "cuda":
        return {
            "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 3),
        }
    return {"peak_rss_gb": peak_rss_gb()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                    "cuda": torch.version.cuda}
    for name in ("triton", "transformers", "funasr"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU's model and core count."""
    device = str(device)
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device("cuda" if device == "auto" else device))
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"CPU {model} ({os.cpu_count()} cores)"


def _git(*words: str) -> str:
    return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def git_commit() -> str:
    """HEAD (plus '-dirty'), or BENCH_GIT_COMMIT where the tree was copied without its history (the GPU machine)."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        return _git("rev-parse", "HEAD").strip() + ("-dirty" if _git("status", "--porcelain").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    """How this process was started, spelled as it is run from the repository root: ``python -m
    benchmarks.NAME ARGS`` for a module (sys.argv[0] is then the file's absolute path), else the argv."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    start = ["-m", spec.name] if spec is not None and spec.name else sys.argv[:1]
    return shlex.join([Path(sys.executable).name, *start, *sys.argv[1:]])


def provenance(workload: str, device: str) -> dict[str, str | None]:
    """What a result file records first: the workload, when, how it was run, on what."""
    return {
        "workload": workload,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "git_commit": git_commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def agreement(ours: list[int], theirs: list[int]) -> dict[str, float | int]:
    """Share of equal ids position by position, and the length of the common prefix."""
    same = sum(a == b for a, b in zip(ours, theirs, strict=False))
    pairs = enumerate(zip(ours, theirs, strict=False))
    prefix = next((i for i, (a, b) in pairs if a != b), min(len(ours), len(theirs)))
    return {"equal_fraction": round(same / max(1, len(ours)), 4), "common_prefix": prefix, "length": len(ours)}


def decode_segments(engine, waveforms, prompts, budgets) -> list[list[int]]:
    """Each 16 kHz segment's greedy ids from an engine, stepped to the end (``backends.generate``)."""
    from funasr_nano.backends import Request, generate

    return generate(engine, [Request(w, p, n) for w, p, n in zip(waveforms, prompts, budgets, strict=True)])
