"""The dtypes a model runs in and how users spell them: one check, shared by the command line (before
torch is imported), the loader and both backends."""

from __future__ import annotations

from .errors import UsageError, option

# Short spellings users (and FunASR's config.yaml) use for the weight dtypes.
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The dtypes a model runs in. float16 is not one: the official runtime notes that the adaptor overflows
# in fp16 with the real weights.
DTYPE_NAMES = ("float32", "bfloat16")


def dtype_name(dtype: str) -> str:
    """Canonical dtype name ('float32', 'bfloat16') of a user's choice; 'auto' passes through."""
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name == "float16":
        raise UsageError(
            f"{option('dtype', dtype)} is not supported: Fun-ASR-Nano's adaptor overflows in float16 (as the "
            f"official runtime notes); use {option('dtype', 'bfloat16')} or {option('dtype', 'float32')}"
        )
    if name != "auto" and name not in DTYPE_NAMES:
        choices = " or ".join(option("dtype", n) for n in ("auto", *DTYPE_NAMES))
        raise UsageError(f"unknown dtype {dtype!r}: use {choices}")
    return name
