"""Shared test fixtures: where the shared data lives, and the torch import policy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# The tests specify what Ctrl-C does to a run in the foreground. A shell starts a background job (pytest
# run with `&`) with SIGINT ignored, which unrolled rightly keeps ignored; restore Python's own handler
# here so the suite means the same wherever it runs (the trainers it starts inherit the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_torch():
    """Import torch, or skip with a reason; in CI (CI set) a missing torch is a failure, not a skip."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch is not installed but CI is set: the PyTorch parity tests must run in CI")
        pytest.skip("torch not installed (pip install torch==2.13.0): PyTorch parity not checked")
    return torch


def shared_data(rel: str) -> Path:
    """A file under ../shared/data, or skip with a clear reason where it is absent (a user's fresh clone)."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared dataset {p} not present (it lives beside the repository, never inside it)")
    return p


def assert_close(actual, desired, tol: float, err_msg: str = "") -> None:
    """|actual − desired| ≤ tol · max(1, max|desired|): a tolerance relative to the values' scale.

    An absolute 1e-5 on float32 values near 50 is about four ulps, which a CPU with other vector widths
    (AVX-512 against AVX2) or another summation order exceeds; scaling by the largest magnitude keeps the
    bound the same number of ulps whatever the values' size, and stays absolute (tol) for values below 1.
    """
    import numpy as np

    desired = np.asarray(desired)
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * scale, err_msg=err_msg)
