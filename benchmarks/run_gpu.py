"""One side-by-side GPU benchmark run: build the checkpoint, run ours and the peers, write the results.

    python -m benchmarks.run_gpu --work /tmp/bench --commit SHA [--results benchmarks/results] [--logs DIR]

Each system runs in its own process, one after the other, on the same machine, checkpoint and inputs;
the figures go to <results>/<date>-<device>-<workload>.json for L1, D1 and T1 (make_table.py renders them).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DESCRIPTIONS = {
    "L1": "single-request latency: one 41.26 s clip, batch 1, 124 new tokens, from a 16 kHz array to text",
    "D1": "decode step at a 600-token context, batch 1/8/32/128 (ms per step)",
    "T1": "offline throughput: 120 segments of 30 s (1 hour), 90 new tokens each",
    "C1": "L1 on the CPU",
}


def run(command: list[str], log: Path, timeout: float) -> float:
    """Run one system's process; its JSON is written as it goes, so a timeout keeps what finished."""
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    try:
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=timeout)
        output, status = process.stdout, str(process.returncode)
    except subprocess.TimeoutExpired as expired:
        output, status = (expired.stdout or b"").decode(errors="replace"), f"timeout after {timeout} s"
    with log.open("a") as sink:
        sink.write(output + f"\n[exit status {status}]\n")
    print(output[-2500:], f"[exit status {status}]", flush=True)
    return round(time.perf_counter() - started, 1)


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"error": f"{path.name} missing (see the log)"}


def device_slug(name: str) -> str:
    lowered = name.lower()
    for chip in ("h200", "h100", "a100", "l40s", "l4"):
        if chip in lowered:
            return chip
    return lowered.split()[0] if lowered else "device"


def write_results(
    results: Path, base: dict, systems: dict[str, dict[str, dict | None]], date: str, slug: str
) -> list[Path]:
    written = []
    for workload, rows in systems.items():
        record = {**base, "workload": workload, "description": DESCRIPTIONS[workload],
                  "systems": {name: figures for name, figures in rows.items() if figures is not None}}
        path = results / f"{date}-{slug}-{workload}.json"
        path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--commit", required=True, help="git commit of the tree under test (plus '+dirty')")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--logs", type=Path, help="where the per-system JSON and the log go (default: --work)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeouts", default="150,90,180,200",
                        help="seconds for ours, profile, official, transformers (in that order)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    logs = args.logs or args.work
    log = logs / "bench.log"
    model = args.work / "model"
    python = sys.executable
    limits = [float(t) for t in args.timeouts.split(",")]
    timings = {}
    build = subprocess.run([python, "-m", "benchmarks.build_checkpoint", str(model)], capture_output=True, text=True)
    print(build.stdout, build.stderr[-2000:], flush=True)
    checkpoint = ast.literal_eval(build.stdout.strip().splitlines()[-1])
    ours, hf, official, profile = (logs / f"{n}.json" for n in ("ours", "transformers", "official", "profile"))
    timings["ours_s"] = run([python, "-m", "benchmarks.bench_ours", "--model", str(model), "--json", str(ours),
                             "--repeats", str(args.repeats)], log, limits[0])
    timings["profile_s"] = run([python, "-m", "benchmarks.profile_gpu", "--model", str(model), "--json", str(profile)],
                               log, limits[1])
    timings["official_s"] = run([python, "-m", "benchmarks.bench_peers", "official", "--model", str(model),
                                 "--json", str(official), "--workloads", "L1,T1"], log, limits[2])
    timings["transformers_s"] = run([python, "-m", "benchmarks.bench_peers", "transformers", "--model", str(model),
                                     "--json", str(hf), "--workloads", "L1,D1"], log, limits[3])
    o, h, f, prof = load(ours), load(hf), load(official), load(profile)
    base = {
        "date": datetime.date.today().isoformat(),
        "device": o.get("device") or h.get("device") or f.get("device"),
        "command": "python -m benchmarks.run_gpu " + shlex.join(sys.argv[1:]),
        "git_commit": args.commit,
        "versions": {**o.get("versions", {}), "funasr": f.get("versions", {}).get("funasr")},
        "checkpoint": {"kind": "full-size random, official hub layout (benchmarks/build_checkpoint.py)",
                       **checkpoint, "official_loader_keys_equal": f.get("checkpoint_keys_loaded")},
        "process_seconds": timings,
        "profile": prof,
    }
    ours_name = f"funasr-nano {o.get('dtype', '?')} (Triton decode + CUDA graphs)"
    systems = {
        "L1": {ours_name: o.get("L1"), "official funasr fp32": f.get("L1_fp32"),
               "official funasr bf16": f.get("L1_bf16"),
               "transformers generate, dynamic cache, bf16 (LLM only)": h.get("L1_dynamic"),
               "transformers generate, static cache + torch.compile, bf16 (LLM only)": h.get("L1_static_compiled")},
        "D1": {ours_name: o.get("D1"), "transformers generate, dynamic cache, bf16": h.get("D1_dynamic")},
        "T1": {ours_name: o.get("T1"), "official funasr fp32 (batched generate)": f.get("T1_fp32")},
    }
    for path in write_results(args.results, base, systems, base["date"], device_slug(base["device"] or "")):
        print("wrote", path, flush=True)
        if args.logs and args.logs.resolve() != args.results.resolve():
            shutil.copy(path, args.logs / path.name)


if __name__ == "__main__":
    main()
