"""MLX backend selection, errors and the CLI: the MLX backend imports no torch backend code, ``auto``
picks the backend from the platform and the weights, misuse gives clear errors, and ``funasr-nano
transcribe/convert`` with ``--backend mlx`` match torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

# ImportError, not just ModuleNotFoundError: on Linux plain `mlx` (no [cpu]) installs but fails to import.
mx = pytest.importorskip(
    "mlx.core", reason="MLX backend tests need mlx: pip install 'funasr-nano[mlx]'", exc_type=ImportError
)

import funasr_nano  # noqa: E402
from funasr_nano.backends import selection  # noqa: E402
from funasr_nano.backends.mlx.convert import convert, read_converted  # noqa: E402
from funasr_nano.checkpoint import MLX_WEIGHTS  # noqa: E402
from funasr_nano.cli import main as cli  # noqa: E402
from funasr_nano.errors import ModelLoadError, UsageError  # noqa: E402


def test_mlx_backend_imports_no_torch_backend_code():
    # A fresh interpreter: this one has the torch backend loaded by the fixtures.
    code = (
        "import sys; import funasr_nano.backends.mlx.backend, funasr_nano.backends.mlx.convert; "
        "print(sorted(m for m in sys.modules if m.startswith('funasr_nano.backends.torch')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_backend_selection(official_tiny, converted, monkeypatch):
    original, mlx_only = official_tiny.model_dir, converted / "bf16"
    with pytest.raises(UsageError, match="unknown backend"):
        selection.choose_backend("metal", original)
    monkeypatch.setattr(selection, "is_apple_silicon", lambda: False)
    assert selection.choose_backend("auto", original) == "torch"
    assert selection.choose_backend("auto", mlx_only) == "mlx"
    assert selection.choose_backend("mlx", original) == "mlx"
    with pytest.raises(UsageError, match="MLX weights only"):
        selection.choose_backend("torch", mlx_only)
    monkeypatch.setattr(selection, "is_apple_silicon", lambda: True)
    assert selection.choose_backend("auto", original) == "mlx"
    monkeypatch.setattr(selection, "mlx_import_error", lambda: "No module named 'mlx'")
    assert selection.choose_backend("auto", original) == "torch"
    with pytest.raises(UsageError, match=r"pip install 'funasr-nano\[mlx\]'"):
        selection.choose_backend("mlx", original)


def test_clear_errors(official_tiny, converted, tmp_path):
    with pytest.raises(UsageError, match="not an empty directory"):
        convert(official_tiny.model_dir, converted / "q8", 8)
    with pytest.raises(ModelLoadError, match="has no model.pt"):
        convert(converted / "q8", tmp_path / "again", 4)
    with pytest.raises(UsageError, match="bits must be 4 or 8"):
        convert(official_tiny.model_dir, tmp_path / "q3", 3)
    with pytest.raises(UsageError, match="unknown device"):
        funasr_nano.load_model(official_tiny.model_dir, backend="mlx", device="cuda")
    with pytest.raises(UsageError, match="convert --bits 8"):
        funasr_nano.load_model(official_tiny.model_dir, backend="mlx", int8=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    mx.save_safetensors(str(foreign / MLX_WEIGHTS), {"x": mx.zeros(2)})
    with pytest.raises(ModelLoadError, match="not written by"):
        read_converted(foreign / MLX_WEIGHTS)


def test_cli_convert_and_transcribe_match_torch(official_tiny, tmp_path, capsys):
    # The first two spoken phrases (VAD finds two segments): enough for the whole path, quick on CPU.
    samples, rate = soundfile.read(Path(__file__).parents[1] / "data" / "speech.ogg", dtype="float32")
    speech = str(tmp_path / "speech.wav")
    soundfile.write(speech, samples[: 8 * rate], rate)
    common = ["--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4"]
    model_dir = str(official_tiny.model_dir)
    assert cli.main(["transcribe", speech, "--model", model_dir, "--backend", "torch", *common]) == 0
    torch_text = capsys.readouterr().out
    assert cli.main(["transcribe", speech, "--model", model_dir, "--backend", "mlx", *common]) == 0
    assert capsys.readouterr().out == torch_text and torch_text.strip()
    out = tmp_path / "mlx-8bit"
    assert cli.main(["convert", "--backend", "mlx", "--bits", "8", "--model", model_dir, str(out)]) == 0
    assert "8-bit, group 64" in capsys.readouterr().out
    assert cli.main(["transcribe", speech, "--model", str(out), *common]) == 0
    assert capsys.readouterr().out.strip()
    assert cli.main(["transcribe", speech, "--model", str(out), "--backend", "torch"]) == 2
    assert "MLX weights only" in capsys.readouterr().err
