"""The README's accuracy table and agreement figures from benchmarks/accuracy.py records.

    python -m benchmarks.accuracy_table --reference torch-fp32=FILE [NAME=FILE ...] [--testset DIR]

For every record: its error rates per split and language (in %), and the share of clips whose text
equals the reference record's. With --testset (the directory training/testset.py wrote), also the
long recordings against their sentences decoded one by one and joined (from the reference record,
whose ``sentences`` split holds those clips).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.accuracy import error_rates
from funasr_nano.result import join_texts

COLUMNS = [(split, lang) for split in ("sentences", "voices", "long") for lang in ("en", "zh", "ja")]


def load(item: str) -> tuple[str, dict]:
    name, path = item.rsplit("=", 1)
    return name, json.loads(Path(path).read_text(encoding="utf-8"))


def rate(record: dict, split: str, lang: str) -> str:
    figures = record["results"].get(split, {}).get(lang)
    return "—" if figures is None else f"{100 * figures['error_rate']:.1f}"


def agreement(record: dict, reference: dict) -> tuple[int, int]:
    wanted = {clip["path"]: clip["hyp"] for clip in reference["clips"]}
    common = [clip for clip in record["clips"] if clip["path"] in wanted]
    return sum(clip["hyp"] == wanted[clip["path"]] for clip in common), len(common)


def long_against_joined(reference: dict, testset: Path) -> dict[str, dict[str, float]]:
    """Error rates of the long recordings (VAD) and of their sentences decoded one by one, joined."""
    hyps = {clip["path"]: clip["hyp"] for clip in reference["clips"]}
    rows = [json.loads(line) for line in (testset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    longs = [row for row in rows if row["split"] == "long" and row["path"] in hyps]
    vad = error_rates((row["lang"], row["text"], hyps[row["path"]]) for row in longs)
    joined = error_rates(
        (row["lang"], row["text"], join_texts([hyps[part["source"]] for part in row["parts"]])) for row in longs
    )
    return {lang: {"vad": vad[lang]["error_rate"], "joined": joined[lang]["error_rate"]} for lang in vad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", required=True, help="NAME=FILE the others are compared with")
    parser.add_argument("records", nargs="*", help="NAME=FILE")
    parser.add_argument("--testset", type=Path, default=None)
    args = parser.parse_args()
    reference_name, reference = load(args.reference)
    records = [(reference_name, reference), *map(load, args.records)]
    print("| path | " + " | ".join(f"{s} {lang}" for s, lang in COLUMNS) + " | same text as " + reference_name + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, record in records:
        same, total = agreement(record, reference)
        flags = sum(bool(clip.get("flags")) for clip in record["clips"])
        cells = " | ".join(rate(record, split, lang) for split, lang in COLUMNS)
        print(f"| {name} | {cells} | {same} of {total} ({100 * same / total:.1f} %); guard flags: {flags} |")
    if args.testset:
        print(json.dumps({"long_vad_vs_sentences_joined": long_against_joined(reference, args.testset)}, indent=1))


if __name__ == "__main__":
    main()
