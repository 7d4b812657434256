"""Work shared by every cell that does not depend on the recurrence, done in bulk over all T steps."""

from __future__ import annotations

import numpy as np

from unrolled.kernels import SMALL_PRODUCT


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


def outer_sum(d: np.ndarray, v: np.ndarray, matmul=np.matmul) -> np.ndarray:
    """dᵀ v (G, K) for d (N, G), v (N, K): Σ over the N = T·B rows of the outer products δa_n v_nᵀ — a weight
    gradient, ∂L/∂W = Σ_t δa_t v_tᵀ, in one product. ``matmul`` (the fast cells pass oneDNN's where it is in
    use) from :data:`~unrolled.kernels.SMALL_PRODUCT` multiply-adds up; NumPy's below, where
    oneDNN's call costs more than it saves."""
    if d.shape[0] * d.shape[1] * v.shape[1] < SMALL_PRODUCT:
        matmul = np.matmul
    return matmul(d.T, v)


# ∂L/∂W_hh and ∂L/∂W_xh from one wider product over [h_{t−1} ; x_t] and two copies, or two products: the
# wider one pays (one thread, oneDNN, ms, wide and copies / two: (1600 × 1024)ᵀ·(1600 × 256 | 64) 10.3 /
# 10.8; (1600 × 512)ᵀ·(1600 × 128 | 64) 2.87 / 2.92) until the copy of ∂L/∂W_hh outgrows the core's cache
# ((512 × 2048)ᵀ·(512 × 512 | 128), 4 MiB: 15.1 / 13.9; (1024 × 2048)ᵀ·(…) 27.9 / 27.2). In a training step
# (LSTM T = 64, B = 16, I = 128, H = 512, 2 workers, alternating processes): two products 0.98×.
SPLIT_WEIGHT_GRADS = 1 << 20  # entries of W_hh (G·H) from which the two come from products of their own


def input_gradients(
    da: np.ndarray,
    x: np.ndarray,
    p: dict,
    grads: dict,
    bias_key: str,
    matmul=np.matmul,
    h_prev: np.ndarray | None = None,
) -> np.ndarray:
    """Given δa_t (T, B, G) of the pre-activations a_t = W_xh x_t + b + …, fill ∂L/∂W_xh = Σ_t δa_t x_tᵀ
    and ∂L/∂b = Σ_t δa_t in `grads` (one product over all steps, :func:`outer_sum`) and return ∂L/∂x
    (T, B, I).

    With ``h_prev`` (T, B, H), the h_{t−1} of a cell whose a_t also holds W_hh h_{t−1}: ∂L/∂W_hh =
    Σ_t δa_t h_{t−1}ᵀ too (the compiled LSTM and RNN cells). Below :data:`SPLIT_WEIGHT_GRADS` entries of
    W_hh both come from one wider product, [∂L/∂W_hh | ∂L/∂W_xh] = Σ_t δa_t [h_{t−1} ; x_t]ᵀ, then copied
    apart; from it on, from two products (see :data:`SPLIT_WEIGHT_GRADS`)."""
    T, B, G = da.shape
    I = x.shape[2]
    da2 = da.reshape(T * B, G)
    H = 0 if h_prev is None else h_prev.shape[2]
    if H and G * H < SPLIT_WEIGHT_GRADS:  # one wider product, copied apart
        hx = np.empty((T * B, H + I), dtype=x.dtype)
        hx[:, :H] = h_prev.reshape(T * B, H)
        hx[:, H:] = x.reshape(T * B, I)
        both = outer_sum(da2, hx, matmul)  # (G, H + I)
        grads["W_hh"] = np.ascontiguousarray(both[:, :H])
        grads["W_xh"] = np.ascontiguousarray(both[:, H:])
    else:
        grads["W_xh"] = outer_sum(da2, x.reshape(T * B, I), matmul)
        if H:
            grads["W_hh"] = outer_sum(da2, h_prev.reshape(T * B, H), matmul)
    if bias_key in p:
        grads[bias_key] = da2.sum(axis=0)
    return matmul(da2, p["W_xh"]).reshape(T, B, I)
