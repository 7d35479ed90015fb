"""Inference backends. Each turns audio segments plus a prompt into greedy token ids; everything
around that (audio I/O, prompts, segmentation, guards, formats) is shared and backend-neutral."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import UsageError, option
from ..text.prompt import PromptIds

# Short spellings users (and FunASR's config.yaml) use for the weight dtypes.
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The dtypes a model runs in. float16 is not one: the official runtime notes that the adaptor overflows
# in fp16 with the real weights.
DTYPE_NAMES = ("float32", "bfloat16")


def dtype_name(dtype: str) -> str:
    """Canonical dtype name ('float32', 'bfloat16') of a user's choice; 'auto' passes through."""
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name == "float16":
        raise UsageError(
            f"{option('dtype', dtype)} is not supported: Fun-ASR-Nano's adaptor overflows in float16 (as the "
            f"official runtime notes); use {option('dtype', 'bfloat16')} or {option('dtype', 'float32')}"
        )
    if name != "auto" and name not in DTYPE_NAMES:
        choices = " or ".join(option("dtype", n) for n in ("auto", *DTYPE_NAMES))
        raise UsageError(f"unknown dtype {dtype!r}: use {choices}")
    return name


# Called while ``generate`` runs, on its thread, with an input's index and the token ids just decoded for
# it (stop token excluded), in order: the calls for one input add up to its returned ids.
TokenSink = Callable[[int, list[int]], None]


# A segment to decode: 16 kHz mono samples, the prompt around them, the new-token budget.
SegmentWork = tuple[np.ndarray, PromptIds, int]
# Whether a segment fits a running generate() call (its cache length).
SegmentFits = Callable[[np.ndarray, PromptIds, int], bool]
# Asked by a running generate() call, with its free slots, for segments to decode alongside; the ones
# returned take the next indices (after every input) in the call's token callbacks.
SegmentRefill = Callable[[int, SegmentFits], list[SegmentWork]]


# Asked, once an input's ids are generated, for the CTC token ids of the text it will be reported as (None:
# no alignment wanted for this input).
CTCTargets = Callable[[int, list[int]], "list[int] | None"]
# Called with an input's index and what the CTC head gave it (``alignment.CTCResult``).
CTCSink = Callable[[int, object], None]


@dataclass(frozen=True)
class AlignRequest:
    """Ask ``generate`` to run the CTC head on the encoder output it computed anyway and align the
    generated text: ``targets`` turns each input's ids into CTC ids, ``on_aligned`` receives the result."""

    targets: CTCTargets
    on_aligned: CTCSink


class Backend(Protocol):
    name: str
    device: str

    def generate(
        self,
        waveforms: Sequence[np.ndarray],
        prompts: Sequence[PromptIds],
        max_new_tokens: Sequence[int],
        on_tokens: TokenSink | None = None,
        align: AlignRequest | None = None,
    ) -> list[list[int]]:
        """Greedy new token ids (stop token excluded) for each 16 kHz mono segment and its prompt;
        ``on_tokens`` sees them as they are decoded; ``align`` (backends with a CTC head) aligns them."""
        ...


class RefillingBackend(Backend, Protocol):
    """A backend whose running ``generate`` takes more segments as slots free up (continuous batching
    across calls), reporting each finished segment's ids to ``on_done`` at once."""

    accepts_refill: bool

    def generate(
        self,
        waveforms: Sequence[np.ndarray],
        prompts: Sequence[PromptIds],
        max_new_tokens: Sequence[int],
        on_tokens: TokenSink | None = None,
        refill: SegmentRefill | None = None,
        on_done: TokenSink | None = None,
    ) -> list[list[int]]: ...
