"""Accuracy of a model on a synthesized test set (training/testset.py): WER for English, CER for
Chinese and Japanese, corpus-level (total edits / total reference units) per split and language.

    python -m benchmarks.accuracy --model DIR --testset OUT_DIR [--splits sentences,voices,long] [--limit N]
        [--device cpu|cuda] [--dtype float32|bfloat16] [--mode plain|stream|batch1|server] [--url URL]
        [--json out.json]

Modes: plain decodes a split batched (``transcribe_many``); batch1 one file at a time; stream one at a time
with ``on_text``, checking that the streamed pieces add up to the final text; server posts each file to a
running ``funasr-nano serve`` at ``--url``. The ``long`` split always decodes with VAD on, the others with
VAD off (one segment per clip, as the official model). The scoring functions import without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SPLITS = ("sentences", "voices", "long")
WORD_LANGUAGES = ("en",)  # scored in words; every other language in characters
_DELETED = "'\u2019"  # apostrophes vanish ("don't" = "dont"); other punctuation separates words


# ---------------------------------------------------------------- scoring (no heavy imports)


def metric_for(lang: str) -> str:
    return "WER" if lang in WORD_LANGUAGES else "CER"


def normalize(text: str, lang: str) -> list[str]:
    """The units scored: lowercased words without punctuation (en), else characters without punctuation
    or whitespace. NFKC first so that full-width and half-width forms compare equal."""
    text = unicodedata.normalize("NFKC", text).lower()
    kept = "".join(
        "" if char in _DELETED else " " if unicodedata.category(char).startswith("P") else char for char in text
    )
    if lang in WORD_LANGUAGES:
        return kept.split()
    return [char for char in kept if not char.isspace()]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1), one row at a time."""
    previous = list(range(len(hyp) + 1))
    for i, ref_unit in enumerate(ref, 1):
        current = [i]
        for j, hyp_unit in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_unit != hyp_unit)))
        previous = current
    return previous[-1]


def error_rates(pairs: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """(lang, ref, hyp) triples -> {lang: {"metric", "error_rate", "edits", "units", "clips"}}.

    Corpus-level: the total edits over the total reference units, so long clips weigh more than short
    ones; error_rate is None when there are no reference units."""
    totals: dict[str, dict[str, Any]] = {}
    for lang, ref, hyp in pairs:
        ref_units, hyp_units = normalize(ref, lang), normalize(hyp, lang)
        entry = totals.setdefault(lang, {"metric": metric_for(lang), "edits": 0, "units": 0, "clips": 0})
        entry["edits"] += edit_distance(ref_units, hyp_units)
        entry["units"] += len(ref_units)
        entry["clips"] += 1
    for entry in totals.values():
        entry["error_rate"] = round(entry["edits"] / entry["units"], 4) if entry["units"] else None
    return totals


# ---------------------------------------------------------------- test set


def read_manifest(testset: Path, splits: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    """Manifest lines of the chosen splits, at most ``limit`` per split and language, in file order."""
    chosen, counts = [], dict[tuple[str, str], int]()
    with (testset / "manifest.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            key = (record["split"], record["lang"])
            if record["split"] not in splits or (limit is not None and counts.get(key, 0) >= limit):
                continue
            counts[key] = counts.get(key, 0) + 1
            chosen.append(record)
    return chosen


# ---------------------------------------------------------------- decoding


def _flags(result: Any) -> list[str]:
    return sorted({flag for segment in result.segments for flag in segment.flags})


def _clip_result(result: Any) -> dict[str, Any]:
    """hyp and guard flags of a Transcription, or the error a bad input raised."""
    if isinstance(result, Exception):
        return {"hyp": "", "flags": [], "error": f"{type(result).__name__}: {result}"}
    return {"hyp": result.text, "flags": _flags(result)}


def decode_plain(model: Any, paths: list[str], vad: bool) -> list[dict[str, Any]]:
    return [_clip_result(result) for result in model.transcribe_many(paths, language=None, vad=vad)]


def decode_one_by_one(model: Any, paths: list[str], vad: bool, stream: bool) -> list[dict[str, Any]]:
    from funasr_nano.errors import FunASRNanoError

    decoded = []
    for path in paths:
        pieces: list[str] = []
        try:
            result = model.transcribe(path, vad=vad, on_text=pieces.append if stream else None)
        except FunASRNanoError as exc:
            decoded.append(_clip_result(exc))
            continue
        record = _clip_result(result)
        if stream:
            # the on_text contract: the pieces, concatenated, are exactly the final text
            record["stream_pieces"] = len(pieces)
            record["stream_match"] = "".join(pieces) == result.text
        decoded.append(record)
    return decoded


def decode_server(url: str, paths: list[str]) -> list[dict[str, Any]]:
    """POST each file; the server decides VAD itself. Its json response has no segments: flags unknown."""
    import requests

    decoded = []
    endpoint = url.rstrip("/") + "/v1/audio/transcriptions"
    for path in paths:
        with open(path, "rb") as audio:
            files = {"file": (Path(path).name, audio, "audio/flac")}
            response = requests.post(endpoint, files=files, data={"response_format": "json"}, timeout=600)
        if response.ok:
            decoded.append({"hyp": response.json()["text"], "flags": None})
        else:
            decoded.append({"hyp": "", "flags": None, "error": f"HTTP {response.status_code}: {response.text}"})
    return decoded


def decode_split(model: Any, args: argparse.Namespace, split: str, paths: list[str]) -> list[dict[str, Any]]:
    vad = split == "long"  # long recordings need cutting; single sentences are decoded whole
    if args.mode == "server":
        return decode_server(args.url, paths)
    if args.mode == "plain":
        return decode_plain(model, paths, vad)
    return decode_one_by_one(model, paths, vad, stream=args.mode == "stream")


# ---------------------------------------------------------------- report


def summarize(clips: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for split in dict.fromkeys(clip["split"] for clip in clips):
        chosen = [clip for clip in clips if clip["split"] == split]
        rates = error_rates((clip["lang"], clip["ref"], clip["hyp"]) for clip in chosen)
        for lang, entry in rates.items():
            entry["guard_flags"] = sum(bool(clip["flags"]) for clip in chosen if clip["lang"] == lang)
            entry["errors"] = sum("error" in clip for clip in chosen if clip["lang"] == lang)
            if any("stream_match" in clip for clip in chosen):
                entry["stream_mismatches"] = sum(
                    not clip.get("stream_match", True) for clip in chosen if clip["lang"] == lang
                )
        results[split] = rates
    return results


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(f"{'split':<10} {'lang':<4} {'metric':<6} {'rate':>8} {'units':>7} {'clips':>6} {'flags':>6}")
    for split, by_lang in results.items():
        for lang, entry in by_lang.items():
            rate = "-" if entry["error_rate"] is None else f"{100 * entry['error_rate']:.2f}%"
            print(
                f"{split:<10} {lang:<4} {entry['metric']:<6} {rate:>8} {entry['units']:>7} "
                f"{entry['clips']:>6} {entry['guard_flags']:>6}"
            )


def _provenance(device: str) -> dict[str, Any]:
    from benchmarks.common import provenance  # torch and the oracle: only for the record

    return provenance("accuracy", device)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (hub layout)")
    parser.add_argument("--testset", required=True, type=Path, help="OUT_DIR of training/testset.py")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--limit", type=int, default=None, help="at most N clips per split and language")
    parser.add_argument("--device", default="auto", help="cpu | cuda[:N] | auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--backend", default="torch", choices=("torch", "mlx"))
    parser.add_argument("--int8", action="store_true", help="torch CPU: weight-only int8 LLM linears")
    parser.add_argument("--mode", default="plain", choices=("plain", "stream", "batch1", "server"))
    parser.add_argument("--url", default=None, help="server mode: base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--json", type=Path, default=None, help="write the full record here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "server" and not args.url:
        print("--mode server needs --url of a running server; nothing to do", file=sys.stderr)
        return 0
    splits = [split.strip() for split in args.splits.split(",") if split.strip()]
    records = read_manifest(args.testset, splits, args.limit)
    model = None
    if args.mode != "server":
        import funasr_nano

        model = funasr_nano.load_model(
            args.model, device=args.device, dtype=args.dtype, backend=args.backend, int8=args.int8
        )

    clips, seconds = [], {}
    for split in dict.fromkeys(record["split"] for record in records):
        chosen = [record for record in records if record["split"] == split]
        started = time.perf_counter()
        decoded = decode_split(model, args, split, [str(args.testset / r["path"]) for r in chosen])
        seconds[split] = round(time.perf_counter() - started, 3)
        for record, result in zip(chosen, decoded, strict=True):
            clips.append(
                {"path": record["path"], "split": split, "lang": record["lang"], "ref": record["text"], **result}
            )

    results = summarize(clips)
    print_table(results)
    if args.json:
        report = {
            "provenance": _provenance(args.device),
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "backend": args.backend,
            "int8": args.int8,
            "mode": args.mode,
            "decode_s": seconds,
            "results": results,
            "clips": clips,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
