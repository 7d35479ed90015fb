"""C1: L1 on this machine's CPU cores, the official funasr against funasr-nano's CPU modes.

    python -m benchmarks.bench_cpu --model DIR [--threads 2] [--rounds 2] [--modes fp32,bf16,int8,bf16-int8]
        [--quality MODE=ACCURACY.json ...] [--results benchmarks/results]

Modes: fp32; bf16 (encoder and LLM in bf16); int8 (weight-only int8 LLM linears, fp32 elsewhere);
bf16-int8 (both). The systems run one process at a time, alternating official and each mode for every
round, so that load from other users of a shared machine falls on all of them alike; each process
measures its own wall time and peak RSS. Build the checkpoint first with ``python -m
benchmarks.build_checkpoint`` (~10 GB RAM for the official process). Speed comes from the full-size
random checkpoint, quality from the demo model: ``--quality`` takes ``python -m benchmarks.accuracy``
records of each mode (and of fp32), and a mode's quality is held when every sentence-split error rate
is within +0.3 points of fp32's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import agreement

HERE = Path(__file__).resolve().parent
MODES = {
    "fp32": ("float32", False),
    "bf16": ("bfloat16", False),
    "int8": ("float32", True),
    "bf16-int8": ("bfloat16", True),
}
HELD_POINTS = 0.3


def cpu_model() -> dict:
    """The processor's name and the flags that decide which kernels run."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
    return {"model": name, "flags": [flag for flag in wanted if flag in flags]}


def quality(paths: dict[str, Path]) -> dict[str, dict]:
    """Per mode: the demo model's sentence-split error rates and whether they stay within +0.3 of fp32."""
    rates = {}
    for mode, path in paths.items():
        results = json.loads(path.read_text())["results"]
        rates[mode] = {f"sentences-{lang}": figures["error_rate"] for lang, figures in results["sentences"].items()}
    if "fp32" not in rates:
        return {mode: {"error_rates": r} for mode, r in rates.items()}
    reference = rates["fp32"]
    return {
        mode: {
            "error_rates": r,
            "quality_held": all(r[k] <= reference[k] + HELD_POINTS / 100 for k in reference),
            "accuracy_json": str(paths[mode]),
        }
        for mode, r in rates.items()
    }


def run(command: list[str], out: Path) -> dict:
    print("$ " + shlex.join(command), flush=True)
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode:
        print(process.stdout[-2000:], process.stderr[-4000:], flush=True)
        return {"error": f"exit status {process.returncode}"}
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--quality", nargs="*", default=[], metavar="MODE=ACCURACY.json")
    args = parser.parse_args()
    python, threads = sys.executable, str(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    runs: dict[str, list[dict]] = {"official": [], **{mode: [] for mode in modes}}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name in runs:
                out = Path(tmp) / f"{name}-{round_index}.json"
                shared = ["--model", str(args.model), "--json", str(out), "--device", "cpu", "--workloads", "L1",
                          "--repeats", "1", "--threads", threads]
                if name == "official":
                    command = [python, "-m", "benchmarks.bench_peers", "official", *shared, "--dtypes", "fp32"]
                else:
                    dtype, int8 = MODES[name]
                    command = [python, "-m", "benchmarks.bench_ours", *shared, "--dtype", dtype, "--warmups", "1"]
                    command += ["--int8"] if int8 else []
                runs[name].append(run(command, out))
                print(
                    name,
                    json.dumps(runs[name][-1].get("L1_fp32", runs[name][-1].get("L1")), default=str)[:600],
                    flush=True,
                )

    def seconds(result: dict) -> float:
        figures = result.get("L1_fp32") or result.get("L1") or {}
        return figures.get("end_to_end", {}).get("median_s", float("nan"))

    def system(name: str) -> dict:
        results = runs[name]
        figures = (results[-1].get("L1_fp32") or results[-1].get("L1") or {}) if results else {}
        times = [seconds(r) for r in results]
        # Other users' load only ever adds time: the fastest round is the least disturbed one.
        return {
            "end_to_end_s_per_round": times,
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "rtf": round(statistics.median(times) / 41.26, 4),
            "peak_rss_gb": max((r.get("L1_fp32") or r.get("L1") or {}).get("peak_rss_gb", 0) for r in results),
            "stages": figures.get("stages"),
            "load_s": results[-1].get("load_s") if results else None,
        }

    official = system("official")
    official_ids = (runs["official"][-1].get("L1_fp32") or {}).get("ids", [])
    held = quality({k: Path(v) for k, v in (item.split("=", 1) for item in args.quality)})
    systems = {"official funasr fp32": official}
    for mode in modes:
        figures = system(mode)
        figures["ids_vs_official_fp32"] = agreement(runs[mode][-1].get("L1_ids", []), official_ids)
        figures["speedup_vs_official"] = round(official["median_s"] / figures["median_s"], 2)
        figures["speedup_vs_official_fastest_rounds"] = round(official["min_s"] / figures["min_s"], 2)
        figures["demo_model_quality"] = held.get(mode, {"quality_held": None, "note": "no --quality record"})
        figures["quality_held"] = figures["demo_model_quality"].get("quality_held")
        systems[f"funasr-nano {mode}"] = figures
    date = datetime.date.today().isoformat()
    record = {
        "date": date,
        "workload": "C1",
        "description": "L1 (41.26 s clip, 124 new tokens) on the CPU",
        "device": f"{cpu_model()['model']}, {args.threads} threads (shared with other work at the time: runs "
        "alternated system by system)",
        "cpu": cpu_model(),
        "command": "python -m benchmarks.bench_cpu " + shlex.join(sys.argv[1:]),
        "git_commit": args.commit,
        "versions": runs[modes[0]][-1].get("versions") if modes else None,
        "quality_rule": f"demo model, sentence split: every error rate within +{HELD_POINTS} points of fp32",
        "systems": systems,
    }
    path = args.results / f"{date}-cpu-2core-C1.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(record, indent=1), flush=True)


if __name__ == "__main__":
    main()
