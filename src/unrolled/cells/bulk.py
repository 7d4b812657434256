"""Work shared by every cell that does not depend on the recurrence, done in bulk over all T steps."""

from __future__ import annotations

import numpy as np


def sigmoid(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(a) = 1 / (1 + e^{−a}), as 0.5·(1 + tanh(a/2)): one vectorized transcendental, no overflow."""
    out = np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def project_inputs(x: np.ndarray, W_xh: np.ndarray, b: np.ndarray | None, matmul=np.matmul) -> np.ndarray:
    """W_xh x_t + b for all t in one matrix product: x (T, B, I) -> (T, B, G). (``matmul``: the fast
    cells pass oneDNN's where it is in use.)"""
    T, B, I = x.shape
    xp = matmul(x.reshape(T * B, I), W_xh.T)
    if b is not None:
        xp += b
    return xp.reshape(T, B, -1)


def input_gradients(
    da: np.ndarray, x: np.ndarray, p: dict, grads: dict, bias_key: str, matmul=np.matmul
) -> np.ndarray:
    """Given δa_t (T, B, G) of the pre-activations a_t = W_xh x_t + b + …, fill ∂L/∂W_xh = Σ_t δa_t x_tᵀ
    and ∂L/∂b = Σ_t δa_t in `grads` (one product over all steps) and return ∂L/∂x (T, B, I)."""
    T, B, G = da.shape
    I = x.shape[2]
    da2 = da.reshape(T * B, G)
    grads["W_xh"] = da2.T @ x.reshape(T * B, I)
    if bias_key in p:
        grads[bias_key] = da2.sum(axis=0)
    return matmul(da2, p["W_xh"]).reshape(T, B, I)
