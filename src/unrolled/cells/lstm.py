"""The LSTM cell: its equations, the forward walk over time and BPTT.

Gate order in the stacked parameters is i, f, g, o (PyTorch's); W_xh (4H, I), W_hh (4H, H), b_h (4H,)::

    [a_i, a_f, a_g, a_o] = W_xh x_t + W_hh h_{t-1} + b_h
    i_t = sigmoid(a_i)      input gate
    f_t = sigmoid(a_f)      forget gate
    g_t = tanh(a_g)         candidate cell
    o_t = sigmoid(a_o)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Backward through time, with δh_t, δc_t the total gradients reaching h_t and c_t::

    δo = δh_t ⊙ tanh(c_t)
    δc_t += δh_t ⊙ o_t ⊙ (1 − tanh²(c_t))
    δi = δc_t ⊙ g_t,  δf = δc_t ⊙ c_{t-1},  δg = δc_t ⊙ i_t
    δa_{i,f,o} = δ{i,f,o} ⊙ s(1 − s) for the sigmoid value s,  δa_g = δg ⊙ (1 − g_t²)
    δc_{t-1} = δc_t ⊙ f_t                    (the additive cell path: no W_hh, no squashing)
    δh_{t-1} = W_hhᵀ δa_t
    ∂L/∂W_hh = Σ_t δa_t h_{t-1}ᵀ,  ∂L/∂W_xh = Σ_t δa_t x_tᵀ,  ∂L/∂b_h = Σ_t δa_t

Variable lengths: with m_t ∈ {0, 1}, a finished sequence keeps (h, c) unchanged.

Recurrent (variational) dropout: with a mask d (B, H) drawn once per sequence (scaled by 1/(1 − p)),
the gates see W_hh (d ⊙ h_{t-1}) instead of W_hh h_{t-1}; the cell path c is untouched. Then
δh_{t-1} = d ⊙ W_hhᵀ δa_t and ∂L/∂W_hh = Σ_t δa_t (d ⊙ h_{t-1})ᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, project_inputs, sigmoid


class LSTMCache(NamedTuple):
    """What the forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H) carried h, hs[0] = h0
    cs: np.ndarray  # (T+1, B, H) carried c, cs[0] = c0
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    tanh_c: np.ndarray  # (T, B, H) tanh of the new cell c_t (before masking)
    mask: np.ndarray | None  # (T, B, 1)
    rec_mask: np.ndarray | None = None  # (B, H) recurrent dropout mask d on h_{t-1}


def _activate(a: np.ndarray, H: int) -> np.ndarray:
    """In place on a (B, 4H): sigmoid on i, f, o and tanh on g."""
    sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
    np.tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
    sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])
    return a


@dataclass(frozen=True)
class LSTMCell:
    """The long short-term memory cell (Hochreiter & Schmidhuber 1997, with forget gate)."""

    gates = 4
    state_names = ("h", "c")

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray, np.ndarray], p: dict):
        """One time step: x_t (B, I), state (h_{t-1}, c_{t-1}) -> (h_t, c_t)."""
        h, c = state
        H = h.shape[1]
        a = x_t @ p["W_xh"].T + h @ p["W_hh"].T
        if "b_h" in p:
            a += p["b_h"]
        i, f, g, o = np.split(_activate(a, H), 4, axis=1)
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new

    def forward(
        self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None, rec_mask: np.ndarray | None = None
    ):
        """Run over a sequence: x (T, B, I), state0 (h0, c0) -> hs (T, B, H), (h_T, c_T), cache.

        rec_mask : (B, H) recurrent dropout mask d on h_{t-1} where it meets W_hh (scaled), or None.
        """
        T, B, _ = x.shape
        W_hh = p["W_hh"]
        H = W_hh.shape[1]
        gates = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, 4H) input part of a_t, all t
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        cs = np.empty((T + 1, B, H), dtype=x.dtype)
        tanh_c = np.empty((T, B, H), dtype=x.dtype)
        hs[0], cs[0] = state0
        for t in range(T):
            a = gates[t]  # a view: becomes the activated gates of step t
            a += (hs[t] if rec_mask is None else hs[t] * rec_mask) @ W_hh.T
            _activate(a, H)
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c_new = f * cs[t] + i * g
            np.tanh(c_new, out=tanh_c[t])
            h_new = o * tanh_c[t]
            if mask is None:
                hs[t + 1], cs[t + 1] = h_new, c_new
            else:
                m = mask[t]
                hs[t + 1] = hs[t] + m * (h_new - hs[t])
                cs[t + 1] = cs[t] + m * (c_new - cs[t])
        return hs[1:], (hs[T].copy(), cs[T].copy()), LSTMCache(x, hs, cs, gates, tanh_c, mask, rec_mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: LSTMCache, p: dict):
        """BPTT. d_hs (T, B, H); d_stateT (d_hT, d_cT) -> dx (T, B, I), (d_h0, d_c0), grads."""
        x, hs, cs, gates, tanh_c, mask, rm = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        i, f, g, o = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H : 3 * H], gates[..., 3 * H :]
        # Local derivatives that do not depend on the recursion, in bulk over all t.
        d_sig_i, d_sig_f, d_sig_o = i * (1 - i), f * (1 - f), o * (1 - o)
        d_tanh_g = 1 - g * g
        o_dtanh_c = o * (1 - tanh_c * tanh_c)
        da = np.empty_like(gates)  # (T, B, 4H)
        dh = d_stateT[0].copy()
        dc = d_stateT[1].copy()
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            if mask is not None:
                m = mask[t]
                dh_keep, dc_keep = (1 - m) * dh, (1 - m) * dc
                dh, dc = m * dh, m * dc
            dc = dc + dh * o_dtanh_c[t]
            np.multiply(dh * tanh_c[t], d_sig_o[t], out=da[t, :, 3 * H :])
            np.multiply(dc * g[t], d_sig_i[t], out=da[t, :, :H])
            np.multiply(dc * cs[t], d_sig_f[t], out=da[t, :, H : 2 * H])
            np.multiply(dc * i[t], d_tanh_g[t], out=da[t, :, 2 * H : 3 * H])
            dc = dc * f[t]
            dh = da[t] @ W_hh
            if rm is not None:
                dh *= rm
            if mask is not None:
                dh += dh_keep
                dc += dc_keep
        h_prev = hs[:-1] if rm is None else hs[:-1] * rm
        grads = {"W_hh": da.reshape(T * B, 4 * H).T @ h_prev.reshape(T * B, H)}
        dx = input_gradients(da, x, p, grads, bias_key="b_h")
        return dx, (dh, dc), grads
