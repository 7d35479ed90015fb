"""Resampling as the official toolkit does it: torchaudio's windowed-sinc filter (our own code, checked
against torchaudio's algorithm copied from its 2.11 source, and on the GPU machine against torchaudio
itself: benchmarks/resample_vs_torchaudio.py) and, as an option, librosa's soxr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from funasr_nano.frontend.audio import load_audio
from funasr_nano.frontend.features import num_samples_to_lfr_frames
from funasr_nano.frontend.resample import _plan, output_length, resample_like_librosa, resample_like_torchaudio
from funasr_nano.text.prompt import num_audio_tokens

COMMON_RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000)
ODD_RATES = (12345, 32050, 44056, 7919)  # the last three need the grouped (large-kernel) path or are prime


def torchaudio_kernel(orig_freq: int, new_freq: int = 16000) -> tuple[torch.Tensor, int, int, int]:
    """torchaudio 2.11 functional._get_sinc_resample_kernel with Resample's defaults (sinc_interp_hann,
    lowpass_filter_width 6, rolloff 0.99, dtype None), line for line."""
    lowpass_filter_width, rolloff = 6, 0.99
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig_freq, new_freq = int(orig_freq) // gcd, int(new_freq) // gcd
    base_freq = min(orig_freq, new_freq)
    base_freq *= rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
    idx = torch.arange(-width, width + orig_freq, dtype=torch.float64)[None, None] / orig_freq
    t = torch.arange(0, -new_freq, -1, dtype=None)[:, None, None] / new_freq + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / orig_freq
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    return kernels.to(dtype=torch.float32), width, orig_freq, new_freq


def torchaudio_resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """torchaudio 2.11 functional._apply_sinc_resample_kernel on a [1, N] waveform."""
    kernel, width, orig_freq, new_freq = torchaudio_kernel(rate)
    waveform = torch.from_numpy(samples)[None]
    num_wavs, length = waveform.shape
    waveform = torch.nn.functional.pad(waveform, (width, width + orig_freq))
    resampled = torch.nn.functional.conv1d(waveform[:, None], kernel, stride=orig_freq)
    resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
    target_length = torch.ceil(torch.as_tensor(new_freq * length / orig_freq)).long()
    return resampled[..., :target_length][0].numpy()


def noise(rate: int, seconds: float = 1.3, extra: int = 7) -> np.ndarray:
    return (np.random.default_rng(rate).standard_normal(int(rate * seconds) + extra) * 0.3).astype(np.float32)


@pytest.mark.parametrize("rate", COMMON_RATES)
def test_common_rates_equal_torchaudio_bit_for_bit(rate):
    samples = noise(rate)
    ours = resample_like_torchaudio(samples, rate)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, torchaudio_resample(samples, rate))


@pytest.mark.parametrize("rate", ODD_RATES)
def test_odd_rates_equal_torchaudio_to_float_rounding(rate):
    samples = noise(rate)
    ours, theirs = resample_like_torchaudio(samples, rate), torchaudio_resample(samples, rate)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 2.5e-7


@pytest.mark.parametrize("rate", [44056, 7919, 12345])
def test_the_grouped_path_keeps_every_non_zero_tap_of_torchaudios_kernel(rate):
    kernel = torchaudio_kernel(rate)[0][:, 0, :]
    plan = _plan(rate)
    assert plan.kernel is None and len(plan.groups) > 1
    covered = torch.zeros_like(kernel, dtype=torch.bool)
    row = 0
    for first, taps in plan.groups:
        rows, span = taps.shape[1], taps.shape[0]
        assert torch.equal(taps.t(), kernel[row : row + rows, first : first + span])
        covered[row : row + rows, first : first + span] = True
        row += rows
    assert row == kernel.shape[0] and not (kernel.ne(0) & ~covered).any()


def test_a_rate_that_does_not_reduce_stays_small_and_fast():
    plan = _plan(44101)  # torchaudio's kernel would be 16000 x 44135 taps (2.8 GB)
    assert sum(taps.numel() for _, taps in plan.groups) < 8_000_000
    assert resample_like_torchaudio(noise(44101, 0.5), 44101).size == math.ceil((44101 // 2 + 7) * 16000 / 44101)


def test_lengths_are_the_official_ceil():
    # The case the parity audit found: soxr alone gives 38,799 samples, 40 LFR frames and 5 audio tokens.
    assert output_length(106_940, 44100) == 38_800
    assert num_samples_to_lfr_frames(38_800) == 41 and num_audio_tokens(41) == 6
    rng = np.random.default_rng(1)
    for rate in COMMON_RATES + ODD_RATES:
        for n in [1, 2, 3, 399, 400, 401, *rng.integers(1, 300_000, 20).tolist()]:
            assert output_length(n, rate) == math.ceil(n * 16000 / rate), (n, rate)
            assert resample_like_librosa(np.zeros(n, np.float32), rate).size == math.ceil(n * (16000 / rate))


def test_file_input_is_resampled_like_the_official_loader(tmp_path):
    samples = noise(44100, seconds=2.5)[:106_940] * 0.5
    path = tmp_path / "a.wav"
    soundfile.write(path, np.stack([samples, -0.5 * samples], axis=1), 44100, subtype="FLOAT")
    mono = np.stack([samples, -0.5 * samples], axis=1).mean(axis=1)  # torchaudio.load(...).mean(0)
    loaded = load_audio(path)
    assert loaded.size == 38_800
    np.testing.assert_array_equal(loaded, torchaudio_resample(mono, 44100))
    np.testing.assert_array_equal(load_audio(path, resampler="soxr"), resample_like_librosa(mono, 44100))


@pytest.mark.parametrize("rate", COMMON_RATES + (12345,))
def test_the_soxr_option_equals_librosa(rate):
    librosa = pytest.importorskip("librosa")
    samples = noise(rate)
    expected = librosa.resample(samples, orig_sr=rate, target_sr=16000)
    np.testing.assert_array_equal(resample_like_librosa(samples, rate), expected)
    np.testing.assert_array_equal(load_audio(samples, sample_rate=rate, resampler="soxr"), expected)


def test_arrays_use_the_same_resampler():
    samples = noise(22050)
    np.testing.assert_array_equal(load_audio(samples, sample_rate=22050), torchaudio_resample(samples, 22050))
    with pytest.raises(ValueError, match="resampler"):
        load_audio(samples, sample_rate=22050, resampler="sinc")
