"""Compiled layer-normalised LSTM and GRU: the equations of :mod:`unrolled.cells.lstm_variant` (with
``layer_norm`` only: no peepholes, no projection) and :mod:`unrolled.cells.gru_variant`, float32 on the
Numba kernels ``ln_*`` of :mod:`unrolled.kernels._jit`.

:func:`unrolled.kernels.pick` returns :class:`CompiledLNLSTMCell` / :class:`CompiledLNGRUCell` for those
cells in float32 with Numba on; everything else about the variants (peepholes, a projection, float64,
zoneout's per-unit masks, recurrent dropout) stays on the reference. What differs from the reference (the
mathematics does not):

- The input side in bulk before the walk: u_t = W_xh x_t for all t (one product, in the chunks of the
  plain compiled cells), then LN(u_t; ln_x) + b_h row by row in one compiled call (β_x + b_h added as one
  vector).
- The walk: per step the recurrent product W_hh h_{t-1}, then one fused kernel for the recurrent LN, the
  gates, and (LSTM) the cell-state LN; the product chosen as for the plain compiled cells
  (:func:`_walk`): the whole walk in one compiled call with oneDNN's product (extra ``onednn``) for all
  but tiny steps, else with :func:`~unrolled.kernels._jit.matmul_nt` where
  :func:`~unrolled.kernels._jit.whole_sequence` says so, else one BLAS call and one kernel per step. tanh
  is the rational float32 approximation of the other compiled cells.
- The backward walks the steps in reverse with one fused kernel per step that also sums the recurrent
  (and LSTM cell-state) LN's ∂L/∂γ, ∂L/∂β (in float64) as it goes; b_hn's gradient likewise (GRU). After
  the walk, in bulk: ∂L/∂W_hh = Σ_t δv_t h_{t-1}ᵀ (one product), the input LN's backward and its
  ∂L/∂γ_x, ∂L/∂β_x in one compiled call, then ∂L/∂W_xh and ∂L/∂x.
- Lengths as in the plain compiled cells: a (T, B) validity array, a finished sequence keeps its state
  and passes its gradients through.
- The batch split across workers (:class:`~unrolled.kernels._split.BatchSplit`) applies as to the plain
  compiled cells: every cache field has the batch on axis 1 and the gradients of the slices add up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled import kernels
from unrolled.cells.bulk import input_gradients, outer_sum
from unrolled.kernels._common import bias_or_zeros, gate_affine, project_chunked, transpose, valid_steps
from unrolled.kernels._split import BatchSplit

# i, f, g, o: σ(a) = ½·tanh(a/2) + ½ for i, f, o; tanh(a) for g (as the compiled LSTM)
_PATTERN = (0.5, 0.5, 1.0, 0.5), (0.5, 0.5, 0.0, 0.5)


def _walk(jit, B: int, G: int, H: int):
    """The walk for batch B and G gates of size H: (forward walk, backward walk, forward weights, backward
    weights) of one compiled call over all T — oneDNN's (:func:`unrolled.kernels.walks_for`'s rule) or
    matmul_nt's — or None: a BLAS product and one step kernel per step."""
    name = "lstm" if G == 4 else "gru"
    if B * G * H * H > jit.SMALL_MACS and kernels.dnnl_walks() is not None:
        return (getattr(jit, f"ln_{name}_forward_seq_dnnl"), getattr(jit, f"ln_{name}_backward_seq_dnnl"),
                jit.dnnl_forward_weights, jit.dnnl_backward_weights)  # fmt: skip
    if jit.whole_sequence(B, G, H):
        return (getattr(jit, f"ln_{name}_forward_seq"), getattr(jit, f"ln_{name}_backward_seq"),
                jit.nt_forward_weights, jit.nt_backward_weights)  # fmt: skip
    return None


def _vec(p: dict, key: str, dtype) -> np.ndarray:
    return np.ascontiguousarray(p[key], dtype=dtype)


def _input_part(jit, x: np.ndarray, p: dict, bias_key: str):
    """LN(W_xh x_t; ln_x) + b_h for all t -> (a (T, B, G), û (T, B, G), ρ_u (T, B))."""
    T, B, _ = x.shape
    a = project_chunked(x, p["W_xh"], kernels.bulk_matmul(x.dtype))  # (T, B, G)
    G = a.shape[2]
    u_hat = np.empty_like(a)
    rho_u = np.empty((T, B), dtype=x.dtype)
    bias = _vec(p, "ln_x_b", x.dtype) + bias_or_zeros(p, bias_key, G, x.dtype)
    jit.ln_forward_rows(
        a.reshape(T * B, G), _vec(p, "ln_x_g", x.dtype), bias, u_hat.reshape(T * B, G), rho_u.reshape(T * B)
    )
    return a, u_hat, rho_u


def _input_backward(jit, da: np.ndarray, cache, p: dict, grads: dict) -> np.ndarray:
    """From δa_t (T, B, G) of LN(u_t; ln_x) + b_h: ∂L/∂b_h, ∂L/∂ln_x_{g,b}, ∂L/∂W_xh into grads; returns
    ∂L/∂x (T, B, I)."""
    T, B, G = da.shape
    dt = da.dtype
    if "b_h" in p:
        grads["b_h"] = da.reshape(T * B, G).sum(axis=0)
    du = np.empty_like(da)
    dparams = np.zeros((2, G))
    u_hat, rho_u = cache.u_hat.reshape(T * B, G), cache.rho_u.reshape(T * B)
    jit.ln_backward_rows(
        da.reshape(T * B, G), u_hat, rho_u, _vec(p, "ln_x_g", dt), du.reshape(T * B, G), dparams
    )
    grads["ln_x_g"], grads["ln_x_b"] = dparams[0].astype(dt), dparams[1].astype(dt)
    return input_gradients(du, cache.x, p, grads, bias_key="", matmul=kernels.bulk_matmul(dt))


class CompiledLNLSTMCache(NamedTuple):
    """What the compiled LN-LSTM forward keeps for BPTT (its type tells :func:`unrolled.kernels.owner`
    which backward matches it)."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H) carried h, hs[0] = h0
    cs: np.ndarray  # (T+1, B, H) carried c, cs[0] = c0
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    tanh_n: np.ndarray  # (T, B, H) tanh(LN(c̃_t; ln_c))
    u_hat: np.ndarray  # (T, B, 4H) input LN's û
    rho_u: np.ndarray  # (T, B) and its ρ
    v_hat: np.ndarray  # (T, B, 4H) recurrent LN's v̂
    rho_v: np.ndarray  # (T, B)
    n_hat: np.ndarray  # (T, B, H) cell LN's n̂
    rho_n: np.ndarray  # (T, B)
    mask: np.ndarray | None  # (T, B, 1)


class CompiledLNLSTMCell(BatchSplit):
    """Same signatures and results as :class:`unrolled.cells.LSTMVariantCell` with ``layer_norm=True``
    only, float32, on the Numba kernels of :mod:`unrolled.kernels._jit`."""

    gates = 4
    state_names = ("h", "c")
    cache_type = CompiledLNLSTMCache

    def __init__(self, ref) -> None:
        from unrolled.kernels import _jit  # Numba: imported only once this path is chosen

        self.ref, self.jit = ref, _jit

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h, c) -> (h_t, c_t) (a walk of one step)."""
        return self._forward(x_t[None], state, p, None)[1]

    def _forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0, c0) -> hs (T, B, H), (h_T, c_T), cache."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        dt = x.dtype
        gates, u_hat, rho_u = _input_part(jit, x, p, "b_h")  # (T, B, 4H)
        hs = np.empty((T + 1, B, H), dtype=dt)
        cs = np.empty((T + 1, B, H), dtype=dt)
        tanh_n = np.empty((T, B, H), dtype=dt)
        v_hat = np.empty_like(gates)
        n_hat = np.empty((T, B, H), dtype=dt)
        rho_v = np.empty((T, B), dtype=dt)
        rho_n = np.empty((T, B), dtype=dt)
        rec = np.empty((B, 4 * H), dtype=dt)
        hs[0], cs[0] = state0
        valid = valid_steps(mask, T, B, dt)
        scale, offset = gate_affine(_PATTERN, H, dt)
        hg, hb, cg, cb = (_vec(p, k, dt) for k in ("ln_h_g", "ln_h_b", "ln_c_g", "ln_c_b"))
        args = (scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid)
        walk = _walk(jit, B, 4, H)
        if walk is not None:  # the whole walk in one compiled call
            walk[0](gates, walk[2](p["W_hh"], B), *args, rec)
        else:
            WT = transpose(p["W_hh"])  # (H, 4H)
            for t in range(T):
                np.matmul(hs[t], WT, out=rec)
                jit.ln_lstm_forward_step(t, gates, rec, *args)
        cache = CompiledLNLSTMCache(x, hs, cs, gates, tanh_n, u_hat, rho_u, v_hat, rho_v, n_hat, rho_n, mask)
        return hs[1:], (hs[T].copy(), cs[T].copy()), cache

    def _infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward, its cache dropped: hs (T, B, H), (h_T, c_T), equal bit for bit to :meth:`_forward`."""
        hs, state_T, _ = self._forward(x, state0, p, mask)
        return hs, state_T

    def _backward(self, d_hs: np.ndarray, d_stateT, cache: CompiledLNLSTMCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT, d_cT) -> dx (T, B, I), (d_h0, d_c0), grads."""
        jit = self.jit
        gates = cache.gates
        T, B, H = d_hs.shape
        dt = gates.dtype
        W_hh = p["W_hh"]
        d_hs = np.ascontiguousarray(d_hs, dtype=dt)
        valid = valid_steps(cache.mask, T, B, dt)
        da = np.empty_like(gates)  # (T, B, 4H) δa_t
        dv = np.empty_like(gates)  # (T, B, 4H) δv_t, after the recurrent LN's backward
        dh_rec = np.zeros((B, H), dtype=dt)  # δv_{t+1} W_hh
        carry = np.array(d_stateT[0], dtype=dt)
        dc = np.array(d_stateT[1], dtype=dt)
        dh_params = np.zeros((2, 4 * H))  # ∂L/∂ln_h_g, ∂L/∂ln_h_b (float64 sums)
        dc_params = np.zeros((2, H))  # ∂L/∂ln_c_g, ∂L/∂ln_c_b
        hg, cg = _vec(p, "ln_h_g", dt), _vec(p, "ln_c_g", dt)
        c = cache
        args = (
            gates,
            c.cs,
            c.v_hat,
            c.rho_v,
            c.n_hat,
            c.rho_n,
            c.tanh_n,
            hg,
            cg,
            da,
            dv,
            dh_params,
            dc_params,
        )
        walk = _walk(jit, B, 4, H)
        if walk is not None:
            walk[1](d_hs, dh_rec, carry, dc, *args, valid, walk[3](W_hh, B))
        else:
            for t in range(T - 1, -1, -1):
                jit.ln_lstm_backward_step(t, d_hs, dh_rec, carry, dc, *args, valid)
                np.matmul(dv[t], W_hh, out=dh_rec)
        grads = {
            "W_hh": outer_sum(dv.reshape(T * B, 4 * H), c.hs[:-1].reshape(T * B, H), kernels.bulk_matmul(dt))
        }
        grads["ln_h_g"], grads["ln_h_b"] = dh_params[0].astype(dt), dh_params[1].astype(dt)
        grads["ln_c_g"], grads["ln_c_b"] = dc_params[0].astype(dt), dc_params[1].astype(dt)
        dx = _input_backward(jit, da, cache, p, grads)
        return dx, (dh_rec + carry, dc), grads


class CompiledLNGRUCache(NamedTuple):
    """What the compiled LN-GRU forward keeps for BPTT."""

    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H) carried h, hs[0] = h0
    gates: np.ndarray  # (T, B, 3H) activated z, r, h̃
    hn: np.ndarray  # (T, B, H) v_n + b_hn
    u_hat: np.ndarray  # (T, B, 3H) input LN's û
    rho_u: np.ndarray  # (T, B)
    v_hat: np.ndarray  # (T, B, 3H) recurrent LN's v̂
    rho_v: np.ndarray  # (T, B)
    mask: np.ndarray | None  # (T, B, 1)


class CompiledLNGRUCell(BatchSplit):
    """Same signatures and results as :class:`unrolled.cells.GRUVariantCell`, float32, on the Numba kernels
    of :mod:`unrolled.kernels._jit`."""

    gates = 3
    state_names = ("h",)
    cache_type = CompiledLNGRUCache

    def __init__(self, ref) -> None:
        from unrolled.kernels import _jit

        self.ref, self.jit = ref, _jit

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h,) -> (h_t,) (a walk of one step)."""
        return self._forward(x_t[None], state, p, None)[1]

    def _forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        dt = x.dtype
        gates, u_hat, rho_u = _input_part(jit, x, p, "b_h")  # (T, B, 3H)
        hs = np.empty((T + 1, B, H), dtype=dt)
        hn = np.empty((T, B, H), dtype=dt)
        v_hat = np.empty_like(gates)
        rho_v = np.empty((T, B), dtype=dt)
        rec = np.empty((B, 3 * H), dtype=dt)
        hs[0] = state0[0]
        valid = valid_steps(mask, T, B, dt)
        hg, hb = _vec(p, "ln_h_g", dt), _vec(p, "ln_h_b", dt)
        b_hn = bias_or_zeros(p, "b_hn", H, dt)
        args = (hg, hb, b_hn, hs, hn, v_hat, rho_v, valid)
        walk = _walk(jit, B, 3, H)
        if walk is not None:  # the whole walk in one compiled call
            walk[0](gates, walk[2](p["W_hh"], B), *args, rec)
        else:
            WT = transpose(p["W_hh"])  # (H, 3H)
            for t in range(T):
                np.matmul(hs[t], WT, out=rec)
                jit.ln_gru_forward_step(t, gates, rec, *args)
        cache = CompiledLNGRUCache(x, hs, gates, hn, u_hat, rho_u, v_hat, rho_v, mask)
        return hs[1:], (hs[T].copy(),), cache

    def _infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward, its cache dropped: hs (T, B, H), (h_T,), equal bit for bit to :meth:`_forward`."""
        hs, state_T, _ = self._forward(x, state0, p, mask)
        return hs, state_T

    def _backward(self, d_hs: np.ndarray, d_stateT, cache: CompiledLNGRUCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        jit = self.jit
        c = cache
        gates = c.gates
        T, B, H = d_hs.shape
        dt = gates.dtype
        W_hh = p["W_hh"]
        d_hs = np.ascontiguousarray(d_hs, dtype=dt)
        valid = valid_steps(c.mask, T, B, dt)
        du = np.empty_like(gates)  # (T, B, 3H) δa_t of the input side (δa_z, δa_r, δa_n)
        dw = np.empty_like(gates)  # (T, B, 3H) LN_backward(δv_t): the gradient of W_hh h_{t-1}
        dh_rec = np.zeros((B, H), dtype=dt)
        carry = np.array(d_stateT[0], dtype=dt)
        dh_params = np.zeros((2, 3 * H))  # ∂L/∂ln_h_g, ∂L/∂ln_h_b (float64 sums)
        d_bhn = np.zeros(H)
        hg = _vec(p, "ln_h_g", dt)
        args = (gates, c.hs, c.hn, c.v_hat, c.rho_v, hg, du, dw, dh_params, d_bhn, valid)
        walk = _walk(jit, B, 3, H)
        if walk is not None:
            walk[1](d_hs, dh_rec, carry, *args, walk[3](W_hh, B))
        else:
            for t in range(T - 1, -1, -1):
                jit.ln_gru_backward_step(t, d_hs, dh_rec, carry, *args)
                np.matmul(dw[t], W_hh, out=dh_rec)
        grads = {
            "W_hh": outer_sum(dw.reshape(T * B, 3 * H), c.hs[:-1].reshape(T * B, H), kernels.bulk_matmul(dt))
        }
        if "b_hn" in p:
            grads["b_hn"] = d_bhn.astype(dt)
        grads["ln_h_g"], grads["ln_h_b"] = dh_params[0].astype(dt), dh_params[1].astype(dt)
        dx = _input_backward(jit, du, cache, p, grads)
        return dx, (dh_rec + carry,), grads
