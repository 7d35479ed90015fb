"""Inference backends. Each turns audio segments plus a prompt into greedy token ids; everything
around that (audio I/O, prompts, segmentation, guards, formats) is shared and backend-neutral."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..prompt import PromptIds


class Backend(Protocol):
    name: str
    device: str

    def generate(
        self, waveforms: Sequence[np.ndarray], prompts: Sequence[PromptIds], max_new_tokens: Sequence[int]
    ) -> list[list[int]]:
        """Greedy new token ids (stop token excluded) for each 16 kHz mono segment and its prompt."""
        ...
