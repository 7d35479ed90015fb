"""A progress bar over seconds of audio (done / total, speed as x realtime, ETA) for the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
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


def probe_duration(path: Path) -> float | None:
    """Seconds of audio in a file from its header, without decoding it; None when unknown.

    MP3s go to PyAV only, as they are decoded (audio.py): libsndfile's mpg123 prints notes about damaged
    frames straight to the terminal."""
    import soundfile

    from ..frontend.audio import looks_like_mp3

    try:
        with open(path, "rb") as handle:
            mp3 = looks_like_mp3(handle.read(4))
    except OSError:
        return None
    try:
        info = None if mp3 else soundfile.info(str(path))
        if info is not None and info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except Exception:  # not a libsndfile format: ask PyAV below
        pass
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000  # av.time_base is microseconds
    except Exception:  # unreadable files fail later, with a proper error, when they are decoded
        pass
    return None


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
