"""Which backend ``load_model`` builds: ``auto`` is MLX on Apple Silicon when mlx imports, torch otherwise."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from ..checkpoint import MLX_WEIGHTS
from ..errors import UsageError, option

BACKENDS = ("auto", "torch", "mlx")
MLX_INSTALL_HINT = "pip install 'funasr-nano[mlx]'"


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def mlx_import_error() -> str | None:
    """None when ``mlx.core`` imports, else the reason (on Linux plain ``mlx`` installs but cannot load)."""
    try:
        import mlx.core  # noqa: F401
    except (ImportError, OSError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0]
    return None


def choose_backend(requested: str, model_dir: Path) -> str:
    """"torch" or "mlx" for ``requested`` ("auto" | "torch" | "mlx") and what the model directory holds.

    A directory written by ``funasr-nano convert --backend mlx`` holds MLX weights only, so "auto"
    takes MLX for it on any platform.
    """
    if requested not in BACKENDS:
        choices = ", ".join(option("backend", b) for b in BACKENDS)
        raise UsageError(f"unknown backend {requested!r}: use {choices}")
    converted = (model_dir / MLX_WEIGHTS).is_file()
    has_checkpoint = (model_dir / "model.pt").is_file()
    if requested == "torch" or (requested == "auto" and not converted and not is_apple_silicon()):
        if not has_checkpoint:
            raise UsageError(
                f"{model_dir} holds MLX weights only (written by `funasr-nano convert`): use "
                f"{option('backend', 'mlx')}, or the original model directory for the torch backend"
            )
        return "torch"
    error = mlx_import_error()
    if error is None:
        return "mlx"
    if requested == "auto" and has_checkpoint:
        return "torch"
    raise UsageError(f"the MLX backend needs mlx, which does not import here ({error}): {MLX_INSTALL_HINT}")
