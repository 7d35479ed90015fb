"""Print the README speed tables (markdown) from benchmarks/results/*-{L1,T1,D1,C1}.json.

    python -m benchmarks.make_table [--results benchmarks/results]

For each workload and device the newest file is used; every figure comes from one run of all systems.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFICIAL_FP32 = ("official funasr fp32", "official funasr fp32 (batched generate)")


def newest(results: Path, workload: str) -> list[dict]:
    """The newest record of each device for one workload."""
    chosen: dict[str, dict] = {}
    for path in sorted(results.glob(f"*-{workload}.json")):
        record = json.loads(path.read_text())
        record["file"] = path.name
        chosen[record["device"]] = record  # sorted by date prefix: later files win
    return list(chosen.values())


def header(record: dict) -> str:
    return (f"**{record['workload']}** — {record['description']}. {record['device']}, {record['date']}, "
            f"commit {record['git_commit']} (`{record['file']}`)\n")


def official_seconds(systems: dict, key: str) -> float | None:
    for name in OFFICIAL_FP32:
        figures = systems.get(name)
        if figures and key in figures:
            return figures[key]["median_s"]
    return None


def l1_table(record: dict) -> str:
    systems = record["systems"]
    base = official_seconds(systems, "end_to_end")
    rows = ["| system | seconds (median) | RTF | decode ms/token | peak GPU memory (allocated / reserved) | "
            "vs official fp32 |", "|---|---|---|---|---|---|"]
    for name, figures in systems.items():
        seconds = (figures.get("end_to_end") or figures.get("llm_only"))["median_s"]
        stages = figures.get("stages", {})
        decode = stages.get("decode_ms_per_token", figures.get("decode_ms_per_token", ""))
        memory = f"{figures.get('peak_allocated_gb', '')} / {figures.get('peak_reserved_gb', '')} GB"
        rtf = figures.get("rtf", "")
        ratio = f"{base / seconds:.1f}x" if base and "end_to_end" in figures else "(LLM only)"
        rows.append(f"| {name} | {seconds:.3f} | {rtf} | {decode} | {memory} | {ratio} |")
    ours = next(iter(systems.values()))
    if "stages" in ours:
        s = ours["stages"]
        rows.append("")
        rows.append(f"funasr-nano stages: features {s['features_s'] * 1e3:.1f} ms, encoder+adaptor "
                    f"{s['encoder_adaptor_s'] * 1e3:.1f} ms, prefill ({s['prompt_tokens']} tokens) "
                    f"{s['prefill_s'] * 1e3:.1f} ms, decode {s['decode_ms_per_token']:.3f} ms/token; "
                    f"reading the WAV file {ours['file_decode']['median_s'] * 1e3:.1f} ms (not included).")
    return "\n".join(rows) + "\n"


def t1_table(record: dict) -> str:
    systems = record["systems"]
    base = official_seconds(systems, "wall")
    rows = ["| system | wall seconds | audio seconds per second (RTFx) | peak GPU memory (allocated) | "
            "vs official fp32 |", "|---|---|---|---|---|"]
    for name, figures in systems.items():
        seconds = figures["wall"]["median_s"]
        ratio = f"{base / seconds:.1f}x" if base else ""
        rows.append(f"| {name} | {seconds:.3f} | {figures['rtfx']:.0f} | {figures['peak_allocated_gb']} GB | {ratio} |")
    return "\n".join(rows) + "\n"


def d1_table(record: dict) -> str:
    systems = record["systems"]
    batches = [b for b in next(iter(systems.values())) if b.isdigit()]
    rows = ["| system | " + " | ".join(f"batch {b}: ms/step (tokens/s)" for b in batches) + " |",
            "|---|" + "---|" * len(batches)]
    for name, figures in systems.items():
        cells = []
        for batch in batches:
            row = figures.get(batch, {})
            step = row.get("engine_loop_ms_per_step", row.get("ms_per_step"))
            cells.append(f"{step:.2f} ({row['tokens_per_s']:.0f})" if step is not None else "")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def c1_table(record: dict) -> str:
    systems = record["systems"]
    rows = ["| system | seconds, median of rounds (fastest) | RTF | peak RSS | vs official fp32, median (fastest) | "
            "greedy ids |", "|---|---|---|---|---|---|"]
    for name, figures in systems.items():
        ids = figures.get("ids_vs_official_fp32") or figures.get("ids_vs_ours_fp32")
        label = ("vs official" if "ids_vs_official_fp32" in figures else "vs ours fp32") if ids else ""
        same = f"{ids['equal_fraction']:.0%} equal {label}, common prefix {ids['common_prefix']}" if ids else ""
        speed = (f"{figures['speedup_vs_official']}x ({figures['speedup_vs_official_fastest_rounds']}x)"
                 if "speedup_vs_official" in figures else "1x")
        rows.append(f"| {name} | {figures['median_s']:.1f} ({figures['min_s']:.1f}) | {figures['rtf']} | "
                    f"{figures['peak_rss_gb']} GB | {speed} | {same} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    render = {"L1": l1_table, "T1": t1_table, "D1": d1_table, "C1": c1_table}
    for workload, table in render.items():
        for record in newest(args.results, workload):
            print(header(record))
            print(table(record))


if __name__ == "__main__":
    main()
