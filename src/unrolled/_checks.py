"""Input validation shared by the layers: one clear message naming the argument, expected vs got."""

from __future__ import annotations

import numpy as np


def check_array(name: str, a, shape: tuple, dtype: np.dtype, finite: bool = True) -> np.ndarray:
    """Return `a` as an ndarray after checking ndim, shape (None = any) and exact dtype.

    Never broadcasts: a shape that differs in any dimension is an error.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.ndim != len(shape):
        raise ValueError(f"{name}: expected {len(shape)} dimensions {_fmt(shape)}, got shape {a.shape}")
    if any(s is not None and s != g for s, g in zip(shape, a.shape, strict=True)):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {a.shape}")
    if a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype).name}, got {a.dtype.name}")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def check_lengths(lengths, B: int, T: int) -> np.ndarray:
    """`lengths` must be B integers in 1..T."""
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.shape[0] != B:
        raise ValueError(f"lengths: expected {B} integers (one per sequence), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths: expected integers, got dtype {arr.dtype.name}")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        raise ValueError(
            f"lengths: expected values in 1..{T} (the sequence length), got {arr.min()}..{arr.max()}"
        )
    return arr.astype(np.int64)


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
