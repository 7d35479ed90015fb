"""Speak corpus sentences with espeak-ng voices: 16 kHz int16 clips, many processes at once.

Voices are a language voice plus one of espeak-ng's ~100 variants, with a random rate and pitch.
A fixed set of variants (and one English accent) is held out of training for the voice-held-out
test split. ``ESPEAK`` names the executable (default ``espeak-ng`` on PATH); a carried copy works
with ``LD_LIBRARY_PATH`` and ``ESPEAK_DATA_PATH`` set.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
LANGUAGE_VOICES = {
    "en": ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"],
    "zh": ["cmn"],
    "ja": ["ja"],
}
HELD_OUT_ACCENTS = {"en": ["en-gb-scotland"], "zh": [], "ja": []}
VARIANTS = [
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "AnxiousAndy",
    "Denis",
    "Diogo",
    "Gene",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "RicishayMax",
    "RicishayMax2",
    "RicishayMax3",
    "Storm",
    "Tweaky",
    "adam",
    "anika",
    "announcer",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "edward2",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "john",
    "kaukovalta",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "linda",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "shelby",
    "steph",
    "steph2",
    "steph3",
    "travis",
    "victor",
    "zac",
]
HELD_OUT_VARIANTS = ["m3", "f4", "Annie", "Storm", "klatt3", "Mike", "linda", "Gene2", "norbert", "grandma"]
TRAIN_VARIANTS = [v for v in VARIANTS if v not in HELD_OUT_VARIANTS]


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng -v argument, e.g. "en-us+f3"
    rate: int  # words per minute
    pitch: int  # 0..99

    def args(self) -> list[str]:
        return ["-v", self.name, "-s", str(self.rate), "-p", str(self.pitch)]


def pick_voice(rng: random.Random, lang: str, held_out: bool) -> Voice:
    if held_out:
        base = rng.choice(LANGUAGE_VOICES[lang] + HELD_OUT_ACCENTS[lang])
        variant = rng.choice(HELD_OUT_VARIANTS)
    else:
        base = rng.choice(LANGUAGE_VOICES[lang])
        variant = rng.choice(TRAIN_VARIANTS)
    return Voice(f"{base}+{variant}", rng.randint(135, 195), rng.randint(25, 75))


def _wav_samples(data: bytes) -> np.ndarray:
    """int16 samples of espeak-ng's --stdout WAV (its size fields are not filled in)."""
    index = data.find(b"data", 12)
    if index < 0:
        raise ValueError("espeak-ng produced no WAV data")
    return np.frombuffer(data[index + 8 :], dtype="<i2")


def _resample(samples: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    audio = resample_poly(samples.astype(np.float32), SAMPLE_RATE // 50, ESPEAK_RATE // 50)
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def speak(text: str, voice: Voice, espeak: str | None = None) -> np.ndarray:
    """One sentence -> int16 16 kHz samples, leading and trailing digital silence trimmed."""
    command = [espeak or os.environ.get("ESPEAK", "espeak-ng"), "--stdout", *voice.args()]
    data_path = os.environ.get("ESPEAK_DATA_PATH")
    if data_path:
        command += ["--path", data_path]
    out = subprocess.run([*command, "--", text], capture_output=True, check=True, timeout=60).stdout
    samples = _resample(_wav_samples(out))
    voiced = np.flatnonzero(np.abs(samples) > 64)
    if voiced.size == 0:
        raise ValueError(f"espeak-ng spoke nothing for {text!r}")
    return samples[max(0, voiced[0] - 800) : voiced[-1] + 800]


def _job(args: tuple[str, Voice]) -> np.ndarray | None:
    try:
        return speak(*args)
    except (subprocess.SubprocessError, ValueError):
        return None


def speak_many(jobs: list[tuple[str, Voice]], processes: int) -> list[np.ndarray | None]:
    with Pool(processes) as pool:
        return pool.map(_job, jobs, chunksize=64)
