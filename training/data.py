"""Training batches on the GPU: pooled clips -> augmented audio -> fbank+LFR -> prompt ids and targets.

Clips live in shards (``shard-*.npz``: int16 ``audio`` concatenated, ``offsets``, ``index`` into the
corpus) written by ``pool.py`` while training runs; the loader picks up new shards as they appear.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from funasr_nano.features import FEATURE_DIM, FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES, LFR_M, LFR_N, _frame_energies
from funasr_nano.prompt import PromptTokenizer, num_audio_tokens

SAMPLE_RATE = 16000
LANGUAGE_NAMES = {"en": "英文", "zh": "中文", "ja": "日文"}


class ClipPool:
    def __init__(self, directory: Path, device: torch.device):
        self.directory = directory
        self.device = device
        self.loaded: set[str] = set()
        self.audio: list[torch.Tensor] = []
        self.items: list[int] = []
        self.refresh()

    def refresh(self) -> int:
        for path in sorted(self.directory.glob("shard-*.npz")):
            if path.name in self.loaded:
                continue
            with np.load(path) as shard:
                audio = torch.from_numpy(shard["audio"]).to(self.device)
                offsets = shard["offsets"].tolist()
                for index, start, end in zip(shard["index"].tolist(), offsets[:-1], offsets[1:], strict=True):
                    self.audio.append(audio[start:end])
                    self.items.append(index)
            self.loaded.add(path.name)
        return len(self.items)


def lfr_features(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched fbank + LFR, identical per row to ``funasr_nano.features.extract_features``."""
    lengths = torch.tensor([w.numel() for w in waveforms], device=waveforms[0].device)
    padded = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True) * 32768.0
    frames = padded.unfold(1, FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES)
    batch, count, _ = frames.shape
    energies = _frame_energies(frames.reshape(-1, FRAME_LENGTH_SAMPLES)).view(batch, count, -1)
    fbank_frames = 1 + (lengths - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES
    lfr_lengths = -(-fbank_frames // LFR_N)
    starts = torch.arange(int(lfr_lengths.max()), device=padded.device) * LFR_N
    offsets = torch.arange(LFR_M, device=padded.device) - (LFR_M - 1) // 2
    index = starts[None, :, None] + offsets[None, None, :]
    index = torch.minimum(index.clamp(min=0), (fbank_frames - 1)[:, None, None])
    gathered = torch.gather(energies, 1, index.reshape(batch, -1, 1).expand(-1, -1, energies.shape[-1]))
    features = gathered.view(batch, -1, FEATURE_DIM)
    valid = torch.arange(features.shape[1], device=padded.device)[None, :] < lfr_lengths[:, None]
    return features * valid[:, :, None], lfr_lengths


def augment(clip: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Speed 0.9-1.1, gain, leading/trailing silence, noise at 5-30 dB SNR, sometimes a simple reverb."""
    x = clip.float() / 32768.0
    speed = rng.uniform(0.9, 1.1)
    if abs(speed - 1.0) > 0.01:
        x = F.interpolate(x[None, None], size=int(x.numel() / speed), mode="linear", align_corners=False)[0, 0]
    if rng.random() < 0.3:
        rt = rng.uniform(0.05, 0.35)
        taps = int(rt * SAMPLE_RATE)
        t = torch.arange(taps, device=x.device) / SAMPLE_RATE
        response = torch.randn(taps, device=x.device) * torch.exp(-6.9 * t / rt)
        response[0] = 1.0
        response = response / response.norm()
        size = x.numel() + taps
        wet = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(response, size), size)[: x.numel()]
        x = 0.4 * x + wet
    lead, tail = (int(rng.uniform(0.0, 0.6) * SAMPLE_RATE) for _ in range(2))
    x = F.pad(x, (lead, tail))
    x = x / x.abs().max().clamp(min=1e-4) * rng.uniform(0.05, 0.95)
    if rng.random() < 0.8:
        noise = torch.randn_like(x)
        if rng.random() < 0.5:  # brown-ish noise: more energy at low frequencies
            noise = torch.cumsum(noise, 0)
            noise = noise - torch.linspace(0, 1, noise.numel(), device=x.device) * noise[-1]
        snr = rng.uniform(5.0, 30.0)
        scale = x.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt().clamp(min=1e-8) / (10 ** (snr / 20))
        x = x + noise * scale
    return x.clamp(-1.0, 1.0)


def _hotwords(rng: random.Random, text: str, lang: str, others: list[str]) -> list[str]:
    if lang == "en":
        words = [w.strip(".,") for w in text.split() if len(w.strip(".,")) > 3]
    else:
        body = re.sub(r"[。、，.]", "", text)
        words = [body[i : i + rng.randint(2, 4)] for i in range(0, max(1, len(body) - 3), 3)]
    chosen = rng.sample(words, min(len(words), rng.randint(1, 2))) if words else []
    chosen += rng.sample(others, min(len(others), rng.randint(0, 2)))
    rng.shuffle(chosen)
    return chosen


@dataclass
class Batch:
    features: torch.Tensor  # [B, T, 560]
    lengths: torch.Tensor  # [B] LFR frames
    input_ids: torch.Tensor  # [B, L] (audio positions hold id 0)
    labels: torch.Tensor  # [B, L] next-token targets, -100 where no loss
    audio_start: torch.Tensor  # [B]
    audio_tokens: torch.Tensor  # [B]
    ctc_targets: torch.Tensor  # [B, S] padded with 0
    ctc_lengths: torch.Tensor  # [B]


class BatchMaker:
    def __init__(self, corpus: list[dict], tokenizer: PromptTokenizer, ctc_encode, eos_id: int, seed: int):
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.ctc_encode = ctc_encode
        self.eos_id = eos_id
        self.rng = random.Random(seed)
        self.distractors = {lang: [] for lang in LANGUAGE_NAMES}
        for item in corpus[:20000]:
            self.distractors[item["lang"]].extend(_hotwords(self.rng, item["itn"], item["lang"], [])[:1])

    def prompt(self, item: dict) -> tuple[list[int], list[int], list[int]]:
        rng = self.rng
        lang = item["lang"]
        language = LANGUAGE_NAMES[lang] if rng.random() < 0.5 else None
        hotwords = _hotwords(rng, item["itn"], lang, self.distractors[lang]) if rng.random() < 0.25 else []
        differs = item["itn"] != item["spoken"]
        itn = rng.random() < 0.5 if differs else rng.random() >= 0.1
        ids = self.tokenizer.prompt_ids(hotwords, language, itn)
        target = self.tokenizer.encode(item["itn"] if itn else item["spoken"]) + [self.eos_id]
        return ids.prefix, ids.suffix, target

    def make(self, pool: ClipPool, size: int, train: bool = True) -> Batch:
        rng = self.rng
        picks = [rng.randrange(len(pool.items)) for _ in range(size)]
        waveforms = [augment(pool.audio[p], rng) if train else pool.audio[p].float() / 32768.0 for p in picks]
        features, lengths = lfr_features(waveforms)
        rows, labels, starts, counts, ctc = [], [], [], [], []
        for pick, frames in zip(picks, lengths.tolist(), strict=True):
            item = self.corpus[pool.items[pick]]
            prefix, suffix, target = self.prompt(item)
            audio = num_audio_tokens(frames)
            ids = prefix + [0] * audio + suffix + target
            rows.append(ids)
            # the label at position i is the token at i + 1; loss only where the next token is target
            label = [-100] * (len(prefix) + audio + len(suffix) - 1) + target + [-100]
            labels.append(label)
            starts.append(len(prefix))
            counts.append(audio)
            ctc.append(self.ctc_encode(item["itn"]))
        device = features.device
        width = max(map(len, rows))
        input_ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
        label_ids = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=device)
        ctc_width = max(map(len, ctc))
        return Batch(
            features,
            lengths,
            input_ids,
            label_ids,
            torch.tensor(starts, device=device),
            torch.tensor(counts, device=device),
            torch.tensor([c + [0] * (ctc_width - len(c)) for c in ctc], device=device),
            torch.tensor([len(c) for c in ctc], device=device),
        )


def load_corpus(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]
