"""The installed `funasr-nano` command, run as a user would, on a wav and an mp3."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

import funasr_nano


def console_script() -> list[str]:
    installed = Path(sys.executable).parent / "funasr-nano"
    if installed.exists():
        return [str(installed)]
    found = shutil.which("funasr-nano")
    return [found] if found else [sys.executable, "-m", "funasr_nano.cli.main"]


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


def run_module(*arguments: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "funasr_nano", *arguments], capture_output=True,
                          timeout=300, **kwargs)  # type: ignore[call-overload]


def test_python_dash_m_reads_audio_from_standard_input(official_tiny, tmp_path):
    clip = next(c for c in official_tiny.reference["clips"] if c["name"] == "c3p3s")
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, clip["wav"].numpy(), 16000)
    expected = funasr_nano.load_model(official_tiny.model_dir, device="cpu").transcribe(
        wav, max_new_tokens=6, vad=False
    ).text
    options = ["--model", str(official_tiny.model_dir), "--device", "cpu", "--max-new-tokens", "6", "--no-vad", "-q"]
    completed = run_module("transcribe", "-", *options, input=wav.read_bytes())
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.decode().strip() == expected.strip()
    out = tmp_path / "out"
    completed = run_module("transcribe", "-", *options, "-o", str(out), "-f", "txt", input=wav.read_bytes())
    assert completed.returncode == 0 and (out / "stdin.txt").read_text(encoding="utf-8").strip() == expected.strip()


PROBE = """
import sys, time
started = time.perf_counter()
from funasr_nano.cli.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(status, round(time.perf_counter() - started, 3), [m for m in ("torch", "soundfile") if m in sys.modules],
      file=sys.stderr)
"""


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["transcribe", "--help"],
                                       ["transcribe", "a.wav", "-f", "docx"], ["serve", "--port", "x"],
                                       ["nonsense"], ["transcribe", "a.wav", "--batch-size", "0"],
                                       ["transcribe", "a.wav", "--dtype", "float16"]])
def test_help_version_and_argument_errors_answer_without_importing_torch(arguments, tmp_path):
    completed = subprocess.run([sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path)
    status, seconds, heavy = completed.stderr.strip().splitlines()[-1].split(" ", 2)
    assert heavy == "[]", completed.stderr
    assert float(seconds) < 0.5  # typically 0.05 s; importing torch alone takes 2 s
    if arguments == ["--version"]:
        assert completed.stdout.strip() == f"funasr-nano {funasr_nano.__version__}"
    assert status == ("0" if "--help" in arguments or "--version" in arguments else "2")


def test_a_reader_that_goes_away_stops_the_command_quietly(official_tiny, tmp_path):
    clip = next(c for c in official_tiny.reference["clips"] if c["name"] == "c3p3s")
    files = []
    for index in range(6):
        files.append(str(tmp_path / f"clip{index}.wav"))
        soundfile.write(files[-1], clip["wav"].numpy(), 16000)
    process = subprocess.Popen(
        [sys.executable, "-m", "funasr_nano", "transcribe", *files, "--model", str(official_tiny.model_dir),
         "--device", "cpu", "--max-new-tokens", "4", "--no-vad", "--batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline().startswith(files[0])  # as `| head -1` does: one line, then close
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "Exception ignored" not in err and "error" not in err, err
    assert "transcribed" not in err  # no summary either: it stopped, not finished
