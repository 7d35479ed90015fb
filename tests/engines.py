"""The test engines: one deterministic fake (stepped, no sleeps, no threads) and a spy around a real one."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from funasr_nano.backends import LENGTH, STOP, Event, Request
from funasr_nano.frontend.features import SAMPLE_RATE


@dataclass
class _Row:
    key: Hashable
    budget: int
    answer: list[int]
    sent: int = 0


@dataclass
class FakeEngine:
    """Answers each request with ``answer(seconds, budget)`` token ids (cut to the budget; STOP after them
    when shorter), ``slots`` requests at a time, one token per row per step; records what it saw.

    fail_on: a request whose answer starts with this id makes ``step`` raise (a broken decode)."""

    answer: Callable[[float, int], list[int]]
    slots: int = 4
    name: str = "fake"
    device: str = "cpu"
    max_positions: int = 10_000
    fail_on: int | None = None
    added: list[tuple[Hashable, float, int]] = field(default_factory=list)  # key, seconds, budget (no audio)
    batches: list[int] = field(default_factory=list)  # rows decoded at each step
    cancelled: list[Hashable] = field(default_factory=list)
    _waiting: deque[_Row] = field(default_factory=deque)
    _running: list[_Row] = field(default_factory=list)

    def fits(self, request: Request) -> bool:
        return request.max_new_tokens <= self.max_positions

    def add(self, key: Hashable, request: Request) -> None:
        from funasr_nano.errors import UsageError

        if not self.fits(request):
            raise UsageError("too many positions")
        seconds = request.audio.size / SAMPLE_RATE
        self.added.append((key, seconds, request.max_new_tokens))
        answer = self.answer(seconds, request.max_new_tokens)
        self._waiting.append(_Row(key, request.max_new_tokens, list(answer)))

    def capacity(self) -> int:
        return max(0, 2 * self.slots - len(self._waiting) - len(self._running))

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._running

    def step(self) -> list[Event]:
        while self._waiting and len(self._running) < self.slots:
            self._running.append(self._waiting.popleft())
        self.batches.append(len(self._running))
        events = []
        for row in list(self._running):
            if self.fail_on is not None and row.answer[:1] == [self.fail_on]:
                raise RuntimeError("the fake decode broke")
            budget = row.budget
            if row.sent < min(len(row.answer), budget):
                row.sent += 1
                done = row.sent >= budget
                events.append(Event(row.key, [row.answer[row.sent - 1]], done, LENGTH if done else None))
            else:
                events.append(Event(row.key, [], True, STOP))
                done = True
            if done:
                self._running.remove(row)
        return events

    def cancel(self, keys: Iterable[Hashable]) -> None:
        gone = set(keys)
        self.cancelled.extend(gone)
        self._waiting = deque(r for r in self._waiting if r.key not in gone)
        self._running = [r for r in self._running if r.key not in gone]

    def align(self, items: Sequence[tuple[Hashable, list[int]]]) -> list:
        return [None] * len(items)


class EngineSpy:
    """A real engine, passed through, with a record of what went in and out, and hooks to hold it:
    gate: every step waits for it (requests stay in flight); hold: a step whose events would finish the
    last running request waits for it (to look at a server while a decode runs); fail_at_step: that
    step raises as a lost device would."""

    def __init__(self, inner, gate: threading.Event | None = None, hold: threading.Event | None = None,
                 fail_at_step: int | None = None):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.gate, self.hold, self.fail_at_step = gate, hold, fail_at_step
        self.added: list[Hashable] = []
        self.added_at_steps: list[int] = []  # how many keys had been added at each step
        self.joined = 0  # requests added while others were decoding
        self.held: bool | None = None  # whether ``hold`` was set in time
        self.steps = 0
        self.events: list[Event] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def fits(self, request: Request) -> bool:
        return self.inner.fits(request)

    def add(self, key: Hashable, request: Request) -> None:
        self.joined += not self.inner.idle
        self.added.append(key)
        self.inner.add(key, request)

    def capacity(self) -> int:
        return self.inner.capacity()

    @property
    def idle(self) -> bool:
        return self.inner.idle

    def step(self) -> list[Event]:
        if self.gate is not None:
            assert self.gate.wait(30)
        self.added_at_steps.append(len(self.added))
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("device lost")
        events = self.inner.step()
        if self.hold is not None and any(e.done for e in events) and self.inner.idle:
            self.held = self.hold.wait(20)
        self.events.extend(events)
        return events

    def cancel(self, keys: Iterable[Hashable]) -> None:
        self.inner.cancel(keys)

    def align(self, items):
        return self.inner.align(items)


def decode(engine, waveforms, prompts, budgets) -> list[list[int]]:
    """Each segment's greedy ids from a real engine (``backends.generate`` over Requests)."""
    from funasr_nano.backends import generate

    return generate(engine, [Request(w, p, n) for w, p, n in zip(waveforms, prompts, budgets, strict=True)])
