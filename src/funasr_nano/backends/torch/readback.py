"""Reading decoded token rows back to the host without stalling the GPU."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

import torch

Owner = TypeVar("Owner")  # what a row belongs to (the engine's sequences)


class TokenReader(Generic[Owner]):
    """Device token rows to host, read ``lag`` pushes later so the GPU always has work queued."""

    def __init__(self, device: torch.device, width: int, lag: int):
        self.cuda = device.type == "cuda"
        self.lag = lag
        depth = lag + 4
        self._buffers = [torch.empty(width, dtype=torch.long, pin_memory=self.cuda) for _ in range(depth)]
        self._events = [torch.cuda.Event() for _ in range(depth)] if self.cuda else []
        self._pending: deque[tuple[int, int, list[tuple[int, Owner]]]] = deque()
        self._next = 0

    def push(self, tokens: torch.Tensor, owners: list[tuple[int, Owner]]) -> None:
        """Queue a copy of ``tokens``; owners maps row index -> sequence that row belongs to."""
        index = self._next
        self._next = (index + 1) % len(self._buffers)
        count = tokens.shape[0]
        self._buffers[index][:count].copy_(tokens, non_blocking=self.cuda)
        if self.cuda:
            self._events[index].record()
        self._pending.append((index, count, owners))

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def ready(self, keep: int | None = None) -> Iterator[tuple[list[int], list[tuple[int, Owner]]]]:
        """Rows whose copy is done, oldest first; waits for those beyond the newest ``keep``."""
        keep = self.lag if keep is None else keep
        while self._pending:
            index, count, owners = self._pending[0]
            # Within the lag, a row is read early only if its copy is already done.
            if len(self._pending) <= keep and not (self.cuda and self._events[index].query()):
                return
            self._pending.popleft()
            if self.cuda:
                self._events[index].synchronize()
            yield self._buffers[index][:count].tolist(), owners
