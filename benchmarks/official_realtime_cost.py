"""What live input costs the official toolkit's way: re-decode the current sentence from its start every
0.48 s (the official realtime server's schedule), one decode at a time per process.

For held-out sentences of the demo test set, the OFFICIAL funasr FunASRNano (the demo model's directory,
loaded unchanged) decodes every prefix of 0.48 s, 0.96 s, ... of the sentence and then the whole
sentence, timed one by one on this machine. A stream costs the sum of those decodes per second of
speech; a process that decodes one at a time can hold at most ``seconds of speech / decode seconds``
streams talking at once (before any queueing delay). Compare ``benchmarks.live_load`` on the same
machine for ours.

    python -m benchmarks.official_realtime_cost --testset .cache/demo/testset --per-language 10 \\
        --threads 2 --json benchmarks/results/2026-12-03-cpu-official-realtime-cost.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import soundfile
import torch
import yaml

from benchmarks.accuracy import read_manifest
from benchmarks.common import provenance
from oracle.hub import official_kwargs

TICK_S = 0.48  # the official realtime server re-decodes the open sentence this often
DEMO = Path(__file__).resolve().parent.parent / "src" / "funasr_nano" / "demo" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testset", type=Path, required=True)
    parser.add_argument("--per-language", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from funasr import AutoModel

    config = yaml.safe_load((DEMO / "config.yaml").read_text(encoding="utf-8"))
    kwargs = official_kwargs(config, DEMO, 0, DEMO / "model.pt")
    kwargs.pop("ctc_vocab_size", None)
    model = AutoModel(**kwargs)
    rows = read_manifest(args.testset, ["sentences"], args.per_language)
    tick = round(TICK_S * 16000)
    speech_s = decode_s = 0.0
    decodes, per_sentence = 0, []
    # the official FunASRNano takes audio as a torch tensor (a numpy array is not recognised)
    model.generate(input=[torch.zeros(16000)], cache={}, batch_size=1)  # warm-up
    for row in rows:
        audio = soundfile.read(args.testset / row["path"], dtype="float32")[0]
        ends = [*range(tick, audio.size, tick), audio.size]
        spent = 0.0
        for end in ends:
            began = time.perf_counter()
            model.generate(input=[torch.from_numpy(audio[:end])], cache={}, batch_size=1, itn=True, max_length=512)
            spent += time.perf_counter() - began
        speech_s += audio.size / 16000
        decode_s += spent
        decodes += len(ends)
        per_sentence.append({"lang": row["lang"], "speech_s": round(audio.size / 16000, 3), "decodes": len(ends),
                             "decode_s": round(spent, 3)})
    result = {
        **provenance("official realtime cost", "cpu"),
        "threads": args.threads,
        "model": "demo (official funasr FunASRNano, the directory unchanged)",
        "schedule": f"every {TICK_S} s the sentence so far from its start, then the whole sentence",
        "sentences": len(rows),
        "speech_s": round(speech_s, 2),
        "decodes": decodes,
        "decode_s": round(decode_s, 2),
        "decode_s_per_speech_s": round(decode_s / speech_s, 4),
        "streams_per_process_at_most": round(speech_s / decode_s, 2),
        "per_sentence": per_sentence,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_sentence"}, indent=1))


if __name__ == "__main__":
    main()
