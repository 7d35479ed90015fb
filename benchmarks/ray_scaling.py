"""The Ray batch path against the plain CLI on one machine: overhead of one replica, and 1 -> N replicas.

    python -m benchmarks.ray_scaling --inputs DIR [--model demo] [--device cpu] [--replicas 1,2]
        [--cpus 2] --out benchmarks/results/DATE-cpu-ray-scaling-demo.json

Each system is one `funasr-nano transcribe DIR -o OUT -f json -q` process (the Ray ones with --ray
inside a fresh network namespace, as Ray probes public addresses when it starts); wall time is the
whole process, cluster start and model loading included, so the overhead is what a user waits. The
texts of every Ray run are compared with the plain CLI's. One replica gets all --cpus cores; N
replicas share them (--replica-cpus cpus/N).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import provenance


def texts(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): json.loads(p.read_text())["text"] for p in sorted(out.rglob("*.json"))}


def timed(command: list[str], isolate: bool) -> tuple[float, subprocess.CompletedProcess]:
    if isolate:
        command = ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + shlex.join(command)]
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - started, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--cpus", type=int, default=2, help="cores the machine gives the job")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "funasr_nano", "transcribe", str(args.inputs), "-f", "json", "-q",
           "--model", args.model, "--device", args.device]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain_out = Path(tmp) / "plain"
        seconds, process = timed([*cli, "-o", str(plain_out), "--threads", str(args.cpus)], isolate=False)
        if process.returncode not in (0, 1):
            sys.exit(process.stderr[-3000:])
        reference = texts(plain_out)
        runs["plain CLI"] = {"wall_s": round(seconds, 2), "files": len(reference)}
        for count in (int(n) for n in args.replicas.split(",")):
            out = Path(tmp) / f"ray-{count}"
            command = [*cli, "-o", str(out), "--ray", "--replicas", str(count),
                       "--replica-cpus", str(args.cpus / count)]
            seconds, process = timed(command, isolate=True)
            got = texts(out)
            runs[f"ray, {count} replica{'s' if count > 1 else ''}"] = {
                "wall_s": round(seconds, 2), "exit_status": process.returncode, "files": len(got),
                "texts_equal_plain_cli": got == reference,
                "differing_files": sorted(name for name in reference if got.get(name) != reference[name])[:20],
                "stderr_tail": process.stderr[-400:] if process.returncode not in (0, 1) else "",
            }
    plain = runs["plain CLI"]["wall_s"]
    for name, figures in runs.items():
        if name != "plain CLI":
            figures["overhead_vs_plain_cli"] = round(figures["wall_s"] / plain - 1, 3)
    one = next((f for n, f in runs.items() if n == "ray, 1 replica"), None)
    for name, figures in runs.items():
        if one and name.startswith("ray, ") and figures is not one:
            figures["speedup_vs_one_replica"] = round(one["wall_s"] / figures["wall_s"], 3)
    record = {**provenance("ray_scaling", args.device), "inputs": str(args.inputs), "model": args.model,
              "cpus": args.cpus, "audio_files": runs["plain CLI"]["files"], "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(record, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
