"""Greedy generation over a persistent slot-indexed KV cache with continuous batching, driven by the
caller: ``add`` requests (prompt embeddings) under keys, call ``step`` until ``idle``, read the events.

Up to ``max_batch`` requests occupy cache slots; newly admitted prompts are prefilled together, each
step decodes every slot below the smallest batch bucket that covers the busy ones, and a slot whose
sequence is done takes the next waiting request straight away, whenever it was added.

The decode state (each slot's newest token and its position) lives on the device and the step
updates it itself, so steps queue up without the host looking at tokens. The host reads tokens
``lag`` steps behind through pinned buffers, to notice stop tokens and to hand tokens to callers
(streaming); budgets it counts itself.
On CUDA with bf16/fp16 the step is the fused Triton step, replayed from CUDA graphs; elsewhere it
is the eager reference model. On CUDA the prefill is replayed from a CUDA graph per prompt shape too.

With ``draft_tokens`` k > 0, requests that carry a draft decode by verify steps (``verify.py``: up to k + 1
tokens per read of the weights, greedy's tokens); choosing a draft needs the tokens so far, so while
drafts are in play the host reads every step back before the next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ...errors import UsageError
from .. import LENGTH, STOP, Event, position_limit_message
from ..drafts import DraftStats, RowDraft, step_width
from .fused import TritonDecodeStep, supports_fused_decode
from .qwen3 import KVCache, Qwen3ForCausalLM, attention_mask
from .readback import TokenReader
from .verify import verify_step

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Cache length grows in coarse steps so that calls of similar size reuse the cache and its graphs.
_CACHE_LENGTH_STEP = 256
_KV_ROUND = 64
# Prefill at most this many (padded) prompt tokens at once: bounds activation memory.
_PREFILL_TOKENS = 32768


@dataclass
class GenerationRequest:
    embeddings: torch.Tensor  # [L, H] prompt embeddings (audio spliced in)
    max_new_tokens: int
    draft: list[int] | None = None  # ids the output is expected to resemble (see drafts.py)


_NO_EMBEDDINGS = torch.empty(0)


@dataclass(eq=False)
class _Sequence:
    key: Hashable
    budget: int
    prompt_length: int
    embeddings: torch.Tensor  # until it is prefilled
    scheduled: int = 0  # tokens the device has been asked to produce so far
    stopped: bool = False  # a stop token has been read back
    finished: bool = False  # its last event is out (or it was cancelled): rows still read back are skipped
    tokens: list[int] = field(default_factory=list)
    draft: RowDraft | None = None

    @property
    def needs_steps(self) -> bool:
        return not self.stopped and self.scheduled < self.budget


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def bucket_for(busy: int, slots: int) -> int:
    """Smallest batch bucket covering ``busy`` rows; the slot count itself is the last bucket."""
    return next((b for b in BUCKETS if busy <= b < slots), slots)


class GreedyEngine:
    def __init__(
        self, llm: Qwen3ForCausalLM, stop_ids: Sequence[int], max_batch: int = 32, cuda_graphs: bool = True,
        lag: int | None = None, draft_tokens: int = 0,
    ):
        """lag: decode steps the host reads behind (default 2 on CUDA so the GPU never waits for the host;
        0 on CPU, where each step is slow and one past a stop token would be wasted). draft_tokens: draft ids
        verified per step for requests that carry a draft (0: drafts are ignored)."""
        self.llm = llm
        self.stop_ids = frozenset(stop_ids)
        self.max_batch = max_batch
        self.group = llm.config.num_heads // llm.config.num_kv_heads
        self.lag = (2 if self.device.type == "cuda" else 0) if lag is None else lag
        self.draft_tokens = draft_tokens
        self.draft_stats = DraftStats()
        self.fused = TritonDecodeStep(llm) if supports_fused_decode(self.device, self.dtype) else None
        # Decode graphs need the fused step (the eager one reads a host-side length); prefill graphs
        # work for any dtype on CUDA.
        self.cuda_graphs = cuda_graphs and self.fused is not None
        self.prefill_graphs = cuda_graphs and self.device.type == "cuda"
        self.cache: KVCache | None = None
        # Per slot: the newest token (the next step's input) and its position (where its K/V go).
        self.tokens = self.positions = self.slot_ids = torch.empty(0, dtype=torch.long)
        self._reader = TokenReader(torch.device("cpu"), 0, 0)
        self._graphs = self._prefill_graphs = self._verify_graphs = None
        self._waiting: deque[_Sequence] = deque()
        self._active: dict[int, _Sequence] = {}  # slot -> the sequence decoding there

    @property
    def device(self) -> torch.device:
        return self.llm.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.model.embed_tokens.weight.dtype

    @property
    def max_positions(self) -> int:
        return self.llm.rotary.cos.shape[0]

    def reserve(self, slots: int, length: int) -> None:
        """Make the cache hold at least ``slots`` sequences of ``length`` positions (grow-only)."""
        if self.cache is not None and self.cache.slots >= slots and self.cache.max_len >= length:
            return
        if self.cache is not None:
            slots, length = max(slots, self.cache.slots), max(length, self.cache.max_len)
        length = min(_round_up(length, _CACHE_LENGTH_STEP), self.max_positions)
        self.release()  # free the old cache before taking the new one
        self.cache = KVCache.allocate(self.llm.config, slots, length, self.device, self.dtype)
        self.tokens = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.slot_ids = torch.arange(slots, device=self.device)
        self._reader = TokenReader(self.device, slots, self.lag)
        if self.cuda_graphs:
            from .cuda_graphs import StepGraphs

            self._graphs = StepGraphs(self._fused_step, [self.tokens, self.positions])
        if self.prefill_graphs:
            from .cuda_graphs import ShapeGraphs

            # power-of-two prompt counts up to the slot count, times padded lengths of up to ~1000 tokens
            self._prefill_graphs = ShapeGraphs(self._prefill_device, capacity=128)
            if self.draft_tokens:
                # one per batch bucket and draft width; the eager verify attends over the whole cache length
                # (a graph cannot vary it), the fused one up to each row's own position
                shapes = len(BUCKETS) * ((self.draft_tokens - 1).bit_length() + 1)
                self._verify_graphs = ShapeGraphs(self._verify_device, shapes, [self.tokens, self.positions])

    def release(self) -> None:
        """Drop the cache (and its graphs) of an idle engine; the next admission allocates again."""
        if self._active or self._reader.pending:
            raise RuntimeError("the engine is decoding: its cache cannot be released")
        self.cache = self._graphs = self._prefill_graphs = self._verify_graphs = None

    @property
    def waiting(self) -> int:
        """Requests added and not yet prefilled."""
        return len(self._waiting)

    @property
    def free_slots(self) -> int:
        return (self.cache.slots if self.cache is not None else self.max_batch) - len(self._active)

    @property
    def load(self) -> int:
        """Requests waiting or decoding."""
        return len(self._waiting) + len(self._active)

    @property
    def idle(self) -> bool:
        """Nothing waiting, decoding or still to be read back."""
        return not self._waiting and not self._active and not self._reader.pending

    def fits(self, request: GenerationRequest) -> bool:
        """Whether the request can be decoded at all: its prompt and budget within the position limit."""
        return request.embeddings.shape[0] + request.max_new_tokens <= self.max_positions

    def add(self, key: Hashable, request: GenerationRequest) -> None:
        """Queue a request; it is prefilled as soon as a slot is free (in the order added)."""
        if not self.fits(request):
            raise UsageError(position_limit_message(request.embeddings.shape[0] + request.max_new_tokens,
                                                    self.max_positions))
        self._waiting.append(_Sequence(key, request.max_new_tokens, request.embeddings.shape[0], request.embeddings,
                                       draft=RowDraft(list(request.draft), self.draft_tokens)
                                       if self.draft_tokens and request.draft else None))

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Forget these requests: no more events for them; their slots take other work at once."""
        gone = set(keys)
        self._waiting = deque(s for s in self._waiting if s.key not in gone)
        for slot, sequence in list(self._active.items()):
            if sequence.key in gone:
                sequence.finished = True  # rows still being read back for it are skipped
                del self._active[slot]

    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Prefill newly admitted requests or decode one token for every busy slot, and return what the
        host read back meanwhile (``lag`` steps behind the device): each request's new tokens, and its end."""
        drafting = any(s.draft is not None for s in self._active.values())
        events = self._collect(self._reader.ready(keep=0 if drafting else None))
        self._active = {slot: s for slot, s in self._active.items() if s.needs_steps}
        admitted = self._admit()
        if admitted:
            slots = [slot for slot, _ in admitted]
            firsts = self._prefill([s.embeddings for _, s in admitted], slots)
            for _, sequence in admitted:
                sequence.embeddings = _NO_EMBEDDINGS  # the cache holds the prompt now
            self._reader.push(firsts, [(row, s) for row, (_, s) in enumerate(admitted)])
            return events
        if not self._active:
            return events + self._collect(self._reader.ready(keep=0))
        busy = sorted(self._active)
        batch = bucket_for(busy[-1] + 1, self.cache.slots)  # type: ignore[union-attr]
        kv_len = max(s.prompt_length + s.scheduled for s in self._active.values())
        proposals = self._proposals() if drafting else {}
        if proposals:
            return events + self._verify(batch, kv_len, proposals)
        self._step(batch, kv_len)
        self.draft_stats.plain_steps += 1
        for sequence in self._active.values():
            sequence.scheduled += 1
        self._reader.push(self.tokens[:batch], [(slot, self._active[slot]) for slot in busy])
        return events

    def _admit(self) -> list[tuple[int, _Sequence]]:
        """Give free slots to waiting requests, oldest first. The cache holds what the work needs (up to
        ``max_batch`` rows): a request that does not fit it, or more waiting work than free rows in a cache
        that could be larger, stops admission until the engine has drained; then the cache grows. So a
        batch never decodes wider than its work, and a server under load reaches its full width soon."""
        if not self._waiting:
            return []
        wanted = min(self.max_batch, len(self._waiting) + len(self._active))
        free = [] if self.cache is None else [s for s in range(self.cache.slots) if s not in self._active]
        cramped = self.cache is not None and self.cache.slots < wanted and len(self._waiting) > len(free)
        if not self._fits_cache(self._waiting[0]) or cramped:
            if self._active or self._reader.pending:
                return []  # drain: the cache is replaced only once every row of the old one is read
            # A cache that proved too narrow grows to full width at once: every growth waits for a drain
            # and captures its graphs again, so a server pays for it once. (Its length grows only as
            # needed: the step graphs attend over the whole length.)
            self.reserve(self.max_batch if cramped else wanted, max(s.prompt_length + s.budget for s in self._waiting))
            assert self.cache is not None
            free = list(range(self.cache.slots))
        admitted: list[tuple[int, _Sequence]] = []
        while self._waiting and len(admitted) < len(free) and self._fits_cache(self._waiting[0]):
            sequence = self._waiting.popleft()
            sequence.scheduled = 1
            slot = free[len(admitted)]
            self._active[slot] = sequence
            admitted.append((slot, sequence))
        return admitted

    def _fits_cache(self, sequence: _Sequence) -> bool:
        return self.cache is not None and sequence.prompt_length + sequence.budget <= self.cache.max_len

    def _collect(self, rows: Iterable[tuple[list, list[tuple[int, _Sequence]]]]) -> list[Event]:
        """Tokens read back -> events; ``values[row]`` is a row's token, or its list of tokens (a verify step)."""
        fresh: dict[int, tuple[_Sequence, int]] = {}  # id(sequence) -> sequence, tokens it had before
        for values, owners in rows:
            for row, sequence in owners:
                if sequence.stopped or sequence.finished:
                    continue  # steps queued before the stop token was seen, or a cancelled request
                fresh.setdefault(id(sequence), (sequence, len(sequence.tokens)))
                value = values[row]
                for token in value if isinstance(value, list) else [value]:
                    if token in self.stop_ids:
                        sequence.stopped = True
                    if sequence.stopped or len(sequence.tokens) >= sequence.budget:
                        break
                    sequence.tokens.append(token)
        events = []
        for sequence, before in fresh.values():
            done = sequence.stopped or len(sequence.tokens) >= sequence.budget
            if done:
                sequence.finished = True
            events.append(Event(sequence.key, sequence.tokens[before:], done,
                                (STOP if sequence.stopped else LENGTH) if done else None))
        return events

    def _to_device(self, values: list[int] | list[list[int]]) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=torch.long)
        if self.device.type == "cuda":
            # From pinned memory the copy is asynchronous: no wait for the queued steps.
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _prefill(self, prompts: list[torch.Tensor], slots: list[int]) -> torch.Tensor:
        """Prefill prompts into their slots; sets each slot's first new token. Returns those tokens."""
        firsts = []
        start = 0
        while start < len(prompts):
            stop = start + 1
            longest = prompts[start].shape[0]
            while stop < len(prompts) and max(longest, prompts[stop].shape[0]) * (stop + 1 - start) <= _PREFILL_TOKENS:
                longest = max(longest, prompts[stop].shape[0])
                stop += 1
            if self._prefill_graphs is not None:
                # Graphs are kept per shape: groups of power-of-two sizes keep the shapes few, however
                # many prompts arrive at once (requests joining a running decode come in any number).
                stop = start + (1 << ((stop - start).bit_length() - 1))
            firsts.append(self._prefill_group(prompts[start:stop], slots[start:stop]))
            start = stop
        return torch.cat(firsts)

    def _prefill_group(self, prompts: list[torch.Tensor], slots: list[int]) -> torch.Tensor:
        lengths = [p.shape[0] for p in prompts]
        hidden = torch.nn.utils.rnn.pad_sequence([p.to(device=self.device, dtype=self.dtype) for p in prompts], True)
        if self._prefill_graphs is None:
            return self._prefill_device(hidden, self._to_device(lengths), self._to_device(slots))
        # Graphs are kept per shape: round the padded length so that similar prompts share one.
        padded = min(_round_up(hidden.shape[1], _KV_ROUND), self.cache.max_len)  # type: ignore[union-attr]
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, padded - hidden.shape[1]))
        return self._prefill_graphs(hidden, self._to_device(lengths), self._to_device(slots))

    def _prefill_device(self, hidden: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts [B, S, H] with their lengths and slots: fills their cache rows, sets each
        slot's first new token and position, returns those tokens. Device work only (graph-capturable)."""
        assert self.cache is not None
        count, longest = hidden.shape[:2]
        positions = torch.arange(longest, device=self.device).expand(count, longest)
        kv_len = min(self.cache.max_len, _round_up(longest, _KV_ROUND))
        mask = attention_mask(positions, lengths, kv_len, self.group)
        out = self.llm(hidden, self.cache, slots, positions, mask, kv_len)
        last = out[torch.arange(count, device=self.device), lengths - 1]
        firsts = self.llm.logits(last).argmax(-1)
        self.tokens[slots] = firsts
        self.positions[slots] = lengths
        return firsts

    def _step(self, batch: int, kv_len: int) -> None:
        if self._graphs is not None:
            self._graphs.replay(batch)
        elif self.fused is not None:
            self._fused_step(batch)
        else:
            self._reference_step(batch, kv_len)

    def _fused_step(self, batch: int) -> None:
        assert self.fused is not None and self.cache is not None
        self.fused(self.cache, self.tokens[:batch], self.positions[:batch], self.slot_ids[:batch])

    def _reference_step(self, batch: int, kv_len: int) -> None:
        assert self.cache is not None
        kv_len = min(self.cache.max_len, _round_up(kv_len, _KV_ROUND))
        positions = self.positions[:batch, None]
        hidden = self.llm.embed(self.tokens[:batch])[:, None, :]
        mask = attention_mask(positions, positions[:, 0] + 1, kv_len, self.group)
        out = self.llm(hidden, self.cache, self.slot_ids[:batch], positions, mask, kv_len)
        self.tokens[:batch] = self.llm.logits(out[:, 0]).argmax(-1)
        self.positions[:batch] = (positions[:, 0] + 1).clamp(max=self.cache.max_len - 1)

    def _proposals(self) -> dict[int, list[int]]:
        """slot -> the draft ids to verify next, for the rows whose output is following their draft."""
        proposals = {}
        for slot, sequence in self._active.items():
            if sequence.draft is not None:
                # the last token a step may produce is greedy's own: room for the budget's others
                ids = sequence.draft.propose(sequence.tokens, sequence.budget - sequence.scheduled - 1)
                if ids:
                    proposals[slot] = ids
        return proposals

    def _verify(self, batch: int, kv_len: int, proposals: dict[int, list[int]]) -> list[Event]:
        """One verify step of every busy slot (a slot without a proposal gets its next token as in a plain
        step); read back at once, since the next proposals depend on what was accepted."""
        assert self.cache is not None
        width = step_width(proposals.values(), self.draft_tokens)
        rows_in = [proposals.get(slot, []) for slot in range(batch)]
        drafts = self._to_device([ids + [0] * (width - len(ids)) for ids in rows_in])
        counts = self._to_device([len(ids) for ids in rows_in])
        if self._verify_graphs is not None:
            out = self._verify_graphs(drafts, counts)
        else:
            out = self._verify_device(drafts, counts, min(self.cache.max_len, _round_up(kv_len + width, _KV_ROUND)))
        rows = out.tolist()
        values: list = [None] * batch
        stats = self.draft_stats
        stats.verify_steps += 1
        for slot, sequence in self._active.items():
            accepted = rows[slot][-1]
            values[slot] = rows[slot][: accepted + 1]
            sequence.scheduled += accepted + 1
            if slot in proposals and sequence.draft is not None:
                sequence.draft.accepted(accepted, stats)
        events = self._collect([(values, list(self._active.items()))])
        # read at once, so the finished ones leave now (the engine is idle after its last event)
        self._active = {slot: s for slot, s in self._active.items() if s.needs_steps}
        return events

    def _verify_device(self, drafts: torch.Tensor, counts: torch.Tensor, kv_len: int | None = None) -> torch.Tensor:
        """:func:`verify_step` on this engine's cache and decode state (graph-capturable: ``kv_len`` None
        attends over the whole cache where the eager forward runs; the fused step ignores it)."""
        assert self.cache is not None
        return verify_step(self.llm, self.cache, self.tokens, self.positions, self.slot_ids, drafts, counts, self.group,
                           self.cache.max_len if kv_len is None else kv_len, self.fused)
