"""Fast GRU (``reset_after=True``, the cuDNN / PyTorch variant): the equations of :mod:`unrolled.cells.gru`.

The classic ``reset_after=False`` variant runs on the reference cell. Two classes, one per path
(:func:`unrolled.kernels.pick` chooses): :class:`FastGRUCell`, NumPy, and :class:`CompiledGRUCell`, float32
on the Numba kernels of :mod:`unrolled.kernels._jit` (the rational tanh, the biases added inside the gate
kernels, the walk in one compiled call where :func:`~unrolled.kernels.walks_for` says so; see
:mod:`unrolled.kernels.lstm` for the list). As in the fast LSTM: the z, r rows of the weights are scaled by
½ once per call so σ(a) = ½(1 + tanh(a/2)) costs one tanh and two in-place affine ops on the (B, 2H) z, r
block; every per-step product writes into a preallocated buffer; and the NumPy backward precomputes over
all T every factor that does not depend on the recursion:
P_z = (h̃ − h_{t-1})⊙σ'(a_z), P_n = z⊙(1 − h̃²), P_r = (W_hn h_{t-1} + b_hn)⊙σ'(a_r), 1 − z.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled import kernels
from unrolled.cells.bulk import input_gradients, outer_sum, project_inputs
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


class FastGRUCache(NamedTuple):
    x: np.ndarray  # (T, B, I)
    hs: np.ndarray  # (T+1, B, H)
    gates: np.ndarray  # (T, B, 3H) activated z, r, n
    hn: np.ndarray  # (T, B, H) W_hn h_{t-1} + b_hn
    mask: np.ndarray | None  # (T, B, 1)


_PATTERN = (0.5, 0.5, 1.0), (0.5, 0.5, 0.0)


class FastGRUCell:
    """Same signatures and results as :class:`unrolled.cells.GRUCell` with ``reset_after=True``."""

    gates = 3
    state_names = ("h",)
    cache_type = FastGRUCache

    def __init__(self, ref) -> None:
        self.ref = ref

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h,) -> (h_t,)."""
        (h,) = state
        H = h.shape[1]
        scale, offset = gate_affine(_PATTERN, H, x_t.dtype)
        a = np.matmul(x_t, p["W_xh"].T)  # (B, 3H)
        if "b_h" in p:
            a += p["b_h"]
        hp = np.matmul(h, p["W_hh"].T)  # (B, 3H)
        if "b_hn" in p:
            hp[:, 2 * H :] += p["b_hn"]
        a[:, : 2 * H] += hp[:, : 2 * H]
        a[:, : 2 * H] *= scale[: 2 * H]
        zr = np.tanh(a[:, : 2 * H])
        zr *= 0.5
        zr += 0.5
        n = hp[:, 2 * H :]
        n *= zr[:, H:]
        n += a[:, 2 * H :]
        np.tanh(n, out=n)
        n -= h
        n *= zr[:, :H]
        n += h
        return (n,)

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache."""
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        scale, offset = gate_affine(_PATTERN, H, x.dtype)
        b = p["b_h"] * scale if "b_h" in p else None
        xp = project_inputs(x, p["W_xh"] * scale[:, None], b)  # (T, B, 3H) [a_z/2, a_r/2, a_xn]
        WT = transpose(p["W_hh"] * scale[:, None])  # (H, 3H)
        b_hn = p.get("b_hn")
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        hn = np.empty((T, B, H), dtype=x.dtype)
        rec = np.empty((B, 3 * H), dtype=x.dtype)
        tmp = np.empty((B, H), dtype=x.dtype)
        s2, o2 = scale[: 2 * H], offset[: 2 * H]
        hs[0] = state0[0]
        invalid = step_masks(mask)
        for t in range(T):
            a = xp[t]
            zr, n = a[:, : 2 * H], a[:, 2 * H :]
            np.matmul(hs[t], WT, out=rec)
            zr += rec[:, : 2 * H]
            np.tanh(zr, out=zr)
            zr *= s2
            zr += o2  # z, r
            if b_hn is not None:
                np.add(rec[:, 2 * H :], b_hn, out=hn[t])
            else:
                hn[t] = rec[:, 2 * H :]
            np.multiply(a[:, H : 2 * H], hn[t], out=tmp)
            n += tmp
            np.tanh(n, out=n)  # h̃
            np.subtract(n, hs[t], out=tmp)
            tmp *= a[:, :H]
            np.add(hs[t], tmp, out=hs[t + 1])
            if invalid[t] is not None:
                np.copyto(hs[t + 1], hs[t], where=invalid[t])
        return hs[1:], (hs[T].copy(),), FastGRUCache(x, hs, xp, hn, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: FastGRUCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, hs, gates, hn, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        z, r, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        h_prev = hs[:-1]
        # Factors that do not depend on the recursion, in bulk over all t.
        P_z = n - h_prev
        P_z *= z
        P_z *= 1 - z
        P_n = n * n
        np.subtract(1, P_n, out=P_n)
        P_n *= z
        P_r = r * (1 - r)
        P_r *= hn
        one_minus_z = 1 - z
        dah = np.empty_like(gates)  # (T, B, 3H) gradients of the recurrent pre-activations
        da_n = np.empty((T, B, H), dtype=gates.dtype)  # of the input-side candidate pre-activation
        dh = d_stateT[0].copy()
        rec = np.empty((B, H), dtype=dh.dtype)
        invalid = step_masks(mask)
        for t in range(T - 1, -1, -1):
            dh += d_hs[t]
            inv = invalid[t]
            if inv is not None:
                dh_keep = dh.copy()
                dh[inv[:, 0]] = 0
            np.multiply(dh, P_z[t], out=dah[t, :, :H])
            np.multiply(dh, P_n[t], out=da_n[t])
            np.multiply(da_n[t], P_r[t], out=dah[t, :, H : 2 * H])
            np.multiply(da_n[t], r[t], out=dah[t, :, 2 * H :])
            dh *= one_minus_z[t]
            np.matmul(dah[t], W_hh, out=rec)
            dh += rec
            if inv is not None:
                np.copyto(dh, dh_keep, where=inv)
        grads = {"W_hh": dah.reshape(T * B, 3 * H).T @ h_prev.reshape(T * B, H)}
        if "b_hn" in p:
            grads["b_hn"] = dah[..., 2 * H :].reshape(T * B, H).sum(axis=0)
        dah[..., 2 * H :] = da_n  # the input side's candidate gradient lacks the factor r
        dx = input_gradients(dah, x, p, grads, bias_key="b_h")
        return dx, (dh,), grads


class CompiledGRUCache(FastGRUCache):
    """The compiled path's cache: the same fields; its type tells :func:`unrolled.kernels.owner` which
    backward matches it."""

    __slots__ = ()


class CompiledGRUCell(BatchSplit):
    """Same signatures and results as :class:`unrolled.cells.GRUCell` with ``reset_after=True``, float32
    only, on the Numba kernels of :mod:`unrolled.kernels._jit`."""

    gates = 3
    state_names = ("h",)
    cache_type = CompiledGRUCache
    bias_names = ("b_h", "b_hn")  # in the order the streaming stack kernel takes them

    def __init__(self, ref) -> None:
        from unrolled.kernels import _jit  # Numba: imported only once this path is chosen

        self.ref, self.jit = ref, _jit

    def stack_kernel(self) -> tuple:
        """The compiled step of a whole unidirectional stack and its extra arguments (for
        :mod:`unrolled.kernels.streaming`)."""
        return self.jit.gru_stack, ()

    def step(self, x_t: np.ndarray, state, p: dict):
        """One time step: x_t (B, I), (h,) -> (h_t,)."""
        (h,) = state
        h_new = np.empty_like(h)
        xa, ha = np.matmul(x_t, p["W_xh"].T), np.matmul(h, p["W_hh"].T)  # (B, 3H) each
        self.jit.gru_step(xa, ha, as_vector(p, "b_h", h.dtype), as_vector(p, "b_hn", h.dtype), h, h_new)
        return (h_new,)

    def _forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache. Per step: the recurrent product, then one
        fused kernel for all gate arithmetic (the whole walk in one compiled call where it pays)."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        units = kernels.unit_workers(T, B, 3, H)
        # (T, B, 3H), in the pieces the inference walk uses; the biases are added in the kernel. Under a
        # unit split the walk starts on the first piece while a worker projects the others (the tail)
        xp, tail, head = project_started(x, p["W_xh"], kernels.bulk_matmul(x.dtype), units)
        b_h = bias_or_zeros(p, "b_h", 3 * H, x.dtype)
        b_hn = bias_or_zeros(p, "b_hn", H, x.dtype)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        hn = np.empty((T, B, H), dtype=x.dtype)
        rec = np.empty((B, 3 * H), dtype=x.dtype)
        hs[0] = state0[0]
        valid = valid_steps(mask, T, B, x.dtype)
        walks = kernels.walks_for(B, 3, H)
        if units > 1:  # the hidden units shared out across workers (a small batch)
            W = np.ascontiguousarray(p["W_hh"])
            recs = np.empty((units, B, 3 * H), dtype=x.dtype)
            _units.run(jit.gru_forward_units, units, H, (xp, W), (b_h, b_hn, hs, hn, valid), recs, tail, head)
        elif walks is not None:  # the whole walk in one compiled call
            walks.gru_forward_seq(xp, walks.forward_weights(p["W_hh"], B), b_h, b_hn, hs, hn, valid, rec)
        else:
            WT = transpose(p["W_hh"])  # (H, 3H)
            for t in range(T):
                np.matmul(hs[t], WT, out=rec)
                jit.gru_forward_step(t, xp, rec, b_h, b_hn, hs, hn, valid)
        return hs[1:], (hs[T].copy(),), CompiledGRUCache(x, hs, xp, hn, mask)

    def _infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward without a backward cache: x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), equal bit for
        bit to :meth:`_forward`'s (:func:`_jit._gru_cell`); the gates of one chunk of steps and W_hn h + b_hn
        live in this thread's reused buffers."""
        jit = self.jit
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        G = 3 * H
        dt = x.dtype
        hs = np.empty((T + 1, B, H), dtype=dt)
        hs[0] = state0[0]
        hn, rec = scratch("hn", (B, H), dt), scratch("rec", (B, G), dt)
        valid = valid_steps(mask, T, B, dt)
        b_h = bias_or_zeros(p, "b_h", G, dt)
        b_hn = bias_or_zeros(p, "b_hn", H, dt)
        n = chunk_steps(T, B, G)
        buf = scratch("gates", (n, B, G), dt)
        matmul = kernels.bulk_matmul(dt)
        walks = kernels.walks_for(B, 3, H)
        units = kernels.unit_workers(T, B, 3, H)
        if units > 1:  # as in _forward; the workers share this thread's buffers
            W, recs = np.ascontiguousarray(p["W_hh"]), scratch("recs", (units, B, G), dt)
        else:
            W = walks.forward_weights(p["W_hh"], B) if walks is not None else transpose(p["W_hh"])
        for t0 in range(0, T, n):
            g = buf[: min(n, T - t0)]
            tail, cut = project_head(x, t0, g, p["W_xh"], matmul, units)
            if units > 1:
                after = (b_h, b_hn, hs, hn, valid)
                _units.run(jit.gru_infer_units, units, H, (t0, g, W), after, recs, tail, cut)
            elif walks is not None:
                walks.gru_infer_seq(t0, g, W, b_h, b_hn, hs, hn, valid, rec)
            else:
                for k in range(g.shape[0]):
                    np.matmul(hs[t0 + k], W, out=rec)
                    jit.gru_infer_step(t0 + k, k, g, rec, b_h, b_hn, hs, hn, valid)
        return hs[1:], (hs[T].copy(),)

    def _backward(self, d_hs: np.ndarray, d_stateT, cache: CompiledGRUCache, p: dict):
        """BPTT. d_hs (T, B, H), (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        jit = self.jit
        x, hs, gates, hn, mask = cache
        T, B, H = d_hs.shape
        W_hh = p["W_hh"]
        d_hs = np.ascontiguousarray(d_hs, dtype=gates.dtype)
        valid = valid_steps(mask, T, B, gates.dtype)
        dah = np.empty_like(gates)  # (T, B, 3H)
        da_n = np.empty((T, B, H), dtype=gates.dtype)
        dh_rec = np.zeros((B, H), dtype=gates.dtype)
        carry = np.array(d_stateT[0], dtype=gates.dtype)
        walks = kernels.walks_for(B, 3, H, backward=True)
        units = kernels.unit_workers(T, B, 3, H)  # whatever the forward did: the cache is the same
        if units > 1:
            WT = transpose(W_hh)  # (H, 3H)
            _units.run(
                jit.gru_backward_units, units, H, (d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, WT)
            )
        elif walks is not None:
            walks.gru_backward_seq(
                d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, walks.backward_weights(W_hh, B)
            )
        else:
            for t in range(T - 1, -1, -1):
                jit.gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid)
                np.matmul(dah[t], W_hh, out=dh_rec)
        matmul = kernels.bulk_matmul(gates.dtype)
        grads = {"W_hh": outer_sum(dah.reshape(T * B, 3 * H), hs[:-1].reshape(T * B, H), matmul)}
        if "b_hn" in p:
            grads["b_hn"] = dah[..., 2 * H :].reshape(T * B, H).sum(axis=0)
        dah[..., 2 * H :] = da_n
        dx = input_gradients(dah, x, p, grads, bias_key="b_h", matmul=matmul)
        return dx, (dh_rec + carry,), grads
