"""MLX backend (Apple Silicon; CPU with ``mlx[cpu]``): encoder, adaptor and Qwen3 in MLX, optional 4/8-bit
quantization, and the ``convert`` writer. Importing it needs ``mlx`` (``pip install funasr-nano[mlx]``)."""

from .backend import MLXBackend

__all__ = ["MLXBackend"]
