"""The committed espeak-ng fixture (tests/data/speech.ogg + speech.json, made by tests/data/make_speech.py):
English and Mandarin phrases separated by known silences, with the true start and end of each phrase."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from funasr_nano.frontend.audio import load_audio

DATA = Path(__file__).parent / "data"
SPEECH_FILE = DATA / "speech.ogg"
SAMPLE_RATE = 16000


@lru_cache(maxsize=1)
def speech() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The fixture's samples and each phrase's true (start, end) in seconds."""
    meta = json.loads((DATA / "speech.json").read_text(encoding="utf-8"))
    return load_audio(SPEECH_FILE), [(p["start"], p["end"]) for p in meta["phrases"]]


def phrases() -> list[np.ndarray]:
    """Each phrase's samples, cut at its true boundaries (so they can be laid out anew)."""
    samples, truth = speech()
    return [samples[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)] for start, end in truth]


def layout(pieces: list[np.ndarray | float]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate phrases and silences (given in seconds); returns the audio and the phrases' true spans."""
    chunks, truth, cursor = [], [], 0
    for piece in pieces:
        chunk = np.zeros(round(piece * SAMPLE_RATE), np.float32) if isinstance(piece, float) else piece
        if not isinstance(piece, float):
            truth.append((cursor / SAMPLE_RATE, (cursor + chunk.size) / SAMPLE_RATE))
        chunks.append(chunk)
        cursor += chunk.size
    return np.concatenate(chunks), truth
