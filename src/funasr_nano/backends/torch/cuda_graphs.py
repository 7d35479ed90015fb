"""CUDA graphs of the decode step, one per batch-size bucket, captured on first use.

A replay launches the ~290 kernels of a step with one call, which removes the host launch cost that
otherwise dominates batch-1 decoding. The step must only touch device tensors that outlive the graph
(the KV cache and the decode state); everything it allocates comes from one private memory pool
shared by all buckets, which is safe because replays never overlap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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
            graph = self._graphs[batch] = self._capture(batch)
        graph.replay()

    def _capture(self, batch: int) -> torch.cuda.CUDAGraph:
        # The warm-up step compiles the Triton kernels and sets up cuBLAS outside the capture; it
        # really runs, so the state it advances is put back (the K/V it writes are rewritten
        # identically by the next real step, or belong to idle slots).
        saved = [t.clone() for t in self._state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(batch)
        torch.cuda.current_stream().wait_stream(side)
        for tensor, copy in zip(self._state, saved, strict=True):
            tensor.copy_(copy)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(batch)
        return graph
