"""Synthesize the training pool into shards while training reads them (run in the background).

    python -m training.pool CORPUS.jsonl OUT_DIR --clips 120000 --shard 4000 --processes 14

Only ``train`` sentences are spoken, each once, by a training voice; the order is a seeded shuffle,
so a run that stops early holds a random subset. Shards already present are skipped (resumable).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from training.data import load_corpus
from training.synth import pick_voice, speak_many


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=120_000)
    parser.add_argument("--shard", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    corpus = load_corpus(args.corpus)
    train = [i for i, item in enumerate(corpus) if item["split"] == "train"]
    rng = random.Random(args.seed)
    rng.shuffle(train)
    train = train[: args.clips]
    voices = [pick_voice(rng, corpus[i]["lang"], held_out=False) for i in train]
    args.out.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(train), args.shard)):
        path = args.out / f"shard-{number:04d}.npz"
        if path.exists():
            continue
        chunk = train[start : start + args.shard]
        clips = speak_many([(corpus[i]["speech"], voices[start + k]) for k, i in enumerate(chunk)], args.processes)
        kept = [(i, c) for i, c in zip(chunk, clips, strict=True) if c is not None]
        offsets = np.cumsum([0] + [len(c) for _, c in kept])
        tmp = path.with_name("tmp-" + path.name)  # not matched by the loader's shard-*.npz
        np.savez(tmp, audio=np.concatenate([c for _, c in kept]), offsets=offsets, index=np.array([i for i, _ in kept]))
        tmp.rename(path)
        print(f"pool: {path.name} {len(kept)} clips, {offsets[-1] / 16000 / 3600:.2f} h", flush=True)


if __name__ == "__main__":
    main()
