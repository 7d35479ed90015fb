"""Peak memory and wall time of the CLI against recording length: flat memory, linear time.

Synthesizes 16 kHz WAVs of the given lengths by tiling the demo clips (tests/data/demo) with 0.3-2.5 s
pauses of light noise (written block by block, so this script stays small too), runs
``funasr-nano transcribe FILE -o DIR`` on each in a subprocess, and records the child's peak RSS
(getrusage of a measuring process that runs only that child) and wall time. The model's own footprint
is measured the same way (a process that loads it and transcribes one clip). Large files go under
--tmp and are deleted afterwards.

With ``--server``: the same lengths as FLAC (compressed) uploads to ``funasr-nano serve`` with a raised
``--max-audio-s`` (and ``--max-upload-mb``), one fresh server per length on 127.0.0.1; the server's peak
RSS is its ``VmHWM`` (/proc) after the response, the baseline a server that answered one clip.

    python -m benchmarks.long_files --minutes 5 60 180 \\
        --out benchmarks/results/2026-12-03-cpu-long-files-demo.json
    # GPU, full-size random checkpoint (python -m benchmarks.build_checkpoint DIR first):
    python -m benchmarks.long_files --model DIR --device cuda --max-new-tokens 30 --minutes 5 60 180 600 \\
        --out benchmarks/results/2026-12-XX-h200-long-files-random.json
    python -m benchmarks.long_files --server --minutes 5 60 --out ...   # uploads to the server
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import ROOT, provenance

SAMPLE_RATE = 16000


def synthesize(path: Path, seconds: float, seed: int = 0) -> float:
    """A WAV of at least ``seconds``: the demo clips in turn, each followed by a pause of light noise."""
    from funasr_nano.frontend.audio import load_audio

    clips = [load_audio(p) for p in sorted((ROOT / "tests" / "data" / "demo").glob("*.flac"))]
    rng = np.random.default_rng(seed)
    written = 0
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as out:
        index = 0
        while written < seconds * SAMPLE_RATE:
            pause = (rng.standard_normal(int(rng.uniform(0.3, 2.5) * SAMPLE_RATE)) * 0.003).astype(np.float32)
            block = np.concatenate([clips[index % len(clips)], pause])
            out.write(block)
            written += block.size
            index += 1
    return written / SAMPLE_RATE


def measure(command: list[str]) -> dict:
    """Run ``command`` in a process that runs nothing else, so its children's peak RSS is the command's."""
    probe = (
        "import json, resource, subprocess, sys, time; started = time.perf_counter(); "
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
        "print(json.dumps({'rc': rc, 'wall_s': time.perf_counter() - started, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
    )
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _upload(port: int, path: Path) -> dict:
    """POST ``path`` as multipart to /v1/audio/transcriptions (streamed from disk); verbose_json back."""
    import http.client
    import uuid

    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nverbose_json\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: audio/flac\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():  # type: ignore[no-untyped-def]
        yield head
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                yield block
        yield tail

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=7200)
    connection.request(
        "POST",
        "/v1/audio/transcriptions",
        body=body(),
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + path.stat().st_size + len(tail)),
        },
    )
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"upload of {path.name}: HTTP {response.status}: {data[:300]!r}")
    return json.loads(data)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def server_run(args: argparse.Namespace, path: Path) -> dict:
    """A fresh server answers one upload of ``path``: its peak RSS and the request's wall time."""
    import time

    from benchmarks.load_test import Server

    options = argparse.Namespace(
        model=args.model,
        device=args.device,
        dtype="auto",
        batch_size=args.batch_size or 32,
        batch_window_ms=10.0,
        max_new_tokens=args.max_new_tokens,
        startup_timeout=600.0,
    )
    server = Server(
        options, "--max-audio-s", str(args.max_audio_s), "--max-upload-mb", "16384", "--read-timeout-s", "600"
    )
    try:
        started = time.perf_counter()
        answer = _upload(server.port, path)
        wall = time.perf_counter() - started
        peak = _peak_rss_mb(server.process.pid)
    finally:
        server.stop()
    return {"wall_s": wall, "peak_rss_mb": peak, "segments": len(answer.get("segments", []))}


def report(args: argparse.Namespace, cli: list[str], baseline: dict, rows: list[dict]) -> dict:
    what = "server" if args.server else "CLI"
    return {
        **provenance(f"long files: {what} peak RSS and wall time against duration", args.device),
        "model": args.model,
        "input": f"16 kHz PCM_16 {'FLAC' if args.server else 'WAV'}: demo clips tiled with 0.3-2.5 s pauses of "
        "light noise",
        **(
            {
                "server": f"funasr-nano serve --max-audio-s {args.max_audio_s:g} --max-upload-mb 16384, one per "
                "length; POST /v1/audio/transcriptions response_format=verbose_json",
                "rss": "VmHWM of the server process after the response",
            }
            if args.server
            else {
                "cli": " ".join(cli[1:]) + " FILE -o DIR",
                "rss": "ru_maxrss of the CLI process (getrusage RUSAGE_CHILDREN of a process running only it)",
            }
        ),
        "baseline": {
            "what": f"the same {what} on one demo clip (model loaded, VAD, one decode)",
            "peak_rss_mb": round(baseline["peak_rss_mb"], 1),
            "wall_s": round(baseline["wall_s"], 1),
        },
        "runs": rows,
    }


def write(args: argparse.Namespace, record: dict) -> None:
    """Rewritten after every length, so a run cut short keeps the lengths it finished."""
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 60, 180])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="token budget per segment (random weights never stop)")
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--out", type=Path)
    parser.add_argument("--server", action="store_true", help="FLAC uploads to funasr-nano serve instead of the CLI")
    parser.add_argument("--max-audio-s", type=float, default=40000.0, help="the server's --max-audio-s")
    args = parser.parse_args()
    python = sys.executable
    cli = [python, "-m", "funasr_nano", "transcribe", "-m", args.model, "--device", args.device, "-q"]
    if args.batch_size:
        cli += ["--batch-size", str(args.batch_size)]
    if args.max_new_tokens:
        cli += ["--max-new-tokens", str(args.max_new_tokens)]
    work = Path(tempfile.mkdtemp(prefix="funasr-nano-long-", dir=args.tmp))
    rows = []
    try:
        clip = sorted((ROOT / "tests" / "data" / "demo").glob("*.flac"))[0]
        baseline = server_run(args, clip) if args.server else measure([*cli, str(clip)])
        print(f"model + one clip: {baseline['peak_rss_mb']:.0f} MB, {baseline['wall_s']:.1f} s", flush=True)
        for minutes in args.minutes:
            wav = work / f"{minutes:g}min.{'flac' if args.server else 'wav'}"
            seconds = synthesize(wav, minutes * 60)
            out = work / f"out-{minutes:g}"
            if args.server:
                result = {"rc": 0, **server_run(args, wav)}
                segments = result["segments"]
            else:
                result = measure([*cli, str(wav), "-o", str(out)])
                segments = (
                    len(json.loads((out / f"{wav.stem}.json").read_text())["segments"]) if result["rc"] == 0 else 0
                )
            row = {
                "minutes": minutes,
                "audio_s": round(seconds, 1),
                "file_mb": round(wav.stat().st_size / 2**20, 1),
                "whole_file_float32_mb": round(seconds * SAMPLE_RATE * 4 / 2**20, 1),
                "segments": segments,
                "rc": result["rc"],
                "wall_s": round(result["wall_s"], 1),
                "peak_rss_mb": round(result["peak_rss_mb"], 1),
                "over_model_mb": round(result["peak_rss_mb"] - baseline["peak_rss_mb"], 1),
                "x_realtime": round(seconds / result["wall_s"], 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(args, report(args, cli, baseline, rows))
            wav.unlink()
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report(args, cli, baseline, rows), indent=2))


if __name__ == "__main__":
    main()
