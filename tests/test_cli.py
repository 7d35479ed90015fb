"""``funasr-nano transcribe``: directories, globs, output files, stdout, per-file errors, progress."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import soundfile
from speech_data import SAMPLE_RATE, layout, phrases
from subtitles import parse_srt, parse_vtt

from funasr_nano.cli.main import main
from funasr_nano.cli.transcribe import read_hotwords
from funasr_nano.errors import UsageError
from funasr_nano.frontend.sources import expand_inputs
from funasr_nano.text.prompt import normalize_hotwords

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
    assert "transcribed 2 of 4 files" in captured.err and "2 errors" in captured.err  # the missing ones count


def test_one_file_as_srt_on_stdout(recordings, official_tiny, capsys):
    status = main(["transcribe", str(recordings / "alpha.wav"), "-f", "srt", "-q",
                   "-m", str(official_tiny.model_dir), *FAST])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == ""
    assert len(parse_srt(captured.out)) >= 2


@pytest.mark.parametrize(("arguments", "message"), [
    (["-f", "all"], "error: --output-format all writes several files: give --output-dir"),
    (["--hotwords-file", "/no/words.txt"], "error: cannot read --hotwords-file /no/words.txt: no such file"),
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
    # Outputs mirror the inputs' folders below the one they share (tmp_path), so the three x.* stay apart.
    assert [(str(i.path.relative_to(tmp_path)), i.name) for i in inputs] == [
        ("a/deeper/y.mp3", "a/deeper/y"),
        ("a/x.wav", "a/x"),
        ("b/readme.md", "b/readme"),  # a glob takes what it matches; only directories filter by suffix
        ("b/x.flac", "b/x"),
        ("x.wav", "x"),
    ]
    alone, _ = expand_inputs([str(tmp_path / "a")])  # one directory: its own tree
    assert [i.name for i in alone] == ["deeper/y", "x"]
    (tmp_path / "a" / "x.mp3").write_bytes(b"")
    (tmp_path / "a" / "X.wav").write_bytes(b"")
    same_stem, _ = expand_inputs([str(tmp_path / "a" / n) for n in ("x.wav", "x.mp3", "X.wav")])
    assert [i.name for i in same_stem] == ["x.wav", "x.mp3", "X.wav-2"]  # A.srt and a.srt: one file on macOS


def test_hotwords_come_from_the_option_and_the_file(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("开放时间\nFun-ASR，SenseVoice\n\n", encoding="utf-8")
    hotwords = read_hotwords("alpha, beta", str(words))
    assert normalize_hotwords(hotwords) == ["alpha", "beta", "开放时间", "Fun-ASR", "SenseVoice"]
    assert read_hotwords(None, None) is None
    with pytest.raises(UsageError):
        read_hotwords(None, str(tmp_path / "missing.txt"))


# --- output directories: mirrored folders, overwrites said, --skip-existing / --overwrite ----------------


def test_same_named_files_from_different_folders_keep_their_folders(tmp_path, official_tiny, capsys):
    first, second = write_speech(tmp_path / "day1" / "pangrama.wav", 0), write_speech(
        tmp_path / "day2" / "pangrama.wav", 1)
    out = tmp_path / "out"
    arguments = ["transcribe", str(first), str(second), "-m", str(official_tiny.model_dir), *FAST, "-o", str(out),
                 "-f", "txt"]
    assert main(arguments) == 0
    assert "replaced" not in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == ["day1/pangrama.txt", "day2/pangrama.txt"]
    assert not list(out.rglob("*.partial"))

    assert main(arguments) == 0  # the same run again: it says what it replaced
    err = capsys.readouterr().err
    assert f"replaced {out / 'day1' / 'pangrama.txt'}" in err and f"replaced {out / 'day2' / 'pangrama.txt'}" in err
    assert main([*arguments, "--overwrite"]) == 0
    assert "replaced" not in capsys.readouterr().err


def test_skip_existing_leaves_out_finished_inputs_without_loading_the_model(tmp_path, official_tiny, capsys):
    audio = [write_speech(tmp_path / "in" / f"{name}.wav", 0) for name in ("a", "b")]
    out = tmp_path / "out"
    (out / "a.txt").parent.mkdir(parents=True)
    (out / "a.txt").write_text("done before\n", encoding="utf-8")
    (out / "b.txt").write_text("done before\n", encoding="utf-8")
    status = main(["transcribe", *map(str, audio), "-m", "/no/such/model", "-o", str(out), "-f", "txt",
                   "--skip-existing"])
    err = capsys.readouterr().err
    assert status == 0 and "transcribed 0 of 2 files" in err and "2 skipped (outputs exist)" in err
    (out / "b.txt").unlink()
    status = main(["transcribe", *map(str, audio), "-m", str(official_tiny.model_dir), *FAST, "-o", str(out),
                   "-f", "txt", "--skip-existing"])
    err = capsys.readouterr().err
    assert status == 0 and "transcribed 1 of 2 files" in err and "1 skipped (outputs exist)" in err
    assert (out / "a.txt").read_text(encoding="utf-8") == "done before\n" and (out / "b.txt").is_file()
    with pytest.raises(SystemExit):
        main(["transcribe", str(audio[0]), "-o", str(out), "--skip-existing", "--overwrite"])
    assert main(["transcribe", str(audio[0]), "--skip-existing", "-m", "/no/such/model"]) == 2
    assert "give --output-dir" in capsys.readouterr().err


# --- stdout lines, the summary, closed pipes -------------------------------------------------------------


def test_file_names_with_newlines_and_tabs_cannot_break_stdout_lines(tmp_path, official_tiny, capsys):
    odd = write_speech(tmp_path / "two\nlines\tand tab.wav", 0)
    plain = write_speech(tmp_path / "plain.wav", 1)
    missing = tmp_path / "gone\n.wav"
    status = main(["transcribe", str(odd), str(plain), str(missing), "-m", str(official_tiny.model_dir), *FAST])
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / "two\\nlines\\tand tab.wav"), str(plain)]
    assert all(line.count("\t") == 1 for line in lines)
    assert f"error: {tmp_path}/gone\\n.wav: no such file or directory" in captured.err.splitlines()
    assert "transcribed 2 of 3 files" in captured.err


class ClosedPipe:
    """A stdout whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        """Nothing buffered: nothing to fail on."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


def test_a_closed_stdout_stops_the_decode_quietly(recordings, official_tiny, monkeypatch, capsys):
    import funasr_nano.api as pipeline

    pulled: list[object] = []
    transcribe_many = pipeline.FunASRNano.transcribe_many

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for result in transcribe_many(self, *args, **kwargs):
            pulled.append(result)
            yield result

    monkeypatch.setattr(pipeline.FunASRNano, "transcribe_many", counting)
    files = [str(write_speech(recordings / f"more{i}.wav", i)) for i in range(3)]
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    status = main(["transcribe", *files, "-m", str(official_tiny.model_dir), *FAST, "--batch-size", "1", "-q"])
    assert status == 141  # as a program killed by SIGPIPE
    assert capsys.readouterr().err == ""  # no "cannot write output" lines
    assert len(pulled) == 1  # it stopped at the first line it could not write


# --- options: CLI words, early refusals, --variant, --hub, --resampler ----------------------------------


@pytest.mark.parametrize(("arguments", "message"), [
    (["--dtype", "float16"], "error: --dtype float16 is not supported: Fun-ASR-Nano's adaptor overflows in float16"),
    (["--dtype", "fp16"], "error: --dtype fp16 is not supported"),
    (["--dtype", "half"], "error: unknown dtype 'half': use --dtype auto or --dtype float32 or --dtype bfloat16"),
    (["--max-new-tokens", "0"], "error: --max-new-tokens must be at least 1"),
    (["--threads", "0"], "error: --threads must be at least 1"),
])
def test_option_errors_use_the_command_lines_words_before_any_model_is_read(recordings, arguments, message,
                                                                           capsys):
    status = main(["transcribe", str(recordings / "alpha.wav"), "-m", "/nonexistent/model", *arguments])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_reported_in_cli_words(recordings, official_tiny, capsys):
    status = main(["transcribe", str(recordings / "alpha.wav"), "-m", str(official_tiny.model_dir),
                   "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == ("error: --device cuda requested but no CUDA GPU is available: use --device cpu or "
                   "--device auto\n")
    with pytest.raises(UsageError, match=r"use device='cpu' or device='auto'"):  # Python keeps Python's words
        __import__("funasr_nano").load_model(official_tiny.model_dir, device="cuda")


def test_variant_and_hub_flags_reach_the_loader(recordings, official_tiny, monkeypatch, capsys):
    import funasr_nano.checkpoint as checkpoint

    downloads: list[tuple[str, str]] = []

    def fake_download(repo_id: str, hub: str) -> Path:
        downloads.append((repo_id, hub))
        return official_tiny.model_dir

    monkeypatch.setattr(checkpoint, "_download", fake_download)
    base = ["transcribe", str(recordings / "alpha.wav"), "-m", "someone/Fun-ASR-Nano-copy", *FAST, "-q",
            "--language", "ko"]
    assert main([*base, "--hub", "modelscope"]) == 2  # Korean is an MLT language; the name says Nano
    assert "unknown language 'ko'" in capsys.readouterr().err
    assert main([*base, "--hub", "modelscope", "--variant", "mlt"]) == 0
    assert downloads == [("someone/Fun-ASR-Nano-copy", "modelscope")] * 2


def test_the_resampler_flag_reaches_the_audio_loader(recordings, official_tiny, monkeypatch, capsys):
    import funasr_nano.frontend.prepared as longform

    seen: list[str] = []
    stream_audio = longform.stream_audio  # files are read in chunks, by this, in both passes

    def recording_stream(source, sample_rate=None, *, resampler="torchaudio", **kwargs):  # type: ignore[no-untyped-def]
        seen.append(resampler)
        return stream_audio(source, sample_rate, resampler=resampler, **kwargs)

    monkeypatch.setattr(longform, "stream_audio", recording_stream)
    for flag in ([], ["--resampler", "soxr"]):
        assert main(["transcribe", str(recordings / "alpha.wav"), "-m", str(official_tiny.model_dir), *FAST, "-q",
                     *flag]) == 0
    assert seen == ["torchaudio", "torchaudio", "soxr", "soxr"]


# --- the wider class: every mistake is one `error:` line, in the command line's words ---------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max-line-width", "0"], "error: --max-line-width must be at least 1"),
        (["--max-line-count", "-1"], "error: --max-line-count must be at least 1"),
        (["--max-cue-duration", "nan"], "error: --max-cue-duration must be a positive number of seconds"),
        (["--max-cue-duration", "-1"], "error: --max-cue-duration must be a positive number of seconds"),
        (["--batch-size", "-3"], "error: --batch-size must be at least 1"),
        (["--hotwords-file", "{dir}"], "error: cannot read --hotwords-file {dir}: it is a directory"),
        (["--hotwords-file", "{binary}"], "error: --hotwords-file {binary} is not UTF-8 text"),
        (["-o", "{binary}"], "error: --output-dir {binary} is a file, not a directory"),
        (["--language", "klingon"], "error: unknown language 'klingon' for this model"),
    ],
)
def test_more_option_mistakes_are_one_line_in_cli_words(recordings, official_tiny, arguments, message, capsys):
    binary = recordings / "alpha.wav"
    names = {"dir": str(recordings), "binary": str(binary)}
    arguments = [a.format(**names) for a in arguments]
    status = main(["transcribe", str(binary), "-m", str(official_tiny.model_dir), *FAST, *arguments])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message.format(**names)) and err.count("\n") == 1, err


def test_the_demo_model_note_is_not_said_before_an_option_error(recordings, capsys):
    status = main(["transcribe", str(recordings / "alpha.wav"), "--dtype", "fp64"])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown dtype 'fp64': use --dtype auto or --dtype float32 or --dtype bfloat16"
    ]


def test_empty_files_directories_and_non_utf8_names_are_one_line_each_and_the_rest_finish(
    tmp_path, official_tiny, capsys
):
    good = write_speech(tmp_path / "good.wav", 0)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    odd = write_speech(tmp_path / "odd.wav", 1).rename(tmp_path / "caf\udce9.wav")  # a Latin-1 byte: not UTF-8
    truncated = tmp_path / "truncated.flac"
    soundfile.write(truncated, soundfile.read(good)[0], SAMPLE_RATE, format="FLAC")
    truncated.write_bytes(truncated.read_bytes()[:200])
    status = main(["transcribe", str(good), str(empty), str(odd), str(truncated), "-m", str(official_tiny.model_dir),
                   *FAST])
    captured = capsys.readouterr()
    assert status == 1
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(good), f"{tmp_path}/caf\\xe9.wav"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {empty}: {empty} is empty (0 bytes): nothing to transcribe",
        f"error: {truncated}: cannot decode audio {truncated}: not a supported or intact audio file",
    ]
    assert "Traceback" not in captured.err and "transcribed 2 of 4 files" in captured.err


def test_a_corrupt_mp3_among_the_inputs_prints_no_decoder_notes(tmp_path, official_tiny, capfd):
    path = tmp_path / "damaged.mp3"
    soundfile.write(path, soundfile.read(write_speech(tmp_path / "a.wav", 0))[0], SAMPLE_RATE, format="MP3")
    data = path.read_bytes()
    path.write_bytes(b"\xff\xfb\x00\x00" * 50 + data)  # illegal frame headers: libmpg123 would say "Note: ..."
    capfd.readouterr()
    main(["transcribe", str(path), "-m", str(official_tiny.model_dir), *FAST, "-q"])
    out, err = capfd.readouterr()  # the file descriptors, where libmpg123 writes, not sys.stderr
    assert "mpg123" not in err and "Note:" not in err and "Illegal" not in err, err
