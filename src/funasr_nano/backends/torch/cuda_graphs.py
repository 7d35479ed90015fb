"""CUDA graphs of the decode step (one per batch-size bucket) and of the prefill (one per shape).

A replay launches the ~170-290 kernels of a decode step, or the ~1900 of a prefill, with one call,
which removes the host launch cost that otherwise dominates at small batch. The captured code must only
touch device tensors that outlive the graph (the KV cache and the decode state); everything it
allocates comes from a private memory pool, shared by the graphs of one kind, which is safe because
replays never overlap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

# Other threads keep using the GPU while the worker captures (a server's live streams run their VAD passes
# there): with the default "global" mode their work would invalidate the capture.
CAPTURE_MODE = "thread_local"


def capture(run: Callable[[], torch.Tensor | None], state: Sequence[torch.Tensor], pool: tuple
            ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor | None]:
    """A graph of ``run`` and the output its capture holds. First a real run on a side stream, as
    torch.cuda.graph wants (it compiles the Triton kernels and sets up cuBLAS outside the capture); the
    ``state`` it advances is put back, and what else it writes is rewritten identically by the next real
    run, lies beyond the decoded positions (which later steps write before anything attends there), or
    belongs to idle slots."""
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    for tensor, copy in zip(state, saved, strict=True):
        tensor.copy_(copy)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode=CAPTURE_MODE):
        output = run()
    return graph, output


class StepGraphs:
    def __init__(self, step: Callable[[int], None], state: list[torch.Tensor]):
        """step(batch) runs one decode step of the slots [0, batch); state lists the tensors it mutates."""
        self._step = step
        self._state = state
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def replay(self, batch: int) -> None:
        graph = self._graphs.get(batch)
        if graph is None:
            graph = self._graphs[batch] = capture(lambda: self._step(batch), self._state, self._pool)[0]
        graph.replay()


class ShapeGraphs:
    """CUDA graphs of ``fn(*tensors) -> tensor``, one per input shape, the ``capacity`` latest kept.

    The first call of a shape runs ``fn`` for real and then captures it; later calls copy their
    inputs into the captured ones and replay. ``fn`` may write persistent device tensors (the KV
    cache); its output is copied out, because all graphs share one memory pool. ``state``: tensors
    ``fn`` advances (not only overwrites), put back after the capture's warm-up run.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], capacity: int = 16, state: Sequence[torch.Tensor] = ()):
        self._fn = fn
        self._capacity = capacity
        self._state = list(state)
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = (
            OrderedDict()
        )
        self._pool = torch.cuda.graph_pool_handle()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            result = self._fn(*inputs)
            self._capture(key, inputs)
            return result
        self._graphs.move_to_end(key)
        graph, static_inputs, output = entry
        for static, tensor in zip(static_inputs, inputs, strict=True):
            static.copy_(tensor)
        graph.replay()
        return output.clone()

    def _capture(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> None:
        static_inputs = [t.clone() for t in inputs]
        graph, output = capture(lambda: self._fn(*static_inputs), self._state, self._pool)
        assert output is not None
        self._graphs[key] = (graph, static_inputs, output)
        if len(self._graphs) > self._capacity:
            self._graphs.popitem(last=False)
