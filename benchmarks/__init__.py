"""Benchmark and measurement scripts (workloads in benchmarks/README.md), one module each.

Run them from the repository root as modules, e.g. ``python -m benchmarks.bench_ours --model DIR --json
OUT.json``; they import their shared pieces as ``benchmarks.common``, the test oracle as ``oracle`` and the
demo model's voices as ``training.synth``.
"""
