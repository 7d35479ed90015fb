"""Voice activity detection: silero-vad speech probabilities -> speech segments the model can decode.

Fun-ASR-Nano is a segment-level model (whole long clips loop or stop early), so long audio is cut into
speech segments of at most ~30 s. The silero-vad weights ship inside the ``silero-vad`` wheel; they are
run here as one batched pass over the whole recording (the convolutional front end is independent per
32 ms frame, only the LSTM is sequential): the same probabilities as silero's own frame-by-frame loop,
~10x faster on CPU, and on CUDA when the model runs there. :class:`SpeechScanner` finds the same speech
in a recording that arrives in chunks, keeping two numbers per 32 ms frame and less than one pass of audio.
"""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError, UsageError
from .features import SAMPLE_RATE

FRAME_SAMPLES = 512  # silero's window at 16 kHz: one probability per 32 ms
CONTEXT_SAMPLES = 64  # each window sees the last 64 samples of the previous one
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
_FRAMES_PER_PASS = 4096  # ~2 min of audio per batched pass bounds memory on hour-long files
_ENCODER_STRIDES = (1, 2, 2, 1)
LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class VadOptions:
    """How speech probabilities become segments. Times are in seconds."""

    threshold: float = 0.5  # a frame at or above this probability starts speech ...
    neg_threshold: float = 0.35  # ... and speech ends only below this one (hysteresis)
    min_silence: float = 0.5  # shorter pauses stay inside a segment
    min_speech: float = 0.1  # isolated bursts shorter than this (clicks) count as non-speech
    max_segment: float = 30.0  # longer speech is split at its quietest point
    min_segment: float = 1.0  # shorter segments join a neighbour closer than merge_gap
    merge_gap: float = 1.0
    # Audio the model hears on both sides of the speech (not part of the reported times), never past
    # the middle of the gap to a neighbour.
    pad: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise UsageError("VAD thresholds need 0 < neg_threshold <= threshold < 1")
        if self.max_segment < 2 * self.pad + 1:
            raise UsageError(f"VAD max_segment must be at least {2 * self.pad + 1:g} s")
        if min(self.min_silence, self.min_speech, self.min_segment, self.merge_gap, self.pad) < 0:
            raise UsageError("VAD durations must not be negative")


def _weights_path() -> Path:
    # find_spec does not import silero_vad: importing it sets torch.set_num_threads(1) process-wide.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ModelLoadError("silero-vad is not installed: `pip install silero-vad` (or use vad=False)")
    path = Path(spec.origin).parent / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ModelLoadError(f"silero-vad weights missing at {path}: reinstall silero-vad")
    return path


class SileroVAD:
    """The 16 kHz silero-vad network, evaluated over a whole recording at once, on CPU or CUDA. On CUDA it runs
    on a stream of its own, so that a live stream's pass does not wait behind the model's queued work on
    the same GPU; passes take windows from anywhere and give probabilities on the CPU."""

    def __init__(self, device: str = "cpu", weights: Path | None = None):
        self.device = torch.device(device)
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript loading; the .jit archive is still silero's reference weights
            warnings.simplefilter("ignore", DeprecationWarning)
            state = torch.jit.load(str(weights or _weights_path()), map_location=self.device).state_dict()
        prefix = "_model."
        self.stft_basis = state[prefix + "stft.forward_basis_buffer"]  # [2 * 129, 1, 256]
        convs = [f"{prefix}encoder.{i}.reparam_conv." for i in range(len(_ENCODER_STRIDES))]
        self.encoder = [(state[conv + "weight"], state[conv + "bias"]) for conv in convs]
        self.lstm = torch.nn.LSTM(128, 128, batch_first=True, device=self.device)
        rnn = prefix + "decoder.rnn."
        self.lstm.load_state_dict({f"{name}_l0": state[rnn + name]
                                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        self.head = (state[prefix + "decoder.decoder.2.weight"], state[prefix + "decoder.decoder.2.bias"])
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the weights' copies are done

    def _own_stream(self) -> AbstractContextManager:
        return torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()

    def _to_device(self, windows: torch.Tensor) -> torch.Tensor:
        if self._stream is None or windows.device.type != "cpu":
            return windows.to(self.device)
        # from pinned memory the copy is a plain DMA on the VAD's stream (the pass ends in a sync on it)
        return windows.contiguous().pin_memory().to(self.device, non_blocking=True)

    def _frame_features(self, windows: torch.Tensor) -> torch.Tensor:
        """[N, 576] windows (context + frame) -> [N, 128] encoder features."""
        x = F.pad(windows[:, None, :], (0, CONTEXT_SAMPLES), mode="reflect")
        x = F.conv1d(x, self.stft_basis, stride=128)
        bins = self.stft_basis.shape[0] // 2
        x = torch.sqrt(x[:, :bins] ** 2 + x[:, bins:] ** 2)
        for (weight, bias), stride in zip(self.encoder, _ENCODER_STRIDES, strict=True):
            x = F.relu(F.conv1d(x, weight, bias, stride=stride, padding=1))
        return x[:, :, 0]

    @torch.inference_mode()
    def speech_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One speech probability per 32 ms frame (the last frame zero-padded), as silero computes them."""
        if samples.size == 0:
            return np.zeros(0, np.float32)
        frames = -(-samples.size // FRAME_SAMPLES)
        with self._own_stream():
            padded = torch.zeros(CONTEXT_SAMPLES + frames * FRAME_SAMPLES, device=self.device)
            padded[CONTEXT_SAMPLES : CONTEXT_SAMPLES + samples.size] = torch.from_numpy(samples).to(self.device)
            windows = padded.unfold(0, CONTEXT_SAMPLES + FRAME_SAMPLES, FRAME_SAMPLES)
            state = None
            probabilities = []
            for first in range(0, frames, _FRAMES_PER_PASS):
                found, state = self.pass_probabilities(windows[first : first + _FRAMES_PER_PASS], state)
                probabilities.append(found)
        return torch.cat(probabilities).numpy()

    def pass_probabilities(self, windows: torch.Tensor, state: LSTMState | None
                           ) -> tuple[torch.Tensor, LSTMState]:
        """One pass: [N, 576] windows -> N probabilities, and the LSTM state the next pass starts from."""
        with self._own_stream():
            features = self._frame_features(self._to_device(windows))
            hidden, state = self.lstm(features[None], state)  # the state carries over to the next pass
            return self._probabilities(hidden[0]).cpu(), state

    def _probabilities(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = self.head
        return torch.sigmoid(F.relu(hidden) @ weight[0, :, 0] + bias)

    def pass_many(self, passes: list[tuple[torch.Tensor, LSTMState | None]]) -> list[tuple[np.ndarray, LSTMState]]:
        """:meth:`pass_probabilities` for independent streams in one batched pass: the frames of all in one
        front end, and one LSTM batch of the streams, each as long as its own windows. Probabilities as
        NumPy rows (hundreds of streams' rows are cut from one array)."""
        if len(passes) == 1:
            found, state = self.pass_probabilities(*passes[0])
            return [(found.numpy(), state)]
        counts = [windows.shape[0] for windows, _ in passes]
        with self._own_stream():
            windows = self._to_device(torch.cat([windows for windows, _ in passes]))
            features = self._frame_features(windows).split(counts)
            size = self.lstm.hidden_size
            zero = torch.zeros(1, 1, size, device=self.device)
            h0 = torch.cat([zero if state is None else state[0] for _, state in passes], dim=1)
            c0 = torch.cat([zero if state is None else state[1] for _, state in passes], dim=1)
            packed = nn.utils.rnn.pack_padded_sequence(nn.utils.rnn.pad_sequence(list(features), batch_first=True),
                                                       torch.tensor(counts), batch_first=True, enforce_sorted=False)
            out, (h, c) = self.lstm(packed, (h0, c0))  # h, c: each stream's state after its own last frame
            found = self._probabilities(nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]).cpu().numpy()
            states = zip(h.unsqueeze(2).unbind(1), c.unsqueeze(2).unbind(1), strict=True)  # [1, 1, 128] each
            return [(found[i, :n], state) for i, (n, state) in enumerate(zip(counts, states, strict=True))]


@lru_cache(maxsize=4)
def load_vad(device: str = "cpu") -> SileroVAD:
    """A shared SileroVAD per device: on the model's CUDA device, hour-long files do not wait on the CPU;
    any other device (MLX, MPS) runs it on the CPU."""
    return SileroVAD(device if device.startswith("cuda") else "cpu")


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if values.size < width:
        return values.astype(np.float32)
    return np.convolve(values, np.ones(width, np.float32) / width, mode="same")


def frame_energy(frames: np.ndarray) -> np.ndarray:
    """Loudness in dB of each row of [N, 512] samples (one 32 ms frame per row)."""
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def quietness(samples: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per-frame score, lowest where a cut hurts least: speech probability plus relative loudness.

    Inside continuous speech silero stays near 1, so the frame energy (0 = quietest frame of the file,
    1 = loudest) decides there; both are smoothed over 160 ms so a cut never lands in a plosive's closure.
    """
    frames = probabilities.size
    if frames == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(frames * FRAME_SAMPLES, np.float32)
    padded[: samples.size] = samples
    return quietness_from_energy(frame_energy(padded.reshape(frames, FRAME_SAMPLES)), probabilities)


def quietness_from_energy(energy: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """:func:`quietness` from each frame's :func:`frame_energy`: the loudness is relative to the whole file."""
    if probabilities.size == 0:
        return np.zeros(0, np.float32)
    spread = float(energy.max() - energy.min())
    loudness = (energy - energy.min()) / spread if spread > 0 else np.zeros_like(energy)
    return _smooth(probabilities, 5) + _smooth(loudness.astype(np.float32), 5)


def quietest_frame(score: np.ndarray, first: int, last: int) -> int:
    """The frame in [first, last] with the lowest score (the latest one on ties)."""
    window = score[first : last + 1]
    return first + int(window.size - 1 - np.argmin(window[::-1]))


def _hysteresis_regions(probabilities: np.ndarray, options: VadOptions) -> list[list[int]]:
    """[first, end) frame ranges of speech: enter at >= threshold, leave below neg_threshold."""
    regions: list[list[int]] = []
    start = None
    for index, probability in enumerate(probabilities):
        if start is None and probability >= options.threshold:
            start = index
        elif start is not None and probability < options.neg_threshold:
            regions.append([start, index])
            start = None
    if start is not None:
        regions.append([start, probabilities.size])
    return regions


def _close_pauses(regions: list[list[int]], max_gap: int) -> list[list[int]]:
    closed: list[list[int]] = []
    for region in regions:
        if closed and region[0] - closed[-1][1] < max_gap:
            closed[-1][1] = region[1]
        else:
            closed.append(list(region))
    return closed


def _split_long(regions: list[list[int]], limit: int, score: np.ndarray) -> list[list[int]]:
    """Cut regions longer than ``limit`` frames at the quietest frame between half and all of the limit;
    once two pieces suffice, only where both fit, so no sliver is left at the end."""
    pieces: list[list[int]] = []
    for start, end in regions:
        while end - start > limit:
            earliest = end - limit if end - start <= 2 * limit else start + limit // 2
            cut = quietest_frame(score, earliest, start + limit)
            pieces.append([start, cut])
            start = cut
        pieces.append([start, end])
    return pieces


def _merge_short(regions: list[list[int]], min_frames: int, max_gap: int, limit: int) -> list[list[int]]:
    """Join each too-short region to its nearer neighbour when the gap is small and the result fits."""
    merged = [list(r) for r in regions]
    index = 0
    while index < len(merged):
        start, end = merged[index]
        if end - start >= min_frames:
            index += 1
            continue
        gaps = []
        if index > 0:
            gaps.append((start - merged[index - 1][1], index - 1))
        if index + 1 < len(merged):
            gaps.append((merged[index + 1][0] - end, index + 1))
        joinable = [(gap, other) for gap, other in gaps
                    if gap <= max_gap and max(end, merged[other][1]) - min(start, merged[other][0]) <= limit]
        if not joinable:
            index += 1
            continue
        _, other = min(joinable)
        first, second = sorted((index, other))
        merged[first] = [merged[first][0], merged[second][1]]
        del merged[second]
        index = first  # the joined region may still be short
    return merged


def _spans(regions: list[list[int]], total: int) -> list[tuple[int, int]]:
    return [(start * FRAME_SAMPLES, min(end * FRAME_SAMPLES, total)) for start, end in regions]


def segments_from_probabilities(
    probabilities: np.ndarray, num_samples: int, options: VadOptions, score: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Speech as (begin, end) sample spans, in order; with :func:`add_context` each fits ``max_segment``."""
    frames = 1 / FRAME_SECONDS
    limit = int((options.max_segment - 2 * options.pad) * frames)
    regions = _close_pauses(_hysteresis_regions(probabilities, options), round(options.min_silence * frames))
    regions = [r for r in regions if r[1] - r[0] >= round(options.min_speech * frames)]
    regions = _split_long(regions, limit, probabilities if score is None else score)
    shortest, merge_gap = round(options.min_segment * frames), round(options.merge_gap * frames)
    regions = _merge_short(regions, shortest, merge_gap, limit)
    return _spans(regions, num_samples)


def add_context(spans: list[tuple[int, int]], pad: float, num_samples: int) -> list[tuple[int, int]]:
    """Widen each span by ``pad`` seconds for the model, never past the middle of the gap to a neighbour."""
    pad_samples = round(pad * SAMPLE_RATE)
    widened = []
    for index, (begin, end) in enumerate(spans):
        room_before = begin if index == 0 else (begin - spans[index - 1][1]) // 2
        room_after = num_samples - end if index == len(spans) - 1 else (spans[index + 1][0] - end) // 2
        widened.append((begin - min(pad_samples, room_before), end + min(pad_samples, room_after)))
    return widened


def split_point(score: np.ndarray, begin: int, end: int) -> int:
    """Sample at the quietest frame of the middle third of [begin, end): where a retry splits a segment."""
    first = -(-(begin + (end - begin) // 3) // FRAME_SAMPLES)
    last = (end - (end - begin) // 3) // FRAME_SAMPLES - 1
    if last < first:
        return (begin + end) // 2
    return quietest_frame(score, first, last) * FRAME_SAMPLES


@dataclass
class SpeechMap:
    """What the VAD found in one recording: speech spans plus where cuts are cheapest."""

    spans: list[tuple[int, int]]  # speech, unpadded; everything else was judged non-speech
    score: np.ndarray  # quietness per 32 ms frame (see :func:`quietness`)


def find_speech(samples: np.ndarray, options: VadOptions | None = None, device: str = "cpu") -> SpeechMap:
    """Run silero-vad over 16 kHz mono ``samples`` and cut its speech into segments."""
    probabilities = load_vad(device).speech_probabilities(samples)
    score = quietness(samples, probabilities)
    spans = segments_from_probabilities(probabilities, samples.size, options or VadOptions(), score)
    return SpeechMap(spans, score)


class SpeechScanner:
    """:func:`find_speech` for a recording that arrives in chunks: :meth:`add` each chunk of 16 kHz mono
    samples, then :meth:`finish`. The network runs over the same passes of frames as there (so the same
    probabilities, bit for bit); kept are a probability and an energy per 32 ms frame and less than one
    pass (~2 min) of audio. The speech is known only at the end, since the cut scores are relative to the
    loudest and quietest frames of the whole recording."""

    def __init__(self, options: VadOptions | None = None, device: str = "cpu"):
        self.options = options or VadOptions()
        self.vad = load_vad(device)
        self.samples = 0  # added so far
        # One pass of audio after the 64 samples of context before it (zeros at the start), filled in place.
        self._buffer = np.zeros(CONTEXT_SAMPLES + _FRAMES_PER_PASS * FRAME_SAMPLES, np.float32)
        self._filled = CONTEXT_SAMPLES
        self._state: LSTMState | None = None
        self._probabilities: list[np.ndarray] = []
        self._energy: list[np.ndarray] = []

    def add(self, samples: np.ndarray) -> None:
        self.samples += samples.size
        while samples.size:
            taken = min(samples.size, self._buffer.size - self._filled)
            self._buffer[self._filled : self._filled + taken] = samples[:taken]
            self._filled += taken
            samples = samples[taken:]
            if self._filled == self._buffer.size:
                self._run(self._buffer)
                self._buffer[:CONTEXT_SAMPLES] = self._buffer[-CONTEXT_SAMPLES:]
                self._filled = CONTEXT_SAMPLES

    def finish(self) -> SpeechMap:
        if self._filled > CONTEXT_SAMPLES:
            end = CONTEXT_SAMPLES + -(-(self._filled - CONTEXT_SAMPLES) // FRAME_SAMPLES) * FRAME_SAMPLES
            self._buffer[self._filled : end] = 0  # the last frame zero-padded
            self._run(self._buffer[:end])
        self._filled = CONTEXT_SAMPLES
        probabilities = np.concatenate(self._probabilities) if self._probabilities else np.zeros(0, np.float32)
        energy = np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32)
        score = quietness_from_energy(energy, probabilities)
        return SpeechMap(segments_from_probabilities(probabilities, self.samples, self.options, score), score)

    @torch.inference_mode()
    def _run(self, padded: np.ndarray) -> None:
        """One pass over whole frames (the zero-padded last frame included), after their context."""
        frames = padded[CONTEXT_SAMPLES:].reshape(-1, FRAME_SAMPLES)
        self._energy.append(np.concatenate([frame_energy(frames[row : row + 256])
                                            for row in range(0, len(frames), 256)]))
        windows = torch.from_numpy(padded).unfold(0, CONTEXT_SAMPLES + FRAME_SAMPLES, FRAME_SAMPLES)
        found, self._state = self.vad.pass_probabilities(windows, self._state)
        self._probabilities.append(found.numpy())
