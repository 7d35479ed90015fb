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
    padded = np.pad(np.asarray(samples, dtype=np.float32), (plan.width, plan.width + plan.orig))
    return _phases(plan, padded)[: output_length(samples.size, rate)]


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


# The CPU convolution changes algorithm (and so its float rounding) below ~20k input samples; above that
# every output sample is the same whatever call computes it. A chunked resampler therefore convolves at
# least this much input per call (or the whole recording in one call, as resample() does).
_MIN_CALL_INPUT = 1 << 18
_CALL_INPUT = 1 << 20  # input samples gathered before a call
# Output held back until the end: the total is cut to output_length() (or librosa's length), which the
# float32 rounding in output_length() places up to ~ total * 2**-24 samples before the computed end.
_HOLD_BACK = 1 << 16
# Live input: a call per chunk and a hold-back that covers that rounding for streams of days, at the
# price of the last bits of some samples (the convolution's algorithm differs for short calls).
_LIVE_HOLD_BACK = 1 << 8


class ChunkedResampler:
    """:func:`resample` for a recording that arrives in chunks: :meth:`push` each chunk, then
    :meth:`finish`; the outputs joined are the samples one call on the whole recording returns, bit for
    bit, while less than ~2**20 input samples are held. ``live``: samples out as soon as the filter has
    its input (16 ms held back), the same to float rounding."""

    def __init__(self, rate: int, resampler: str = "torchaudio", live: bool = False):
        self.rate, self.resampler = rate, resampler
        self._call_input, self._hold_back = (0, _LIVE_HOLD_BACK) if live else (_CALL_INPUT, _HOLD_BACK)
        self.received = 0
        self.emitted = 0
        self._held = np.zeros(0, np.float32)
        self._soxr = None
        if rate == TARGET_RATE:
            return
        if resampler == "soxr":
            import soxr

            self._soxr = soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32", quality="soxr_hq")
            return
        self._plan = _plan(rate)
        # The padded input (torchaudio pads `width` zeros in front) from output frame `_first_frame` on;
        # frames before `_done_frames` have been computed: they are kept as history for the last call.
        self._pending: list[np.ndarray] = [np.zeros(self._plan.width, np.float32)]
        self._pending_size = self._plan.width
        self._buffer = np.zeros(0, np.float32)
        self._first_frame = 0
        self._done_frames = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """The 16 kHz samples that are final once ``samples`` (mono float32) have been added."""
        self.received += samples.size
        if self.rate == TARGET_RATE:
            return self._release(samples, final=False)
        if self._soxr is not None:
            return self._release(self._soxr.resample_chunk(samples), final=False)
        self._pending.append(samples.astype(np.float32, copy=False))
        self._pending_size += samples.size
        if self._pending_size < self._call_input:
            return np.zeros(0, np.float32)
        return self._release(self._convolve(final=False), final=False)

    def finish(self) -> np.ndarray:
        """The rest of the samples, the total cut to the length one whole call returns."""
        if self.rate == TARGET_RATE:
            return self._release(np.zeros(0, np.float32), final=True)
        if self._soxr is not None:
            tail = self._soxr.resample_chunk(np.zeros(0, np.float32), last=True)
            return self._release(tail, final=True, length=math.ceil(self.received * (TARGET_RATE / self.rate)))
        self._pending.append(np.zeros(self._plan.width + self._plan.orig, np.float32))
        return self._release(self._convolve(final=True), final=True,
                             length=output_length(self.received, self.rate))

    def _convolve(self, final: bool) -> np.ndarray:
        """The output of the frames the input now completes (the last call: of every frame left)."""
        plan = self._plan
        taps = plan.orig + 2 * plan.width
        self._buffer = np.concatenate([self._buffer, *self._pending])
        self._pending, self._pending_size = [], 0
        end_frame = self._first_frame + max(0, (self._buffer.size - taps) // plan.orig + 1)
        # A last call that is short reaches back into the kept history, so that it is long enough.
        first = self._first_frame if final else self._done_frames
        new = np.zeros(0, np.float32)
        if end_frame > first:
            start = (first - self._first_frame) * plan.orig
            end = (end_frame - 1 - self._first_frame) * plan.orig + taps
            new = _phases(plan, self._buffer[start:end])[(self._done_frames - first) * plan.new :]
        self._done_frames = end_frame
        keep_from = max(self._first_frame, end_frame - -(-_MIN_CALL_INPUT // plan.orig))
        self._buffer = self._buffer[(keep_from - self._first_frame) * plan.orig :].copy()
        self._first_frame = keep_from
        return new

    def _release(self, samples: np.ndarray, final: bool, length: int | None = None) -> np.ndarray:
        held = np.concatenate([self._held, samples.astype(np.float32, copy=False)])
        if final:
            if length is not None:
                wanted = length - self.emitted
                if wanted < 0:
                    raise RuntimeError("chunked resampling released samples past the recording's end")
                held = held[:wanted] if held.size >= wanted else np.pad(held, (0, wanted - held.size))
            self._held = np.zeros(0, np.float32)
            self.emitted += held.size
            return held
        ready = max(0, held.size - (0 if self.rate == TARGET_RATE else self._hold_back))
        self._held = held[ready:]
        self.emitted += ready
        return held[:ready]


def _phases(plan: _Plan, padded: np.ndarray) -> np.ndarray:
    """The output of every whole frame of ``padded`` (a stretch of the padded input starting on a frame)."""
    waveform = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))
    with torch.inference_mode():
        if plan.kernel is not None:  # torchaudio's own convolution, with its own kernel
            phases = torch.nn.functional.conv1d(waveform[None, None, :], plan.kernel, stride=plan.orig)[0]
            return phases.t().reshape(-1).numpy()
        frames = waveform.unfold(0, plan.orig + 2 * plan.width, plan.orig)  # a view, no copy
        parts = [frames[:, first : first + taps.shape[0]] @ taps for first, taps in plan.groups]
        return torch.cat(parts, dim=1).reshape(-1).numpy()
