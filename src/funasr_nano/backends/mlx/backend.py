"""The MLX backend: device/dtype choice, weights from ``model.pt`` or a converted copy, batched encode and
greedy decode stepped by its caller. Apple Silicon GPU through Metal; also runs on CPU (``mlx[cpu]`` on
Linux, used by CI)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch

from ...checkpoint import CTC_PREFIXES, MLX_WEIGHTS, load_checkpoint
from ...config import ModelConfig
from ...dtypes import dtype_name
from ...errors import UsageError, option
from ...frontend.features import extract_features
from .. import LENGTH, STOP, Event, Request, position_limit_message
from ..alignment import CTCResult
from ..drafts import DraftStats
from .convert import read_converted
from .ctc_head import CTCHead
from .drafted import DraftedBatch
from .generate import StaticBatch
from .model import FunASRNanoMLX, arrays_from_state_dict, check_array_shapes, load_arrays
from .quantization import Quantization, apply_layout


def pick_device(device: str) -> mx.Device:
    if device == "auto":
        return mx.default_device()  # the GPU on Apple Silicon, the CPU with mlx[cpu]
    if device == "cpu":
        return mx.Device(mx.cpu)
    if device in ("gpu", "mps", "metal"):
        if not mx.is_available(mx.gpu):
            raise UsageError(
                f"{option('device', device)} requested but MLX sees no GPU here: use {option('device', 'cpu')} "
                f"or {option('device', 'auto')}"
            )
        return mx.Device(mx.gpu)
    choices = ", ".join(option("device", d) for d in ("auto", "cpu", "gpu"))
    raise UsageError(f"unknown device {device!r} for the MLX backend: use {choices}")


def pick_dtype(dtype: str, device: mx.Device) -> mx.Dtype:
    name = dtype_name(dtype)
    if name == "auto":
        # As the torch backend: half-width weights where decoding is bandwidth-bound, float32 on CPU.
        return mx.bfloat16 if device.type == mx.gpu else mx.float32
    return getattr(mx, name)


@dataclass
class Weights:
    """What a model directory holds for MLX: the core weights (MLX arrays of a converted copy, or the
    official torch tensors of ``model.pt``), the checkpoint's own CTC-head tensors (empty when it has none;
    same keys and shapes either way) and the converted copy's quantization."""

    core: dict[str, mx.array] | dict[str, torch.Tensor]
    ctc: dict[str, mx.array] | dict[str, torch.Tensor]
    quantization: Quantization | None
    source: Path
    converted: bool


def read_weights(model_dir: Path) -> Weights:
    """From the converted copy (``model.mlx.safetensors``) if the directory has one, else ``model.pt``."""
    converted = model_dir / MLX_WEIGHTS
    if converted.is_file():
        arrays, quantization = read_converted(converted)
        ctc = {k: arrays.pop(k) for k in list(arrays) if k.startswith(CTC_PREFIXES)}
        return Weights(arrays, ctc, quantization, converted, True)
    core, ctc = load_checkpoint(model_dir)
    return Weights(core, ctc, None, model_dir / "model.pt", False)


class MLXBackend:
    name = "mlx"

    def __init__(
        self,
        model: FunASRNanoMLX,
        stop_ids: Sequence[int],
        device: mx.Device,
        batch_size: int = 32,
        quantization: Quantization | None = None,
        ctc_head: CTCHead | None = None,
        drafter: Callable[[list[int]], list[int]] | None = None,
        draft_tokens: int = 8,
    ):
        """drafter: CTC greedy ids -> a draft in the LLM's ids (``drafts.CTCDrafter``): with it every batch
        decodes by verifying up to ``draft_tokens`` draft ids a step (needs ``ctc_head``)."""
        if drafter is not None and ctc_head is None:
            raise UsageError("CTC drafts need a CTC head: this checkpoint has none (pass a ctc_head)")
        self.drafter = drafter
        self.draft_tokens = draft_tokens
        self.draft_stats = DraftStats()
        self.model = model
        self.stop_ids = frozenset(stop_ids)
        self.mx_device = device
        self.device = "gpu" if device.type == mx.gpu else "cpu"
        self.batch_size = batch_size
        self.quantization = quantization
        self.ctc_head = ctc_head
        self._waiting: deque[tuple[Hashable, Request]] = deque()
        self._batch: StaticBatch | DraftedBatch | None = None
        self._rows: list[tuple[Hashable, int, list[int]]] = []  # per batch row: key, budget, tokens so far
        self._ctc_hidden: dict[Hashable, mx.array] = {}  # kept for align()

    @classmethod
    def load(
        cls,
        config: ModelConfig,
        model_dir: Path,
        stop_ids: Sequence[int],
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        weights: Weights | None = None,
        ctc_tensors: Mapping[str, torch.Tensor | mx.array] | None = None,
        ctc_source: str | None = None,
        drafter: Callable[[list[int]], list[int]] | None = None,
        draft_tokens: int = 8,
    ) -> MLXBackend:
        """weights: what :func:`read_weights` read from ``model_dir`` (read here when None). ctc_tensors: the CTC
        head's tensors (``ctc_decoder.*``, ``ctc.*``; the checkpoint's own or a borrowed head's), from
        ``ctc_source``; without them (or without a CTC head in the config) there is no alignment. The head
        runs in float32 whatever ``dtype`` and quantization the rest of the model has."""
        chosen = pick_device(device)
        precision = pick_dtype(dtype, chosen)
        weights = weights or read_weights(model_dir)
        with mx.stream(chosen):
            model = FunASRNanoMLX(config)
            if weights.converted:
                if weights.quantization is not None:
                    apply_layout(model, weights.quantization)
                check_array_shapes(model, weights.core, weights.source)
                arrays = weights.core
            else:
                arrays = arrays_from_state_dict(model, weights.core, str(weights.source))
            weights.core = {}
            load_arrays(model, arrays, precision)
            head = None
            if ctc_tensors and config.ctc is not None:
                head = CTCHead.from_tensors(config.ctc, ctc_tensors, ctc_source or str(weights.source))
        return cls(model, stop_ids, chosen, batch_size, weights.quantization, head, drafter, draft_tokens)

    def encode_waveforms(self, waveforms: Sequence[np.ndarray]) -> list[mx.array]:
        """16 kHz segments -> audio embeddings [ceil(T_lfr/8), H] on this backend's stream."""
        return self.encode_waveforms_with_ctc(waveforms, None)[0]

    def encode_waveforms_with_ctc(
        self, waveforms: Sequence[np.ndarray], head: CTCHead | None
    ) -> tuple[list[mx.array], list[mx.array] | None]:
        """16 kHz segments -> audio embeddings [ceil(T_lfr/8), H] on this backend's stream, and with ``head``
        the ctc_decoder output [T_lfr, W] of each (evaluated, as the embeddings).

        Features stay in torch on the CPU (shared with the torch backend): ~0.15 s for a 41 s clip on
        2 CPU cores here, small next to the model, and an MLX port disagreed by up to 9e-4 in log-mel.
        """
        features = extract_features([torch.from_numpy(w) for w in waveforms])
        with mx.stream(self.mx_device):
            audio, hidden = self.model.encode_with_ctc([f.numpy() for f in features], head)
            if hidden is not None:
                mx.eval(audio, hidden)
            return audio, hidden

    def fits(self, request: Request) -> bool:
        return request.positions <= self.model.llm.config.max_positions

    def add(self, key: Hashable, request: Request) -> None:
        if not self.fits(request):
            raise UsageError(position_limit_message(request.positions,
                                                    self.model.llm.config.max_positions))
        self._waiting.append((key, request))

    def capacity(self) -> int:
        running = 0 if self._batch is None else len(self._rows)
        return max(0, 2 * self.batch_size - len(self._waiting) - running)

    @property
    def idle(self) -> bool:
        return not self._waiting and self._batch is None

    def step(self) -> list[Event]:
        """Static batches behind the protocol: the next ``batch_size`` waiting segments are encoded and
        prefilled together once the running batch is done; each later step decodes one token of all."""
        if self._batch is None:
            if not self._waiting:
                return []
            self._start([self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))])
            return []
        events: list[Event] = []
        with mx.stream(self.mx_device):
            produced = self._batch.step()
        for row, new, stopped in produced:
            key, budget, tokens = self._rows[row]
            tokens.extend(new)
            done = stopped or len(tokens) >= budget
            events.append(Event(key, new, done, (STOP if stopped else LENGTH) if done else None))
        if self._batch.finished:
            self._batch, self._rows = None, []
        return events

    def cancel(self, keys: Iterable[Hashable]) -> None:
        gone = set(keys)
        self._waiting = deque(item for item in self._waiting if item[0] not in gone)
        for key in gone:
            self._ctc_hidden.pop(key, None)
        if self._batch is not None:
            for row, (key, _, _) in enumerate(self._rows):
                if key in gone:
                    self._batch.cancel(row)
            if self._batch.finished:
                self._batch, self._rows = None, []

    def align(self, items: Sequence[tuple[Hashable, list[int]]]) -> list[CTCResult | None]:
        hidden = [self._ctc_hidden.pop(key, None) for key, _ in items]
        if self.ctc_head is None or not items:
            return [None] * len(items)
        targets = [target if h is not None else None for h, (_, target) in zip(hidden, items, strict=True)]
        with mx.stream(self.mx_device):
            return self.ctc_head.run(hidden, targets)

    def _start(self, work: list[tuple[Hashable, Request]]) -> None:
        # Segments of similar length share a batch, which keeps left padding small.
        work = sorted(work, key=lambda item: item[1].audio.size)
        drafting = self.drafter is not None and self.ctc_head is not None
        head = self.ctc_head if drafting or any(request.align for _, request in work) else None
        audio, ctc_hidden = self.encode_waveforms_with_ctc([request.audio for _, request in work], head)
        if ctc_hidden is not None:
            for (key, request), h in zip(work, ctc_hidden, strict=True):
                if request.align:
                    self._ctc_hidden[key] = h
        with mx.stream(self.mx_device):
            embeddings = [self.model.prompt_embeddings(r.prompt, a) for (_, r), a in zip(work, audio, strict=True)]
            budgets = [request.max_new_tokens for _, request in work]
            if drafting and ctc_hidden is not None:
                assert self.drafter is not None and self.ctc_head is not None
                drafts: list[list[int] | None] = [self.drafter(ids) for ids in self.ctc_head.greedy(ctc_hidden)]
                self._batch = DraftedBatch(self.model.llm, embeddings, budgets, self.stop_ids, drafts,
                                           self.draft_tokens, self.draft_stats)
            else:
                self._batch = StaticBatch(self.model.llm, embeddings, budgets, self.stop_ids)
        self._rows = [(key, request.max_new_tokens, []) for key, request in work]
