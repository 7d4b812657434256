"""Layer normalisation (Ba et al. 2016) over the last axis, with gain γ and bias β, and its backward.

Forward, for a row a of width N::

    μ = (1/N) Σ_j a_j,   σ² = (1/N) Σ_j (a_j − μ)²,   â = (a − μ) / sqrt(σ² + ε)
    LN(a; γ, β) = γ ⊙ â + β

Backward, given δy = ∂L/∂LN(a) (ρ = 1 / sqrt(σ² + ε), means over the row)::

    ∂L/∂γ = Σ_rows δy ⊙ â,   ∂L/∂β = Σ_rows δy
    δâ = δy ⊙ γ
    δa = ρ ⊙ (δâ − mean(δâ) − â ⊙ mean(δâ ⊙ â))

The variant cells (:mod:`unrolled.cells.lstm_variant`, :mod:`unrolled.cells.gru_variant`) call these for the
input and recurrent pre-activations and the LSTM cell state.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # ε, as torch.nn.LayerNorm's default


def ln_forward(
    a: np.ndarray, gain: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LN(a; γ, β) over the last axis. Returns (y, â, ρ) with ρ = 1/sqrt(σ² + ε) of shape (..., 1)."""
    mu = a.mean(axis=-1, keepdims=True)
    d = a - mu
    rho = 1.0 / np.sqrt((d * d).mean(axis=-1, keepdims=True) + EPS)
    a_hat = d * rho
    return a_hat * gain + bias, a_hat, rho


def ln_backward(dy: np.ndarray, a_hat: np.ndarray, rho: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """δa from δy (same shape), â and ρ of :func:`ln_forward`. The gain and bias gradients are
    Σ δy ⊙ â and Σ δy over the leading axes (see :func:`ln_param_grads`)."""
    g = dy * gain
    return rho * (g - g.mean(axis=-1, keepdims=True) - a_hat * (g * a_hat).mean(axis=-1, keepdims=True))


def ln_param_grads(dy: np.ndarray, a_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∂L/∂γ, ∂L/∂β) summed over every leading axis."""
    n = dy.shape[-1]
    return (dy * a_hat).reshape(-1, n).sum(axis=0), dy.reshape(-1, n).sum(axis=0)
