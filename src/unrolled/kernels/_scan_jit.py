"""Compiled pieces of the blocked scan (:mod:`unrolled.kernels.scan`), each one fused pass over a block:

- :func:`min_forward`: the gates a_t, b_t from the raw projection k = W_xh x_t (bias added in the loop) and
  the scan h_t = a_t h_{t−1} + b_t from a given state, a stored for the backward;
- :func:`fixup_forward`: the fix-up of every block after the first, split by channel (each worker walks
  all blocks for its channels, carrying the true state from block to block);
- :func:`carries_reverse`: the true δh carry entering each block from the right, split by channel the same
  way (δh_t = g_t + a_{t+1} δh_{t+1} over all blocks but the first);
- :func:`min_backward`: from a block's true carry, δh backwards and the gates' backward δk (and Σ δk, the
  bias gradient) in one reversed loop, the gates recomputed from k.

The gates are formed from exponentials of non-positive arguments only, so nothing overflows and small
gates keep their relative accuracy (the reference's tanh-based σ loses digits for k ≪ 0)::

    e = e^{−|k|}:   σ(k) = 1/(1 + e) (k ≥ 0) or e/(1 + e) (k < 0),   1 − σ(k) the other one
    minLSTM, c = min(k_f, k_i, 0):   f' = (e^{c} + e^{c−k_i}) / s,   i' = (e^{c} + e^{c−k_f}) / s,
                                     s = 2e^{c} + e^{c−k_f} + e^{c−k_i}  (≥ 1: one term is e^0)

(f' = f/(f + i) = (1 + e^{−k_i}) / (2 + e^{−k_f} + e^{−k_i}), numerator and denominator times e^{c}).
In float32 the exponential is :func:`_exp_nonpos`, a branch-free polynomial the compiler vectorises
across the H channels of a row (Numba's ``math.exp`` is a scalar libm call here: no SVML); float64 (the
tests) keeps ``math.exp``. Every literal is a float32 constant (``_1`` …) so float32 arithmetic stays
float32 (a Python float would promote it to float64) and float64 stays float64.

They live apart from :mod:`unrolled.kernels._jit` because they inline nothing from it (that module's reason
for being one file is Numba's per-file disk cache and inlined helpers), and so ``import`` of the scan does
not compile or load the LSTM/GRU walks. ``nogil``: the pool's threads run blocks at the same time.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

_OPTS = dict(cache=True, nogil=True, error_model="numpy")

_0, _1, _2, _HALF = np.float32(0), np.float32(1), np.float32(2), np.float32(0.5)
_LOW = np.float32(-87.0)  # e^{−87} ≈ 1.6e−38: the smallest normal float32 result (below it: that value)
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # Cody–Waite split of ln 2
_P = [np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2)]
_P4, _P5 = np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_P0, _P1, _P2, _P3 = _P


@intrinsic
def _int32_bits_as_float32(typingctx, n):
    """The float32 whose bit pattern is the int32 n (LLVM ``bitcast``: vectorises)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def _exp_nonpos(x):  # pragma: no cover - replaced by the overload in compiled code
    """e^x for x ≤ 0."""
    return math.exp(x)


@overload(_exp_nonpos, inline="always")
def _exp_nonpos_impl(x):
    """float32: e^x = 2^n · p(r), n = round(x log₂e), r = x − n ln 2 (Cody–Waite), p Cephes' expf degree-7
    polynomial (measured ≤ 0.7 ulp on [−87, 0]); x clamped to ≥ −87 (2^n then stays a normal number: its
    bits are (n + 127) ≪ 23). float64: math.exp."""
    if x == types.float32:

        def impl(x):
            x = max(x, _LOW)
            n = np.int32(x * _LOG2E - _HALF)  # truncation toward 0 of a value ≤ −0.5: round(x log₂e)
            fn = np.float32(n)
            r = x - fn * _LN2_HI - fn * _LN2_LO
            p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            p = p * r * r + r + _1
            return p * _int32_bits_as_float32((n + np.int32(127)) << np.int32(23))

        return impl
    return lambda x: math.exp(x)


@njit(inline="always", **_OPTS)
def _sigmoid_pair(k):  # pragma: no cover - compiled
    """(σ(k), 1 − σ(k)) from e = e^{−|k|}: 1/(1 + e) and e/(1 + e), assigned by the sign of k."""
    e = _exp_nonpos(-abs(k))
    r = _1 / (_1 + e)
    big, small = r, e * r
    return (big, small) if k >= _0 else (small, big)


@njit(inline="always", **_OPTS)
def _candidate(kh, log_space):  # pragma: no cover - compiled
    """(h̃, dh̃/dk): g(k) = k + 0.5 (k ≥ 0) or σ(k) (k < 0) and g'(k) in log-space mode, else (k, 1)."""
    if not log_space:
        return kh, _1
    s, _ = _sigmoid_pair(kh)
    return (kh + _HALF, _1) if kh >= _0 else (s, s * (_1 - s))


@njit(inline="always", **_OPTS)
def _normalised(kf, ki):  # pragma: no cover - compiled
    """minLSTM's (f', i') = (f, i) / (f + i) by the scaled form of the module docstring:
    c = min(k_f, k_i, 0), f' = (e^c + e^{c−k_i}) / s, i' = (e^c + e^{c−k_f}) / s,
    s = 2e^c + e^{c−k_f} + e^{c−k_i}."""
    c = min(min(kf, ki), _0)
    e0, ef, ei = _exp_nonpos(c), _exp_nonpos(c - kf), _exp_nonpos(c - ki)
    s = _1 / (e0 + e0 + ef + ei)
    return (e0 + ei) * s, (e0 + ef) * s


@njit(**_OPTS)
def min_forward(k, bias, m, has_mask, lstm, log_space, start, a, h):  # pragma: no cover - compiled
    """One block (n, B, ·) of a min-cell from the state ``start`` (B, H): with κ = k_t + bias,

        minGRU:  z = σ(κ_z), a_t = 1 − z, b_t = z h̃(κ_h);   minLSTM: a_t = f', b_t = i' h̃(κ_h)
        h_t = a_t h_{t−1} + b_t;   a_t = 1, h_t = h_{t−1} where m_t = 0

    (the equations of :mod:`unrolled.cells.minrnn`); a (n, B, H) and h (n, B, H) written."""
    n, B, H = a.shape
    for t in range(n):
        for bi in range(B):
            prev = start[bi] if t == 0 else h[t - 1, bi]
            if has_mask and m[t, bi] == 0:
                for j in range(H):
                    a[t, bi, j] = _1
                    h[t, bi, j] = prev[j]
                continue
            kt, at, ht = k[t, bi], a[t, bi], h[t, bi]
            if lstm:
                for j in range(H):
                    fn, i_n = _normalised(kt[j] + bias[j], kt[H + j] + bias[H + j])
                    c, _ = _candidate(kt[2 * H + j] + bias[2 * H + j], log_space)
                    at[j] = fn
                    ht[j] = fn * prev[j] + i_n * c
            else:
                for j in range(H):
                    z, one_minus_z = _sigmoid_pair(kt[j] + bias[j])
                    c, _ = _candidate(kt[H + j] + bias[H + j], log_space)
                    at[j] = one_minus_z
                    ht[j] = one_minus_z * prev[j] + z * c


@njit(**_OPTS)
def fixup_forward(a, h, bounds, j0, j1):  # pragma: no cover - compiled
    """Channels [j0, j1) of (T, N) arrays whose blocks [bounds[i], bounds[i+1]) after the first were scanned
    from 0: h_t += (∏_{s ≤ t in the block} a_s) h_{start − 1}, block after block, so each block's entering
    state h_{start − 1} is already the true one."""
    for i in range(1, len(bounds) - 1):
        s, e = bounds[i], bounds[i + 1]
        q = h[s - 1, j0:j1].copy()
        for t in range(s, e):
            at, ht = a[t, j0:j1], h[t, j0:j1]
            for j in range(j1 - j0):
                q[j] *= at[j]
                ht[j] += q[j]


@njit(**_OPTS)
def carries_reverse(a, g, bounds, end, carries, j0, j1):  # pragma: no cover - compiled
    """Channels [j0, j1) of the carry entering each block from the right, c_i = a_e δh_e (e = the block's
    end; c_{K−1} = end = ∂L/∂h_T), by (2) δh_t = g_t + a_{t+1} δh_{t+1} over blocks K−1 … 1:
    c_{i−1} = a_s δh_s of block i (s its start). carries (K, N)."""
    K = len(bounds) - 1
    c = end[j0:j1].copy()
    carries[K - 1, j0:j1] = c
    for i in range(K - 1, 0, -1):
        for t in range(bounds[i + 1] - 1, bounds[i] - 1, -1):
            at, gt = a[t, j0:j1], g[t, j0:j1]
            for j in range(j1 - j0):
                c[j] = at[j] * (gt[j] + c[j])
        carries[i - 1, j0:j1] = c


@njit(**_OPTS)
def min_backward(k, bias, h_prev, g, m, has_mask, lstm, log_space, carry, dk, db):  # pragma: no cover
    """One block (n, B, ·) of BPTT from its true carry (B, H) (= a_{t+1} δh_{t+1} entering from the right),
    backwards in t, with κ = k_t + bias and the gates recomputed:

        δh_t = g_t + carry,   carry ← a_t δh_t   (a_t = 1, δk_t = 0 where m_t = 0)
        minGRU:  δk_z = δh_t (h̃ − h_{t−1}) z (1 − z),   δk_h = δh_t z h̃'
        minLSTM: δd = δh_t (h_{t−1} − h̃) f' i',  δk_f = δd (1 − f),  δk_i = −δd (1 − i),  δk_h = δh_t i' h̃'

    dk (n, B, G·H) written; db (G·H) += Σ_t δk_t; carry left holding what reaches the block's h_{start−1}."""
    n, B, H = h_prev.shape
    gate = np.empty((6, H), dtype=dk.dtype)  # minLSTM: f', i', h̃, h̃', 1 − f, 1 − i of one row
    for t in range(n - 1, -1, -1):
        for bi in range(B):
            cb, gt, hp, dkt = carry[bi], g[t, bi], h_prev[t, bi], dk[t, bi]
            if has_mask and m[t, bi] == 0:
                for j in range(H):
                    cb[j] = gt[j] + cb[j]
                dkt[:] = _0
                continue
            kt = k[t, bi]
            if (
                lstm
            ):  # two loops: one with all of them does not vectorise (too many arrays to check for overlap)
                for j in range(H):
                    kf, ki = kt[j] + bias[j], kt[H + j] + bias[H + j]
                    gate[0, j], gate[1, j] = _normalised(kf, ki)
                    gate[2, j], gate[3, j] = _candidate(kt[2 * H + j] + bias[2 * H + j], log_space)
                    gate[4, j] = _sigmoid_pair(kf)[1]
                    gate[5, j] = _sigmoid_pair(ki)[1]
                for j in range(H):
                    fn, i_n, c = gate[0, j], gate[1, j], gate[2, j]
                    d = gt[j] + cb[j]
                    dd = d * (hp[j] - c) * fn * i_n
                    dkt[j] = dd * gate[4, j]
                    dkt[H + j] = -dd * gate[5, j]
                    dkt[2 * H + j] = d * i_n * gate[3, j]
                    cb[j] = fn * d
            else:
                for j in range(H):
                    z, one_minus_z = _sigmoid_pair(kt[j] + bias[j])
                    c, dc = _candidate(kt[H + j] + bias[H + j], log_space)
                    d = gt[j] + cb[j]
                    dkt[j] = d * (c - hp[j]) * z * one_minus_z
                    dkt[H + j] = d * z * dc
                    cb[j] = one_minus_z * d
            for j in range(dkt.shape[0]):
                db[j] += dkt[j]
