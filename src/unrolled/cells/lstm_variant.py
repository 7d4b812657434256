"""The LSTM variants: layer normalisation, peepholes, a projection, and per-unit update masks (zoneout).

One cell, :class:`LSTMVariantCell`, with each option on or off (all off is the plain LSTM of
:mod:`unrolled.cells.lstm`). Gate order i, f, g, o; H the cell width, P the width of h (P = H without a
projection). Parameters: W_xh (4H, I), W_hh (4H, P), b_h (4H,); with ``peephole`` p_i, p_f, p_o (H,) each;
with ``proj_size`` W_hr (P, H); with ``layer_norm`` ln_x_g, ln_x_b, ln_h_g, ln_h_b (4H,),
ln_c_g, ln_c_b (H,)::

    u_t = W_xh x_t,  v_t = W_hh h_{t-1}
    layer_norm:  a_t = LN(u_t; ln_x) + LN(v_t; ln_h) + b_h     (Ba et al. 2016: LN over all 4H
                                                                 pre-activations at once, as haste's)
    otherwise:   a_t = u_t + v_t + b_h
    peephole:    a_i += p_i ⊙ c_{t-1},  a_f += p_f ⊙ c_{t-1}     (Gers & Schmidhuber 2000; ONNX's P input)
    i = σ(a_i), f = σ(a_f), g = tanh(a_g)
    c̃_t = f ⊙ c_{t-1} + i ⊙ g
    peephole:    a_o += p_o ⊙ c̃_t                              (o looks at the new cell)
    o = σ(a_o)
    n_t = LN(c̃_t; ln_c) with layer_norm, else c̃_t
    r_t = o ⊙ tanh(n_t)
    h̃_t = W_hr r_t with proj_size (Sak et al. 2014; torch.nn.LSTM(proj_size=P)), else r_t
    h_t = h_{t-1} + m^h_t ⊙ (h̃_t − h_{t-1}),   c_t = c_{t-1} + m^c_t ⊙ (c̃_t − c_{t-1})

The update masks m^h (T, B, P) and m^c (T, B, H) are the layer's: 1 on every valid step without zoneout,
0 past a sequence's length, and with zoneout (Krueger et al. 2017) 1 − d_t for a Bernoulli(p) keep-mask d_t
in training and 1 − p in evaluation (the expectation). LN is :mod:`unrolled.cells.layernorm`.

Backward through time, with δh_t (P), δc_t (H) the total gradients reaching the carried h_t, c_t::

    δh̃ = m^h ⊙ δh_t, δh_{t-1} ← (1 − m^h) ⊙ δh_t;   δc̃ = m^c ⊙ δc_t, δc_{t-1} ← (1 − m^c) ⊙ δc_t
    δr = W_hrᵀ δh̃ (proj) else δh̃;          ∂L/∂W_hr = Σ_t δh̃_t r_tᵀ
    δo = δr ⊙ tanh(n_t);  δn = δr ⊙ o ⊙ (1 − tanh²(n_t))
    δc̃ += LN_backward(δn) (layer_norm; ∂L/∂ln_c_g = Σ δn ⊙ n̂, ∂L/∂ln_c_b = Σ δn) else δn
    δa_o = δo ⊙ o(1 − o);  peephole: δc̃ += p_o ⊙ δa_o,  ∂L/∂p_o = Σ δa_o ⊙ c̃_t
    δa_i = δc̃ ⊙ g ⊙ i(1 − i),  δa_f = δc̃ ⊙ c_{t-1} ⊙ f(1 − f),  δa_g = δc̃ ⊙ i ⊙ (1 − g²)
    δc_{t-1} += f ⊙ δc̃ (+ p_i ⊙ δa_i + p_f ⊙ δa_f with peepholes; ∂L/∂p_{i,f} = Σ δa_{i,f} ⊙ c_{t-1})
    ∂L/∂b_h = Σ_t δa_t
    δv_t = LN_backward(δa_t) (layer_norm; ∂L/∂ln_h_{g,b} as for ln_c) else δa_t
    δh_{t-1} += W_hhᵀ δv_t,  ∂L/∂W_hh = Σ_t δv_t h_{t-1}ᵀ
    δu_t = LN_backward(δa_t) (layer_norm, in bulk over all t) else δa_t
    ∂L/∂W_xh = Σ_t δu_t x_tᵀ,  ∂L/∂x_t = W_xhᵀ δu_t

Recurrent (variational) dropout: v_t = W_hh (d ⊙ h_{t-1}) with the layer's (B, P) mask d; then δh_{t-1}
gets d ⊙ W_hhᵀ δv_t and ∂L/∂W_hh uses d ⊙ h_{t-1}.

With ``layer_norm`` alone (no peepholes, no projection), in float32 with Numba, :func:`unrolled.kernels.pick`
runs the compiled :class:`unrolled.kernels.layernorm.CompiledLNLSTMCell` instead (same results); every other
configuration runs this cell as it is (it is not the plain LSTM, so no plain compiled walk may stand in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, sigmoid
from unrolled.cells.layernorm import ln_backward, ln_forward, ln_param_grads


class LSTMVariantCache(NamedTuple):
    """What the forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, P) carried h, hs[0] = h0
    cs: np.ndarray  # (T+1, B, H) carried c, cs[0] = c0
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    c_new: np.ndarray  # (T, B, H) c̃_t before the update mask
    tanh_n: np.ndarray  # (T, B, H) tanh(n_t)
    r: np.ndarray | None  # (T, B, H) r_t = o ⊙ tanh(n_t) with a projection (for ∂L/∂W_hr), else None
    ln: tuple | None  # layer_norm: (û (T,B,4H), ρ_u, v̂ (T,B,4H), ρ_v, n̂ (T,B,H), ρ_n)
    mask: tuple | None  # (m^h, m^c) update masks, each (T, B, 1) or (T, B, width), or None
    rec_mask: np.ndarray | None = None  # (B, P) recurrent dropout mask d on h_{t-1}


def split_masks(mask) -> tuple:
    """A cell's ``mask`` argument as (m^h, m^c): None stays None; one array serves both states; a pair is
    one per state."""
    if mask is None:
        return None
    if isinstance(mask, tuple | list):
        return tuple(mask)
    return (mask, mask)


@dataclass(frozen=True)
class LSTMVariantCell:
    """LSTM with layer normalisation, peepholes and/or a projection (see the module's equations)."""

    layer_norm: bool = False
    peephole: bool = False
    proj_size: int = 0

    gates = 4
    state_names = ("h", "c")

    def extra_params(self, H: int) -> dict[str, tuple[int, ...]]:
        """The shapes of the parameters beyond W_xh, W_hh, b_h for a cell width H (W_hr needs P: given)."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.peephole:
            shapes.update(p_i=(H,), p_f=(H,), p_o=(H,))
        if self.proj_size:
            shapes["W_hr"] = (self.proj_size, H)
        if self.layer_norm:
            shapes.update(ln_x_g=(4 * H,), ln_x_b=(4 * H,), ln_h_g=(4 * H,), ln_h_b=(4 * H,))
            shapes.update(ln_c_g=(H,), ln_c_b=(H,))
        return shapes

    def _input_part(self, x: np.ndarray, p: dict):
        """LN(W_xh x_t; ln_x) + b_h (or W_xh x_t + b_h) for all t, and the LN's (û, ρ)."""
        T, B, I = x.shape
        u = (x.reshape(T * B, I) @ p["W_xh"].T).reshape(T, B, -1)
        stats = None
        if self.layer_norm:
            u, u_hat, rho = ln_forward(u, p["ln_x_g"], p["ln_x_b"])
            stats = (u_hat, rho)
        if "b_h" in p:
            u += p["b_h"]
        return u, stats

    def _gates(self, a: np.ndarray, h_in: np.ndarray, c: np.ndarray, p: dict):
        """From the input part a (B, 4H, written over), h_in (what meets W_hh) and c_{t-1}: the activated
        gates in a, c̃_t, n_t's tanh, r_t and the recurrent LN's (v̂, ρ)."""
        H = c.shape[1]
        v = h_in @ p["W_hh"].T
        v_stats = None
        if self.layer_norm:
            v, v_hat, rho = ln_forward(v, p["ln_h_g"], p["ln_h_b"])
            v_stats = (v_hat, rho)
        a += v
        if self.peephole:
            a[:, :H] += p["p_i"] * c
            a[:, H : 2 * H] += p["p_f"] * c
        sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
        np.tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
        i, f, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H]
        c_new = f * c + i * g
        if self.peephole:
            a[:, 3 * H :] += p["p_o"] * c_new
        sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])
        n_stats = None
        n = c_new
        if self.layer_norm:
            n, n_hat, rho_n = ln_forward(c_new, p["ln_c_g"], p["ln_c_b"])
            n_stats = (n_hat, rho_n)
        tanh_n = np.tanh(n)
        r = a[:, 3 * H :] * tanh_n
        return c_new, tanh_n, r, v_stats, n_stats

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray, np.ndarray], p: dict):
        """One time step: x_t (B, I), state (h_{t-1}, c_{t-1}) -> (h̃_t, c̃_t) (no update mask)."""
        h, c = state
        a, _ = self._input_part(x_t[None], p)
        c_new, _, r, _, _ = self._gates(a[0], h, c, p)
        return (r @ p["W_hr"].T if self.proj_size else r), c_new

    def forward(self, x: np.ndarray, state0, p: dict, mask, rec_mask: np.ndarray | None = None):
        """Run over a sequence: x (T, B, I), state0 (h0 (B, P), c0 (B, H)) -> hs (T, B, P), (h_T, c_T), cache.

        mask : None, one update mask for both states ((T, B, 1) lengths, or per unit), or a pair (m^h, m^c).
        rec_mask : (B, P) recurrent dropout mask d on h_{t-1} where it meets W_hh (scaled), or None.
        """
        T, B, _ = x.shape
        H = p["W_hh"].shape[0] // 4
        P = p["W_hh"].shape[1]
        masks = split_masks(mask)
        gates, x_stats = self._input_part(x, p)
        hs = np.empty((T + 1, B, P), dtype=x.dtype)
        cs = np.empty((T + 1, B, H), dtype=x.dtype)
        c_news = np.empty((T, B, H), dtype=x.dtype)
        tanh_n = np.empty((T, B, H), dtype=x.dtype)
        rs = np.empty((T, B, H), dtype=x.dtype) if self.proj_size else None
        ln = None
        if self.layer_norm:
            v_hat = np.empty((T, B, 4 * H), dtype=x.dtype)
            rho_v = np.empty((T, B, 1), dtype=x.dtype)
            n_hat = np.empty((T, B, H), dtype=x.dtype)
            rho_n = np.empty((T, B, 1), dtype=x.dtype)
            ln = (x_stats[0], x_stats[1], v_hat, rho_v, n_hat, rho_n)
        hs[0], cs[0] = state0
        for t in range(T):
            h_in = hs[t] if rec_mask is None else hs[t] * rec_mask
            c_new, tanh_n[t], r, v_st, n_st = self._gates(gates[t], h_in, cs[t], p)
            c_news[t] = c_new
            if self.layer_norm:
                v_hat[t], rho_v[t] = v_st
                n_hat[t], rho_n[t] = n_st
            if self.proj_size:
                rs[t] = r
                h_new = r @ p["W_hr"].T
            else:
                h_new = r
            if masks is None:
                hs[t + 1], cs[t + 1] = h_new, c_new
            else:
                hs[t + 1] = hs[t] + masks[0][t] * (h_new - hs[t])
                cs[t + 1] = cs[t] + masks[1][t] * (c_new - cs[t])
        cache = LSTMVariantCache(x, hs, cs, gates, c_news, tanh_n, rs, ln, masks, rec_mask)
        return hs[1:], (hs[T].copy(), cs[T].copy()), cache

    def backward(self, d_hs: np.ndarray, d_stateT, cache: LSTMVariantCache, p: dict):
        """BPTT. d_hs (T, B, P); d_stateT (d_hT, d_cT) -> dx (T, B, I), (d_h0, d_c0), grads."""
        x, hs, cs, gates, c_news, tanh_n, rs, ln, masks, rm = cache
        T, B, P = d_hs.shape
        H = cs.shape[2]
        W_hh = p["W_hh"]
        i, f, g, o = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H : 3 * H], gates[..., 3 * H :]
        d_sig_i, d_sig_f, d_sig_o = i * (1 - i), f * (1 - f), o * (1 - o)
        d_tanh_g = 1 - g * g
        o_dtanh_n = o * (1 - tanh_n * tanh_n)
        da = np.empty_like(gates)  # (T, B, 4H) δa_t
        dv = np.empty_like(gates) if self.layer_norm else da  # δv_t (after the recurrent LN's backward)
        dn = np.empty_like(c_news) if self.layer_norm else None  # δn_t, for ln_c's gradients
        dh_new = np.empty_like(d_hs) if self.proj_size else None  # δh̃_t, for ∂L/∂W_hr
        dh = d_stateT[0].copy()
        dc = d_stateT[1].copy()
        for t in range(T - 1, -1, -1):
            dh = dh + d_hs[t]
            if masks is not None:
                mh, mc = masks[0][t], masks[1][t]
                dh_keep, dc_keep = (1 - mh) * dh, (1 - mc) * dc
                dh, dc = mh * dh, mc * dc
            if self.proj_size:
                dh_new[t] = dh
                dr = dh @ p["W_hr"]
            else:
                dr = dh
            np.multiply(dr * tanh_n[t], d_sig_o[t], out=da[t, :, 3 * H :])
            dnt = dr * o_dtanh_n[t]
            if self.layer_norm:
                dn[t] = dnt
                dc = dc + ln_backward(dnt, ln[4][t], ln[5][t], p["ln_c_g"])
            else:
                dc = dc + dnt
            if self.peephole:
                dc = dc + p["p_o"] * da[t, :, 3 * H :]
            np.multiply(dc * g[t], d_sig_i[t], out=da[t, :, :H])
            np.multiply(dc * cs[t], d_sig_f[t], out=da[t, :, H : 2 * H])
            np.multiply(dc * i[t], d_tanh_g[t], out=da[t, :, 2 * H : 3 * H])
            dc = dc * f[t]
            if self.peephole:
                dc += p["p_i"] * da[t, :, :H] + p["p_f"] * da[t, :, H : 2 * H]
            if self.layer_norm:
                dv[t] = ln_backward(da[t], ln[2][t], ln[3][t], p["ln_h_g"])
            dh = dv[t] @ W_hh
            if rm is not None:
                dh *= rm
            if masks is not None:
                dh += dh_keep
                dc += dc_keep
        h_prev = hs[:-1] if rm is None else hs[:-1] * rm
        grads = {"W_hh": dv.reshape(T * B, 4 * H).T @ h_prev.reshape(T * B, P)}
        if "b_h" in p:
            grads["b_h"] = da.reshape(T * B, 4 * H).sum(axis=0)
        if self.proj_size:
            grads["W_hr"] = dh_new.reshape(T * B, P).T @ rs.reshape(T * B, H)
        if self.peephole:
            c_prev = cs[:-1]
            grads["p_i"] = (da[..., :H] * c_prev).reshape(T * B, H).sum(axis=0)
            grads["p_f"] = (da[..., H : 2 * H] * c_prev).reshape(T * B, H).sum(axis=0)
            grads["p_o"] = (da[..., 3 * H :] * c_news).reshape(T * B, H).sum(axis=0)
        du = da
        if self.layer_norm:
            grads["ln_c_g"], grads["ln_c_b"] = ln_param_grads(dn, ln[4])
            grads["ln_h_g"], grads["ln_h_b"] = ln_param_grads(da, ln[2])
            grads["ln_x_g"], grads["ln_x_b"] = ln_param_grads(da, ln[0])
            du = ln_backward(da, ln[0], ln[1], p["ln_x_g"])
        dx = input_gradients(du, x, p, grads, bias_key="")  # b_h's gradient is Σ δa, set above
        return dx, (dh, dc), grads
