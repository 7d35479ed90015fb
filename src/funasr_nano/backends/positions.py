"""The SAN-M encoder's sinusoidal position table, computed in torch by both backends.

Angles reach hundreds of radians, where one float32 ulp of difference in ``exp`` (MLX's CPU ``exp`` is
5e-7 off; numpy's differs from torch's by an ulp) moves the table by up to 1e-5: so the MLX encoder takes
the table from this function too, rather than from its own copy of the maths.
"""

from __future__ import annotations

import torch


def sinusoidal_positions(frames: int, depth: int, device: torch.device) -> torch.Tensor:
    """[frames, depth] encoding with positions starting at 1, sin half then cos half (float32)."""
    positions = torch.arange(1, frames + 1, device=device, dtype=torch.float32)
    increment = torch.log(torch.tensor([10000.0], device=device)) / (depth / 2 - 1)
    inverse = torch.exp(torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment)
    scaled = positions[:, None] * inverse[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
