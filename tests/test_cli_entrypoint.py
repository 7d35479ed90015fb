"""The installed `funasr-nano` command, run as a user would, on a wav and an mp3."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import soundfile

import funasr_nano


def console_script() -> list[str]:
    installed = Path(sys.executable).parent / "funasr-nano"
    if installed.exists():
        return [str(installed)]
    found = shutil.which("funasr-nano")
    return [found] if found else [sys.executable, "-m", "funasr_nano.cli"]


def test_transcribe_prints_text_for_wav_and_mp3(official_tiny, tmp_path):
    clip = next(c for c in official_tiny.reference["clips"] if c["name"] == "c3p3s")
    wav, mp3 = tmp_path / "clip.wav", tmp_path / "clip.mp3"
    soundfile.write(wav, clip["wav"].numpy(), 16000)
    soundfile.write(mp3, clip["wav"].numpy(), 16000, format="MP3")
    expected = funasr_nano.load_model(official_tiny.model_dir, device="cpu").transcribe(
        wav, max_new_tokens=6, vad=False
    ).text
    assert expected
    for path in (wav, mp3):
        completed = subprocess.run(
            [*console_script(), "transcribe", str(path), "--model", str(official_tiny.model_dir),
             "--device", "cpu", "--max-new-tokens", "6", "--no-vad", "--quiet"],
            capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr
        lines = completed.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip()
        if path == wav:
            assert lines[0].strip() == expected.strip()
