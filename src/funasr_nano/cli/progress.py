"""A progress bar over seconds of audio (done / total, speed as x realtime, ETA) for the CLI."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

_BAR_FORMAT = "{percentage:3.0f}%|{bar}| {audio_done}/{audio_total} audio [{elapsed}<{remaining}, {speed}]"


class _AudioBar(tqdm):
    @property
    def format_dict(self) -> dict[str, Any]:
        values = super().format_dict
        done, elapsed = values["n"], values["elapsed"]
        values["audio_done"] = tqdm.format_interval(done)
        values["audio_total"] = tqdm.format_interval(values["total"] or 0)
        values["speed"] = f"{done / elapsed:.1f}x realtime" if elapsed > 0 else "-"
        return values


class AudioProgress:
    """tqdm on stderr, counting seconds of audio; ``advance`` is the pipeline's ``progress`` callback."""

    def __init__(self, total_seconds: float, enabled: bool = True):
        self.bar = _AudioBar(total=max(total_seconds, 1e-9), bar_format=_BAR_FORMAT, disable=not enabled,
                             file=sys.stderr, dynamic_ncols=True)

    def advance(self, seconds: float) -> None:
        self.bar.update(seconds)

    def adjust_total(self, delta_seconds: float) -> None:
        """Correct the estimate once a file's real duration is known (or it failed)."""
        self.bar.total = max(self.bar.total + delta_seconds, self.bar.n, 1e-9)
        self.bar.refresh()

    def write(self, line: str, to_stderr: bool = False) -> None:
        """Print a line without tearing the bar."""
        self.bar.write(line, file=sys.stderr if to_stderr else sys.stdout)

    def close(self) -> None:
        self.bar.close()
