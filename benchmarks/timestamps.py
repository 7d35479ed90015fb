"""Word-timestamp accuracy and cost on the demo model.

Recordings with known word times, in two protocols: each sentence spoken whole by espeak-ng with the
time of every word from its word events (training/timed_speech.py), and every word (English) or
character (Chinese) spoken on its own with the pieces joined by known gaps; a word's true start and end
are where its voiced samples begin and end. Faint noise is added. The recordings are transcribed
with ``word_timestamps=True`` (no VAD: one segment, so only the alignment is measured); each decoded word
that matches a spoken word (difflib over the word sequences) is scored by |start error| and |end error|.

Cost: L1-like decode (one clip, the whole pipeline) with and without word timestamps, alternated, same
run: the whole transcription of the L1 clip (41.26 s, 124 new tokens), on the demo model or, with
``--model DIR --random-ctc-head --cost-only``, on the full-size random checkpoint of the other benchmarks
(benchmarks/build_checkpoint.py) with a random CTC head of the hub's shapes; --device cuda on the GPU.
On the demo model the new-token count is not fixed (it stops where it wants), so its cost figure is
noisy; the full-size random model never stops early and decodes exactly 124 tokens.

    python -m benchmarks.timestamps --out benchmarks/results/2026-12-03-cpu-timestamps-demo.json
    python -m benchmarks.timestamps --make-clips tests/data/word_timed --count 2   # the CI clips
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
# Short everyday sentences: words the demo model has heard in its training sentences' vocabulary.
EN_SENTENCES = [
    "she was born on september twenty six",
    "the weather is very nice today",
    "we will meet at the station at nine",
    "my brother likes to read books",
    "please open the window for me",
    "they went to the market yesterday",
    "this is a very good idea",
    "i have two cats and one dog",
    "the meeting starts in ten minutes",
    "he works in a big hospital",
]
ZH_SENTENCES = [
    "我们在北京见面",
    "今天天气很好",
    "他明天去上海",
    "我喜欢看书",
    "请打开窗户",
    "我有两只猫",
    "会议十点开始",
    "她在医院工作",
    "我们一起吃饭",
    "这个问题很难",
]
VOICED = 64  # |sample| above which espeak-ng output counts as voiced (training/synth.py)


def spoken_words(lang: str, sentence: str) -> list[str]:
    return sentence.split() if lang == "en" else list(sentence)


def make_recording(lang: str, sentence: str, rng: random.Random, whole: bool) -> tuple[np.ndarray, list[dict]]:
    """One recording and its words' true times (seconds). ``whole``: the sentence spoken as one, each
    word timed by espeak-ng's word events (training/timed_speech.py); else every word spoken on its own
    and the pieces joined with 0.1-0.4 s gaps."""
    from training.synth import pick_voice, speak

    voice = pick_voice(rng, lang, held_out=False)
    noise = np.random.default_rng(rng.randrange(2**31))
    lead = int(rng.uniform(0.3, 0.6) * SAMPLE_RATE)
    parts: list[np.ndarray] = [np.zeros(lead, np.float32)]
    truth: list[dict] = []
    if whole:
        from training.timed_speech import speak_timed

        samples, timed = speak_timed(sentence, voice)
        words = spoken_words(lang, sentence)
        if [sentence[w.start_char : w.end_char] for w in timed] != words:
            raise ValueError(f"espeak-ng's words of {sentence!r} are not its words")
        truth = [
            {"word": word, "start": round(lead / SAMPLE_RATE + w.start, 4), "end": round(lead / SAMPLE_RATE + w.end, 4)}
            for word, w in zip(words, timed, strict=True)
        ]
        parts.append(samples.astype(np.float32) / 32768)
    else:
        position = lead
        for word in spoken_words(lang, sentence):
            samples = speak(word, voice).astype(np.float32) / 32768
            voiced = np.flatnonzero(np.abs(samples) > VOICED / 32768)
            truth.append(
                {
                    "word": word,
                    "start": round((position + voiced[0]) / SAMPLE_RATE, 4),
                    "end": round((position + voiced[-1] + 1) / SAMPLE_RATE, 4),
                }
            )
            gap = int(rng.uniform(0.1, 0.4) * SAMPLE_RATE)
            parts += [samples, np.zeros(gap, np.float32)]
            position += samples.size + gap
    parts.append(np.zeros(int(0.4 * SAMPLE_RATE), np.float32))
    audio = np.concatenate(parts)
    audio += noise.normal(scale=0.002, size=audio.size).astype(np.float32)  # faint noise, as testset long
    return audio, truth


PROTOCOLS = {
    "whole_sentences": "each sentence spoken whole by espeak-ng (training voices); truth = the voiced samples "
    "from each word's espeak-ng word event to the next word's",
    "word_by_word": "every word/character spoken on its own by espeak-ng (training voices), joined with 0.1-0.4 s "
    "gaps; truth = the voiced samples of each word",
}


def recordings(count: int, seed: int, whole: bool) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for lang, sentences in (("en", EN_SENTENCES), ("zh", ZH_SENTENCES)):
        for sentence in sentences[:count]:
            audio, truth = make_recording(lang, sentence, rng, whole)
            items.append({"lang": lang, "sentence": sentence, "audio": audio, "words": truth})
    return items


def letters(word: str) -> str:
    """A word as compared: lower-case letters and digits only."""
    return "".join(c for c in word.lower() if c.isalnum())


def score(item: dict, words: list) -> list[dict]:
    """Errors of the decoded words that match spoken words (in order)."""
    spoken = [letters(w["word"]) for w in item["words"]]
    decoded = [letters(w.word) for w in words]
    matcher = difflib.SequenceMatcher(a=spoken, b=decoded, autojunk=False)
    errors = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            truth, ours = item["words"][block.a + k], words[block.b + k]
            errors.append(
                {
                    "word": truth["word"],
                    "start_error": round(ours.start - truth["start"], 4),
                    "end_error": round(ours.end - truth["end"], 4),
                }
            )
    return errors


def _stats(values: list[float]) -> dict[str, float]:
    absolute = sorted(abs(v) for v in values)
    if not absolute:
        return {}
    return {
        "median_abs": round(statistics.median(absolute), 4),
        "p90_abs": round(float(np.percentile(absolute, 90)), 4),
        "mean_signed": round(statistics.fmean(values), 4),
        "count": len(values),
    }


def reference_words(model, audio: np.ndarray, text: str) -> list:  # type: ignore[no-untyped-def]
    """The words of ``text`` (the spoken transcript) aligned against the model's CTC head on ``audio``: the
    aligner's accuracy without the recogniser's errors (torch backend)."""
    import torch

    from funasr_nano.decoding.words import aligned_words

    backend, tokenizer = model.backend, model.ctc_tokenizer
    ids = tokenizer.encode(text)
    with torch.inference_mode():
        _, hidden = backend.model.encode_waveforms_with_ctc([torch.from_numpy(audio)], backend.ctc_head)
        (result,) = backend.ctc_head.run(hidden, [ids])
    if result is None or result.alignment is None:
        return []
    return aligned_words(text, [tokenizer.token_bytes(t) for t in ids], result.alignment, 0.0, audio.size / SAMPLE_RATE)


def accuracy(model, items: list[dict], reference: bool) -> dict:  # type: ignore[no-untyped-def]
    """reference: align the spoken transcript; else the decoded text (words matched to the spoken ones)."""
    by_lang: dict[str, dict[str, list[float]]] = {}
    per_clip = []
    for item in items:
        if reference:
            text = item["sentence"]
            words = reference_words(model, item["audio"], text)
            result_text = text
        else:
            result = model.transcribe(item["audio"], vad=False, word_timestamps=True)
            words = [w for s in result.segments for w in s.words]
            result_text = result.text
        errors = score(item, words)
        bucket = by_lang.setdefault(item["lang"], {"start": [], "end": [], "spoken": [], "matched": []})
        bucket["start"] += [e["start_error"] for e in errors]
        bucket["end"] += [e["end_error"] for e in errors]
        bucket["spoken"].append(len(item["words"]))
        bucket["matched"].append(len(errors))
        per_clip.append(
            {
                "lang": item["lang"],
                "sentence": item["sentence"],
                "text": result_text,
                "matched": len(errors),
                "spoken": len(item["words"]),
                "errors": errors,
            }
        )
    summary = {}
    for lang, bucket in by_lang.items():
        summary[lang] = {
            "start": _stats(bucket["start"]),
            "end": _stats(bucket["end"]),
            "matched_words": sum(bucket["matched"]),
            "spoken_words": sum(bucket["spoken"]),
        }
    everything = [v for b in by_lang.values() for v in b["start"]], [v for b in by_lang.values() for v in b["end"]]
    summary["all"] = {"start": _stats(everything[0]), "end": _stats(everything[1])}
    return {"summary": summary, "clips": per_clip}


def cost(model, audio: np.ndarray, rounds: int, device: str) -> dict:  # type: ignore[no-untyped-def]
    from benchmarks.common import sync

    def once(words: bool) -> float:
        sync(device)
        started = time.perf_counter()
        model.transcribe(audio, vad=False, word_timestamps=words, max_new_tokens=124)
        sync(device)
        return time.perf_counter() - started

    once(False), once(True)  # warm-up
    plain, timed = [], []
    for _ in range(rounds):  # alternated, so drifts in machine load hit both alike
        plain.append(once(False))
        timed.append(once(True))
    median_plain, median_timed = statistics.median(plain), statistics.median(timed)
    return {
        "audio_seconds": round(audio.size / SAMPLE_RATE, 3),
        "rounds": rounds,
        "plain_s": [round(x, 4) for x in plain],
        "word_timestamps_s": [round(x, 4) for x in timed],
        "median_plain_s": round(median_plain, 4),
        "median_word_timestamps_s": round(median_timed, 4),
        "overhead": round(median_timed / median_plain - 1, 4),
    }


def attach_random_ctc_head(model, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """A random CTC head of the hub's shapes (5 layers, 512 wide, 60,515 ids) and a random vocabulary of the
    hub's size, for measuring the cost on a full-size random checkpoint that has no head."""
    import base64
    import tempfile

    import torch

    from funasr_nano.backends.torch.ctc_head import CTCHead
    from funasr_nano.config import ctc_config_for_borrowed
    from funasr_nano.text.ctc_tokenizer import CTCTokenizer, special_tokens

    config = ctc_config_for_borrowed(model.config)
    rng = random.Random(seed)
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    while len(tokens) < config.vocab_size - len(special_tokens()):
        merged = rng.choice(tokens) + rng.choice(tokens[:4000])
        if merged not in seen and len(merged) <= 8:
            seen.add(merged)
            tokens.append(merged)
    vocab = Path(tempfile.mkdtemp()) / "multilingual.tiktoken"
    vocab.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    generator = torch.Generator().manual_seed(seed)
    shapes = CTCHead.expected_shapes(config)
    tensors = {
        k: torch.randn(shape, generator=generator) * (0.02 if len(shape) > 1 else 0.1) for k, shape in shapes.items()
    }
    model.backend.ctc_head = CTCHead.from_tensors(config, tensors, model.backend.torch_device, "random")
    model.ctc_tokenizer = CTCTokenizer(vocab)


def write_clips(directory: Path, count: int, seed: int) -> None:
    import soundfile as sf

    directory.mkdir(parents=True, exist_ok=True)
    index = []
    items = [(kind, item) for kind in PROTOCOLS for item in recordings(count, seed, kind == "whole_sentences")]
    for k, (kind, item) in enumerate(items):
        name = f"{item['lang']}-{kind.split('_')[0]}-{k}.flac"
        sf.write(
            directory / name,
            np.clip(item["audio"] * 32768, -32768, 32767).astype(np.int16),
            SAMPLE_RATE,
            subtype="PCM_16",
        )
        index.append(
            {"file": name, "protocol": kind, "lang": item["lang"], "sentence": item["sentence"], "words": item["words"]}
        )
    (directory / "words.json").write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", type=int, default=10, help="recordings per language")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5, help="cost rounds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--make-clips", type=Path, default=None, help="write FLAC clips + words.json, then stop")
    parser.add_argument("--cost-only", action="store_true", help="only the cost (e.g. a full-size checkpoint)")
    parser.add_argument(
        "--random-ctc-head",
        action="store_true",
        help="give a model without a CTC head a random one of the hub's shapes (cost only)",
    )
    args = parser.parse_args()
    if args.make_clips is not None:
        write_clips(args.make_clips, args.count, args.seed)
        return
    import funasr_nano
    from benchmarks.common import l1_audio, provenance

    model = funasr_nano.load_model(args.model, device=args.device)
    if args.random_ctc_head and model.ctc_tokenizer is None:
        attach_random_ctc_head(model)
    document = provenance("timestamps", args.device)
    document["model"] = args.model
    if args.cost_only:
        document["cost"] = cost(model, l1_audio(), args.rounds, args.device)
        text = json.dumps(document, ensure_ascii=False, indent=1) + "\n"
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        print(text)
        return
    document["protocol"] = (
        "0.3-0.6 s of silence before, 0.4 s after, faint noise; vad=False; errors of decoded words that match "
        "spoken words; times use the official 60 ms per frame, frame start"
    )
    summaries = {}
    for kind, description in PROTOCOLS.items():
        items = recordings(args.count, args.seed, kind == "whole_sentences")
        document[kind] = {
            "description": description,
            "accuracy_reference_text": accuracy(model, items, reference=True),
            "accuracy": accuracy(model, items, reference=False),
        }
        summaries[kind] = {k: document[kind][k]["summary"] for k in ("accuracy_reference_text", "accuracy")}
    document["cost"] = cost(model, l1_audio(), args.rounds, args.device)
    text = json.dumps(document, ensure_ascii=False, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(
        json.dumps(
            {**summaries, "cost": document["cost"]},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
