"""Fixtures of the MLX backend tests: the tiny official checkpoint loaded on the MLX and torch backends
(float32, CPU), its reference clips and prompts, and MLX copies of it (full precision, 8-bit, 4-bit,
8-bit with the encoder). mlx is imported only by the fixtures that need it, so a machine without mlx
collects these tests and skips them (in each test module)."""

from __future__ import annotations

import pytest

import funasr_nano


@pytest.fixture(scope="module")
def mlx_model(official_tiny):
    model = funasr_nano.load_model(official_tiny.model_dir, backend="mlx", device="cpu", dtype="float32")
    assert model.backend.name == "mlx" and model.backend.device == "cpu"
    return model


@pytest.fixture(scope="module")
def torch_model(official_tiny):
    return funasr_nano.load_model(official_tiny.model_dir, backend="torch", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clips(official_tiny):
    return {c["name"]: c for c in official_tiny.reference["clips"]}


@pytest.fixture(scope="module")
def prompts(official_tiny):
    return official_tiny.reference["prompts"]


@pytest.fixture(scope="module")
def converted(official_tiny, tmp_path_factory):
    """MLX copies of the tiny checkpoint: full precision, 8-bit, 4-bit, 8-bit with the encoder too."""
    from funasr_nano.backends.mlx.convert import convert

    root = tmp_path_factory.mktemp("mlx-converted")
    variants = {"bf16": (None, False), "q8": (8, False), "q4": (4, False), "q8-audio": (8, True)}
    for name, (bits, audio) in variants.items():
        convert(official_tiny.model_dir, root / name, bits, quantize_audio=audio)
    return root
