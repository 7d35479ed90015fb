"""``funasr-nano transcribe``: directories, globs, output files, stdout, per-file errors, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
from speech_data import SAMPLE_RATE, layout, phrases
from subtitles import parse_srt, parse_vtt

from funasr_nano.cli import main
from funasr_nano.errors import UsageError
from funasr_nano.transcribe_command import expand_inputs, read_hotwords

FAST = ["--device", "cpu", "--max-new-tokens", "4"]


def write_speech(path: Path, *indices: int) -> Path:
    pieces = phrases()
    plan: list = [0.4]
    for index in indices:
        plan += [pieces[index], 1.0]
    audio, _ = layout(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, SAMPLE_RATE)
    return path


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    folder = tmp_path / "talks"
    write_speech(folder / "alpha.wav", 0, 1)
    write_speech(folder / "nested" / "beta.flac", 6)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00 this is not a wave file")
    (folder / "notes.txt").write_text("not audio, and not picked up from a directory")
    return folder


def test_a_directory_with_a_corrupt_file_writes_the_others_and_exits_nonzero(recordings, official_tiny,
                                                                             capsys):
    out = recordings.parent / "out"
    model = str(official_tiny.model_dir)
    status = main(["transcribe", str(recordings), "-m", model, *FAST, "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.splitlines() == [
        f"error: {recordings / 'broken.wav'}: cannot decode audio {recordings / 'broken.wav'}: "
        "not a supported or intact audio file"
    ]
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert written == sorted([f"alpha.{f}" for f in ("json", "srt", "tsv", "txt", "vtt")] + ["nested"]
                             + [f"nested/beta.{f}" for f in ("json", "srt", "tsv", "txt", "vtt")])
    document = json.loads((out / "alpha.json").read_text(encoding="utf-8"))
    assert len(document["segments"]) >= 2 and document["duration"] > 6
    for name in ("alpha", "nested/beta"):
        srt = parse_srt((out / f"{name}.srt").read_text(encoding="utf-8"))
        vtt = parse_vtt((out / f"{name}.vtt").read_text(encoding="utf-8"))
        assert [(s, e) for s, e, _ in srt] == [(s, e) for s, e, _ in vtt]
        assert all(start < end for start, end, _ in srt)


def test_text_goes_to_stdout_with_progress_and_missing_inputs_are_reported(recordings, official_tiny, capsys):
    alpha = recordings / "alpha.wav"
    pattern = str(recordings / "nested" / "*.flac")
    missing, unmatched = str(recordings / "missing.wav"), str(recordings / "*.mp3")
    model = str(official_tiny.model_dir)
    status = main(["transcribe", str(alpha), pattern, missing, unmatched, "-m", model, *FAST])
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(alpha), str(recordings / "nested" / "beta.flac")]
    assert f"error: {recordings / 'missing.wav'}: no such file or directory" in captured.err
    assert f"error: {recordings / '*.mp3'}: no files match this pattern" in captured.err
    assert "audio [" in captured.err and "x realtime" in captured.err  # the progress bar
    assert "transcribed 2 of 2 files" in captured.err and "2 errors" in captured.err


def test_one_file_as_srt_on_stdout(recordings, official_tiny, capsys):
    status = main(["transcribe", str(recordings / "alpha.wav"), "-f", "srt", "-q",
                   "-m", str(official_tiny.model_dir), *FAST])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == ""
    assert len(parse_srt(captured.out)) >= 2


@pytest.mark.parametrize(("arguments", "message"), [
    (["-f", "all"], "error: --output-format all writes several files: give --output-dir"),
    (["--hotwords-file", "/no/words.txt"], "error: cannot read hotwords file /no/words.txt"),
    (["--batch-size", "0"], "error: --batch-size must be at least 1"),
])
def test_bad_options_fail_fast_with_one_line(recordings, arguments, message, capsys):
    status = main(["transcribe", str(recordings), "-m", "/nonexistent/model", *arguments])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message) and err.count("\n") == 1


def test_several_files_to_stdout_need_an_output_dir_for_subtitles(recordings, capsys):
    status = main(["transcribe", str(recordings), "-f", "vtt", "-m", "/nonexistent/model"])
    assert status == 2 and "needs --output-dir" in capsys.readouterr().err


def test_inputs_expand_directories_recursively_and_names_never_collide(tmp_path):
    for name in ("a/x.wav", "a/deeper/y.mp3", "b/x.flac", "b/readme.md", "x.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    inputs, errors = expand_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*"), str(tmp_path / "x.wav"),
                                    str(tmp_path / "a" / "x.wav")])
    assert errors == []
    assert [(str(i.path.relative_to(tmp_path)), i.name) for i in inputs] == [
        ("a/deeper/y.mp3", "deeper/y"),
        ("a/x.wav", "x.wav"),  # three inputs would write x.*: each keeps its own suffix, then a number
        ("b/readme.md", "readme"),  # a glob takes what it matches; only directories filter by suffix
        ("b/x.flac", "x.flac"),
        ("x.wav", "x.wav-2"),
    ]


def test_hotwords_come_from_the_option_and_the_file(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("开放时间\nFun-ASR，SenseVoice\n\n", encoding="utf-8")
    assert read_hotwords("alpha, beta", str(words)) == ["alpha", "beta", "开放时间", "Fun-ASR", "SenseVoice"]
    assert read_hotwords(None, None) == []
    with pytest.raises(UsageError):
        read_hotwords(None, str(tmp_path / "missing.txt"))
