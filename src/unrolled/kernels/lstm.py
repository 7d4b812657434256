"""Fast LSTM: the equations of :mod:`unrolled.cells.lstm`, with fewer NumPy calls per step.

Two classes, one per path (:func:`unrolled.kernels.pick` chooses): :class:`FastLSTMCell`, NumPy (float64,
or float32 without Numba), and :class:`CompiledLSTMCell`, float32 on the Numba kernels of
:mod:`unrolled.kernels._jit`. What differs from the reference (the mathematics does not):

- σ(a) = ½(1 + tanh(a/2)). NumPy path: the i, f, o rows of W_xh, W_hh and b_h are scaled by ½ once per call
  (exact in binary floating point), so the pre-activations arrive as [a_i/2, a_f/2, a_g, a_o/2] and one
  ``np.tanh`` over the whole (B, 4H) block, then one multiply and one add by constant vectors, give
  i, f, g, o. Compiled path: the same per element, v = s·tanh(s·a) + o with s = ½, o = ½ for the sigmoids.
- Compiled path: tanh is a rational float32 approximation (≤ 6 ulps, see :mod:`~unrolled.kernels._jit`);
  b_h is added inside the gate kernel; the walk over time is one compiled call where
  :func:`~unrolled.kernels.walks_for` says so (recurrent product by oneDNN or matmul_nt), else a BLAS
  product and one gate kernel per step; the input projections and ∂L/∂x use oneDNN's product when loaded.
- Every per-step product writes into a preallocated buffer (``out=``); W_hhᵀ is made contiguous once.
- The NumPy backward precomputes, over all T at once, every factor that does not depend on the recursion:
  P = [g⊙σ'(a_i), c_{t-1}⊙σ'(a_f), i⊙(1 − g²), tanh(c_t)⊙σ'(a_o)] and o⊙(1 − tanh²(c_t)), so a step is
  δa_{i,f,g} = P ⊙ δc (one broadcast multiply), δa_o = P_o ⊙ δh, δc ← δc ⊙ f, δh ← δa W_hh. The compiled
  backward computes the same factors per step, fused in one pass.
- Steps where every sequence is still running skip the length mask entirely (NumPy path); the compiled
  kernels take a (T, B) validity array instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled import kernels
from unrolled.cells.bulk import input_gradients, project_inputs
from unrolled.kernels import _units
from unrolled.kernels._common import (
    as_vector,
    bias_or_zeros,
    chunk_steps,
    gate_affine,
    project_head,
    project_started,
    scratch,
    step_masks,
    transpose,
    valid_steps,
)
from unrolled.kernels._split import BatchSplit


class FastLSTMCache(NamedTuple):
    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H)
    cs: np.ndarray  # (T+1, B, H)
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    tanh_c: np.ndarray  # (T, B, H)
    mask: np.ndarray | None  # (T, B, 1)


# i, f, g, o: the sigmoid gates take a/2 (then ½·tanh + ½), the candidate g takes a (then 1·tanh + 0).
_PATTERN = (0.5, 0.5, 1.0, 0.5), (0.5, 0.5, 0.0, 0.5)


class FastLSTMCell:
    """Same signatures and results as :class:`unrolled.cells.LSTMCell`."""

    gates = 4
    state_names = ("h", "c")
    cache_type = FastLSTMCache

    def __init__(self, ref) -> None:
        self.ref = ref

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h, c) -> (h_t, c_t)."""
        h, c = state
        H = h.shape[1]
        scale, offset = gate_affine(_PATTERN, H, x_t.dtype)
        a = np.matmul(x_t, p["W_xh"].T)  # (B, 4H)
        a += np.matmul(h, p["W_hh"].T)
        if "b_h" in p:
            a += p["b_h"]
        a *= scale
        np.tanh(a, out=a)
        a *= scale
        a += offset
        c_new = a[:, H : 2 * H] * c
        c_new += a[:, :H] * a[:, 2 * H : 3 * H]
        h_new = np.tanh(c_new)
        h_new *= a[:, 3 * H :]
        return h_new, c_new

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0, c0) -> hs (T, B, H), (h_T, c_T), cache."""
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        scale, offset = gate_affine(_PATTERN, H, x.dtype)
        b = p["b_h"] * scale if "b_h" in p else None
        gates = project_inputs(x, p["W_xh"] * scale[:, None], b)  # (T, B, 4H) [a_i/2, a_f/2, a_g, a_o/2]
        WT = transpose(p["W_hh"] * scale[:, None])  # (H, 4H)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        cs = np.empty((T + 1, B, H), dtype=x.dtype)
        tanh_c = np.empty((T, B, H), dtype=x.dtype)
        rec = np.empty((B, 4 * H), dtype=x.dtype)
        ig = np.empty((B, H), dtype=x.dtype)
        hs[0], cs[0] = state0
        invalid = step_masks(mask)
        for t in range(T):
            a = gates[t]
            np.matmul(hs[t], WT, out=rec)
            a += rec
            np.tanh(a, out=a)
            a *= scale
            a += offset  # a = [i, f, g, o]
            np.multiply(a[:, H : 2 * H], cs[t], out=cs[t + 1])
            np.multiply(a[:, :H], a[:, 2 * H : 3 * H], out=ig)
            cs[t + 1] += ig
            np.tanh(cs[t + 1], out=tanh_c[t])
            np.multiply(a[:, 3 * H :], tanh_c[t], out=hs[t + 1])
            if invalid[t] is not None:  # finished sequences keep their state
                np.copyto(hs[t + 1], hs[t], where=invalid[t])
                np.copyto(cs[t + 1], cs[t], where=invalid[t])
        return hs[1:], (hs[T].copy(), cs[T].copy()), FastLSTMCache(x, hs, cs, gates, tanh_c, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: FastLSTMCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT, d_cT) -> dx (T, B, I), (d_h0, d_c0), grads."""
        x, hs, cs, gates, tanh_c, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        # Everything that does not depend on the recursion, in bulk over all t.
        P = gates * (1 - gates)  # σ' for i, f, o (the g block is overwritten below)
        g = gates[..., 2 * H : 3 * H]
        P[..., :H] *= g
        P[..., H : 2 * H] *= cs[:-1]
        np.multiply(g, g, out=P[..., 2 * H : 3 * H])
        np.subtract(1, P[..., 2 * H : 3 * H], out=P[..., 2 * H : 3 * H])
        P[..., 2 * H : 3 * H] *= gates[..., :H]
        P[..., 3 * H :] *= tanh_c
        o_dtanh_c = tanh_c * tanh_c
        np.subtract(1, o_dtanh_c, out=o_dtanh_c)
        o_dtanh_c *= gates[..., 3 * H :]
        P4 = P.reshape(T, B, 4, H)
        da = np.empty_like(gates)  # (T, B, 4H)
        da4 = da.reshape(T, B, 4, H)
        dh = d_stateT[0].copy()
        dc = d_stateT[1].copy()
        tmp = np.empty((B, H), dtype=dh.dtype)
        invalid = step_masks(mask)
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            inv = invalid[t]
            if inv is not None:  # a finished sequence passes its gradients through unchanged
                dh_keep, dc_keep = dh.copy(), dc.copy()
                dh[inv[:, 0]] = 0
                dc[inv[:, 0]] = 0
            np.multiply(dh, o_dtanh_c[t], out=tmp)
            dc += tmp
            np.multiply(P4[t, :, :3], dc[:, None, :], out=da4[t, :, :3])  # δa_i, δa_f, δa_g
            np.multiply(P4[t, :, 3], dh, out=da4[t, :, 3])  # δa_o
            dc *= gates[t, :, H : 2 * H]
            np.matmul(da[t], W_hh, out=dh)
            if inv is not None:
                np.copyto(dh, dh_keep, where=inv)
                np.copyto(dc, dc_keep, where=inv)
        grads = {"W_hh": da.reshape(T * B, 4 * H).T @ hs[:-1].reshape(T * B, H)}
        dx = input_gradients(da, x, p, grads, bias_key="b_h")
        return dx, (dh, dc), grads


class CompiledLSTMCache(FastLSTMCache):
    """The compiled path's cache: the same fields; its type tells :func:`unrolled.kernels.owner` which
    backward matches it."""

    __slots__ = ()


class CompiledLSTMCell(BatchSplit):
    """Same signatures and results as :class:`unrolled.cells.LSTMCell`, float32 only, on the Numba kernels
    of :mod:`unrolled.kernels._jit` (built by :func:`unrolled.kernels.pick` only where they are in use)."""

    gates = 4
    state_names = ("h", "c")
    cache_type = CompiledLSTMCache
    bias_names = ("b_h",)  # in the order the streaming stack kernel takes them

    def __init__(self, ref) -> None:
        from unrolled.kernels import _jit  # Numba: imported only once this path is chosen

        self.ref, self.jit = ref, _jit

    def stack_kernel(self) -> tuple:
        """The compiled step of a whole unidirectional stack and its extra arguments (for
        :mod:`unrolled.kernels.streaming`)."""
        return self.jit.lstm_stack, ()

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h, c) -> (h_t, c_t)."""
        h, c = state
        h_new, c_new = np.empty_like(h), np.empty_like(c)
        xa, ha = np.matmul(x_t, p["W_xh"].T), np.matmul(h, p["W_hh"].T)  # (B, 4H) each
        scale, offset = gate_affine(_PATTERN, h.shape[1], x_t.dtype)
        self.jit.lstm_step(xa, ha, as_vector(p, "b_h", h.dtype), scale, offset, c, h_new, c_new)
        return h_new, c_new

    def _forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0, c0) -> hs (T, B, H), (h_T, c_T), cache. Per step: the recurrent product, then
        one fused kernel for all gate arithmetic (the whole walk in one compiled call where it pays)."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        units = kernels.unit_workers(T, B, 4, H)
        # (T, B, 4H), in the pieces the inference walk uses; b_h is added in the kernel. Under a unit split
        # the walk starts on the first piece while a worker projects the others (the tail)
        gates, tail, head = project_started(x, p["W_xh"], kernels.bulk_matmul(x.dtype), units)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        cs = np.empty((T + 1, B, H), dtype=x.dtype)
        tanh_c = np.empty((T, B, H), dtype=x.dtype)
        rec = np.empty((B, 4 * H), dtype=x.dtype)
        hs[0], cs[0] = state0
        valid = valid_steps(mask, T, B, x.dtype)
        scale, offset = gate_affine(_PATTERN, H, x.dtype)
        bias = bias_or_zeros(p, "b_h", 4 * H, x.dtype)
        walks = kernels.walks_for(B, 4, H)
        if units > 1:  # the hidden units shared out across workers (a small batch)
            _units.run(
                jit.lstm_forward_units, units, H, (gates, np.ascontiguousarray(p["W_hh"])),
                (bias, scale, offset, hs, cs, tanh_c, valid), np.empty((units, B, 4 * H), dtype=x.dtype),
                tail, head,
            )  # fmt: skip
        elif walks is not None:  # the whole walk in one compiled call
            walks.lstm_forward_seq(
                gates, walks.forward_weights(p["W_hh"], B), bias, scale, offset, hs, cs, tanh_c, valid, rec
            )
        else:
            WT = transpose(p["W_hh"])  # (H, 4H)
            for t in range(T):
                np.matmul(hs[t], WT, out=rec)
                jit.lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)
        return hs[1:], (hs[T].copy(), cs[T].copy()), CompiledLSTMCache(x, hs, cs, gates, tanh_c, mask)

    def _infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward without a backward cache: x (T, B, I), (h0, c0) -> hs (T, B, H), (h_T, c_T), equal
        bit for bit to :meth:`_forward`'s (the same products and gate arithmetic, :func:`_jit._lstm_cell`).
        Keeps only the outputs: the gates of one chunk of steps, c_{t-1} / c_t and tanh(c_t) live in this
        thread's reused buffers (:func:`~unrolled.kernels._common.scratch`)."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        G = 4 * H
        dt = x.dtype
        hs = np.empty((T + 1, B, H), dtype=dt)
        hs[0] = state0[0]
        cs = scratch("c", (2, B, H), dt)
        cs[0] = state0[1]
        tc, rec = scratch("tanh_c", (B, H), dt), scratch("rec", (B, G), dt)
        valid = valid_steps(mask, T, B, dt)
        scale, offset = gate_affine(_PATTERN, H, dt)
        bias = bias_or_zeros(p, "b_h", G, dt)
        n = chunk_steps(T, B, G)
        buf = scratch("gates", (n, B, G), dt)
        matmul = kernels.bulk_matmul(dt)
        walks = kernels.walks_for(B, 4, H)
        units = kernels.unit_workers(T, B, 4, H)
        if units > 1:  # as in _forward; the workers share this thread's buffers
            W, recs = np.ascontiguousarray(p["W_hh"]), scratch("recs", (units, B, G), dt)
        else:
            W = walks.forward_weights(p["W_hh"], B) if walks is not None else transpose(p["W_hh"])
        for t0 in range(0, T, n):
            g = buf[: min(n, T - t0)]
            tail, cut = project_head(x, t0, g, p["W_xh"], matmul, units)
            if units > 1:
                after = (bias, scale, offset, hs, cs, tc, valid)
                _units.run(jit.lstm_infer_units, units, H, (t0, g, W), after, recs, tail, cut)
            elif walks is not None:
                walks.lstm_infer_seq(t0, g, W, bias, scale, offset, hs, cs, tc, valid, rec)
            else:
                for k in range(g.shape[0]):
                    np.matmul(hs[t0 + k], W, out=rec)
                    jit.lstm_infer_step(t0 + k, k, g, rec, bias, scale, offset, hs, cs, tc, valid)
        return hs[1:], (hs[T].copy(), cs[T % 2].copy())

    def _backward(self, d_hs: np.ndarray, d_stateT, cache: CompiledLSTMCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT, d_cT) -> dx (T, B, I), (d_h0, d_c0), grads."""
        jit = self.jit
        x, hs, cs, gates, tanh_c, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        d_hs = np.ascontiguousarray(d_hs, dtype=gates.dtype)
        valid = valid_steps(mask, T, B, gates.dtype)
        da = np.empty_like(gates)  # (T, B, 4H)
        dh_rec = np.zeros((B, H), dtype=gates.dtype)  # δa_{t+1} W_hh
        carry = np.array(d_stateT[0], dtype=gates.dtype)
        dc = np.array(d_stateT[1], dtype=gates.dtype)
        walks = kernels.walks_for(B, 4, H, backward=True)
        units = kernels.unit_workers(T, B, 4, H)  # whatever the forward did: the cache is the same
        if units > 1:
            WT = transpose(W_hh)  # (H, 4H): a share's rows of W_hhᵀ are contiguous
            _units.run(
                jit.lstm_backward_units, units, H, (d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, WT)
            )
        elif walks is not None:
            walks.lstm_backward_seq(
                d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, walks.backward_weights(W_hh, B)
            )
        else:
            for t in range(T - 1, -1, -1):
                jit.lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)
                np.matmul(da[t], W_hh, out=dh_rec)
        grads: dict[str, np.ndarray] = {}  # W_hh and W_xh from one product
        matmul = kernels.bulk_matmul(gates.dtype)
        dx = input_gradients(da, x, p, grads, bias_key="b_h", matmul=matmul, h_prev=hs[:-1])
        return dx, (dh_rec + carry, dc), grads
