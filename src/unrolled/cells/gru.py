"""The GRU cell, in both reset variants: its equations, the forward walk over time and BPTT.

Gate order in the stacked parameters is z, r, n (n is the candidate h̃); W_xh (3H, I), W_hh (3H, H),
b_h (3H,), and with ``reset_after=True`` a separate b_hn (H,) inside the reset product::

    z_t = sigmoid(W_xz x_t + W_hz h_{t-1} + b_z)          update gate (weights the candidate)
    r_t = sigmoid(W_xr x_t + W_hr h_{t-1} + b_r)          reset gate
    reset_after=True  (cuDNN / PyTorch / Keras default):
        h̃_t = tanh(W_xn x_t + b_n + r_t ⊙ (W_hn h_{t-1} + b_hn))
    reset_after=False (the classic formulation of Cho et al. 2014):
        h̃_t = tanh(W_xn x_t + W_hn (r_t ⊙ h_{t-1}) + b_n)
    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

PyTorch's z is 1 − this z: its update gate weights h_{t-1}. unrolled.interop.torch converts.

Backward through time, with δh_t the total gradient reaching h_t::

    δz = δh_t ⊙ (h̃_t − h_{t-1}),  δh̃ = δh_t ⊙ z_t,  δa_n = δh̃ ⊙ (1 − h̃_t²)
    reset_after=True:   δr = δa_n ⊙ (W_hn h_{t-1} + b_hn);  the recurrent pre-activation of n gets r_t ⊙ δa_n
    reset_after=False:  δ(r⊙h) = W_hnᵀ δa_n;  δr = δ(r⊙h) ⊙ h_{t-1};  δh_{t-1} gets δ(r⊙h) ⊙ r_t
    δa_z = δz ⊙ z(1 − z),  δa_r = δr ⊙ r(1 − r)
    δh_{t-1} = δh_t ⊙ (1 − z_t) + W_hhᵀ (recurrent pre-activation gradients)

Recurrent (variational) dropout: with a mask d (B, H) drawn once per sequence (scaled by 1/(1 − p)),
every product with W_hh (W_hz, W_hr, W_hn) sees d ⊙ h_{t-1} instead of h_{t-1} (classic variant:
r_t ⊙ (d ⊙ h_{t-1})); the carry (1 − z_t) ⊙ h_{t-1} is untouched. The W_hh-side terms of δh_{t-1}
are multiplied by d, and ∂L/∂W_hh uses d ⊙ h_{t-1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, project_inputs, sigmoid


class GRUCache(NamedTuple):
    """What the forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H) carried h, hs[0] = h0
    gates: np.ndarray  # (T, B, 3H) activated z, r, n
    hn: np.ndarray  # (T, B, H) reset_after: W_hn h_{t-1} + b_hn;  classic: r_t ⊙ h_{t-1}
    mask: np.ndarray | None  # (T, B, 1)
    rec_mask: np.ndarray | None = None  # (B, H) recurrent dropout mask d on h_{t-1}


@dataclass(frozen=True)
class GRUCell:
    """The gated recurrent unit; ``reset_after`` selects where the reset gate acts."""

    reset_after: bool = True

    gates = 3
    state_names = ("h",)

    def _step(self, xp_t: np.ndarray, h: np.ndarray, p: dict, rec_mask: np.ndarray | None = None):
        """One step from the input projection xp_t = W_xh x_t + b_h (B, 3H).

        Returns h_new and, for BPTT, the activated gates (B, 3H) and hn (B, H).
        """
        W_hh = p["W_hh"]
        H = W_hh.shape[1]
        a = xp_t.copy()
        hd = h if rec_mask is None else h * rec_mask  # what meets W_hh
        if self.reset_after:
            hp = hd @ W_hh.T  # (B, 3H)
            a[:, : 2 * H] += hp[:, : 2 * H]
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
            hn = hp[:, 2 * H :]
            if "b_hn" in p:
                hn += p["b_hn"]
            r = a[:, H : 2 * H]
        else:
            a[:, : 2 * H] += hd @ W_hh[: 2 * H].T
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
            r = a[:, H : 2 * H]
            hn = r * hd
        n = a[:, 2 * H :]
        n += r * hn if self.reset_after else hn @ W_hh[2 * H :].T
        np.tanh(n, out=n)
        z = a[:, :H]
        h_new = h + z * (n - h)
        return h_new, a, hn

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray], p: dict) -> tuple[np.ndarray]:
        """One time step: x_t (B, I), state (h_{t-1},) -> (h_t,)."""
        xp = x_t @ p["W_xh"].T
        if "b_h" in p:
            xp += p["b_h"]
        return (self._step(xp, state[0], p)[0],)

    def forward(
        self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None, rec_mask: np.ndarray | None = None
    ):
        """Run over a sequence: x (T, B, I), state0 (h0,) -> hs (T, B, H), (h_T,), cache.

        rec_mask : (B, H) recurrent dropout mask d on h_{t-1} where it meets W_hh (scaled), or None.
        """
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        xp = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, 3H)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        hn = np.empty((T, B, H), dtype=x.dtype)
        hs[0] = state0[0]
        for t in range(T):
            h_new, xp[t], hn[t] = self._step(xp[t], hs[t], p, rec_mask)
            if mask is None:
                hs[t + 1] = h_new
            else:
                hs[t + 1] = hs[t] + mask[t] * (h_new - hs[t])
        return hs[1:], (hs[T].copy(),), GRUCache(x, hs, xp, hn, mask, rec_mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: GRUCache, p: dict):
        """BPTT. d_hs (T, B, H); d_stateT (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, hs, gates, hn, mask, rm = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        z, r, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        h_prev = hs[:-1]
        hd_prev = h_prev if rm is None else h_prev * rm  # what met W_hh
        # Local derivatives in bulk over all t.
        d_sig_z, d_sig_r, d_tanh_n = z * (1 - z), r * (1 - r), 1 - n * n
        n_minus_h = n - h_prev
        one_minus_z = 1 - z
        da = np.empty_like(gates)  # (T, B, 3H) gradients of the input pre-activations
        da_h = np.empty_like(gates) if self.reset_after else None  # recurrent pre-activations
        dh = d_stateT[0].copy()
        W_hzr, W_hn = W_hh[: 2 * H], W_hh[2 * H :]
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            if mask is not None:
                m = mask[t]
                dh_keep = (1 - m) * dh
                dh = m * dh
            np.multiply(dh * n_minus_h[t], d_sig_z[t], out=da[t, :, :H])
            da_n = np.multiply(dh * z[t], d_tanh_n[t], out=da[t, :, 2 * H :])
            dh_prev = dh * one_minus_z[t]
            if self.reset_after:
                np.multiply(da_n * hn[t], d_sig_r[t], out=da[t, :, H : 2 * H])
                da_h[t, :, : 2 * H] = da[t, :, : 2 * H]
                np.multiply(da_n, r[t], out=da_h[t, :, 2 * H :])
                dh_rec = da_h[t] @ W_hh
            else:
                d_rh = da_n @ W_hn
                np.multiply(d_rh * hd_prev[t], d_sig_r[t], out=da[t, :, H : 2 * H])
                dh_rec = d_rh * r[t] + da[t, :, : 2 * H] @ W_hzr
            dh_prev += dh_rec if rm is None else dh_rec * rm
            dh = dh_prev
            if mask is not None:
                dh += dh_keep
        hp2 = hd_prev.reshape(T * B, H)
        if self.reset_after:
            grads = {"W_hh": da_h.reshape(T * B, 3 * H).T @ hp2}
            if "b_hn" in p:
                grads["b_hn"] = da_h[..., 2 * H :].reshape(T * B, H).sum(axis=0)
        else:
            dW_hzr = da[..., : 2 * H].reshape(T * B, 2 * H).T @ hp2
            dW_hn = da[..., 2 * H :].reshape(T * B, H).T @ hn.reshape(T * B, H)
            grads = {"W_hh": np.concatenate([dW_hzr, dW_hn], axis=0)}
        dx = input_gradients(da, x, p, grads, bias_key="b_h")
        return dx, (dh,), grads
