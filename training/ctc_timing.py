"""Teach the demo model's CTC head when words are spoken: frame targets from espeak-ng's word events.

The head trained with plain CTC (training/train.py) spells the text but places its tokens anywhere in
the clip (its self-attention block can move information in time), so word times from it were off by
up to a second. Here the encoder is frozen (the LLM path, and so every transcript, is unchanged) and
only ``ctc_decoder`` and ``ctc.ctc_lo`` are trained, starting from their current weights:

- English and Mandarin sentences from the corpus's training split, spoken by training voices with their
  word times (training/timed_speech.py); a quarter are two sentences joined by a pause; leading and
  trailing silence, noise and gain vary. With ``--word-by-word F``, a share F of them is spoken a word
  (a Chinese character) at a time, joined by short pauses, as the timing benchmark's dictation clips
  are (the benchmark's sentences are never used). Each word's CTC tokens are the frame targets over the
  frames its speech covers (one frame = 60 ms, the official convention; a word's tokens share its frames
  in order), punctuation takes the frame after its word, and everything else is blank: a cross-entropy
  per frame.
- Japanese has no word events (espeak-ng reads a kana sentence as one word): its clips keep the plain
  CTC loss, so the head still spells Japanese.

    python -m training.ctc_timing --out src/funasr_nano/demo/model/model.pt [--clips 3000] [--steps 3000]
    # on the GPU machine, then here:
    python -m training.ctc_timing --device cuda --processes 16 --head-only --out head.pt ...
    python -m training.ctc_timing --apply head.pt --out src/funasr_nano/demo/model/model.pt

Writes the model.pt with only the ``ctc_decoder.*`` and ``ctc.*`` tensors replaced (bf16, as the rest).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.timestamps import EN_SENTENCES, ZH_SENTENCES, letters
from funasr_nano.frontend.features import extract_features
from funasr_nano.text.ctc_tokenizer import CTCTokenizer
from training.synth import SAMPLE_RATE, Voice, pick_voice, speak_many
from training.timed_speech import TimedWord, speak_timed_many

FRAME_S = 0.06
DEMO = Path(__file__).resolve().parents[1] / "src" / "funasr_nano" / "demo" / "model"


def frame_targets(text: str, words: list[TimedWord], frames: int, tokenizer: CTCTokenizer, offset: float) -> list[int]:
    """One target per frame (blank where no word is spoken); -1 if the text's tokens cannot be placed."""
    blank = tokenizer.vocab_size - 1
    ids = tokenizer.encode(text)
    byte_at = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])
    word_of_byte = np.full(byte_at[-1], -1)
    for k, w in enumerate(words):
        word_of_byte[byte_at[w.start_char] : byte_at[w.end_char]] = k
    # each token's words (a BPE token may hold several characters; a leading space belongs to none)
    spans: list[tuple[int, int] | None] = []
    position = 0
    for token in ids:
        piece = tokenizer.token_bytes(token)
        covered = {int(x) for x in word_of_byte[position : position + len(piece)] if x >= 0}
        spans.append((min(covered), max(covered)) if covered else None)
        position += len(piece)
    if position != byte_at[-1]:
        return [-1]
    labels = [blank] * frames
    owner = [-1] * frames  # which token instance holds the frame (to keep a blank between repeats)
    cursor = 0  # first frame the next group may take
    k = 0
    while k < len(ids):
        if spans[k] is None:  # punctuation or a symbol: the frame after what came before, if it is free
            if cursor < frames and labels[cursor] == blank:
                labels[cursor], owner[cursor] = ids[k], k
                cursor += 1
            k += 1
            continue
        first_word, last_word = spans[k]
        group = [k]  # tokens sharing words with this one
        while k + 1 < len(ids) and spans[k + 1] is not None and spans[k + 1][0] <= last_word:
            k += 1
            group.append(k)
            last_word = max(last_word, spans[k][1])
        start = max(cursor, round((words[first_word].start + offset) / FRAME_S))
        end = max(start + len(group), round((words[last_word].end + offset) / FRAME_S))
        if end > frames:
            return [-1]
        bounds = np.linspace(start, end, len(group) + 1).round().astype(int)
        for token_index, a, b in zip(group, bounds[:-1], bounds[1:], strict=True):
            for t in range(a, max(b, a + 1)):
                labels[t], owner[t] = ids[token_index], token_index
        cursor = end
        k += 1
    for t in range(frames - 1):  # CTC merges equal neighbours: two instances of one token need a blank between
        if labels[t] != blank and labels[t] == labels[t + 1] and owner[t] != owner[t + 1]:
            labels[t] = blank
    return labels


POOL = 20000  # training sentences per language drawn from: the first this many whose speech is their text


def candidate_rows(corpus: Path) -> list[dict]:
    """The training rows sentences are drawn from (so a file of just these gives the same run)."""
    taken: dict[str, int] = {}
    rows = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["split"] == "train" and row["speech"] == row["itn"] and taken.get(row["lang"], 0) < POOL:
            taken[row["lang"]] = taken.get(row["lang"], 0) + 1
            rows.append(row)
    return rows


def pick_sentences(rows: list[dict], lang: str, count: int, rng: random.Random) -> list[str]:
    return rng.sample([r["speech"] for r in rows if r["lang"] == lang], count)


def word_pieces(text: str, lang: str) -> list[tuple[int, int]]:
    """The pieces of ``text`` spoken one at a time in a word-by-word clip: English words, Chinese
    characters (punctuation stays in the text, unspoken)."""
    if lang == "en":  # a word's letters: its punctuation is timed after it, as in whole sentences
        return [(m.start(), m.end()) for m in re.finditer(r"[^\W_](?:\S*[^\W_])?", text)]
    return [(i, i + 1) for i, char in enumerate(text) if char.isalnum()]


def speak_word_by_word(
    texts: list[str], lang: str, voices: list[Voice], rng: random.Random, processes: int
) -> list[tuple[np.ndarray, list[TimedWord]] | None]:
    """Each text spoken piece by piece (word_pieces) by one voice, the pieces joined by 0.05-0.5 s of
    silence: the rhythm of someone dictating, which whole sentences never show the head."""
    pieces = [word_pieces(text, lang) for text in texts]
    jobs = [(text[a:b], voice) for text, voice, spans in zip(texts, voices, pieces, strict=True) for a, b in spans]
    spoken = iter(speak_timed_many(jobs, processes))
    out: list[tuple[np.ndarray, list[TimedWord]] | None] = []
    for spans in pieces:
        said = [next(spoken) for _ in spans]
        if not spans or any(s is None or not s[1] for s in said):
            out.append(None)
            continue
        audio, words, at = [], [], 0.0
        for (a, b), (samples, timed) in zip(spans, said, strict=True):  # type: ignore[misc]
            if audio:
                gap = rng.uniform(0.05, 0.5)
                audio.append(np.zeros(round(gap * SAMPLE_RATE), np.int16))
                at += gap
            words.append(TimedWord(a, b, at + timed[0].start, at + timed[-1].end))
            audio.append(samples)
            at += samples.size / SAMPLE_RATE
        out.append((np.concatenate(audio), words))
    return out


def make_clips(
    corpus: Path, per_language: int, seed: int, processes: int, word_by_word: float = 0.0,
    exclude: frozenset[str] = frozenset(),
) -> list[dict]:
    """Clips with audio (float32) and, for en/zh, word times; Japanese without. A ``word_by_word`` share of
    the en/zh sentences is spoken a word (character) at a time; sentences whose letters match one in
    ``exclude`` (a benchmark's) are never used."""
    rng = random.Random(seed)
    rows = [r for r in candidate_rows(corpus) if letters(r["speech"]) not in exclude]
    clips: list[dict] = []
    for lang in ("en", "zh"):
        texts = pick_sentences(rows, lang, per_language, rng)
        jobs = [(text, pick_voice(rng, lang, held_out=False)) for text in texts]
        split = round(len(jobs) * (1 - word_by_word))
        spoken = speak_timed_many(jobs[:split], processes) + speak_word_by_word(
            [t for t, _ in jobs[split:]], lang, [v for _, v in jobs[split:]], rng, processes
        )
        for (text, _), said in zip(jobs, spoken, strict=True):
            if said is not None and said[1]:
                clips.append({"lang": lang, "parts": [(text, said[0], said[1])]})
    texts = pick_sentences(rows, "ja", per_language // 2, rng)
    jobs: list[tuple[str, Voice]] = [(text, pick_voice(rng, "ja", held_out=False)) for text in texts]
    for (text, _), audio in zip(jobs, speak_many(jobs, processes), strict=True):
        if audio is not None:
            clips.append({"lang": "ja", "parts": [(text, audio, [])]})
    # a quarter of en/zh become two sentences with a pause between
    timed = [c for c in clips if c["lang"] != "ja"]
    rng.shuffle(timed)
    for a, b in zip(timed[0 : len(timed) // 4 : 2], timed[1 : len(timed) // 4 : 2], strict=False):
        if a["lang"] == b["lang"]:
            a["parts"] += b["parts"]
            clips.remove(b)
    noise = np.random.default_rng(seed)
    for clip in clips:
        lead = rng.uniform(0.05, 1.0)
        pieces = [np.zeros(round(lead * SAMPLE_RATE), np.float32)]
        words, texts, at = [], [], lead
        sep = " " if clip["lang"] == "en" else ""
        for text, audio, timed_words in clip["parts"]:
            if pieces[-1].size and texts:
                pause = rng.uniform(0.3, 1.0)
                pieces.append(np.zeros(round(pause * SAMPLE_RATE), np.float32))
                at += pause
            chars = sum(len(t) + len(sep) for t in texts)
            words += [
                TimedWord(w.start_char + chars, w.end_char + chars, w.start + at, w.end + at) for w in timed_words
            ]
            texts.append(text)
            pieces.append(audio.astype(np.float32) / 32768)
            at += audio.size / SAMPLE_RATE
        pieces.append(np.zeros(round(rng.uniform(0.05, 0.6) * SAMPLE_RATE), np.float32))
        audio = np.concatenate(pieces) * rng.uniform(0.3, 1.0)
        power = float(np.mean(audio**2)) + 1e-9
        snr = rng.uniform(10, 35)
        audio += noise.normal(scale=np.sqrt(power / 10 ** (snr / 10)), size=audio.size).astype(np.float32)
        clip["audio"], clip["words"] = audio, words
        clip["text"] = sep.join(texts)
        del clip["parts"]
    return clips


@torch.inference_mode()
def encoder_outputs(model, clips: list[dict], batch: int = 32) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """The frozen encoder's output per clip, [T_i, D] (what the CTC head reads)."""
    net = model.backend.model
    device = model.backend.torch_device
    order = sorted(range(len(clips)), key=lambda i: clips[i]["audio"].size)
    by_index: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        features = extract_features([torch.from_numpy(clips[i]["audio"]).to(device) for i in chunk])
        lengths = torch.tensor([f.shape[0] for f in features], device=device)
        padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
        encoded = net.audio_encoder(padded, lengths)
        for row, i in enumerate(chunk):
            # kept as half-precision numpy: an inference-mode tensor cannot enter the head's training
            by_index[i] = encoded[row, : int(lengths[row])].to(torch.float16).cpu().numpy().copy()
    return [torch.from_numpy(by_index[i]) for i in range(len(clips))]


def train(
    head,
    clips: list[dict],
    encoded: list[torch.Tensor],
    tokenizer: CTCTokenizer,
    steps: int,  # type: ignore[no-untyped-def]
    batch: int,
    lr: float,
    seed: int,
    time_limit: float,
    spell: bool = False,
) -> list[dict]:
    from funasr_nano.backends.torch.encoder import padding_masks

    blank = tokenizer.vocab_size - 1
    device = next(head.parameters()).device
    rng = random.Random(seed)
    targets = []
    for clip, enc in zip(clips, encoded, strict=True):
        if clip["words"]:
            targets.append(("frames", frame_targets(clip["text"], clip["words"], enc.shape[0], tokenizer, 0.0)))
        else:
            targets.append(("ctc", tokenizer.encode(clip["text"])))
    usable = [i for i, (kind, t) in enumerate(targets) if t != [-1] and t]
    spelled = [tokenizer.encode(clip["text"]) for clip in clips]
    params = [p for p in head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    head.train()
    log: list[dict] = []
    started = time.time()
    for step in range(steps):
        if time.time() - started > time_limit:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / steps))
        rows = rng.sample(usable, batch)
        lengths = torch.tensor([encoded[i].shape[0] for i in rows], device=device)
        padded = torch.nn.utils.rnn.pad_sequence([encoded[i] for i in rows], batch_first=True).to(device).float()
        _, key_mask = padding_masks(lengths, padded.shape[1], torch.float32)
        log_probs = F.log_softmax(head.ctc.ctc_lo(head.ctc_decoder(padded, key_mask)), dim=-1)
        frame_rows = [k for k, i in enumerate(rows) if targets[i][0] == "frames"]
        # with spell, the timed clips also take the plain CTC loss of their text, so that the head's greedy
        # transcript reads right (CTC drafts), not only its alignment
        ctc_rows = [k for k, i in enumerate(rows) if targets[i][0] == "ctc" or (spell and k in frame_rows)]
        loss = torch.zeros((), device=device)
        frame_loss = ctc_loss = torch.zeros((), device=device)
        if frame_rows:
            labels = torch.full((len(frame_rows), padded.shape[1]), -100, device=device)
            for r, k in enumerate(frame_rows):
                t = targets[rows[k]][1]
                labels[r, : len(t)] = torch.tensor(t, device=device)
            frame_loss = F.nll_loss(log_probs[frame_rows].transpose(1, 2), labels, ignore_index=-100)
            loss = loss + frame_loss
        if ctc_rows:
            seqs = [spelled[rows[k]] for k in ctc_rows]
            ctc_loss = F.ctc_loss(
                log_probs[ctc_rows].transpose(0, 1),
                torch.tensor([x for s in seqs for x in s], device=device),
                lengths[ctc_rows],
                torch.tensor([len(s) for s in seqs], device=device),
                blank=blank,
                zero_infinity=True,
            ) / max(1.0, float(np.mean([len(s) for s in seqs])))
            loss = loss + ctc_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            entry = {
                "step": step,
                "frame_ce": round(frame_loss.item(), 4),
                "ctc": round(ctc_loss.item(), 4),
                "elapsed": round(time.time() - started, 1),
            }
            log.append(entry)
            print(json.dumps(entry), flush=True)
    head.eval()
    return log


def write_head(source: Path, tensors: dict[str, torch.Tensor], out: Path) -> None:
    """``source`` (a model.pt) with its CTC head tensors replaced by ``tensors``, written to ``out``."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    for key, value in tensors.items():
        if key not in state or state[key].shape != value.shape:
            raise SystemExit(f"{key}: not in {source} with this shape")
        state[key] = value
    torch.save(checkpoint, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(".cache/demo/corpus.jsonl"))
    parser.add_argument("--model", type=Path, default=DEMO, help="the model directory whose head is trained")
    parser.add_argument("--out", type=Path, required=True, help="model.pt to write (may be the input's)")
    parser.add_argument("--clips", type=int, default=3000, help="sentences per language (half for Japanese)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=1213)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the encoder and the head run (cuda on the GPU machine)")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds of training at most")
    parser.add_argument("--spell", action="store_true",
                        help="also train the timed clips with plain CTC (a head whose greedy text spells)")
    parser.add_argument("--word-by-word", type=float, default=0.0,
                        help="the share of en/zh sentences spoken a word (character) at a time with pauses")
    parser.add_argument("--log", type=Path, default=None, help="write the run's record (JSON) here")
    parser.add_argument("--head-only", action="store_true", help="write only the head's tensors to --out")
    parser.add_argument(
        "--apply",
        type=Path,
        help="put the head tensors of this file into --model's model.pt and write it to --out (nothing is trained)",
    )
    args = parser.parse_args()
    if args.apply:
        write_head(args.model / "model.pt", torch.load(args.apply, map_location="cpu", weights_only=True), args.out)
        print(f"wrote {args.out}")
        return
    torch.manual_seed(args.seed)
    import funasr_nano

    model = funasr_nano.load_model(str(args.model), device=args.device, dtype="float32")
    head, tokenizer = model.backend.ctc_head, model.ctc_tokenizer
    began = time.time()
    exclude = frozenset(letters(text) for text in EN_SENTENCES + ZH_SENTENCES)  # the timing benchmark's own
    clips = make_clips(args.corpus, args.clips, args.seed, args.processes, args.word_by_word, exclude)
    made = time.time()
    encoded = encoder_outputs(model, clips)
    print(
        f"{len(clips)} clips, {sum(c['audio'].size for c in clips) / SAMPLE_RATE / 3600:.2f} h "
        f"(speech {made - began:.0f} s, encoder {time.time() - made:.0f} s)",
        flush=True,
    )
    with torch.enable_grad():
        log = train(head, clips, encoded, tokenizer, args.steps, args.batch, args.lr, args.seed, args.time_limit,
                    args.spell)
    tensors = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in head.state_dict().items()}
    if args.head_only:
        torch.save(tensors, args.out)  # small enough to come back from the GPU machine
    else:
        write_head(args.model / "model.pt", tensors, args.out)
    print(f"wrote {args.out}", flush=True)
    if args.log:
        args.log.write_text(
            json.dumps(
                {
                    "command": "python -m training.ctc_timing "
                    + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("log",)),
                    "clips": len(clips),
                    "hours": round(sum(c["audio"].size for c in clips) / SAMPLE_RATE / 3600, 3),
                    "log": log,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
