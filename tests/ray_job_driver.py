"""Runs a Ray job for tests/test_ray.py inside a network namespace (Ray probes public addresses when
it starts). Usage: python ray_job_driver.py INPUT_DIR OUTPUT_DIR REPLICAS KILL_AFTER

INPUT_DIR as ``bytes:DIR``, ``paths:DIR`` or ``binary:DIR``: the job's input is a ray.data.Dataset of
the bytes of DIR's files (named by their stems), of their paths, or Ray's ``read_binary_files`` of DIR
(bytes and paths).

KILL_AFTER > 0: once that many files are in the manifest, kill one replica's process (SIGKILL) and
record its pid in OUTPUT_DIR/killed.txt; Ray must replace it and retry its batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from funasr_nano.distributed import ModelOptions, TranscribeOptions, transcribe_collection


def kill_one_replica(manifest: Path, after: int, record: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = manifest.read_text().splitlines() if manifest.exists() else []
        if len(lines) >= after:
            found = subprocess.run(["pgrep", "-f", "ray::MapWorker"], capture_output=True, text=True).stdout.split()
            if found:
                os.kill(int(found[0]), signal.SIGKILL)
                record.write_text(found[0])
                return
        time.sleep(0.2)


def main() -> None:
    source, output, replicas, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    output.mkdir(parents=True, exist_ok=True)
    if kill_after:
        threading.Thread(
            target=kill_one_replica, args=(output / "manifest.jsonl", kill_after, output / "killed.txt"), daemon=True
        ).start()
    inputs: object = [source]
    kind, _, folder = source.partition(":")
    if kind == "binary":  # Ray's own reader: bytes with their paths, no name column
        import ray
        import ray.data

        ray.init(include_dashboard=False, log_to_driver=False)
        inputs = ray.data.read_binary_files(folder, include_paths=True, file_extensions=["flac"])
    elif kind in ("bytes", "paths"):
        import ray
        import ray.data

        ray.init(include_dashboard=False, log_to_driver=False)
        files = sorted(Path(folder).glob("*.flac"))
        rows = [{"name": f.stem, "bytes": f.read_bytes()} if kind == "bytes" else {"path": str(f)} for f in files]
        inputs = ray.data.from_items(rows)
    summary = transcribe_collection(
        inputs,
        output,
        model=ModelOptions(model="demo", device="cpu"),
        decode=TranscribeOptions(),
        formats=("txt", "json"),
        replicas=replicas,
        files_per_batch=2,
        progress=False,
    )
    print(json.dumps({"done": summary.done, "failed": summary.failed, "skipped": summary.skipped}))


if __name__ == "__main__":
    main()
