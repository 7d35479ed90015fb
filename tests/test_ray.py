"""The Ray batch path (funasr_nano.distributed): a local cluster of two CPU replicas of the demo model
transcribes ~20 files with the same texts as the plain CLI, records a corrupt file and finishes the
rest, loses nothing when a replica is killed mid-job, and skips finished files on a second run.

Ray probes public addresses when it starts, so every Ray process runs inside a fresh network
namespace (``unshare -n``, loopback only); the tests are skipped where that is not allowed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from funasr_nano.distributed.inputs import collect_jobs

HERE = Path(__file__).resolve().parent
DEMO_CLIPS = sorted((HERE / "data" / "demo").glob("*.flac"))


def _can_isolate() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True).returncode == 0


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or not _can_isolate(),
    reason="needs ray and a network namespace (unshare -n, as root)",
)


def isolated(*command: str, timeout: float = 420) -> subprocess.CompletedProcess:
    script = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
    return subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    for index, clip in enumerate(DEMO_CLIPS[:20]):
        folder = root / ("first" if index % 2 else "second")
        folder.mkdir(exist_ok=True)
        shutil.copy(clip, folder / clip.name)
    (root / "second" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 50)
    return root


@pytest.fixture(scope="module")
def plain_texts(collection, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("plain")
    subprocess.run(
        [sys.executable, "-m", "funasr_nano", "transcribe", str(collection), "-o", str(out), "-f", "json",
         "--model", "demo", "--device", "cpu", "-q"],
        capture_output=True, text=True, timeout=600,
    )
    outputs = out.rglob("*.json")
    return {p.relative_to(out).with_suffix("").as_posix(): json.loads(p.read_text())["text"] for p in outputs}


def summary(run: subprocess.CompletedProcess) -> dict:
    """The driver's summary line (Ray's own processes may print to the same stdout)."""
    lines = [line for line in run.stdout.splitlines() if line.startswith('{"done"')]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(lines[-1])


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_jobs_are_named_as_the_cli_names_outputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    (tmp_path / "b.flac").write_bytes(b"")
    listing = tmp_path / "files.txt"
    listing.write_text(f"# a list file\n{tmp_path / 'a' / 'x.wav'}\n\nmemory://bucket/talks/y.mp3\n")
    jobs, errors = collect_jobs([str(listing), str(tmp_path / "b.flac"), str(tmp_path / "missing.wav")])
    assert [(Path(j.source).name, j.name) for j in jobs] == [("x.wav", "a/x"), ("b.flac", "b"), ("y.mp3", "y")]
    assert errors == [f"{tmp_path / 'missing.wav'}: no such file or directory"]


@needs_ray
def test_two_replicas_match_the_cli_record_the_corrupt_file_and_survive_a_killed_replica(
    collection, plain_texts, tmp_path
):
    out = tmp_path / "out"
    run = isolated(sys.executable, str(HERE / "ray_job_driver.py"), str(collection), str(out), "2", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert summary(run) == {"done": 20, "failed": 1, "skipped": 0}
    assert (out / "killed.txt").is_file(), "no replica was killed: the retry was not exercised"
    entries = manifest(out)
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)) == 21  # every file once: none lost, none written twice
    failed = [e for e in entries if e["status"] == "error"]
    assert [e["name"] for e in failed] == ["second/corrupt"] and "cannot decode audio" in failed[0]["error"]
    ray_texts = {e["name"]: e["text"] for e in entries if e["status"] == "ok"}
    assert ray_texts == plain_texts
    for name, text in ray_texts.items():
        assert json.loads((out / f"{name}.json").read_text())["text"] == text
        assert (out / f"{name}.txt").read_text().strip() == text


@needs_ray
def test_a_second_run_skips_finished_files_and_retries_failed_ones(collection, tmp_path):
    out = tmp_path / "out"
    first = isolated(sys.executable, str(HERE / "ray_job_driver.py"), str(collection), str(out), "1", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    second = isolated(sys.executable, str(HERE / "ray_job_driver.py"), str(collection), str(out), "1", "0")
    assert second.returncode == 0, second.stderr[-3000:]
    assert summary(second) == {"done": 0, "failed": 1, "skipped": 20}
    assert [e["name"] for e in manifest(out)[21:]] == ["second/corrupt"]


@needs_ray
@pytest.mark.parametrize("kind", ["bytes", "paths", "binary"])
def test_a_dataset_input_is_transcribed_under_its_names_and_resumed(kind, collection, plain_texts, tmp_path):
    """A ray.data.Dataset of file bytes (named by a column), of paths (named as the CLI names them), or
    Ray's read_binary_files (bytes named by their paths)."""
    out = tmp_path / "out"
    driver = (sys.executable, str(HERE / "ray_job_driver.py"), f"{kind}:{collection / 'first'}", str(out), "1", "0")
    run = isolated(*driver)
    assert run.returncode == 0, run.stderr[-3000:]
    assert summary(run) == {"done": 10, "failed": 0, "skipped": 0}
    texts = {e["name"]: e["text"] for e in manifest(out)}
    wanted = {name.removeprefix("first/"): text for name, text in plain_texts.items() if name.startswith("first/")}
    assert texts == wanted
    assert summary(isolated(*driver)) == {"done": 0, "failed": 0, "skipped": 10}


def test_ray_options_are_checked_before_ray_is_imported(tmp_path):
    from funasr_nano.cli.main import main

    assert main(["transcribe", str(tmp_path), "--ray", "--model", "demo", "-q"]) == 2  # no -o
    assert main(["transcribe", str(tmp_path), "--ray", "-o", str(tmp_path), "--replicas", "0", "-q"]) == 2


def test_ray_carries_every_decode_load_and_subtitle_option(tmp_path, monkeypatch):
    """--ray hands the job the same TranscribeOptions and cue limits the plain CLI uses, and the load
    options the plain CLI loads with (--backend, --ctc-head included)."""
    import funasr_nano.distributed.ray_job as ray_job
    from funasr_nano.cli.main import main
    from funasr_nano.options import TranscribeOptions

    seen: dict = {}

    def fake_collection(inputs, output, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return ray_job.JobSummary(manifest=str(output))

    monkeypatch.setattr(ray_job, "transcribe_collection", fake_collection)
    hotwords = tmp_path / "hot.txt"
    hotwords.write_text("Fun-ASR\n", encoding="utf-8")
    argv = ["transcribe", str(tmp_path), "--ray", "-o", str(tmp_path / "out"), "-q", "--model", "demo",
            "--language", "en", "--hotwords", "Nano", "--hotwords-file", str(hotwords), "--no-itn",
            "--max-new-tokens", "7", "--no-vad", "--resampler", "soxr", "--max-words-per-line", "3",
            "--backend", "torch", "--ctc-head", "head.pt", "-f", "srt"]
    assert main(argv) == 0
    assert seen["decode"] == TranscribeOptions(language="en", hotwords="Nano\nFun-ASR\n", itn=False, max_new_tokens=7,
                                               vad=False, resampler="soxr", word_timestamps=True)
    assert (seen["limits"].max_words, seen["limits"].highlight_words) == (3, False)
    assert (seen["model"].backend, seen["model"].ctc_head, seen["model"].model) == ("torch", "head.pt", "demo")
    assert seen["formats"] == ["srt"]


def test_a_replica_sends_word_times_that_come_back_as_words():
    """What a replica sends (JSON) is rebuilt into the same Transcription, words included."""
    from funasr_nano.distributed.ray_job import ModelOptions, Replica, _prepare
    from funasr_nano.frontend.vad import VadOptions
    from funasr_nano.options import TranscribeOptions
    from funasr_nano.result import Transcription, Word

    row = _prepare({"source": str(DEMO_CLIPS[0]), "name": "a"}, VadOptions(), "torchaudio")
    replica = Replica(ModelOptions(model="demo", device="cpu"), TranscribeOptions(word_timestamps=True))
    out = replica({key: [value] for key, value in row.items()})  # type: ignore[arg-type]
    assert out["error"] == [""]
    result = Transcription.from_dict(json.loads(out["result"][0]))
    direct = replica.model.transcribe(str(DEMO_CLIPS[0]), word_timestamps=True)
    assert result.text == direct.text
    assert [segment.words for segment in result.segments] == [segment.words for segment in direct.segments]
    words = [word for segment in result.segments for word in segment.words]
    assert words and all(isinstance(word, Word) for word in words)


class _Rows:
    """The little of a ray.data.Dataset that naming its rows uses (no Ray needed)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def columns(self) -> list[str]:
        return list(self.rows[0])

    def select_columns(self, names: list[str]) -> _Rows:
        return _Rows([{n: r[n] for n in names} for r in self.rows])

    def take_all(self) -> list[dict]:
        return self.rows

    def filter(self, fn, num_cpus: float) -> _Rows:
        return _Rows([r for r in self.rows if fn(r)])


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../b", "", "a//b"])
def test_dataset_names_that_leave_the_output_folder_are_refused(name):
    from funasr_nano.distributed.ray_job import _dataset_rows
    from funasr_nano.errors import UsageError

    with pytest.raises(UsageError, match="inside the output folder"):
        _dataset_rows(_Rows([{"name": "ok", "bytes": b""}, {"name": name, "bytes": b""}]), set(), 1.0)


def test_dataset_rows_are_named_by_their_paths_and_resumed_by_name():
    from funasr_nano.distributed.ray_job import _dataset_rows

    rows = _Rows([{"path": f"bucket/talks/{day}/{n}.flac", "bytes": b""} for day in ("mon", "tue") for n in "ab"])
    dataset, common, total, left = _dataset_rows(rows, {"mon/a", "tue/b"}, 1.0)
    assert common == "bucket/talks" and (total, left) == (4, 2)
    assert [r["path"] for r in dataset.rows] == ["bucket/talks/mon/b.flac", "bucket/talks/tue/a.flac"]


def test_a_dataset_row_of_bytes_is_read_from_them_under_its_path_name():
    from funasr_nano.distributed.ray_job import _prepare

    clip = DEMO_CLIPS[0].read_bytes()
    row = _prepare({"path": "bucket/talks/mon/a.flac", "bytes": clip}, None, "torchaudio", "bucket/talks")
    assert (row["name"], row["source"], row["error"]) == ("mon/a", "bucket/talks/mon/a.flac", "")
    assert "bytes" not in row and row["samples"].size > 16000
    broken = _prepare({"name": "x", "bytes": b"not audio"}, None, "torchaudio")
    assert broken["name"] == "x" and broken["error"]
