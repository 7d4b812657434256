"""A linear RNN (identity activation), the diagnostics' calibration case.

    a_t = W_xh x_t + W_hh h_{t-1} + b_h,     h_t = a_t          (σ = identity, σ' = 1)

Its per-step Jacobian is W_hh itself, so with W_hh = αI the product ∂h_T/∂h_k = α^{T−k} I exactly:
the diagnostics must call α = 0.5 vanishing, 1.0 stable and 1.5 exploding with γ = α. It is not a
model to train (the core offers tanh and ReLU only); it lives here, beside the code it calibrates.
The backward is the vanilla cell's, with σ'(a_t) = 1 stored in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unrolled.cells.bulk import project_inputs
from unrolled.cells.rnn import RNNCache, RNNCell
from unrolled.layers import RecurrentLayer


@dataclass(frozen=True)
class LinearRNNCell(RNNCell):
    """h_t = W_xh x_t + W_hh h_{t-1} + b_h (identity activation); parameters as :class:`RNNCell`."""

    nonlinearity: str = "identity"

    def _act(self, a: np.ndarray) -> np.ndarray:
        return a

    def forward(
        self,
        x: np.ndarray,
        state0: tuple[np.ndarray],
        p: dict,
        mask: np.ndarray | None,
        rec_mask: np.ndarray | None = None,
    ):
        """x (T, B, I), state0 (h0 (B, H),) -> hs (T, B, H), (h_T,), RNNCache with dact = 1.

        rec_mask : (B, H) recurrent dropout mask d on h_{t-1} where it meets W_hh, or None.
        """
        T, B, _ = x.shape
        W_hh = p["W_hh"]
        xp = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, H)
        hs = np.empty((T + 1, B, W_hh.shape[0]), dtype=x.dtype)
        hs[0] = state0[0]
        for t in range(T):
            h_new = xp[t] + (hs[t] if rec_mask is None else hs[t] * rec_mask) @ W_hh.T
            hs[t + 1] = h_new if mask is None else hs[t] + mask[t] * (h_new - hs[t])
        dact = np.ones_like(xp)
        return hs[1:], (hs[T].copy(),), RNNCache(x, hs, dact, mask, rec_mask)


def linear_rnn(
    alpha: float,
    input_size: int,
    hidden_size: int,
    dtype=np.float64,
    seed: int | np.random.Generator | None = None,
) -> RecurrentLayer:
    """A one-layer linear RNN with W_hh = αI (W_xh random, b_h = 0): the αI test of the diagnostics."""
    layer = RecurrentLayer(LinearRNNCell(), input_size, hidden_size, dtype=dtype, seed=seed)
    layer.params["W_hh_l0"][...] = alpha * np.eye(hidden_size)
    return layer
