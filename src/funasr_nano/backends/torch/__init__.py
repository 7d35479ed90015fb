"""PyTorch backend: our own encoder/adaptor/Qwen3 modules and the generation engine (CPU and CUDA)."""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
