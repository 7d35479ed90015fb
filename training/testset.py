"""Synthesize the held-out test sets of the demo model to FLAC files and a manifest.

Split ``sentences``: test sentences spoken by training voices (measures generalisation to new text).
Split ``voices``: the next test sentences spoken by held-out voices (new text AND new speakers).
Split ``long`` (``--long N``): N recordings per language of 6-10 ``sentences`` clips joined with pauses
and faint white noise, for the VAD path. Deterministic for a given corpus and seed.

    python -m training.testset CORPUS.jsonl OUT_DIR [--per-split 200] [--seed 11] [--processes N] [--long N]

espeak-ng comes from ``ESPEAK`` / ``ESPEAK_DATA_PATH`` when set (see training/synth.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from training.synth import SAMPLE_RATE, Voice, pick_voice, speak_many

LANGUAGES = ("en", "zh", "ja")
SPLITS = {"sentences": False, "voices": True}  # split -> spoken by held-out voices
LONG_PARTS = (6, 10)
LONG_PAUSE_S = (0.4, 1.5)
LONG_NOISE_DB = 35.0  # white noise this far below the speech RMS: audible but harmless


@dataclass
class Clip:
    split: str
    lang: str
    item: dict
    voice: Voice
    samples: np.ndarray | None = None
    path: str = ""


def load_test_items(corpus: Path) -> dict[str, list[dict]]:
    """Test items per language, in corpus order."""
    by_lang: dict[str, list[dict]] = {lang: [] for lang in LANGUAGES}
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            if item.get("split") == "test" and item["lang"] in by_lang:
                by_lang[item["lang"]].append(item)
    return by_lang


def plan_clips(by_lang: dict[str, list[dict]], per_split: int, seed: int) -> list[Clip]:
    """First ``per_split`` test items of a language -> sentences, the next ``per_split`` -> voices.

    One RNG per (split, language) so that changing one split or language leaves the others' voices."""
    clips = []
    for lang, items in by_lang.items():
        for index, (split, held_out) in enumerate(SPLITS.items()):
            chosen = items[index * per_split : (index + 1) * per_split]
            if len(chosen) < per_split:
                print(f"warning: only {len(chosen)} {lang} test items for split {split}", file=sys.stderr)
            rng = random.Random(f"{seed}-{split}-{lang}")
            clips += [Clip(split, lang, item, pick_voice(rng, lang, held_out)) for item in chosen]
    return clips


def write_flac(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def clip_record(clip: Clip) -> dict:
    assert clip.samples is not None
    return {
        "path": clip.path,
        "split": clip.split,
        "lang": clip.lang,
        "text": clip.item["itn"],
        "spoken": clip.item["spoken"],
        "voice": clip.voice.name,
        "rate": clip.voice.rate,
        "pitch": clip.voice.pitch,
        "duration": round(len(clip.samples) / SAMPLE_RATE, 3),
    }


def synthesize(clips: list[Clip], out_dir: Path, processes: int) -> list[Clip]:
    """Speak every clip in parallel and write it; clips espeak-ng failed on are dropped (and reported)."""
    results = speak_many([(clip.item["speech"], clip.voice) for clip in clips], processes)
    kept, numbers = [], dict.fromkeys(((c.split, c.lang) for c in clips), 0)
    for clip, samples in zip(clips, results, strict=True):
        if samples is None:
            print(f"warning: espeak-ng failed on {clip.item['speech']!r} ({clip.voice.name})", file=sys.stderr)
            continue
        # numbered after dropping failures so that names stay dense
        number = numbers[clip.split, clip.lang]
        numbers[clip.split, clip.lang] += 1
        clip.samples, clip.path = samples, f"{clip.split}/{clip.lang}-{number:04d}.flac"
        write_flac(out_dir / clip.path, samples)
        kept.append(clip)
    return kept


def long_recording(parts: list[Clip], rng: random.Random) -> tuple[np.ndarray, list[dict]]:
    """Join clips with random pauses (also before the first and after the last), add faint white noise."""
    pieces, timeline, position = [], [], 0

    def pause() -> None:
        nonlocal position
        length = int(rng.uniform(*LONG_PAUSE_S) * SAMPLE_RATE)
        pieces.append(np.zeros(length, dtype=np.float32))
        position += length

    pause()
    for clip in parts:
        assert clip.samples is not None
        pieces.append(clip.samples.astype(np.float32))
        end = position + len(clip.samples)
        timeline.append(
            {
                "start": round(position / SAMPLE_RATE, 3),
                "end": round(end / SAMPLE_RATE, 3),
                "text": clip.item["itn"],
                "source": clip.path,
            }
        )
        position = end
        pause()
    audio = np.concatenate(pieces)
    speech = np.concatenate([clip.samples.astype(np.float32) for clip in parts if clip.samples is not None])
    noise_rms = float(np.sqrt(np.mean(speech**2))) * 10 ** (-LONG_NOISE_DB / 20)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, noise_rms, len(audio))
    mixed = np.clip(np.round(audio + noise), -32768, 32767).astype(np.int16)
    return mixed, timeline


def make_long(clips: list[Clip], count: int, seed: int, out_dir: Path) -> list[dict]:
    """``count`` long recordings per language from consecutive ``sentences`` clips (re-used audio).

    The run of clips starts at a random clip and wraps around, so a small test set still gives 6-10 parts
    (then some repeat)."""
    records = []
    for lang in LANGUAGES:
        pool = [c for c in clips if c.split == "sentences" and c.lang == lang]
        if not pool:
            continue
        rng = random.Random(f"{seed}-long-{lang}")
        for number in range(count):
            start, length = rng.randrange(len(pool)), rng.randint(*LONG_PARTS)
            parts = [pool[(start + i) % len(pool)] for i in range(length)]
            samples, timeline = long_recording(parts, rng)
            path = f"long/{lang}-{number:02d}.flac"
            write_flac(out_dir / path, samples)
            records.append(
                {
                    "path": path,
                    "split": "long",
                    "lang": lang,
                    "text": (" " if lang == "en" else "").join(part["text"] for part in timeline),
                    "duration": round(len(samples) / SAMPLE_RATE, 3),
                    "parts": timeline,
                }
            )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-split", type=int, default=200, help="clips per language in each split")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--long", type=int, default=0, help="long-form recordings per language")
    args = parser.parse_args()

    clips = plan_clips(load_test_items(args.corpus), args.per_split, args.seed)
    clips = synthesize(clips, args.out_dir, args.processes)
    records = [clip_record(clip) for clip in clips]
    if args.long:
        records += make_long(clips, args.long, args.seed, args.out_dir)
    with (args.out_dir / "manifest.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for record in records:
        counts[record["split"]] = counts.get(record["split"], 0) + 1
    print(f"{len(records)} clips {counts} -> {args.out_dir}")


if __name__ == "__main__":
    main()
