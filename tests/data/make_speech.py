"""Regenerate speech.ogg and speech.json: espeak-ng phrases separated by known silences.

Needs espeak-ng (Debian: ``apt-get install -y espeak-ng``); the tests only read the committed files.
Run: ``python tests/data/make_speech.py``. Truth times are where each phrase's waveform first and last
rises above -50 dBFS, so they mark audible speech, not espeak's own leading/trailing silence.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
HERE = Path(__file__).parent
AUDIBLE = 10 ** (-50 / 20)

# (voice, text, silence in seconds before the phrase); no commas, so no long pauses inside a phrase.
PHRASES = [
    ("en-us", "The quick brown fox jumps over the lazy dog", 1.0),
    ("en-us", "Please call Stella and ask her to bring these things", 0.8),
    ("en-us", "Yes", 1.5),
    ("en-us", "We also need a small plastic snake and a big toy frog for the kids", 1.2),
    ("cmn", "今天天气很好我们去公园散步吧", 2.0),
    ("en-us", "She can scoop these things into three red bags", 0.9),
    ("en-us", "Meet me at the station at half past seven", 3.0),
    ("cmn", "请把这份文件发给我", 1.0),
    ("en-us", "Thank you very much and good night", 1.4),
]
TRAILING_SILENCE = 1.5


def synthesize(voice: str, text: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "--stdout", text], check=True,
                         capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    samples = soxr.resample(samples, rate, SAMPLE_RATE)
    audible = np.flatnonzero(np.abs(samples) > AUDIBLE)
    return samples[audible[0] : audible[-1] + 1]


def main() -> None:
    pieces, truth, cursor = [], [], 0
    for voice, text, silence in PHRASES:
        pieces.append(np.zeros(round(silence * SAMPLE_RATE), np.float32))
        cursor += pieces[-1].size
        speech = synthesize(voice, text)
        pieces.append(speech)
        truth.append({"start": cursor / SAMPLE_RATE, "end": (cursor + speech.size) / SAMPLE_RATE,
                      "voice": voice, "text": text})
        cursor += speech.size
    pieces.append(np.zeros(round(TRAILING_SILENCE * SAMPLE_RATE), np.float32))
    audio = np.concatenate(pieces)
    # Opus keeps the fixture ~100 kB; codec noise does not move the phrase boundaries.
    soundfile.write(HERE / "speech.ogg", audio, SAMPLE_RATE, format="OGG", subtype="OPUS")
    meta = {"sample_rate": SAMPLE_RATE, "duration": audio.size / SAMPLE_RATE, "phrases": truth}
    (HERE / "speech.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
