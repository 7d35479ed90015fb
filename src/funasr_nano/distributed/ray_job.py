"""Batch transcription of large collections on a Ray cluster (the ``[ray]`` extra).

Ray Data runs the job: CPU tasks read each file (local or fsspec), resample it and run the VAD; an
actor pool of model replicas (one GPU each, or CPU replicas) decodes batches of prepared recordings
with the library's own segment decoder; the driver writes each file's outputs with the CLI's writers
and appends one manifest line per file as results arrive. Ray restarts a replica that dies and
retries its batch, so no file is lost or written twice; a file that cannot be read is recorded with
its error and the job goes on; a second run skips the files already done.
"""

from __future__ import annotations

import io
import json
import posixpath
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FunASRNanoError, UsageError
from ..frontend.prepared import PreparedAudio, prepare_audio
from ..frontend.vad import SpeechMap, VadOptions
from ..options import TranscribeOptions
from ..output.formats import FORMATS, render, write_outputs
from ..output.subtitles import CueLimits
from ..result import Transcription
from .inputs import Job, collect_jobs, is_url, read_source

MANIFEST = "manifest.jsonl"
OK, ERROR = "ok", "error"


@dataclass(frozen=True)
class ModelOptions:
    """How each replica loads the model (the arguments of :func:`funasr_nano.load_model`)."""

    model: str = "FunAudioLLM/Fun-ASR-Nano-2512"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    int8: bool = False
    hub: str = "hf"
    variant: str | None = None
    backend: str = "auto"
    ctc_head: str | None = None  # word times from another checkpoint's CTC head
    ctc_drafts: int = 0  # speculative decoding from the CTC transcript (draft tokens per step)


@dataclass
class JobSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    manifest: str = ""
    errors: list[str] = field(default_factory=list)


def _prepare(row: dict[str, Any], vad: VadOptions | None, resampler: str, common: str | None = None) -> dict[str, Any]:
    """CPU stage: the file's 16 kHz samples and speech map, or the reason it cannot be read. A Dataset
    row of bytes is read from them (and the bytes go no further), under its ``name`` or, without one,
    under its path below ``common``."""
    data = row.pop("bytes", None)
    if data is not None:
        path = row.pop("path", None)
        name = str(row["name"]) if "name" in row else _name_below(str(path), common or "")
        row = {**row, "source": str(path) if path is not None else name, "name": name}
    empty = {"samples": np.zeros(0, np.float32), "spans": np.zeros((0, 2), np.int64), "score": np.zeros(0)}
    try:
        source = read_source(row["source"]) if data is None else io.BytesIO(bytes(data))
        prepared = prepare_audio(source, vad, resampler=resampler)
    except (FunASRNanoError, OSError) as exc:
        return {**row, **empty, "error": str(exc) or type(exc).__name__}
    speech = prepared.speech
    return {
        **row,
        "samples": prepared.samples,
        "spans": np.asarray(speech.spans if speech else [], np.int64).reshape(-1, 2),
        "score": speech.score if speech else np.zeros(0),
        "error": "",
    }


class Replica:
    """One model copy; Ray Data calls it with batches of prepared files."""

    def __init__(self, model: ModelOptions, decode: TranscribeOptions, threads: int | None = None):
        from ..api import load_model

        if threads:  # a CPU replica decodes on as many threads as it holds cores
            import torch

            torch.set_num_threads(threads)
        self.model = load_model(**asdict(model))
        self.decode = decode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        count = len(batch["source"])
        errors = [str(e) for e in batch["error"]]
        readable = [i for i in range(count) if not errors[i]]
        prepared = [
            PreparedAudio(
                np.asarray(batch["samples"][i], np.float32),
                SpeechMap(
                    [tuple(map(int, s)) for s in np.asarray(batch["spans"][i]).reshape(-1, 2)],
                    np.asarray(batch["score"][i]),
                )
                if self.decode.vad
                else None,
            )
            for i in readable
        ]
        results: list[str] = [""] * count
        for index, result in zip(readable, self.model.transcribe_many(prepared, options=self.decode), strict=True):
            if isinstance(result, FunASRNanoError):
                errors[index] = str(result)
            else:
                results[index] = json.dumps(result.to_dict(), ensure_ascii=False)
        return {"source": list(batch["source"]), "name": list(batch["name"]), "error": errors, "result": results}


def _write(result: Transcription, output: str, name: str, formats: Sequence[str], limits: CueLimits) -> None:
    if not is_url(output):
        write_outputs(result, Path(output), name, formats, limits)
        return
    import fsspec

    for fmt in formats:
        with fsspec.open(f"{output.rstrip('/')}/{name}.{fmt}", "w", encoding="utf-8") as file:
            file.write(render(result, fmt, limits))


def _done_names(output: str, formats: Sequence[str]) -> set[str]:
    """Files whose last manifest line says done and whose outputs all exist (local output folders)."""
    manifest = Path(output) / MANIFEST
    if is_url(output) or not manifest.is_file():
        return set()
    last: dict[str, str] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        last[entry["name"]] = entry["status"]
    return {
        name
        for name, status in last.items()
        if status == OK and all((Path(output) / f"{name}.{fmt}").is_file() for fmt in formats)
    }


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=None, ignore_reinit_error=True)


def _name_below(path: str, common: str) -> str:
    return posixpath.splitext(posixpath.relpath(path, common) if common else posixpath.basename(path))[0]


def _dataset_rows(dataset: Any, done: set[str], num_cpus: float) -> tuple[Any, str | None, int, int]:
    """A ``ray.data.Dataset`` of file bytes as the job's rows, without those named in ``done``; the folder
    its paths are named below (when it has no ``name`` column), how many rows it had and how many are left.
    ``num_cpus``: the reading stage's, so that Ray fuses the skip into it."""
    columns = set(dataset.columns())
    common = None
    if "name" in columns:
        names = [str(row["name"]) for row in dataset.select_columns(["name"]).take_all()]
    elif "path" in columns:
        paths = [str(row["path"]) for row in dataset.select_columns(["path"]).take_all()]
        common = posixpath.commonpath(paths) if len(paths) > 1 else posixpath.dirname(paths[0]) if paths else ""
        names = [_name_below(path, common) for path in paths]
    else:
        raise UsageError("a Dataset of bytes needs a 'name' or a 'path' column: it names each output file")
    for name in names:
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or "" in parts:
            raise UsageError(f"output name {name!r} must be a relative path inside the output folder")
    if len(set(names)) < len(names):
        raise UsageError("the Dataset's names must be unique: each names an output file")
    left = [name for name in names if name not in done]
    if len(left) < len(names):
        key = "name" if "name" in columns else "path"
        skip = done if key == "name" else {p for p, n in zip(paths, names, strict=True) if n in done}
        dataset = dataset.filter(lambda row: str(row[key]) not in skip, num_cpus=num_cpus)
    return dataset, common, len(names), len(left)


def _replica_gpus(gpus_per_replica: float | None, model: ModelOptions) -> float:
    """GPUs per replica: as asked, else one where the cluster has GPUs and the model is not on the CPU."""
    if gpus_per_replica is not None:
        return gpus_per_replica
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 and model.device != "cpu" else 0.0


def transcribe_collection(
    inputs: Sequence[str] | Any,
    output: str | Path,
    *,
    model: ModelOptions | None = None,
    decode: TranscribeOptions | None = None,
    formats: Sequence[str] = ("txt", "json"),
    limits: CueLimits | None = None,
    replicas: int = 1,
    gpus_per_replica: float | None = None,
    cpus_per_replica: float = 1.0,
    files_per_batch: int = 64,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> JobSummary:
    """Transcribe files, folders, globs, list files or fsspec URLs on a Ray cluster into ``output``.
    ``inputs`` may also be a ``ray.data.Dataset``: of paths or URLs (a ``path`` column: named and read as
    a list of them is), or of audio file bytes (a ``bytes`` column, named by a ``name`` column or else by
    its ``path`` as ``read_binary_files(include_paths=True)`` gives them).

    ``address``: a running cluster (``auto``, ``ray://host:10001``); None starts a local one unless Ray
    is already initialised. ``gpus_per_replica``: None takes 1 when the cluster has GPUs and the model
    device is not ``cpu``, else 0 (CPU replicas of ``cpus_per_replica`` cores). Files already done
    (manifest line ``ok`` and every output present) are skipped unless ``overwrite``.
    """
    import ray
    import ray.data

    model, decode = model or ModelOptions(), decode or TranscribeOptions()
    limits = limits or CueLimits()
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise UsageError(f"unknown output format {unknown[0]!r}: use one of {', '.join(FORMATS)}")
    if replicas < 1 or files_per_batch < 1:
        raise UsageError("--replicas and the files per batch must be at least 1")
    output = str(output)
    done = set() if overwrite else _done_names(output, formats)
    rows, todo, common = None, [], None
    if isinstance(inputs, ray.data.Dataset):
        _connect(address)  # before the Dataset runs at all (it would start a local Ray of its own)
        gpus_per_replica = _replica_gpus(gpus_per_replica, model)
        prepare_cpus = 1 if gpus_per_replica else cpus_per_replica
        if "bytes" not in inputs.columns():  # paths or URLs: named and read as a list of them is
            inputs = [str(row["path"]) for row in inputs.select_columns(["path"]).take_all()]
    if isinstance(inputs, ray.data.Dataset):
        rows, common, total, left = _dataset_rows(inputs, done, prepare_cpus)
        summary = JobSummary(skipped=total - left)
    else:
        jobs, summary_errors = collect_jobs(list(inputs))
        for line in summary_errors:
            print(f"error: {line}", file=sys.stderr)
        summary = JobSummary(errors=summary_errors, failed=len(summary_errors))
        todo = [job for job in jobs if job.name not in done]
        summary.skipped, left = len(jobs) - len(todo), len(todo)
    if not is_url(output):
        Path(output).mkdir(parents=True, exist_ok=True)
    summary.manifest = f"{output.rstrip('/')}/{MANIFEST}"
    started = time.perf_counter()
    if left:
        _connect(address)
        gpus_per_replica = _replica_gpus(gpus_per_replica, model)
        if rows is None:
            rows = ray.data.from_items([asdict(job) for job in todo], override_num_blocks=len(todo))
        vad = decode.vad if isinstance(decode.vad, VadOptions) else VadOptions() if decode.vad else None
        dataset = (
            rows
            # With CPU replicas the reading asks for the replica's cores, so Ray fuses it into the replicas'
            # tasks: reading tasks of their own could find every core held by a replica and wait forever.
            .map(
                _prepare,
                fn_kwargs={"vad": vad, "resampler": decode.resampler, "common": common},
                num_cpus=1 if gpus_per_replica else cpus_per_replica,
            )
            .map_batches(
                Replica,
                fn_constructor_kwargs={
                    "model": model,
                    "decode": decode,
                    "threads": None if gpus_per_replica else max(1, round(cpus_per_replica)),
                },
                batch_size=files_per_batch,
                compute=ray.data.ActorPoolStrategy(size=replicas),
                num_gpus=gpus_per_replica,
                num_cpus=cpus_per_replica if not gpus_per_replica else 1,
                batch_format="numpy",
            )
        )
        _collect(dataset, output, formats, limits, summary, left, progress)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _collect(
    dataset: Any,
    output: str,
    formats: Sequence[str],
    limits: CueLimits,
    summary: JobSummary,
    total: int,
    progress: bool,
) -> None:
    """Write each finished file's outputs, then its manifest line (so a line means the outputs exist)."""
    from tqdm import tqdm

    manifest = _open_manifest(output)
    bar = tqdm(total=total, unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for row in dataset.iter_rows():
            entry: dict[str, Any] = {"path": row["source"], "name": row["name"]}
            error = str(row["error"])
            if not error:
                data = json.loads(row["result"])
                result = Transcription.from_dict(data)
                try:
                    _write(result, output, row["name"], formats, limits)
                except OSError as exc:
                    error = f"cannot write output: {exc}"
                else:
                    summary.done += 1
                    summary.audio_seconds += result.duration
                    entry.update(
                        status=OK,
                        duration=result.duration,
                        text=result.text,
                        segments=[
                            {"start": s.start, "end": s.end, "text": s.text, "flags": s.flags} for s in result.segments
                        ],
                    )
            if error:
                summary.failed += 1
                summary.errors.append(f"{row['source']}: {error}")
                bar.write(f"error: {row['source']}: {error}", file=sys.stderr)
                entry.update(status=ERROR, error=error)
            manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
            manifest.flush()
            bar.update(1)
    finally:
        bar.close()
        manifest.close()


def _open_manifest(output: str) -> Any:
    if is_url(output):
        import fsspec

        return fsspec.open(f"{output.rstrip('/')}/{MANIFEST}", "a", encoding="utf-8").open()
    return (Path(output) / MANIFEST).open("a", encoding="utf-8")


__all__ = ["Job", "JobSummary", "ModelOptions", "transcribe_collection"]
