"""The PyTorch backend: device/dtype choice, model construction, and the engine that encodes and decodes."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch

from ...config import ModelConfig
from ...dtypes import dtype_name
from ...errors import UsageError, option
from .. import Event, Request, position_limit_message
from ..alignment import CTCResult
from ..drafts import DraftStats
from .ctc_head import CTCHead
from .engine import GenerationRequest, GreedyEngine
from .model import FunASRNanoTorch
from .quantize import quantize_llm_int8


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(
            f"unknown device {device!r}: use {option('device', 'auto')}, {option('device', 'cpu')} or "
            f"{option('device', 'cuda')}[:N]"
        ) from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{option('device', device)} requested but no CUDA GPU is available: use {option('device', 'cpu')} "
            f"or {option('device', 'auto')}"
        )
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    name = dtype_name(dtype)
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class TorchBackend:
    """The torch engine: segments are encoded (a batch at a time, as slots are about to free up), their
    prompts prefilled and decoded by the continuous-batching :class:`GreedyEngine`."""

    name = "torch"

    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, torch.Tensor],
        stop_ids: Sequence[int],
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        source: str = "model.pt",
        int8: bool = False,
        ctc_tensors: dict[str, torch.Tensor] | None = None,
        ctc_source: str | None = None,
        drafter: Callable[[list[int]], list[int]] | None = None,
        draft_tokens: int = 8,
    ):
        """int8: weight-only int8 LLM linears and LM head (CPU only; faster decoding, ids may differ from fp32).
        ctc_tensors: the CTC head's tensors (``ctc_decoder.*``, ``ctc.*``), from ``ctc_source``; without them
        (or without a CTC head in the config) there is no alignment. drafter: CTC greedy ids -> a draft in the
        LLM's ids (``drafts.CTCDrafter``): with it every segment decodes by verifying up to ``draft_tokens``
        draft ids a step (needs the CTC head; same tokens, fewer steps when the draft is good)."""
        self.torch_device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        self.device = str(self.torch_device)
        if int8 and self.torch_device.type != "cpu":
            raise UsageError(f"int8 weights are for the CPU path: use {option('device', 'cpu')}")
        self.model = FunASRNanoTorch.from_state_dict(config, tensors, self.torch_device, self.dtype, source)
        if int8:
            quantize_llm_int8(self.model.llm)
        if self.torch_device.type == "cuda" and self.dtype != torch.float32:
            # half precision on CUDA: the eager encoder is launch-bound. fp32 stays eager, so its ids stay the
            # official model's exactly (a graph's padded batch rounds differently).
            self.model.use_encoder_graphs()
        self.ctc_head: CTCHead | None = None
        if ctc_tensors and config.ctc is not None:
            self.ctc_head = CTCHead.from_tensors(config.ctc, ctc_tensors, self.torch_device, ctc_source or source)
        if drafter is not None and self.ctc_head is None:
            raise UsageError("CTC drafts need a CTC head: this checkpoint has none (pass a ctc_head)")
        self.drafter = drafter
        self.engine = GreedyEngine(self.model.llm, stop_ids, max_batch=batch_size,
                                   draft_tokens=draft_tokens if drafter is not None else 0)
        self.batch_size = batch_size
        # While rows decode, leave this many seconds between encoder calls (None: encode whenever slots
        # are about to free). An encoder call costs many decode steps and every running row waits for it:
        # a server with many live streams spaces the calls out so that the running rows' tokens keep coming.
        self.encode_interval_s: float | None = None
        self._encoded_at = 0.0
        self._unencoded: deque[tuple[Hashable, Request]] = deque()
        self._ctc_hidden: dict[Hashable, torch.Tensor] = {}  # kept for align()

    @property
    def draft_stats(self) -> DraftStats:
        return self.engine.draft_stats

    def fits(self, request: Request) -> bool:
        return request.positions <= self.engine.max_positions

    def add(self, key: Hashable, request: Request) -> None:
        if not self.fits(request):
            raise UsageError(position_limit_message(request.positions, self.engine.max_positions))
        self._unencoded.append((key, request))

    def capacity(self) -> int:
        # the slots, and one encoder batch ready for the slots that free up next
        return max(0, self.engine.max_batch + self.batch_size - len(self._unencoded) - self.engine.load)

    @property
    def idle(self) -> bool:
        return not self._unencoded and self.engine.idle

    @torch.inference_mode()
    def step(self) -> list[Event]:
        if self._unencoded and self.engine.waiting < self.engine.free_slots and self._may_encode():
            self._encode(self._next_batch())
            self._encoded_at = time.monotonic()  # from the call's end: decode steps get the interval
        return self.engine.step()

    def _may_encode(self) -> bool:
        if self.encode_interval_s is None or self.engine.idle:
            return True
        return time.monotonic() - self._encoded_at >= self.encode_interval_s

    def _next_batch(self) -> list[tuple[Hashable, Request]]:
        """Urgent requests first (a stable sort: in order otherwise), at most ``batch_size``."""
        order = sorted(range(len(self._unencoded)), key=lambda i: not self._unencoded[i][1].urgent)
        chosen = order[: self.batch_size]
        taken = set(chosen)
        batch = [self._unencoded[i] for i in chosen]
        self._unencoded = deque(item for i, item in enumerate(self._unencoded) if i not in taken)
        return batch

    def cancel(self, keys: Iterable[Hashable]) -> None:
        gone = set(keys)
        self._unencoded = deque(item for item in self._unencoded if item[0] not in gone)
        for key in gone:
            self._ctc_hidden.pop(key, None)
        self.engine.cancel(gone)

    @torch.inference_mode()
    def align(self, items: Sequence[tuple[Hashable, list[int]]]) -> list[CTCResult | None]:
        hidden = [self._ctc_hidden.pop(key, None) for key, _ in items]
        if self.ctc_head is None or not items:
            return [None] * len(items)
        wanted = [i for i, h in enumerate(hidden) if h is not None]
        results = self.ctc_head.run([hidden[i] for i in wanted], [items[i][1] for i in wanted])  # type: ignore[misc]
        out: list[CTCResult | None] = [None] * len(items)
        for index, result in zip(wanted, results, strict=True):
            out[index] = result
        return out

    def _encode(self, work: list[tuple[Hashable, Request]]) -> None:
        """Encode a batch of segments and queue their prompts in the LLM engine, in the order added."""
        head = self.ctc_head if self.drafter is not None or any(request.align for _, request in work) else None
        encoded, ctc_hidden = self.model.encode_waveforms_with_ctc(
            [torch.from_numpy(request.audio) for _, request in work], head)
        drafts: list[list[int] | None] = [None] * len(work)
        if self.drafter is not None and self.ctc_head is not None and ctc_hidden is not None:
            drafts = [self.drafter(ids) for ids in self.ctc_head.greedy(ctc_hidden)]
        for index, ((key, request), audio) in enumerate(zip(work, encoded, strict=True)):
            embeddings = self.model.prompt_embeddings(request.prompt, audio)
            self.engine.add(key, GenerationRequest(embeddings, request.max_new_tokens, drafts[index]))
            if ctc_hidden is not None and request.align:
                self._ctc_hidden[key] = ctc_hidden[index]
