"""Sentences spoken by espeak-ng with the true time of every word: its library's word events.

The command line gives no timing, so this talks to ``libespeak-ng`` through ctypes: a synthesis
callback collects the samples and the WORD events (character position and length in the text, and the
sample where the word begins). A word's true start is its first voiced sample at or after its event;
its end is its last voiced sample before the next word's event (so a pause after it is not counted).
espeak-ng gives one event per space-delimited word in English and per character in Mandarin; in
Japanese kana it gives one for the whole sentence, so Japanese has no word times here.

One library per process (it keeps global state): use ``speak_timed_many`` for a pool of processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np

from training.synth import ESPEAK_RATE, SAMPLE_RATE, Voice, _resample

VOICED = 64  # |int16 sample| above which espeak-ng output counts as voiced (as training/synth.py trims)
_WORD_EVENT, _END_OF_LIST = 1, 0
_SYNCHRONOUS, _PARAM_RATE, _PARAM_PITCH, _POS_CHARACTER, _CHARS_UTF8 = 2, 1, 3, 1, 1


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class TimedWord:
    start_char: int  # the word is text[start_char:end_char]
    end_char: int
    start: float  # seconds in the returned samples
    end: float


class _Espeak:
    """The loaded library with a callback that fills ``samples`` and ``events`` during one synthesis."""

    def __init__(self) -> None:
        name = os.environ.get("ESPEAK_LIBRARY") or ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = ctypes.CDLL(name)
        data = os.environ.get("ESPEAK_DATA_PATH")
        rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode() if data else None, 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"libespeak-ng answered sample rate {rate}, expected {ESPEAK_RATE}")
        self.samples: list[np.ndarray] = []
        self.events: list[tuple[int, int, int]] = []  # (text_position 1-based, length, sample)
        self._callback = _Callback(self._collect)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, events) -> int:  # type: ignore[no-untyped-def]
        if count > 0:
            self.samples.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != _END_OF_LIST:
            if events[i].type == _WORD_EVENT:
                self.events.append((events[i].text_position, events[i].length, events[i].sample))
            i += 1
        return 0

    def speak(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        self.samples, self.events = [], []
        # The library finds voices by file name; the command line's "en-gb" is the file "en".
        name = voice.name.replace("en-gb+", "en+") if voice.name.startswith("en-gb+") else voice.name
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice.name!r}")
        self.lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        data = text.encode("utf-8")
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if not self.samples:
            raise ValueError(f"espeak-ng spoke nothing for {text!r}")
        return np.concatenate(self.samples), self.events


_ESPEAK: _Espeak | None = None


def speak_timed(text: str, voice: Voice) -> tuple[np.ndarray, list[TimedWord]]:
    """One sentence -> int16 16 kHz samples (digital silence trimmed to 50 ms) and its words' times."""
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = _Espeak()
    raw, events = _ESPEAK.speak(text, voice)
    samples = _resample(raw)
    voiced = np.abs(samples.astype(np.int32)) > VOICED
    if not voiced.any():
        raise ValueError(f"espeak-ng spoke nothing for {text!r}")
    scale = SAMPLE_RATE / ESPEAK_RATE
    starts = [round(sample * scale) for _, _, sample in events] + [samples.size]
    words: list[tuple[int, int, int, int]] = []
    for k, (position, length, _) in enumerate(events):
        inside = np.flatnonzero(voiced[starts[k] : starts[k + 1]])
        if inside.size == 0 or length <= 0:
            continue
        words.append((position - 1, position - 1 + length, starts[k] + inside[0], starts[k] + inside[-1] + 1))
    first, last = np.flatnonzero(voiced)[[0, -1]]
    begin, finish = max(0, first - 800), min(samples.size, last + 800)
    timed = [TimedWord(a, b, float(s - begin) / SAMPLE_RATE, float(e - begin) / SAMPLE_RATE) for a, b, s, e in words]
    return samples[begin:finish], timed


def _job(args: tuple[str, Voice]) -> tuple[np.ndarray, list[TimedWord]] | None:
    try:
        return speak_timed(*args)
    except ValueError:
        return None


def speak_timed_many(jobs: list[tuple[str, Voice]], processes: int) -> list[tuple[np.ndarray, list[TimedWord]] | None]:
    with Pool(processes) as pool:
        return pool.map(_job, jobs, chunksize=32)
