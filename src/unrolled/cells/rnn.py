"""The vanilla (Elman) RNN cell: its equation, the forward walk over time and BPTT.

Forward, for t = 1..T (σ = tanh or ReLU)::

    a_t = W_xh x_t + W_hh h_{t-1} + b_h
    h_t = σ(a_t)

Backward through time. With δ_t = ∂L/∂h_t the *total* gradient reaching h_t (from the
output at t and from h_{t+1})::

    δa_t      = δ_t ⊙ σ'(a_t)                 (σ'(a) = 1 − h_t² for tanh, [a > 0] for ReLU)
    δ_{t-1}  += W_hhᵀ δa_t                    (∂h_t/∂h_{t-1} = diag(σ'(a_t)) W_hh)
    ∂L/∂W_hh  = Σ_t δa_t h_{t-1}ᵀ,   ∂L/∂W_xh = Σ_t δa_t x_tᵀ,   ∂L/∂b_h = Σ_t δa_t

Unrolling the recursion gives the seed formula ∂h_t/∂h_k = ∏_{i=k+1}^{t} diag(σ'(a_i)) W_hh,
whose norm shrinks or grows geometrically with t − k (vanishing / exploding gradients).

Variable lengths: with a mask m_t ∈ {0, 1} per sequence, a finished sequence keeps its state,
h_t = h_{t-1} + m_t (σ(a_t) − h_{t-1}), so the final state is each sequence's last valid one.

Recurrent (variational) dropout: with a mask d (B, H) drawn once per sequence (already scaled by
1/(1 − p)), h_{t-1} is replaced by d ⊙ h_{t-1} where it meets W_hh: a_t = W_xh x_t + W_hh (d ⊙ h_{t-1}) + b_h,
so δ_{t-1} += d ⊙ W_hhᵀ δa_t and ∂L/∂W_hh = Σ_t δa_t (d ⊙ h_{t-1})ᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, project_inputs


class RNNCache(NamedTuple):
    """What the forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I) inputs
    hs: np.ndarray  # (T+1, B, H) states, hs[0] = h0, hs[t] = h_t (carried state)
    dact: np.ndarray  # (T, B, H) σ'(a_t), computed in bulk after the loop
    mask: np.ndarray | None  # (T, B, 1) 1 where step t is inside the sequence
    rec_mask: np.ndarray | None = None  # (B, H) recurrent dropout mask d on h_{t-1}


@dataclass(frozen=True)
class RNNCell:
    """h_t = σ(W_xh x_t + W_hh h_{t-1} + b_h); parameters W_xh (H, I), W_hh (H, H), b_h (H,)."""

    nonlinearity: str = "tanh"

    gates = 1
    state_names = ("h",)

    def _act(self, a: np.ndarray) -> np.ndarray:
        if self.nonlinearity == "tanh":
            return np.tanh(a, out=a)
        return np.maximum(a, 0, out=a)

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray], p: dict) -> tuple[np.ndarray]:
        """One time step: x_t (B, I), state (h_{t-1},) -> (h_t,)."""
        (h,) = state
        a = x_t @ p["W_xh"].T + h @ p["W_hh"].T
        if "b_h" in p:
            a += p["b_h"]
        return (self._act(a),)

    def forward(
        self,
        x: np.ndarray,
        state0: tuple[np.ndarray],
        p: dict,
        mask: np.ndarray | None,
        rec_mask: np.ndarray | None = None,
    ):
        """Run over a whole sequence.

        Parameters
        ----------
        x : (T, B, I) inputs.  state0 : (h0,) with h0 (B, H).  p : parameter dict.
        mask : (T, B, 1) or None (all steps valid).
        rec_mask : (B, H) recurrent dropout mask d on h_{t-1} (scaled), or None.

        Returns
        -------
        hs : (T, B, H) the state after each step (carried past a sequence's end),
        state_T : (h_T,), cache : RNNCache.
        """
        T, B, _ = x.shape
        W_hh = p["W_hh"]
        H = W_hh.shape[0]
        xp = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, H): W_xh x_t + b_h for all t at once
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        hs[0] = state0[0]
        for t in range(T):
            a = xp[t]  # a view: after the next two lines xp[t] holds σ(a_t), used for σ' below
            a += (hs[t] if rec_mask is None else hs[t] * rec_mask) @ W_hh.T
            h_new = self._act(a)
            if mask is None:
                hs[t + 1] = h_new
            else:
                hs[t + 1] = hs[t] + mask[t] * (h_new - hs[t])
        if self.nonlinearity == "tanh":
            dact = 1.0 - xp * xp
        else:
            dact = (xp > 0).astype(x.dtype)
        return hs[1:], (hs[T].copy(),), RNNCache(x, hs, dact, mask, rec_mask)

    def backward(self, d_hs: np.ndarray, d_stateT: tuple[np.ndarray], cache: RNNCache, p: dict):
        """BPTT. d_hs (T, B, H) gradient w.r.t. each step's output; d_stateT (d_hT,).

        Returns dx (T, B, I), (d_h0,), grads (dict with the keys of p).
        """
        x, hs, dact, mask, rm = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        da = np.empty_like(dact)  # (T, B, H) δa_t for every t, used in bulk for the weight gradients
        dh = d_stateT[0].copy()
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            if mask is None:
                np.multiply(dh, dact[t], out=da[t])
                dh = da[t] @ W_hh
            else:
                np.multiply(mask[t] * dh, dact[t], out=da[t])
                dh_keep = (1.0 - mask[t]) * dh
                dh = da[t] @ W_hh
            if rm is not None:
                dh *= rm
            if mask is not None:
                dh += dh_keep
        h_prev = hs[:-1] if rm is None else hs[:-1] * rm
        grads = {"W_hh": da.reshape(T * B, H).T @ h_prev.reshape(T * B, H)}
        dx = input_gradients(da, x, p, grads, bias_key="b_h")
        return dx, (dh,), grads
