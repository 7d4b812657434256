"""Numba-compiled float32 gate kernels: one fused pass over a step's gates, forward and backward.

Imported lazily (on the first float32 forward), so ``import unrolled`` never pays for Numba; compiled
functions are cached on disk (``cache=True``). The recurrent matrix products stay in NumPy's BLAS; each
step is then two calls: ``np.matmul`` into a buffer, and one of these kernels.

Transcendentals must vectorize: Numba's ``np.tanh`` calls scalar libm (about 17 ns per element), so
tanh here is a rational approximation (the Eigen / XLA float32 one: odd degree-13 numerator over even
degree-6 denominator, argument clamped to ±7.998811721, where tanh rounds to ±1 in float32) that LLVM
vectorizes. ``error_model="numpy"`` lets the division vectorize (no ZeroDivisionError branch); the fast-math
flags exclude ``nnan``/``ninf`` so a NaN still propagates. Measured error against float64 tanh on a dense
sweep of [−10, 10]: ≤ 3.2e-7 absolute, ≤ 6 float32 ulps (tests/test_kernels.py checks it).
σ(a) = ½·tanh(a/2) + ½ as in the reference.

Each inner loop touches few arrays, over one contiguous row: Numba gives LLVM no aliasing information,
and a loop that reads and writes many arrays is left scalar (a first all-in-one-loop version of these
kernels ran at ~30 ns per element instead of ~0.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numba import njit, types

from unrolled.kernels import _dnnl
from unrolled.kernels._common import transpose

_FLAGS = {"contract", "arcp", "nsz", "afn", "reassoc"}
_OPTS = dict(fastmath=_FLAGS, error_model="numpy", cache=True, nogil=True)
f32 = np.float32
_CLAMP = f32(7.99881172180175781)


@njit(inline="always", **_OPTS)
def tanh(x):
    x = _CLAMP if x > _CLAMP else x  # NaN fails both tests and propagates
    x = -_CLAMP if x < -_CLAMP else x
    x2 = x * x
    p = x2 * f32(-2.76076847742355e-16) + f32(2.00018790482477e-13)
    p = p * x2 + f32(-8.60467152213735e-11)
    p = p * x2 + f32(5.12229709037114e-08)
    p = p * x2 + f32(1.48572235717979e-05)
    p = p * x2 + f32(6.37261928875436e-04)
    p = p * x2 + f32(4.89352455891786e-03)
    q = x2 * f32(1.19825839466702e-06) + f32(1.18534705686654e-04)
    q = q * x2 + f32(2.26843463243900e-03)
    q = q * x2 + f32(4.89352518554385e-03)
    return x * p / q


@njit(inline="always", **_OPTS)
def sigmoid(x):
    return f32(0.5) * tanh(f32(0.5) * x) + f32(0.5)


@njit(**_OPTS)
def tanh_array(a, out):
    """out = tanh(a) elementwise (1-D); for the accuracy test."""
    for k in range(a.shape[0]):
        out[k] = tanh(a[k])


# ----------------------------------------------------------------------------------------------- LSTM
@njit(**_OPTS)
def lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid):
    """gates[t] (B, 4H) holds W_xh x_t, rec (B, 4H) W_hh h_{t-1}, bias (4H,) b_h (zeros without).
    Writes the activated gates i, f, g, o into gates[t] (v = s·tanh(s·a) + o per gate: s = ½, o = ½
    for the sigmoids, s = 1, o = 0 for g), then c_t, tanh(c_t), h_t. A sequence with valid[t, b] == 0
    keeps its state."""
    B, G = rec.shape
    H = G // 4
    for b in range(B):
        a = gates[t, b]
        r = rec[b]
        for j in range(G):
            a[j] = scale[j] * tanh(scale[j] * (a[j] + r[j] + bias[j])) + offset[j]
        c_prev = cs[t, b]
        c_new = cs[t + 1, b]
        tc = tanh_c[t, b]
        h_new = hs[t + 1, b]
        if valid[t, b] == 0:
            for j in range(H):
                tc[j] = tanh(a[H + j] * c_prev[j] + a[j] * a[2 * H + j])
                c_new[j] = c_prev[j]
                h_new[j] = hs[t, b, j]
            continue
        for j in range(H):
            c_new[j] = a[H + j] * c_prev[j] + a[j] * a[2 * H + j]
        for j in range(H):
            tc[j] = tanh(c_new[j])
        for j in range(H):
            h_new[j] = a[3 * H + j] * tc[j]


@njit(**_OPTS)
def lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid):
    """δh_t = dh_rec + carry + d_hs[t] (dh_rec = δa_{t+1} W_hh); writes δa_t into da[t] and δc_{t-1}
    into dc; carry gets what reaches h_{t-1} other than through W_hh (all of δh_t for a finished
    sequence, whose δa_t is zero and whose δc passes unchanged)."""
    B, H = dc.shape
    for b in range(B):
        g4 = gates[t, b]
        d4 = da[t, b]
        cr = carry[b]
        dhr = dh_rec[b]
        dhs = d_hs[t, b]
        for j in range(H):
            cr[j] = dhr[j] + cr[j] + dhs[j]  # δh_t
        if valid[t, b] == 0:
            for j in range(4 * H):
                d4[j] = 0
            continue
        dcb = dc[b]
        tc = tanh_c[t, b]
        for j in range(H):  # δa_o, then δc_t
            d4[3 * H + j] = cr[j] * tc[j] * g4[3 * H + j] * (f32(1) - g4[3 * H + j])
        for j in range(H):
            dcb[j] += cr[j] * g4[3 * H + j] * (f32(1) - tc[j] * tc[j])
        for j in range(H):  # δa_i
            d4[j] = dcb[j] * g4[2 * H + j] * g4[j] * (f32(1) - g4[j])
        c_prev = cs[t, b]
        for j in range(H):  # δa_f
            d4[H + j] = dcb[j] * c_prev[j] * g4[H + j] * (f32(1) - g4[H + j])
        for j in range(H):  # δa_g
            d4[2 * H + j] = dcb[j] * g4[j] * (f32(1) - g4[2 * H + j] * g4[2 * H + j])
        for j in range(H):  # δc_{t-1}
            dcb[j] *= g4[H + j]
        for j in range(H):
            cr[j] = 0


@njit(**_OPTS)
def lstm_step(xa, ha, bias, scale, offset, c, h_out, c_out):
    """Streaming step: xa = W_xh x, ha = W_hh h (B, 4H), bias (4H,) or empty -> h_out, c_out.
    Overwrites xa with the activated gates."""
    B, H = c.shape
    with_bias = bias.shape[0] > 0
    for b in range(B):
        a = xa[b]
        r = ha[b]
        if with_bias:
            for j in range(4 * H):
                a[j] += bias[j]
        for j in range(4 * H):
            a[j] = scale[j] * tanh(scale[j] * (a[j] + r[j])) + offset[j]
        cb = c[b]
        co = c_out[b]
        for j in range(H):
            co[j] = a[H + j] * cb[j] + a[j] * a[2 * H + j]
        ho = h_out[b]
        for j in range(H):
            ho[j] = a[3 * H + j] * tanh(co[j])


# ----------------------------------------------------------------------------------------------- GRU
@njit(**_OPTS)
def gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid):
    """reset_after GRU. gates[t] (B, 3H) = W_xh x_t; rec (B, 3H) = W_hh h_{t-1}; b_h (3H,) and b_hn (H,)
    (zeros without). Writes the
    activated z, r, h̃ into gates[t], hn[t] = W_hn h_{t-1} + b_hn and h_t."""
    B = rec.shape[0]
    H = hs.shape[2]
    for b in range(B):
        a = gates[t, b]
        r_ = rec[b]
        for j in range(2 * H):
            a[j] = f32(0.5) * tanh(f32(0.5) * (a[j] + r_[j] + b_h[j])) + f32(0.5)
        q = hn[t, b]
        for j in range(H):
            q[j] = r_[2 * H + j] + b_hn[j]
        for j in range(H):
            a[2 * H + j] = tanh(a[2 * H + j] + b_h[2 * H + j] + a[H + j] * q[j])
        h_prev = hs[t, b]
        h_new = hs[t + 1, b]
        if valid[t, b] == 0:
            for j in range(H):
                h_new[j] = h_prev[j]
            continue
        for j in range(H):
            h_new[j] = h_prev[j] + a[j] * (a[2 * H + j] - h_prev[j])


@njit(**_OPTS)
def gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid):
    """δh_t = dh_rec + carry + d_hs[t]; writes the recurrent pre-activation gradients dah[t] (B, 3H)
    = [δa_z, δa_r, r⊙δa_n], the candidate's da_n[t], and carry = δh_t ⊙ (1 − z) (the direct path)."""
    B = dh_rec.shape[0]
    H = hs.shape[2]
    for b in range(B):
        g3 = gates[t, b]
        d3 = dah[t, b]
        dn = da_n[t, b]
        cr = carry[b]
        dhr = dh_rec[b]
        dhs = d_hs[t, b]
        for j in range(H):
            cr[j] = dhr[j] + cr[j] + dhs[j]  # δh_t
        if valid[t, b] == 0:
            for j in range(3 * H):
                d3[j] = 0
            for j in range(H):
                dn[j] = 0
            continue
        h_prev = hs[t, b]
        for j in range(H):  # δa_z
            d3[j] = cr[j] * (g3[2 * H + j] - h_prev[j]) * g3[j] * (f32(1) - g3[j])
        for j in range(H):  # δa_n (input side)
            dn[j] = cr[j] * g3[j] * (f32(1) - g3[2 * H + j] * g3[2 * H + j])
        q = hn[t, b]
        for j in range(H):  # δa_r
            d3[H + j] = dn[j] * q[j] * g3[H + j] * (f32(1) - g3[H + j])
        for j in range(H):  # r ⊙ δa_n (recurrent side)
            d3[2 * H + j] = dn[j] * g3[H + j]
        for j in range(H):
            cr[j] *= f32(1) - g3[j]


@njit(**_OPTS)
def gru_step(xp, rec, b_h, b_hn, h, h_out):
    """Streaming step: xp (B, 3H) = W_xh x, rec (B, 3H) = W_hh h, biases or empty -> h_out.
    Overwrites xp and rec."""
    B, H = h.shape
    with_bh = b_h.shape[0] > 0
    with_bhn = b_hn.shape[0] > 0
    for b in range(B):
        a = xp[b]
        r_ = rec[b]
        if with_bh:
            for j in range(3 * H):
                a[j] += b_h[j]
        if with_bhn:
            for j in range(H):
                r_[2 * H + j] += b_hn[j]
        for j in range(2 * H):
            a[j] = f32(0.5) * tanh(f32(0.5) * (a[j] + r_[j])) + f32(0.5)
        for j in range(H):
            a[2 * H + j] = tanh(a[2 * H + j] + a[H + j] * r_[2 * H + j])
        hb = h[b]
        ho = h_out[b]
        for j in range(H):
            ho[j] = hb[j] + a[j] * (a[2 * H + j] - hb[j])


# ----------------------------------------------------------------------------------------------- RNN
@njit(**_OPTS)
def rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid):
    """xp[t] (B, H) = W_xh x_t, rec = W_hh h_{t-1}, bias b_h (zeros without):
    h_t = σ(a_t), dact[t] = σ'(a_t)."""
    B, H = rec.shape
    for b in range(B):
        x = xp[t, b]
        r = rec[b]
        d = dact[t, b]
        if relu:
            for j in range(H):
                a = x[j] + r[j] + bias[j]
                x[j] = a if a > 0 else f32(0)
            for j in range(H):
                d[j] = f32(1) if x[j] > 0 else f32(0)
        else:
            for j in range(H):
                x[j] = tanh(x[j] + r[j] + bias[j])
            for j in range(H):
                d[j] = f32(1) - x[j] * x[j]
        h_new = hs[t + 1, b]
        if valid[t, b] == 0:
            for j in range(H):
                h_new[j] = hs[t, b, j]
        else:
            for j in range(H):
                h_new[j] = x[j]


@njit(**_OPTS)
def rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid):
    """δh_t = dh_rec + carry + d_hs[t]; δa_t = δh_t ⊙ σ'(a_t), or zero and all of δh_t carried for a
    finished sequence."""
    B, H = dh_rec.shape
    for b in range(B):
        cr = carry[b]
        dhr = dh_rec[b]
        dhs = d_hs[t, b]
        for j in range(H):
            cr[j] = dhr[j] + cr[j] + dhs[j]
        out = da[t, b]
        if valid[t, b] == 0:
            for j in range(H):
                out[j] = 0
            continue
        d = dact[t, b]
        for j in range(H):
            out[j] = cr[j] * d[j]
        for j in range(H):
            cr[j] = 0


# ------------------------------------------------------------------------------ whole sequences
# The walk over time in one compiled call, recurrent product included, where that beats a NumPy call
# per step (see whole_sequence). The product is matmul_nt: out = A Mᵀ with M stored row by row, so every
# entry is a dot product of two contiguous rows.
SMALL_MACS = 32768  # B·G·H·H per step at or below which per-call overhead dominates a step
NT_MIN_H, NT_MAX_B = 256, 16  # at H ≥ 256 and B ≤ 16, matmul_nt beats OpenBLAS's small-M product


def whole_sequence(B: int, G: int, H: int) -> bool:
    """Run the whole walk in one compiled call (True) or one BLAS call plus one kernel per step.

    Measured per-step products on this machine's class of CPU (float32, one thread, µs, OpenBLAS /
    matmul_nt): B=4, H=512: 306 / 144; B=16, H=512: 473 / 381; B=16, H=256: 97 / 102; B=32, H=128:
    41 / 57; B=2, H=512: 308 / 148 — OpenBLAS packs the whole weight matrix on every call, which costs
    most where B is small and W is large. Small steps (B·G·H² ≤ SMALL_MACS) are dominated by the ~1 µs
    cost of each Python-level call, which the compiled walk does not pay."""
    return B * G * H * H <= SMALL_MACS or (H >= NT_MIN_H and B <= NT_MAX_B)


@njit(**_OPTS)
def matmul_nt(A, M, out):
    """out (B, N) = A (B, K) @ Mᵀ for M (N, K) stored row by row: out[b, n] = Σ_k A[b, k]·M[n, k].

    In 4×4 tiles: 16 independent sums over k in one loop, which LLVM vectorizes along k (8 loads feed
    16 fused multiply-adds, so the loop runs at the FMA units' rate, not the loads'); the 4 rows of M
    stay in L1 while every row block of A passes them. Remainder rows and columns one at a time."""
    B, K = A.shape
    N = M.shape[0]
    B4 = B - B % 4
    N4 = N - N % 4
    zero = f32(0)
    for n0 in range(0, N4, 4):
        m0, m1, m2, m3 = M[n0], M[n0 + 1], M[n0 + 2], M[n0 + 3]
        for b0 in range(0, B4, 4):
            a0, a1, a2, a3 = A[b0], A[b0 + 1], A[b0 + 2], A[b0 + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(K):
                w0, w1, w2, w3 = m0[k], m1[k], m2[k], m3[k]
                x = a0[k]
                s00 += x * w0
                s01 += x * w1
                s02 += x * w2
                s03 += x * w3
                x = a1[k]
                s10 += x * w0
                s11 += x * w1
                s12 += x * w2
                s13 += x * w3
                x = a2[k]
                s20 += x * w0
                s21 += x * w1
                s22 += x * w2
                s23 += x * w3
                x = a3[k]
                s30 += x * w0
                s31 += x * w1
                s32 += x * w2
                s33 += x * w3
            _store4(out[b0], n0, s00, s01, s02, s03)
            _store4(out[b0 + 1], n0, s10, s11, s12, s13)
            _store4(out[b0 + 2], n0, s20, s21, s22, s23)
            _store4(out[b0 + 3], n0, s30, s31, s32, s33)
        for b in range(B4, B):
            a = A[b]
            s0 = s1 = s2 = s3 = zero
            for k in range(K):
                x = a[k]
                s0 += x * m0[k]
                s1 += x * m1[k]
                s2 += x * m2[k]
                s3 += x * m3[k]
            _store4(out[b], n0, s0, s1, s2, s3)
    for n in range(N4, N):
        m = M[n]
        for b in range(B):
            a = A[b]
            s = zero
            for k in range(K):
                s += a[k] * m[k]
            out[b, n] = s


@njit(inline="always", **_OPTS)
def _store4(row, n0, s0, s1, s2, s3):
    row[n0] = s0
    row[n0 + 1] = s1
    row[n0 + 2] = s2
    row[n0 + 3] = s3


def nt_forward_weights(W_hh: np.ndarray, B: int) -> np.ndarray:
    """The operand the matmul_nt forward walks take: W_hh (G·H, H) itself (rows of W_hh against h)."""
    return np.ascontiguousarray(W_hh)


def nt_backward_weights(W_hh: np.ndarray, B: int) -> np.ndarray:
    """The operand the matmul_nt backward walks take: W_hhᵀ (H, G·H) (rows of W_hhᵀ against δa)."""
    return transpose(W_hh)


@njit(**_OPTS)
def lstm_forward_seq(gates, W_hh, bias, scale, offset, hs, cs, tanh_c, valid, rec):
    for t in range(gates.shape[0]):
        matmul_nt(hs[t], W_hh, rec)
        lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(**_OPTS)
def lstm_backward_seq(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, WT):
    for t in range(gates.shape[0] - 1, -1, -1):
        lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)
        matmul_nt(da[t], WT, dh_rec)


@njit(**_OPTS)
def gru_forward_seq(gates, W_hh, b_h, b_hn, hs, hn, valid, rec):
    for t in range(gates.shape[0]):
        matmul_nt(hs[t], W_hh, rec)
        gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid)


@njit(**_OPTS)
def gru_backward_seq(d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, WT):
    for t in range(gates.shape[0] - 1, -1, -1):
        gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid)
        matmul_nt(dah[t], WT, dh_rec)


@njit(**_OPTS)
def rnn_forward_seq(xp, W_hh, bias, hs, dact, relu, valid, rec):
    for t in range(xp.shape[0]):
        matmul_nt(hs[t], W_hh, rec)
        rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid)


@njit(**_OPTS)
def rnn_backward_seq(d_hs, dh_rec, carry, dact, da, valid, WT):
    for t in range(dact.shape[0] - 1, -1, -1):
        rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
        matmul_nt(da[t], WT, dh_rec)


# ------------------------------------------------------------------ the same walks with oneDNN's product
# Used only after unrolled.kernels._dnnl.load() succeeded (the extra ``onednn``): the compiled code calls
# oneDNN by name (Numba ExternalFunctions; llvmlite resolves the symbols when a walk is compiled or loaded
# from the cache, and nothing here is compiled before a walk is first called). The product is a oneDNN
# matmul primitive whose weights were packed once for the walk (_dnnl.ProductPlan); a walk gets the plan's
# ``handles`` in place of a weight matrix and points the primitive's source and destination at each step's
# rows. These walks live in this file, not beside _dnnl, because Numba's disk cache checks only the file of
# the function it caches: a walk in another file would keep running an old copy of the gate kernels above
# after they change. (Passing the product to one set of walks as an argument is not cached by Numba:
# measured, it compiles again in every process.)
_i64, _i32 = types.int64, types.int32
# dnnl_status_t dnnl_memory_set_data_handle(dnnl_memory_t memory, void *handle);
# dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t, dnnl_stream_t, int nargs,
#                                      const dnnl_exec_arg_t *args);
# Pointers and handles travel as 64-bit integers (the same registers in the x86-64 calling convention).
_set_handle = types.ExternalFunction("dnnl_memory_set_data_handle", _i32(_i64, _i64))
_execute = types.ExternalFunction("dnnl_primitive_execute", _i32(_i64, _i64, _i32, _i64))


@njit(inline="always", **_OPTS)
def dnnl_product(a, plan, out):
    """out (B, N) = a (B, K) @ the plan's packed weights (K, N); a and out C-contiguous (rows of (T, B, ·)
    arrays are). plan: ProductPlan.handles = [primitive, stream, arguments, source memory, destination]."""
    _set_handle(plan[3], a.ctypes.data)
    _set_handle(plan[4], out.ctypes.data)
    _execute(plan[0], plan[1], 3, plan[2])


def dnnl_forward_weights(W_hh: np.ndarray, B: int) -> np.ndarray:
    """The plan forward walks take: h_{t-1} (B, H) times W_hhᵀ, W_hh (G·H, H) packed."""
    GH, H = W_hh.shape
    return _dnnl.plan(B, H, GH, w_rows_are_n=True).pack(np.ascontiguousarray(W_hh))


def dnnl_backward_weights(W_hh: np.ndarray, B: int) -> np.ndarray:
    """The plan backward walks take: δa_t (B, G·H) times W_hh (G·H, H), packed."""
    GH, H = W_hh.shape
    return _dnnl.plan(B, GH, H, w_rows_are_n=False).pack(np.ascontiguousarray(W_hh))


@njit(**_OPTS)
def lstm_forward_seq_dnnl(gates, plan, bias, scale, offset, hs, cs, tanh_c, valid, rec):
    for t in range(gates.shape[0]):
        dnnl_product(hs[t], plan, rec)
        lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(**_OPTS)
def lstm_backward_seq_dnnl(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, plan):
    for t in range(gates.shape[0] - 1, -1, -1):
        lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)
        dnnl_product(da[t], plan, dh_rec)


@njit(**_OPTS)
def gru_forward_seq_dnnl(gates, plan, b_h, b_hn, hs, hn, valid, rec):
    for t in range(gates.shape[0]):
        dnnl_product(hs[t], plan, rec)
        gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid)


@njit(**_OPTS)
def gru_backward_seq_dnnl(d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, plan):
    for t in range(gates.shape[0] - 1, -1, -1):
        gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid)
        dnnl_product(dah[t], plan, dh_rec)


@njit(**_OPTS)
def rnn_forward_seq_dnnl(xp, plan, bias, hs, dact, relu, valid, rec):
    for t in range(xp.shape[0]):
        dnnl_product(hs[t], plan, rec)
        rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid)


@njit(**_OPTS)
def rnn_backward_seq_dnnl(d_hs, dh_rec, carry, dact, da, valid, plan):
    for t in range(dact.shape[0] - 1, -1, -1):
        rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
        dnnl_product(da[t], plan, dh_rec)


class Walks(NamedTuple):
    """One set of whole-sequence walks and the W_hh layouts its forward and backward walks take."""

    name: str
    forward_weights: Callable
    backward_weights: Callable
    lstm_forward_seq: Callable
    lstm_backward_seq: Callable
    gru_forward_seq: Callable
    gru_backward_seq: Callable
    rnn_forward_seq: Callable
    rnn_backward_seq: Callable


NT_WALKS = Walks(
    "matmul_nt", nt_forward_weights, nt_backward_weights,
    lstm_forward_seq, lstm_backward_seq, gru_forward_seq, gru_backward_seq, rnn_forward_seq, rnn_backward_seq,
)  # fmt: skip
DNNL_WALKS = Walks(
    "oneDNN", dnnl_forward_weights, dnnl_backward_weights,
    lstm_forward_seq_dnnl, lstm_backward_seq_dnnl, gru_forward_seq_dnnl, gru_backward_seq_dnnl,
    rnn_forward_seq_dnnl, rnn_backward_seq_dnnl,
)  # fmt: skip
