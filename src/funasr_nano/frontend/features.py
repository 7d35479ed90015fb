"""Kaldi-compatible log-mel filterbank + low-frame-rate stacking (the WavFrontend of FunASR).

Semantics follow ``torchaudio.compliance.kaldi.fbank`` as called by FunASR's ``WavFrontend``:
samples scaled to the int16 range, hamming window, pre-emphasis 0.97, DC removal, power spectrum,
80 mel bins, no dither, ``snip_edges``; then LFR (m=7, n=6). Written in plain torch so it runs on
CPU and CUDA and batches many clips into one FFT.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
FRAME_LENGTH_SAMPLES = 400  # 25 ms
FRAME_SHIFT_SAMPLES = 160  # 10 ms
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
LFR_M = 7
LFR_N = 6
FEATURE_DIM = NUM_MEL_BINS * LFR_M
INT16_SCALE = 32768.0
# torch.finfo(torch.float32).eps, the floor Kaldi applies before the log.
_LOG_FLOOR = 1.1920928955078125e-07


def _mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=16)
def _mel_banks_cpu(padded_window: int) -> torch.Tensor:
    """Triangular mel filters [NUM_MEL_BINS, padded_window // 2 + 1] built in float32 like torchaudio."""
    num_fft_bins = padded_window // 2
    fft_bin_width = SAMPLE_RATE / padded_window
    mel_low = _mel_scale(LOW_FREQ)
    mel_high = _mel_scale(SAMPLE_RATE / 2)
    mel_delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    bins = torch.arange(NUM_MEL_BINS).unsqueeze(1)
    left = mel_low + bins * mel_delta
    center = mel_low + (bins + 1.0) * mel_delta
    right = mel_low + (bins + 2.0) * mel_delta
    mel = _mel_scale(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    # The Nyquist bin gets no weight (torchaudio pads one zero column).
    return torch.nn.functional.pad(banks, (0, 1)).float()


@lru_cache(maxsize=16)
def _hamming_cpu(window: int) -> torch.Tensor:
    return torch.hamming_window(window, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64).float()


def _device_constant(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    return table if table.device == device else table.to(device)


def _window_size(num_samples: int) -> int:
    # FunASR passes frame_length=min(25 ms, clip length): a clip shorter than one window is one frame.
    return min(FRAME_LENGTH_SAMPLES, num_samples)


def _frame_energies(frames: torch.Tensor) -> torch.Tensor:
    """frames [F, W] (int16-scaled) -> log-mel [F, 80]."""
    window = frames.shape[1]
    padded = 1 << (window - 1).bit_length()
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - PREEMPHASIS * previous
    frames = frames * _device_constant(_hamming_cpu(window), frames.device)
    frames = torch.nn.functional.pad(frames, (0, padded - window))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    mel = power @ _device_constant(_mel_banks_cpu(padded), frames.device).T
    return torch.clamp(mel, min=_LOG_FLOOR).log()


def fbank(waveform: torch.Tensor) -> torch.Tensor:
    """Log-mel filterbank [T_fb, 80] of one 16 kHz float waveform in [-1, 1]."""
    return fbank_batch([waveform])[0]


def fbank_batch(waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
    """Log-mel filterbanks for many clips; full-length clips share one FFT call."""
    results: list[torch.Tensor | None] = [None] * len(waveforms)
    full_frames: list[torch.Tensor] = []
    full_counts: list[tuple[int, int]] = []
    for index, waveform in enumerate(waveforms):
        samples = waveform.reshape(-1).float() * INT16_SCALE
        num_samples = samples.numel()
        if num_samples == 0:
            raise ValueError("empty audio: nothing to transcribe")
        window = _window_size(num_samples)
        frames = samples.unfold(0, window, FRAME_SHIFT_SAMPLES)
        if window == FRAME_LENGTH_SAMPLES:
            full_frames.append(frames)
            full_counts.append((index, frames.shape[0]))
        else:
            results[index] = _frame_energies(frames)
    if full_frames:
        energies = _frame_energies(torch.cat(full_frames))
        for (index, _), chunk in zip(full_counts, energies.split([c for _, c in full_counts]), strict=True):
            results[index] = chunk
    return [r for r in results if r is not None]


def lfr_frame_count(num_fbank_frames: int) -> int:
    return -(-num_fbank_frames // LFR_N)


def apply_lfr(fbank_frames: torch.Tensor) -> torch.Tensor:
    """Stack 7 frames every 6 ([T_fb, 80] -> [ceil(T_fb/6), 560]), replicating the edge frames."""
    num_frames = fbank_frames.shape[0]
    starts = torch.arange(lfr_frame_count(num_frames), device=fbank_frames.device) * LFR_N
    offsets = torch.arange(LFR_M, device=fbank_frames.device) - (LFR_M - 1) // 2
    index = (starts[:, None] + offsets[None, :]).clamp_(0, num_frames - 1)
    return fbank_frames[index].reshape(index.shape[0], FEATURE_DIM)


def num_samples_to_lfr_frames(num_samples: int) -> int:
    window = _window_size(num_samples)
    return lfr_frame_count(1 + (num_samples - window) // FRAME_SHIFT_SAMPLES)


def extract_features(waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
    """16 kHz waveforms -> encoder inputs [T_lfr, 560] (fbank + LFR), float32, on the input's device."""
    return [apply_lfr(f) for f in fbank_batch(waveforms)]
