"""Decoding guards shared by all backends: token budgets from audio duration."""

from __future__ import annotations

import math

# Fast speech is ~5 CJK characters or ~4 English words per second; Qwen3 needs at most ~2 tokens
# per word, so 12 tokens/s leaves room while bounding a runaway loop.
TOKENS_PER_SECOND = 12
BUDGET_FLOOR = 16
BUDGET_CEILING = 512  # the official default max_length


def token_budget(duration_s: float) -> int:
    """New-token budget for a segment of this duration."""
    return min(BUDGET_CEILING, BUDGET_FLOOR + math.ceil(duration_s * TOKENS_PER_SECOND))
