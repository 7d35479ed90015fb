"""Our forced alignment and char timestamps against torchaudio and the official toolkit, run where
torchaudio works (the GPU machine: torchaudio 2.11 with torch 2.11).

(a) frames: ``funasr_nano.backends.alignment.forced_align`` (on --device, batched) against
    ``torchaudio.functional.forced_align`` (CPU, as the official toolkit calls it) and against the
    transcription of its kernel in oracle/forced_align_reference.py, on random log-probs of many shapes
    (quantised so that ties between paths are common) and on the demo model's log-probs;
(b) char timestamps: a random official checkpoint with a CTC head (oracle/official_ctc.py), the
    official ``FunASRNano.inference`` unchanged (real torchaudio) against ours on the same clips;
(c) the bundled demo model through the official ``AutoModel`` with its CTC branch (oracle/official_demo.py
    --ctc): text, ctc_text and char timestamps against ours on the demo samples.

    python -m benchmarks.compare_torchaudio --device cuda \
        --out benchmarks/results/2026-12-03-h200-compare-torchaudio.json \
        --store tests/data/torchaudio_forced_align.json   # torchaudio's own labels, for CI

``--store`` keeps torchaudio's labels for the small random cases (at most 16 frames) with their inputs,
so that CI, which has no torchaudio, checks the aligner against torchaudio itself and not only against
the transcription of its kernel.

Needs funasr==1.4.16 and torchaudio (its forced_align op).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from funasr_nano.backends.alignment import alignable, forced_align, token_labels
from oracle.forced_align_reference import torchaudio_forced_align


def _torchaudio(log_probs: np.ndarray, targets: list[int], blank: int) -> list[int] | None:
    import torchaudio.functional as F

    try:
        labels, _ = F.forced_align(torch.from_numpy(log_probs)[None], torch.tensor([targets]), blank=blank)
    except (RuntimeError, ValueError):
        return None
    return labels[0].tolist()


def random_cases(seed: int) -> list[tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    cases = []
    for frames in (1, 2, 3, 4, 7, 16, 33, 100, 257):
        for length in (1, 2, 3, 6, 13, 40, 120):
            for vocab in (3, 8, 50):
                for quantum in (None, 0.25, 1.0, 4.0):
                    logits = rng.normal(size=(frames, vocab)).astype(np.float32) * 3
                    lp = torch.log_softmax(torch.from_numpy(logits), -1).numpy()
                    if quantum is not None:
                        lp = (np.round(lp / quantum) * quantum).astype(np.float32)
                    targets = [int(x) for x in rng.integers(0, min(vocab - 1, 5), size=length)]
                    cases.append((lp, targets))
    return cases


def demo_cases() -> list[tuple[np.ndarray, list[int]]]:
    import funasr_nano
    from funasr_nano import demo
    from funasr_nano.frontend.audio import load_audio

    model = funasr_nano.load_model("demo", device="cpu")
    backend, tokenizer = model.backend, model.ctc_tokenizer
    cases = []
    for lang in ("en", "zh", "ja"):
        wav = load_audio(demo.sample(lang))
        with torch.inference_mode():
            _, hidden = backend.model.encode_waveforms_with_ctc([torch.from_numpy(wav)], backend.ctc_head)
            lp = torch.log_softmax(backend.ctc_head.ctc.ctc_lo(hidden[0]), -1).numpy()
        for text in (demo.sample_text(lang), model.transcribe(demo.sample(lang), vad=False).text):
            cases.append((lp, tokenizer.encode(text)))
    return cases


def compare_frames(cases: list[tuple[np.ndarray, list[int]]], device: str, have_torchaudio: bool) -> dict:
    blanks = [lp.shape[1] - 1 for lp, _ in cases]
    emissions = [torch.from_numpy(lp[:, [b, *t]]).to(device) for (lp, t), b in zip(cases, blanks, strict=True)]
    ours = forced_align(emissions, [t for _, t in cases])
    counts = {
        "cases": len(cases),
        "alignable": 0,
        "equal_torchaudio": 0,
        "equal_transcription": 0,
        "unalignable_agree": 0,
        "mismatches": [],
    }
    for k, ((lp, targets), blank, result) in enumerate(zip(cases, blanks, ours, strict=True)):
        expected = _torchaudio(lp, targets, blank) if have_torchaudio else None
        if not alignable(lp.shape[0], targets):
            counts["unalignable_agree"] += int(result is None and (expected is None or not have_torchaudio))
            continue
        counts["alignable"] += 1
        labels = token_labels(result, targets, blank) if result is not None else None
        transcription = torchaudio_forced_align(lp, targets, blank)
        counts["equal_transcription"] += int(labels == transcription)
        if have_torchaudio:
            counts["equal_torchaudio"] += int(labels == expected)
            if labels != expected and len(counts["mismatches"]) < 10:
                counts["mismatches"].append({"case": k, "frames": lp.shape[0], "targets": targets})
    return counts


def store_torchaudio(cases: list[tuple[np.ndarray, list[int]]], path: Path) -> int:
    """torchaudio's labels for the small alignable cases, with their log-probs (JSON)."""
    rows = []
    for log_probs, targets in cases:
        blank = log_probs.shape[1] - 1
        if log_probs.shape[0] > 16 or not alignable(log_probs.shape[0], targets):
            continue
        rows.append(
            {
                "log_probs": log_probs.tolist(),
                "targets": targets,
                "blank": blank,
                "labels": _torchaudio(log_probs, targets, blank),
            }
        )
    import torchaudio

    path.write_text(json.dumps({"torchaudio": torchaudio.__version__, "cases": rows}) + "\n")
    return len(rows)


def compare_official(device: str, work: Path) -> dict:
    import funasr_nano
    from funasr_nano.decoding.words import token_timestamps
    from oracle.official_ctc import build, official_inference
    from oracle.reference import make_wav

    am = build(work, seed=3)
    ours = funasr_nano.load_model(work, device=device, dtype="float32")
    backend, tokenizer = ours.backend, ours.ctc_tokenizer
    rows = []
    for k, samples in enumerate((16_000, 37_920, 52_800, 126_560, 320_000)):
        wav = make_wav(samples, 40 + k)
        official = official_inference(am, wav)  # the official code unchanged: torchaudio's forced_align
        row = {"samples": samples, "ctc_text_equal": None}
        for text_key, stamps_key in (("text", "timestamps"), ("ctc_text", "ctc_timestamps")):
            ids = tokenizer.encode(official[text_key])
            with torch.inference_mode():
                _, hidden = backend.model.encode_waveforms_with_ctc([torch.from_numpy(wav.numpy())], backend.ctc_head)
                (result,) = backend.ctc_head.run(hidden, [ids])
            got = (
                []
                if result.alignment is None
                else token_timestamps(lambda t: tokenizer.decode([t]), ids, result.alignment)
            )
            row[stamps_key] = {"tokens": len(official[stamps_key]), "equal": got == official[stamps_key]}
        mine = ours.transcribe(wav.numpy(), vad=False, word_timestamps=True, max_new_tokens=12)
        row["ctc_text_equal"] = mine.segments[0].ctc_text == official["ctc_text"] if mine.segments else None
        rows.append(row)
    return {"clips": rows, "all_equal": all(r["timestamps"]["equal"] and r["ctc_timestamps"]["equal"] for r in rows)}


def compare_demo_official(device: str, work: Path) -> dict:
    import subprocess
    import sys

    import funasr_nano
    from funasr_nano import demo
    from funasr_nano.decoding.words import token_timestamps
    from funasr_nano.frontend.audio import load_audio

    files = [str(demo.sample(lang)) for lang in ("en", "zh", "ja")]
    out = work / "official-demo.json"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "oracle.official_demo", str(demo.MODEL_DIR), str(out), *files, "--ctc"], check=True
    )
    official = json.loads(out.read_text())
    model = funasr_nano.load_model("demo", device=device, dtype="float32")
    backend, tokenizer = model.backend, model.ctc_tokenizer
    rows = []
    for k, path in enumerate(files):
        mine = model.transcribe(path, vad=False, word_timestamps=True)
        ids = tokenizer.encode(official["texts"][k])
        wav = torch.from_numpy(load_audio(path))
        with torch.inference_mode():
            _, hidden = backend.model.encode_waveforms_with_ctc([wav], backend.ctc_head)
            (result,) = backend.ctc_head.run(hidden, [ids])
        got = (
            [] if result.alignment is None else token_timestamps(lambda t: tokenizer.decode([t]), ids, result.alignment)
        )
        rows.append(
            {
                "file": Path(path).name,
                "text_equal": mine.text == official["texts"][k],
                "ctc_text_equal": mine.segments[0].ctc_text == official["ctc_texts"][k],
                "timestamps": {
                    "tokens": len(official["timestamps"][k] or []),
                    "equal": got == official["timestamps"][k],
                },
            }
        )
    return {
        "clips": rows,
        "all_equal": all(r["text_equal"] and r["ctc_text_equal"] and r["timestamps"]["equal"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/funasr-nano-official-ctc"))
    parser.add_argument("--store", type=Path, help="write torchaudio's labels of the small cases here (JSON)")
    args = parser.parse_args()
    from benchmarks.common import provenance

    try:
        import torchaudio  # noqa: F401

        have_torchaudio = True
    except ImportError:
        have_torchaudio = False
    document = provenance("compare-torchaudio", args.device)
    document["torchaudio"] = __import__("torchaudio").__version__ if have_torchaudio else None
    document["random"] = compare_frames(random_cases(0), args.device, have_torchaudio)
    document["demo"] = compare_frames(demo_cases(), args.device, have_torchaudio)
    if have_torchaudio:
        document["official_char_timestamps"] = compare_official(args.device, args.work)
        document["demo_official_ctc"] = compare_demo_official(args.device, args.work)
        if args.store:
            document["stored_cases"] = store_torchaudio(random_cases(0), args.store)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: v
                for k, v in document.items()
                if k in ("random", "demo", "official_char_timestamps", "demo_official_ctc")
            },
            indent=1,
        )[:4000]
    )


if __name__ == "__main__":
    main()
