"""Where a live stream's decodes run: a scheduler stepped on the caller's thread (:class:`InlineDecodes`)
or one that other work shares (the server's worker, ``serve.worker.WorkerDecodes``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from .pieces import Recording
from .scheduler import Output, RecordingDone, Scheduler

Deliver = Callable[[Output | BaseException], None]


class Decodes(Protocol):
    """Where a stream's decodes run: its own scheduler on the caller's thread (:class:`InlineDecodes`) or
    a scheduler other work shares (the server's worker)."""

    def submit(self, recording: Recording, deliver: Deliver) -> None: ...

    def cancel(self, key: Hashable) -> None: ...

    def run(self) -> None:
        """Do the work submitted so far, or nothing where another thread does it."""
        ...


class InlineDecodes:
    """A scheduler stepped by :meth:`run`, on the caller's thread."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self._deliver: dict[Hashable, Deliver] = {}

    def submit(self, recording: Recording, deliver: Deliver) -> None:
        self._deliver[recording.key] = deliver
        self.scheduler.submit(recording)

    def cancel(self, key: Hashable) -> None:
        self.scheduler.cancel(key)
        self._deliver.pop(key, None)

    def run(self) -> None:
        while not self.scheduler.idle:
            for output in self.scheduler.step():
                deliver = self._deliver.get(output.recording)
                if deliver is not None:
                    if isinstance(output, RecordingDone):
                        del self._deliver[output.recording]
                    deliver(output)
