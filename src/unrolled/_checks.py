"""Input validation shared by the whole package: one clear message naming the argument, expected vs got.

Every check raises ``ValueError("<name>: expected <what>, got <value>")`` and returns the value in its plain
Python type, so a caller writes ``self.n = positive_int("n", n)``.
"""

from __future__ import annotations

import numbers

import numpy as np


def positive_int(name: str, v, *, allow_none: bool = False) -> int | None:
    """An integer ≥ 1 (NumPy integers too, never a bool); None only with ``allow_none``."""
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected a positive integer{extra}, got {v!r}")
    return int(v)


def non_negative_int(name: str, v) -> int:
    """An integer ≥ 0 (never a bool)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
    return int(v)


def probability(name: str, v, *, closed: bool = False) -> float:
    """A number in [0, 1) (``closed``: [0, 1]), never a bool or NaN."""
    ok = not isinstance(v, bool) and isinstance(v, numbers.Real)
    if ok:
        v = float(v)
        ok = 0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0
    if not ok:
        raise ValueError(f"{name}: expected a probability in [0, 1{']' if closed else ')'}, got {v!r}")
    return v


def positive_float(name: str, v, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (``allow_zero``: ≥ 0), never a bool."""
    ok = not isinstance(v, bool) and isinstance(v, numbers.Real) and np.isfinite(float(v))
    if ok:
        v = float(v)
        ok = v >= 0.0 if allow_zero else v > 0.0
    if not ok:
        what = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{name}: expected {what}, got {v!r}")
    return v


def one_of(name: str, v, choices) -> str:
    """One of ``choices`` (compared as given)."""
    if v not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {v!r}")
    return v


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
