"""Training batches on the GPU: pooled clips -> augmented audio -> fbank+LFR -> prompt ids and targets.

Clips live in shards (``shard-*.npz``: int16 ``audio`` concatenated, ``offsets``, ``index`` into the
corpus) written by ``python -m training.pool`` while training runs; the loader picks up new shards as they appear.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from funasr_nano.frontend.features import (
    FEATURE_DIM,
    FRAME_LENGTH_SAMPLES,
    FRAME_SHIFT_SAMPLES,
    LFR_M,
    LFR_N,
    _frame_energies,
)
from funasr_nano.text.prompt import PromptTokenizer, num_audio_tokens

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


def lfr_features(padded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched fbank + LFR of padded waveforms [B, N] in [-1, 1], identical per row to
    ``funasr_nano.frontend.features.extract_features`` of the row's first ``lengths`` samples."""
    frames = (padded * 32768.0).unfold(1, FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES)
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


def _uniform(rng: random.Random, size: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.tensor([rng.uniform(low, high) for _ in range(size)], device=device)


def augment(clips: list[torch.Tensor], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole batch at once (a few dozen kernels, one FFT size): speed 0.9-1.1, sometimes a simple
    reverb, 0-0.6 s of leading and trailing silence, gain, white or brown noise at 5-30 dB SNR.
    Returns padded audio [B, N] and lengths [B]."""
    device = clips[0].device
    size = len(clips)
    lengths = torch.tensor([c.numel() for c in clips], device=device)
    x = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True).float() / 32768.0
    # speed: output sample j reads the input at j * speed (linear interpolation)
    speed = _uniform(rng, size, 0.9, 1.1, device)
    out_lengths = (lengths / speed).long()
    source = torch.arange(int(out_lengths.max()), device=device)[None, :] * speed[:, None]
    left = source.floor().long().clamp(max=x.shape[1] - 2)
    frac = (source - left).clamp(0, 1)
    x = torch.gather(x, 1, left) * (1 - frac) + torch.gather(x, 1, left + 1) * frac
    x = x * (torch.arange(x.shape[1], device=device)[None, :] < out_lengths[:, None])
    # reverb: an exponentially decaying noise response of 0.05-0.35 s, mixed with the dry signal
    taps = int(0.35 * SAMPLE_RATE)
    decay = _uniform(rng, size, 0.05, 0.35, device)
    t = torch.arange(taps, device=device)[None, :] / SAMPLE_RATE
    response = torch.randn(size, taps, device=device) * torch.exp(-6.9 * t / decay[:, None])
    response[:, 0] = 1.0
    response = response / response.norm(dim=1, keepdim=True)
    n_fft = 1 << (x.shape[1] + taps - 1).bit_length()
    wet = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(response, n_fft), n_fft)[:, : x.shape[1]]
    reverb = torch.tensor([rng.random() < 0.3 for _ in range(size)], device=device)[:, None]
    x = torch.where(reverb, 0.4 * x + wet, x)
    # silence around the speech
    lead = torch.tensor([int(rng.uniform(0.0, 0.6) * SAMPLE_RATE) for _ in range(size)], device=device)
    tail = torch.tensor([int(rng.uniform(0.0, 0.6) * SAMPLE_RATE) for _ in range(size)], device=device)
    total = lead + out_lengths + tail
    position = torch.arange(int(total.max()), device=device)[None, :] - lead[:, None]
    inside = (position >= 0) & (position < out_lengths[:, None])
    x = torch.gather(x, 1, position.clamp(0, x.shape[1] - 1)) * inside
    # gain, then noise relative to the speech level
    x = x / x.abs().amax(dim=1, keepdim=True).clamp(min=1e-4) * _uniform(rng, size, 0.05, 0.95, device)[:, None]
    white = torch.randn_like(x)
    brown = torch.cumsum(torch.randn_like(x), dim=1)
    brown = brown - brown.mean(dim=1, keepdim=True)
    use_brown = torch.tensor([rng.random() < 0.5 for _ in range(size)], device=device)[:, None]
    noise = torch.where(use_brown, brown, white)
    valid = torch.arange(x.shape[1], device=device)[None, :] < total[:, None]
    speech_rms = (x.pow(2).sum(1) / out_lengths).sqrt()
    noise_rms = ((noise * valid).pow(2).sum(1) / total).sqrt().clamp(min=1e-8)
    snr = _uniform(rng, size, 5.0, 30.0, device)
    noisy = torch.tensor([rng.random() < 0.8 for _ in range(size)], device=device)
    scale = torch.where(noisy, speech_rms / noise_rms / 10 ** (snr / 20), torch.zeros_like(snr))
    return ((x + noise * scale[:, None]) * valid).clamp(-1.0, 1.0), total


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
        clips = [pool.audio[p] for p in picks]
        if train:
            audio, samples = augment(clips, rng)
        else:
            audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True).float() / 32768.0
            samples = torch.tensor([c.numel() for c in clips], device=audio.device)
        features, lengths = lfr_features(audio, samples)
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
