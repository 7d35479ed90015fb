"""Resampling to 16 kHz as the official toolkit does it.

Where torchaudio is installed (the usual case) funasr 1.4.16 resamples file input with
``torchaudio.transforms.Resample(rate, 16000)``: a polyphase windowed-sinc filter (Hann window, 6 zero
crossings, rolloff 0.99). :func:`resample_like_torchaudio` computes the same filter taps with the same
float64 arithmetic and applies them with the same ``conv1d``, without depending on torchaudio. Without
torchaudio the official toolkit calls ``librosa.resample`` (soxr "HQ", padded or cut to
ceil(N * 16000 / rate) samples): :func:`resample_like_librosa`.

Only torch and numpy are imported here, so ``benchmarks/resample_vs_torchaudio.py`` can load this module
alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

TARGET_RATE = 16000
RESAMPLERS = ("torchaudio", "soxr")
LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side
ROLLOFF = 0.99
# torchaudio convolves with one kernel of rows x (orig + 2 * width) taps. Up to this many taps we do
# exactly that; above it (rates whose ratio to 16 kHz does not reduce, e.g. 44101 Hz, would need
# gigabytes) the rows are grouped so that each group's taps span only the stretch of input its rows
# read, and each group is one matrix product over the input frames: the same products, minus taps that
# are exactly zero, summed in another order (results within a float32 rounding of torchaudio's).
_DENSE_TAPS = 1 << 20
_GROUP_SPAN = 256  # input samples a row group reads, at least


@dataclass(frozen=True)
class _Plan:
    orig: int  # the rates divided by their gcd
    new: int
    width: int  # zero padding on each side, in input samples
    kernel: torch.Tensor | None  # [new, 1, orig + 2 * width]: torchaudio's kernel, when it is small
    groups: tuple[tuple[int, torch.Tensor], ...]  # otherwise (first tap, [span, rows] taps) per row group


def _taps(orig: int, new: int, width: int, rows: range, columns: range) -> torch.Tensor:
    """Rows ``rows``, columns ``columns`` of torchaudio's ``_get_sinc_resample_kernel`` (sinc_interp_hann,
    dtype=None), computed element for element as it does: the row offsets in float32, the rest in float64."""
    base_freq = min(orig, new) * ROLLOFF
    idx = torch.arange(columns.start - width, columns.stop - width, dtype=torch.float64)[None, :] / orig
    t = torch.arange(-rows.start, -rows.stop, -1, dtype=torch.float32)[:, None] / new + idx
    t *= base_freq
    t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    return kernels.to(torch.float32)


def _row_groups(orig: int, new: int, width: int) -> list[tuple[range, range]]:
    """Consecutive output phases whose non-zero taps lie within one stretch of at most ``span`` columns."""
    columns = orig + 2 * width
    # Row j's taps are non-zero only where |t| < LOWPASS_FILTER_WIDTH, i.e. within `reach` columns of
    # its centre width + j * orig / new; one column of margin on each side absorbs rounding.
    reach = LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF)
    span = max(_GROUP_SPAN, 4 * math.ceil(reach) + 4)  # rows of a group share at least half their taps
    centres = width + np.arange(new) * orig / new
    lows = np.clip(np.floor(centres - reach) - 1, 0, columns).astype(np.int64)
    highs = np.clip(np.ceil(centres + reach) + 2, 0, columns).astype(np.int64)
    groups = []
    first = 0
    while first < new:
        start = int(lows[first])
        last = first + int(np.searchsorted(highs[first:], start + span, side="right"))
        last = max(last, first + 1)
        groups.append((range(first, last), range(start, min(int(highs[first:last].max()), columns))))
        first = last
    return groups


@lru_cache(maxsize=4)
def _plan(rate: int) -> _Plan:
    gcd = math.gcd(rate, TARGET_RATE)
    orig, new = rate // gcd, TARGET_RATE // gcd
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))
    if new * (orig + 2 * width) <= _DENSE_TAPS:
        return _Plan(orig, new, width, _taps(orig, new, width, range(new), range(orig + 2 * width))[:, None, :], ())
    groups = tuple(
        (columns.start, _taps(orig, new, width, rows, columns).t().contiguous())
        for rows, columns in _row_groups(orig, new, width)
    )
    return _Plan(orig, new, width, None, groups)


def output_length(samples: int, rate: int) -> int:
    """Samples ``torchaudio.transforms.Resample(rate, 16000)`` returns for ``samples`` input samples:
    ceil(samples * 16000 / rate), computed as torchaudio does (through a float32 tensor, which rounds the
    quotient once it exceeds 2**24, about 17 minutes of output), and at most what its convolution yields."""
    plan = _plan(rate)
    wanted = math.ceil(float(np.float32(plan.new * samples / plan.orig)))
    return min(wanted, (samples // plan.orig + 1) * plan.new)


def resample_like_torchaudio(samples: np.ndarray, rate: int) -> np.ndarray:
    """``torchaudio.transforms.Resample(rate, 16000)(samples)`` for 1-D float32 ``samples``."""
    if rate == TARGET_RATE:
        return samples
    plan = _plan(rate)
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    padded = torch.nn.functional.pad(waveform[None, None, :], (plan.width, plan.width + plan.orig))
    with torch.inference_mode():
        if plan.kernel is not None:  # torchaudio's own convolution, with its own kernel
            phases = torch.nn.functional.conv1d(padded, plan.kernel, stride=plan.orig)[0]
            resampled = phases.t().reshape(-1)
        else:
            frames = padded[0, 0].unfold(0, plan.orig + 2 * plan.width, plan.orig)  # a view, no copy
            parts = [frames[:, first : first + taps.shape[0]] @ taps for first, taps in plan.groups]
            resampled = torch.cat(parts, dim=1).reshape(-1)
        return resampled[: output_length(samples.size, rate)].numpy()


def resample_like_librosa(samples: np.ndarray, rate: int) -> np.ndarray:
    """``librosa.resample(samples, orig_sr=rate, target_sr=16000)`` (soxr HQ, length fixed to ceil)."""
    if rate == TARGET_RATE:
        return samples
    import soxr

    resampled = soxr.resample(samples, rate, TARGET_RATE, quality="soxr_hq").astype(np.float32, copy=False)
    length = math.ceil(samples.size * (TARGET_RATE / rate))  # librosa's own arithmetic
    if resampled.size >= length:
        return resampled[:length]
    return np.pad(resampled, (0, length - resampled.size))


def resample(samples: np.ndarray, rate: int, resampler: str = "torchaudio") -> np.ndarray:
    """16 kHz float32 samples from mono float32 ``samples`` at ``rate`` Hz, the way ``resampler`` says."""
    if resampler == "soxr":
        return resample_like_librosa(samples, rate)
    return resample_like_torchaudio(samples, rate)
