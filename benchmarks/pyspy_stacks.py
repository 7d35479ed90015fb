"""Sample a running server's Python threads with py-spy and say where each kind of thread spends its time.

``record`` starts ``py-spy record`` on a process (raw collapsed stacks, one line per distinct stack and
thread); ``summarize`` turns such a file into a table: each thread kind's share of the samples (thread
names with their pool index dropped), and, within a kind, the share of its samples whose stack holds
each function (the threads' entry frames left out). Recorded with
``gil=True``, only the thread holding the GIL is sampled, so the shares say who holds it.

    python -m benchmarks.pyspy_stacks FILE [--top 12]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path

ENTRY = {"<module>", "_run_module_as_main", "_run_code", "Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run",
         "_worker", "_WorkItem.run"}


def record(pid: int, seconds: float, output: Path, gil: bool = False, rate: int = 100) -> subprocess.Popen:
    """Start sampling ``pid`` for ``seconds`` (idle threads too, unless ``gil``); wait() on the result."""
    command = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--duration", str(round(seconds)),
               "--format", "raw", "--threads", "--nonblocking", "--output", str(output)]
    command += ["--gil"] if gil else ["--idle"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def profile_later(pid: int, delay: float, stem: Path, seconds: float = 10.0) -> threading.Timer:
    """In ``delay`` seconds, sample ``pid`` for ``seconds`` twice at once (all threads, and the GIL holder)
    into ``stem``-threads.txt and ``stem``-gil.txt, each with its summary; join() the timer to wait."""

    def run() -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {gil: stem.parent / f"{stem.name}-{'gil' if gil else 'threads'}.txt" for gil in (False, True)}
        samplers = {gil: record(pid, seconds, path, gil) for gil, path in paths.items()}
        for gil, sampler in samplers.items():
            _, errors = sampler.communicate()
            if sampler.returncode or not paths[gil].exists():
                print(f"py-spy failed ({sampler.returncode}): {errors.strip()[-300:]}", file=sys.stderr)
                continue
            paths[gil].with_suffix(".summary.txt").write_text(summarize(paths[gil]) + "\n")

    timer = threading.Timer(delay, run)
    timer.start()
    return timer


def thread_kind(label: str) -> str:
    """'thread (123): funasr-nano-request_7' -> 'funasr-nano-request' (pool threads pooled)."""
    name = label.split(":", 1)[1].strip() if ":" in label else label
    return re.sub(r"[_-]\d+$", "", name)


def function(frame: str) -> str:
    """'LiveStream.feed (funasr_nano/decoding/live.py:88)' -> 'LiveStream.feed'."""
    return frame.split(" (", 1)[0]


def summarize(path: Path, top: int = 12) -> str:
    per_kind: Counter[str] = Counter()
    holding: dict[str, Counter[str]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        label, *frames = stack.split(";")
        kind, samples = thread_kind(label), int(count)
        per_kind[kind] += samples
        for name in {function(f) for f in frames}:
            holding[kind][name] += samples
    total = sum(per_kind.values())
    lines = [f"samples {total}"]
    for kind, samples in per_kind.most_common():
        lines.append(f"{100 * samples / max(total, 1):5.1f}%  {kind}")
        shown = [(n, held) for n, held in holding[kind].most_common() if n not in ENTRY]
        for name, held in shown[:top]:
            lines.append(f"        {100 * held / samples:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=12, help="functions shown per thread kind")
    args = parser.parse_args()
    print(summarize(args.file, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
