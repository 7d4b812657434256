"""The layer-normalised GRU (Ba et al. 2016's recipe applied to the GRU; reset_after form only).

Gate order z, r, n as in :mod:`unrolled.cells.gru` (z weights the candidate). Parameters W_xh (3H, I),
W_hh (3H, H), b_h (3H,), b_hn (H,), and ln_x_g, ln_x_b, ln_h_g, ln_h_b (3H,)::

    u_t = LN(W_xh x_t; ln_x) + b_h              (LN over all 3H pre-activations at once)
    v_t = LN(W_hh h_{t-1}; ln_h),  v_n += b_hn
    z = σ(u_z + v_z),  r = σ(u_r + v_r),  h̃_t = tanh(u_n + r ⊙ v_n)
    h_t = h_{t-1} + m_t ⊙ z ⊙ (h̃_t − h_{t-1})

m_t (T, B, 1 or H) is the layer's update mask (lengths; zoneout: 1 − d_t in training, 1 − p in evaluation),
so with m = 1 this is h_t = (1 − z) ⊙ h_{t-1} + z ⊙ h̃_t.

Backward through time (δh_t the total gradient reaching the carried h_t)::

    δh_t ← m ⊙ δh_t, and (1 − m) ⊙ δh_t goes straight to h_{t-1}
    δa_z = δh_t ⊙ (h̃ − h_{t-1}) ⊙ z(1 − z),  δa_n = δh_t ⊙ z ⊙ (1 − h̃²),  δa_r = δa_n ⊙ v_n ⊙ r(1 − r)
    δu = (δa_z, δa_r, δa_n),  δv = (δa_z, δa_r, r ⊙ δa_n)
    ∂L/∂b_h = Σ δu,  ∂L/∂b_hn = Σ δv_n,  ∂L/∂ln_h_{g,b} = Σ δv ⊙ v̂, Σ δv  (ln_x the same with δu, û)
    δh_{t-1} += δh_t ⊙ (1 − z) + W_hhᵀ LN_backward(δv)
    ∂L/∂W_hh = Σ_t LN_backward(δv_t) h_{t-1}ᵀ,  ∂L/∂W_xh = Σ_t LN_backward(δu_t) x_tᵀ

Recurrent dropout: W_hh meets d ⊙ h_{t-1}, as in the plain GRU.
In float32 with Numba :func:`unrolled.kernels.pick` runs the compiled
:class:`unrolled.kernels.layernorm.CompiledLNGRUCell` instead (same results); no NumPy fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, sigmoid
from unrolled.cells.layernorm import ln_backward, ln_forward, ln_param_grads


class GRUVariantCache(NamedTuple):
    """What the forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H) carried h, hs[0] = h0
    gates: np.ndarray  # (T, B, 3H) activated z, r, n
    vn: np.ndarray  # (T, B, H) v_n (LN'd W_hn h_{t-1} + b_hn)
    u_hat: np.ndarray  # (T, B, 3H), and its ρ below
    rho_u: np.ndarray  # (T, B, 1)
    v_hat: np.ndarray  # (T, B, 3H)
    rho_v: np.ndarray  # (T, B, 1)
    mask: np.ndarray | None  # (T, B, 1) or (T, B, H)
    rec_mask: np.ndarray | None = None  # (B, H)


@dataclass(frozen=True)
class GRUVariantCell:
    """The GRU (reset_after) with layer normalisation on the input and recurrent pre-activations."""

    layer_norm: bool = True
    reset_after: bool = True  # the only form it has; named so the layer and the bridges can read it

    gates = 3
    state_names = ("h",)

    def extra_params(self, H: int) -> dict[str, tuple[int, ...]]:
        """The shapes of the parameters beyond W_xh, W_hh, b_h, b_hn for a width H."""
        return {"ln_x_g": (3 * H,), "ln_x_b": (3 * H,), "ln_h_g": (3 * H,), "ln_h_b": (3 * H,)}

    def _input_part(self, x: np.ndarray, p: dict):
        T, B, I = x.shape
        u = (x.reshape(T * B, I) @ p["W_xh"].T).reshape(T, B, -1)
        u, u_hat, rho = ln_forward(u, p["ln_x_g"], p["ln_x_b"])
        if "b_h" in p:
            u += p["b_h"]
        return u, u_hat, rho

    def _step(self, a: np.ndarray, h: np.ndarray, h_in: np.ndarray, p: dict):
        """a (B, 3H) the input part, written over with the activated gates; returns h_new, v_n, v̂, ρ."""
        H = h.shape[1]
        v, v_hat, rho = ln_forward(h_in @ p["W_hh"].T, p["ln_h_g"], p["ln_h_b"])
        vn = v[:, 2 * H :]
        if "b_hn" in p:
            vn = vn + p["b_hn"]
        a[:, : 2 * H] += v[:, : 2 * H]
        sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
        a[:, 2 * H :] += a[:, H : 2 * H] * vn
        np.tanh(a[:, 2 * H :], out=a[:, 2 * H :])
        h_new = h + a[:, :H] * (a[:, 2 * H :] - h)
        return h_new, vn, v_hat, rho

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray], p: dict) -> tuple[np.ndarray]:
        """One time step: x_t (B, I), state (h_{t-1},) -> (h_t,) (no update mask)."""
        a = self._input_part(x_t[None], p)[0][0]
        return (self._step(a, state[0], state[0], p)[0],)

    def forward(self, x: np.ndarray, state0, p: dict, mask, rec_mask: np.ndarray | None = None):
        """Run over a sequence: x (T, B, I), state0 (h0,) -> hs (T, B, H), (h_T,), cache.

        mask : (T, B, 1) or per-unit (T, B, H) update mask, or None.  rec_mask : (B, H) or None.
        """
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        gates, u_hat, rho_u = self._input_part(x, p)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        vn = np.empty((T, B, H), dtype=x.dtype)
        v_hat = np.empty((T, B, 3 * H), dtype=x.dtype)
        rho_v = np.empty((T, B, 1), dtype=x.dtype)
        hs[0] = state0[0]
        for t in range(T):
            h_in = hs[t] if rec_mask is None else hs[t] * rec_mask
            h_new, vn[t], v_hat[t], rho_v[t] = self._step(gates[t], hs[t], h_in, p)
            hs[t + 1] = h_new if mask is None else hs[t] + mask[t] * (h_new - hs[t])
        cache = GRUVariantCache(x, hs, gates, vn, u_hat, rho_u, v_hat, rho_v, mask, rec_mask)
        return hs[1:], (hs[T].copy(),), cache

    def backward(self, d_hs: np.ndarray, d_stateT, cache: GRUVariantCache, p: dict):
        """BPTT. d_hs (T, B, H); d_stateT (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, hs, gates, vn, u_hat, rho_u, v_hat, rho_v, mask, rm = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        z, r, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        h_prev = hs[:-1]
        d_sig_z, d_sig_r, d_tanh_n = z * (1 - z), r * (1 - r), 1 - n * n
        du = np.empty_like(gates)  # δu_t (T, B, 3H)
        dv = np.empty_like(gates)  # δv_t, before the recurrent LN's backward
        dw = np.empty_like(gates)  # LN_backward(δv_t): the gradient of W_hh h_{t-1}
        dh = d_stateT[0].copy()
        for t in range(T - 1, -1, -1):
            dh = dh + d_hs[t]
            if mask is not None:
                dh_keep = (1 - mask[t]) * dh
                dh = mask[t] * dh
            np.multiply(dh * (n[t] - h_prev[t]), d_sig_z[t], out=du[t, :, :H])
            da_n = np.multiply(dh * z[t], d_tanh_n[t], out=du[t, :, 2 * H :])
            np.multiply(da_n * vn[t], d_sig_r[t], out=du[t, :, H : 2 * H])
            dv[t, :, : 2 * H] = du[t, :, : 2 * H]
            np.multiply(da_n, r[t], out=dv[t, :, 2 * H :])
            dw[t] = ln_backward(dv[t], v_hat[t], rho_v[t], p["ln_h_g"])
            dh_rec = dw[t] @ W_hh
            dh = dh * (1 - z[t]) + (dh_rec if rm is None else dh_rec * rm)
            if mask is not None:
                dh += dh_keep
        hd_prev = h_prev if rm is None else h_prev * rm
        grads = {"W_hh": dw.reshape(T * B, 3 * H).T @ hd_prev.reshape(T * B, H)}
        if "b_h" in p:
            grads["b_h"] = du.reshape(T * B, 3 * H).sum(axis=0)
        if "b_hn" in p:
            grads["b_hn"] = dv[..., 2 * H :].reshape(T * B, H).sum(axis=0)
        grads["ln_h_g"], grads["ln_h_b"] = ln_param_grads(dv, v_hat)
        grads["ln_x_g"], grads["ln_x_b"] = ln_param_grads(du, u_hat)
        dx = input_gradients(ln_backward(du, u_hat, rho_u, p["ln_x_g"]), x, p, grads, bias_key="")
        return dx, (dh,), grads
