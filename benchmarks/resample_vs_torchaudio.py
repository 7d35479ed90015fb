"""Our torchaudio-equivalent resampler against torchaudio itself.

    PYTHONPATH=src python -m benchmarks.resample_vs_torchaudio [--json PATH] [--commit SHA]

Needs only torch, torchaudio and numpy (it imports ``funasr_nano.frontend.resample`` alone, not the package's
heavier modules, and not benchmarks/common.py, whose oracle imports need the official toolkit). For each
input rate it resamples noise and a tone of several lengths to 16 kHz with
``torchaudio.transforms.Resample(rate, 16000)`` (the official loader's call, on the CPU as there; and
on CUDA when present) and with ``resample_like_torchaudio``, and records the lengths, the largest
absolute difference, whether the outputs are bit-identical, and whether the filter taps are. Writes
PATH (default: $OUT/resample_vs_torchaudio.json, else ./resample_vs_torchaudio.json); exits 1 if a
length differs or a difference exceeds 1e-6.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torchaudio

from funasr_nano.frontend.resample import _plan, output_length, resample_like_torchaudio

COMMON_RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000)
# Odd ones: 12345, 32050 and 7919 (prime) do not reduce well against 16000; 44056 takes our grouped
# large-kernel path; the others are studio rates.
ODD_RATES = (12345, 32050, 44056, 7919, 37800, 88200, 96000)
TOLERANCE = 1e-6
# Past 2**24 output samples torchaudio's float32 length arithmetic rounds; this input checks we round alike.
LONG_INPUT = (44100, 48_510_007)


def lengths_for(rate: int) -> list[int]:
    rng = np.random.default_rng(rate)
    return [1, 399, rate, 106_940, int(rate * 7.3) + 3, *rng.integers(1_000, 30 * rate, 3).tolist()]


def signals(rate: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(length)
    t = np.arange(length) / rate
    return {
        "noise": (rng.standard_normal(length) * 0.3).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 7300 * t)).astype(np.float32),
    }


def kernel_equal(rate: int, transform: torchaudio.transforms.Resample) -> bool | None:
    """Our taps equal torchaudio's; None where ours are grouped (compared through the outputs instead)."""
    plan = _plan(rate)
    return None if plan.kernel is None else bool(torch.equal(plan.kernel, transform.kernel.cpu()))


def compare(rate: int, devices: list[str]) -> dict:
    transforms = {d: torchaudio.transforms.Resample(rate, 16000).to(d) for d in devices}
    record: dict = {"rate": rate, "kernel_equal": kernel_equal(rate, transforms["cpu"]), "cases": []}
    for length in lengths_for(rate):
        for name, samples in signals(rate, length).items():
            ours = resample_like_torchaudio(samples, rate)
            case = {"length": length, "signal": name, "ours": int(ours.size)}
            for device, transform in transforms.items():
                with torch.inference_mode():
                    theirs = transform(torch.from_numpy(samples).to(device)[None, :])[0].cpu().numpy()
                case[f"torchaudio_{device}"] = int(theirs.size)
                same_length = theirs.size == ours.size
                case[f"max_abs_diff_{device}"] = float(np.abs(theirs - ours).max()) if same_length else None
                case[f"bit_identical_{device}"] = bool(same_length and np.array_equal(theirs, ours))
            case["ceil"] = math.ceil(length * 16000 / rate)
            record["cases"].append(case)
    for device in devices:
        diffs = [c[f"max_abs_diff_{device}"] for c in record["cases"]]
        record[f"max_abs_diff_{device}"] = None if None in diffs else max(diffs)
        record[f"all_bit_identical_{device}"] = all(c[f"bit_identical_{device}"] for c in record["cases"])
    record["lengths_equal"] = all(c["ours"] == c["torchaudio_cpu"] for c in record["cases"])
    return record


def long_input() -> dict:
    rate, length = LONG_INPUT
    transform = torchaudio.transforms.Resample(rate, 16000)
    with torch.inference_mode():
        theirs = transform(torch.zeros(1, length))
    return {"rate": rate, "length": length, "torchaudio": int(theirs.shape[-1]),
            "ours": output_length(length, rate), "exact_ceil": math.ceil(length * 16000 / rate)}


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


def device_names(devices: list[str]) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    names = {"cpu": f"{model} ({os.cpu_count()} cores)"}
    if "cuda" in devices:
        names["cuda"] = torch.cuda.get_device_name(0)
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ["OUT"]) / "resample_vs_torchaudio.json" if os.environ.get("OUT") else None
    parser.add_argument("--json", type=Path, default=default or Path("resample_vs_torchaudio.json"))
    parser.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse HEAD)")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rates = [compare(rate, devices) for rate in COMMON_RATES + ODD_RATES]
    long = long_input()
    worst = {d: max(math.inf if r[f"max_abs_diff_{d}"] is None else r[f"max_abs_diff_{d}"] for r in rates)
             for d in devices}
    passed = all(r["lengths_equal"] for r in rates) and worst["cpu"] <= TOLERANCE and long["ours"] == long["torchaudio"]
    document = {
        "workload": "resample_vs_torchaudio",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", "benchmarks.resample_vs_torchaudio", *sys.argv[1:]]),
        "git_commit": args.commit or git_commit(),
        "device": device_names(devices),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "passed": passed,
        "worst_max_abs_diff": worst,
        "common_rates_bit_identical_cpu": all(r["all_bit_identical_cpu"] for r in rates if r["rate"] in COMMON_RATES),
        "long_input_length": long,
        "rates": rates,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    for r in rates:
        cells = " ".join(f"{d}: max|diff| {r[f'max_abs_diff_{d}']:.3g} bit-identical {r[f'all_bit_identical_{d}']}"
                         for d in devices)
        print(f"{r['rate']:>6} Hz  lengths equal {r['lengths_equal']}  kernel equal {r['kernel_equal']}  {cells}")
    print(f"long input: {long}")
    print(f"{'PASSED' if passed else 'FAILED'}; wrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
