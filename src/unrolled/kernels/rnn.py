"""Fast vanilla RNN: the equations of :mod:`unrolled.cells.rnn` with preallocated per-step buffers.

Two classes, one per path (:func:`unrolled.kernels.pick` chooses). :class:`FastRNNCell`, NumPy: forward
writes each step straight into the state array (matmul into a buffer, one add, the nonlinearity in place);
σ'(a_t) is computed in bulk afterwards; BPTT is three NumPy calls per step. :class:`CompiledRNNCell`,
float32 on the Numba kernels of :mod:`unrolled.kernels._jit`: one fused kernel per step computes a_t, σ(a_t),
σ'(a_t) and the length mask (tanh the rational approximation), the walk in one compiled call where
:func:`~unrolled.kernels.walks_for` says so; its one-step ``step`` is the NumPy one (streaming runs the
compiled stack kernel instead, :mod:`unrolled.kernels.streaming`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled import kernels
from unrolled.cells.bulk import input_gradients, project_inputs
from unrolled.kernels._common import (
    bias_or_zeros,
    chunk_steps,
    project_chunked,
    project_into,
    scratch,
    step_masks,
    transpose,
    valid_steps,
)
from unrolled.kernels._split import BatchSplit


class FastRNNCache(NamedTuple):
    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H)
    dact: np.ndarray  # (T, B, H) σ'(a_t)
    mask: np.ndarray | None  # (T, B, 1)


def _activate(a: np.ndarray, tanh: bool) -> None:
    """σ(a) in place: tanh or ReLU."""
    if tanh:
        np.tanh(a, out=a)
    else:
        np.maximum(a, 0, out=a)


def _step(x_t: np.ndarray, state, p: dict, tanh: bool):
    """One time step: x_t (B, I), (h,) -> (h_t,)."""
    a = np.matmul(x_t, p["W_xh"].T)  # (B, H)
    a += np.matmul(state[0], p["W_hh"].T)
    if "b_h" in p:
        a += p["b_h"]
    _activate(a, tanh)
    return (a,)


class FastRNNCell:
    """Same signatures and results as :class:`unrolled.cells.RNNCell` (tanh or ReLU)."""

    gates = 1
    state_names = ("h",)
    cache_type = FastRNNCache

    def __init__(self, ref) -> None:
        self.ref = ref
        self.tanh = ref.nonlinearity == "tanh"

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h,) -> (h_t,)."""
        return _step(x_t, state, p, self.tanh)

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache."""
        T, B, _ = x.shape
        H = p["W_hh"].shape[0]
        xp = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, H)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        rec = np.empty((B, H), dtype=x.dtype)
        hs[0] = state0[0]
        invalid = step_masks(mask)
        WT = transpose(p["W_hh"])
        for t in range(T):
            np.matmul(hs[t], WT, out=rec)
            a = xp[t]
            a += rec
            _activate(a, self.tanh)  # xp[t] now holds σ(a_t), for σ' below
            if invalid[t] is None:
                hs[t + 1] = a
            else:
                np.copyto(hs[t + 1], a)
                np.copyto(hs[t + 1], hs[t], where=invalid[t])
        if self.tanh:
            dact = np.multiply(xp, xp, out=xp)
            np.subtract(1, dact, out=dact)
        else:
            dact = (xp > 0).astype(x.dtype)
        return hs[1:], (hs[T].copy(),), FastRNNCache(x, hs, dact, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: FastRNNCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, hs, dact, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        da = np.empty_like(dact)
        dh = d_stateT[0].copy()
        invalid = step_masks(mask)
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            inv = invalid[t]
            if inv is None:
                np.multiply(dh, dact[t], out=da[t])
                np.matmul(da[t], W_hh, out=dh)
            else:
                np.multiply(dh, dact[t], out=da[t])
                da[t][inv[:, 0]] = 0
                keep = dh.copy()
                np.matmul(da[t], W_hh, out=dh)
                np.copyto(dh, keep, where=inv)
        grads = {"W_hh": da.reshape(T * B, H).T @ hs[:-1].reshape(T * B, H)}
        dx = input_gradients(da, x, p, grads, bias_key="b_h")
        return dx, (dh,), grads


class CompiledRNNCache(FastRNNCache):
    """The compiled path's cache: the same fields; its type tells :func:`unrolled.kernels.owner` which
    backward matches it."""

    __slots__ = ()


class CompiledRNNCell(BatchSplit):
    """Same signatures and results as :class:`unrolled.cells.RNNCell` (tanh or ReLU), float32 only, on the
    Numba kernels of :mod:`unrolled.kernels._jit`."""

    gates = 1
    state_names = ("h",)
    cache_type = CompiledRNNCache
    bias_names = ("b_h",)  # in the order the streaming stack kernel takes them

    def __init__(self, ref) -> None:
        from unrolled.kernels import _jit  # Numba: imported only once this path is chosen

        self.ref, self.jit = ref, _jit
        self.tanh = ref.nonlinearity == "tanh"

    def stack_kernel(self) -> tuple:
        """The compiled step of a whole unidirectional stack and its extra arguments (for
        :mod:`unrolled.kernels.streaming`)."""
        return self.jit.rnn_stack, (not self.tanh,)

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h,) -> (h_t,)."""
        return _step(x_t, state, p, self.tanh)

    def _forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache. One fused kernel per step: a_t, σ(a_t),
        σ'(a_t), the length mask (the whole walk in one compiled call where it pays)."""
        T, B, _ = x.shape
        H = p["W_hh"].shape[0]
        # (T, B, H); the compiled kernel adds b_h itself (cheaper than a bulk pass)
        xp = project_chunked(x, p["W_xh"], kernels.bulk_matmul(x.dtype))  # in the inference walk's chunks
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        rec = np.empty((B, H), dtype=x.dtype)
        hs[0] = state0[0]
        bias = bias_or_zeros(p, "b_h", H, x.dtype)
        dact = np.empty_like(xp)
        valid = valid_steps(mask, T, B, x.dtype)
        walks = kernels.walks_for(B, 1, H)
        if walks is not None:  # the whole walk in one compiled call
            walks.rnn_forward_seq(
                xp, walks.forward_weights(p["W_hh"], B), bias, hs, dact, not self.tanh, valid, rec
            )
        else:
            WT = transpose(p["W_hh"])
            for t in range(T):
                np.matmul(hs[t], WT, out=rec)
                self.jit.rnn_forward_step(t, xp, rec, bias, hs, dact, not self.tanh, valid)
        return hs[1:], (hs[T].copy(),), CompiledRNNCache(x, hs, dact, mask)

    def _infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward without a backward cache: x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), equal bit for
        bit to :meth:`_forward`'s (:func:`_jit._rnn_cell`, without σ'); the projections of one chunk of steps
        live in this thread's reused buffer."""
        T, B, _ = x.shape
        H = p["W_hh"].shape[0]
        dt = x.dtype
        hs = np.empty((T + 1, B, H), dtype=dt)
        hs[0] = state0[0]
        rec = scratch("rec", (B, H), dt)
        valid = valid_steps(mask, T, B, dt)
        bias = bias_or_zeros(p, "b_h", H, dt)
        relu = not self.tanh
        n = chunk_steps(T, B, H)
        buf = scratch("gates", (n, B, H), dt)
        matmul = kernels.bulk_matmul(dt)
        walks = kernels.walks_for(B, 1, H)
        W = walks.forward_weights(p["W_hh"], B) if walks is not None else transpose(p["W_hh"])
        for t0 in range(0, T, n):
            g = buf[: min(n, T - t0)]
            project_into(x[t0 : t0 + n], p["W_xh"], g, matmul)
            if walks is not None:
                walks.rnn_infer_seq(t0, g, W, bias, hs, relu, valid, rec)
            else:
                for k in range(g.shape[0]):
                    np.matmul(hs[t0 + k], W, out=rec)
                    self.jit.rnn_infer_step(t0 + k, k, g, rec, bias, hs, relu, valid)
        return hs[1:], (hs[T].copy(),)

    def _backward(self, d_hs: np.ndarray, d_stateT, cache: CompiledRNNCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, hs, dact, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        da = np.empty_like(dact)
        d_hs = np.ascontiguousarray(d_hs, dtype=dact.dtype)
        valid = valid_steps(mask, T, B, dact.dtype)
        dh_rec = np.zeros((B, H), dtype=dact.dtype)
        carry = np.array(d_stateT[0], dtype=dact.dtype)
        walks = kernels.walks_for(B, 1, H, backward=True)
        if walks is not None:
            walks.rnn_backward_seq(d_hs, dh_rec, carry, dact, da, valid, walks.backward_weights(W_hh, B))
        else:
            for t in range(T - 1, -1, -1):
                self.jit.rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
                np.matmul(da[t], W_hh, out=dh_rec)
        grads: dict[str, np.ndarray] = {}  # W_hh and W_xh from one product
        matmul = kernels.bulk_matmul(dact.dtype)
        dx = input_gradients(da, x, p, grads, bias_key="b_h", matmul=matmul, h_prev=hs[:-1])
        return dx, (dh_rec + carry,), grads
