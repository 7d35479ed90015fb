"""The bundled demo model and its sample clips.

The demo model is a small Fun-ASR-Nano (official architecture and hub layout, ~12 M parameters)
trained by ``training/`` on synthetic espeak-ng speech in English, Mandarin and Japanese (kana). It
makes the package work offline on a first run and gives the tests a model that hears; it has never
heard a human voice and is not for real recordings.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

MODEL_NAME = "demo"
DEMO_NOTE = (
    "note: using the bundled demo model (synthetic voices only, not for real speech); "
    "pass --model nano or --model mlt for the real Fun-ASR-Nano models"
)
MODEL_DIR = Path(__file__).resolve().parent / "model"
_SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@cache
def _manifest() -> dict[str, dict]:
    return json.loads((_SAMPLES_DIR / "samples.json").read_text(encoding="utf-8"))


def sample(language: str = "en") -> Path:
    """Path of the bundled sample clip for ``en``, ``zh`` or ``ja`` (held-out sentences, held-out voices)."""
    entry = _manifest().get(language)
    if entry is None:
        from ..errors import UsageError

        raise UsageError(f"no demo sample for {language!r}; there are: {', '.join(_manifest())}")
    return _SAMPLES_DIR / entry["file"]


def sample_text(language: str = "en") -> str:
    """What the sample clip says (the text espeak-ng was given, in the written form)."""
    sample(language)
    return _manifest()[language]["text"]


def announce_default(args: object) -> None:
    """The command line's note that the demo model is used because no --model was given (once, on stderr)."""
    import sys

    if getattr(args, "default_model", False) and not getattr(args, "quiet", False):
        print(DEMO_NOTE, file=sys.stderr)
        args.default_model = False
