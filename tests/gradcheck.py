"""Central finite differences in float64, shared by the gradient-check tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂a by central differences, probing `a` in place element by element (a is restored)."""
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad_close(analytic: np.ndarray, numeric: np.ndarray, name: str, tol: float = 1e-6) -> None:
    """Relative-to-scale comparison: |a − n| ≤ tol · max(1, |n|) elementwise."""
    err = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    assert err.max() <= tol, f"{name}: max relative error {err.max():.3e} > {tol:.0e}"
