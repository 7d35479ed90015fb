"""Process-wide allocator settings for the long-running commands (transcribe, serve, listen).

glibc raises its mmap threshold each time a large block is freed, so later large buffers (audio
chunks, segment batches) come from the heap and are kept after they are freed: a long recording's
peak memory then creeps up with its length. A fixed threshold keeps such buffers mapped, and they are
returned to the system when freed. Elsewhere (musl, macOS, Windows) nothing is changed."""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, held fixed


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold; True when it was set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, TypeError, AttributeError):  # TypeError: Windows has no CDLL(None)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
