"""Every Numba-compiled float32 kernel of the package: gate kernels (one fused pass over a step's gates,
forward and backward), whole-sequence walks, and the streaming steps of whole stacks.

All of them live in this one module on purpose: Numba's disk cache (``cache=True``) checks only the file
of the function it caches, so a kernel in another file that inlines ``tanh`` from here would keep running
an old copy of it after it changed. One module: one tanh, one set of flags, one cache that goes stale
together. Imported lazily (by the compiled cells that :func:`unrolled.kernels.pick` returns), so
``import unrolled`` never pays for Numba. The recurrent matrix products stay in NumPy's BLAS or oneDNN
where that is faster; a step is then a product into a buffer and one of these kernels.

Transcendentals must vectorize: Numba's ``np.tanh`` calls scalar libm (about 17 ns per element), so
tanh here is a rational approximation (the Eigen / XLA float32 one: odd degree-13 numerator over even
degree-6 denominator, argument clamped to ±7.998811721, where tanh rounds to ±1 in float32) that LLVM
vectorizes. ``error_model="numpy"`` lets the division vectorize (no ZeroDivisionError branch); the fast-math
flags exclude ``nnan``/``ninf`` so a NaN still propagates. Measured error against float64 tanh on a dense
sweep of [−10, 10]: ≤ 3.2e-7 absolute, ≤ 6 float32 ulps (tests/kernels/test_kernels.py checks it).
σ(a) = ½·tanh(a/2) + ½ as in the reference.

Each inner loop touches few arrays, over one contiguous row: Numba gives LLVM no aliasing information,
and a loop that reads and writes many arrays is left scalar (a first all-in-one-loop version of these
kernels ran at ~30 ns per element instead of ~0.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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
@njit(inline="always", **_OPTS)
def _lstm_cell(a, r, bias, scale, offset, c_prev, c_new, tc, h_prev, h_new, ok):
    """One sequence's LSTM step, shared by the training and the inference walks (so their outputs are
    equal bit for bit): a (4H,) holds W_xh x_t and becomes the activated gates i, f, g, o (v = s·tanh(s·a)
    + o per gate: s = ½, o = ½ for the sigmoids, s = 1, o = 0 for g); r (4H,) W_hh h_{t-1}; writes c_t,
    tanh(c_t) into tc and h_t. A finished sequence (ok False) keeps its state."""
    _lstm_units(a, r, bias, scale, offset, c_prev, c_new, tc, h_prev, h_new, ok, 0, a.shape[0] // 4)


@njit(inline="always", **_OPTS)
def _lstm_units(a, r, bias, scale, offset, c_prev, c_new, tc, h_prev, h_new, ok, lo, hi):
    """:func:`_lstm_cell` for the units lo..hi − 1 only (their rows of each gate block): every unit's step
    needs only its own gates, so the workers of the unit split (:func:`lstm_forward_units`) each run it on
    their share. All arrays full width; each loop runs from 0 over views of the share (loops from lo over
    the whole arrays measured 6x slower: LLVM left them scalar)."""
    H = a.shape[0] // 4
    for q in range(4):  # i, f, g, o
        _activate(a, r, bias, scale, offset, q * H + lo, q * H + hi)
    i, f, g, o = a[lo:hi], a[H + lo : H + hi], a[2 * H + lo : 2 * H + hi], a[3 * H + lo : 3 * H + hi]
    cp, cn, t, hp, hn = c_prev[lo:hi], c_new[lo:hi], tc[lo:hi], h_prev[lo:hi], h_new[lo:hi]
    if not ok:
        for j in range(hi - lo):
            t[j] = tanh(f[j] * cp[j] + i[j] * g[j])
            cn[j] = cp[j]
            hn[j] = hp[j]
        return
    for j in range(hi - lo):
        cn[j] = f[j] * cp[j] + i[j] * g[j]
    for j in range(hi - lo):
        t[j] = tanh(cn[j])
    for j in range(hi - lo):
        hn[j] = o[j] * t[j]


@njit(inline="always", **_OPTS)
def _activate(a, r, bias, scale, offset, lo, hi):
    """a = s·tanh(s·(a + r + b)) + o on lo..hi − 1: σ (s = o = ½) or tanh (s = 1, o = 0) of the sum."""
    a, r, bias, scale, offset = a[lo:hi], r[lo:hi], bias[lo:hi], scale[lo:hi], offset[lo:hi]
    for j in range(hi - lo):
        a[j] = scale[j] * tanh(scale[j] * (a[j] + r[j] + bias[j])) + offset[j]


@njit(**_OPTS)
def lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid):
    """gates[t] (B, 4H) holds W_xh x_t, rec (B, 4H) W_hh h_{t-1}, bias (4H,) b_h (zeros without).
    Writes the activated gates i, f, g, o into gates[t], then c_t, tanh(c_t), h_t (:func:`_lstm_cell`).
    A sequence with valid[t, b] == 0 keeps its state."""
    for b in range(rec.shape[0]):
        _lstm_cell(
            gates[t, b], rec[b], bias, scale, offset, cs[t, b], cs[t + 1, b], tanh_c[t, b], hs[t, b],
            hs[t + 1, b], valid[t, b] != 0,
        )  # fmt: skip


@njit(**_OPTS)
def lstm_infer_step(t, k, gates, rec, bias, scale, offset, hs, cs, tc, valid):
    """The inference form of :func:`lstm_forward_step` (no backward cache): gates (Tc, B, 4H) holds the
    projections of a chunk of steps, step t its row k; c_{t-1} and c_t alternate in cs (2, B, H); tanh(c_t)
    goes to the scratch tc (B, H); h_t to hs[t + 1] (the outputs)."""
    for b in range(rec.shape[0]):
        _lstm_cell(
            gates[k, b], rec[b], bias, scale, offset, cs[t % 2, b], cs[(t + 1) % 2, b], tc[b], hs[t, b],
            hs[t + 1, b], valid[t, b] != 0,
        )  # fmt: skip


@njit(**_OPTS)
def lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid):
    """δh_t = dh_rec + carry + d_hs[t] (dh_rec = δa_{t+1} W_hh); writes δa_t into da[t] and δc_{t-1}
    into dc; carry gets what reaches h_{t-1} other than through W_hh (all of δh_t for a finished
    sequence, whose δa_t is zero and whose δc passes unchanged)."""
    B, H = dc.shape
    for b in range(B):
        _lstm_back_units(
            gates[t, b], da[t, b], carry[b], dh_rec[b], d_hs[t, b], dc[b], tanh_c[t, b], cs[t, b],
            valid[t, b] != 0, 0, H,
        )  # fmt: skip


@njit(inline="always", **_OPTS)
def _delta_h(carry, dh_rec, dhs, lo, hi):
    """δh_t = δa_{t+1} W_hh + carry + ∂L/∂h_t over the units lo..hi − 1, into carry; returns that view."""
    cr, dhr, dh_out = carry[lo:hi], dh_rec[lo:hi], dhs[lo:hi]
    for j in range(hi - lo):
        cr[j] = dhr[j] + cr[j] + dh_out[j]
    return cr


@njit(inline="always", **_OPTS)
def _lstm_back_units(g4, d4, carry, dh_rec, dhs, dc, tc, c_prev, ok, lo, hi):
    """:func:`lstm_backward_step` for one sequence and the units lo..hi − 1 (the unit split's share;
    arrays full width, loops over views of the share)."""
    H = dc.shape[0]
    n = hi - lo
    cr = _delta_h(carry, dh_rec, dhs, lo, hi)
    if not ok:
        for q in range(4):
            dq = d4[q * H + lo : q * H + hi]
            for j in range(n):
                dq[j] = 0
        return
    dcb, tcs, cp = dc[lo:hi], tc[lo:hi], c_prev[lo:hi]
    i, f, g, o = g4[lo:hi], g4[H + lo : H + hi], g4[2 * H + lo : 2 * H + hi], g4[3 * H + lo : 3 * H + hi]
    di, df, dg, do = d4[lo:hi], d4[H + lo : H + hi], d4[2 * H + lo : 2 * H + hi], d4[3 * H + lo : 3 * H + hi]
    # Two passes over j (gates alone over T = 100 steps at B = 32, H = 128: 2.4-2.7 ms; seven one-purpose
    # loops took 3.0, one pass doing everything 3.3-3.5 — benchmarks/kernel_parts.py backward).
    for j in range(n):  # δa_o, then δc_t
        oj, tcj, dh = o[j], tcs[j], cr[j]
        do[j] = dh * tcj * oj * (f32(1) - oj)
        dcb[j] += dh * oj * (f32(1) - tcj * tcj)
    for j in range(n):  # δa_i, δa_f, δa_g, then δc_{t-1}
        dcj, ij, fj, gj = dcb[j], i[j], f[j], g[j]
        di[j] = dcj * gj * ij * (f32(1) - ij)
        df[j] = dcj * cp[j] * fj * (f32(1) - fj)
        dg[j] = dcj * ij * (f32(1) - gj * gj)
        dcb[j] = dcj * fj
    for j in range(n):
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
@njit(inline="always", **_OPTS)
def _gru_cell(a, r_, b_h, b_hn, q, h_prev, h_new, ok):
    """One sequence's reset_after GRU step, shared by the training and the inference walks: a (3H,) holds
    W_xh x_t and becomes the activated z, r, h̃; r_ (3H,) W_hh h_{t-1}; q gets W_hn h_{t-1} + b_hn; h_new
    h_t (h_{t-1} where ok is False)."""
    _gru_units(a, r_, b_h, b_hn, q, h_prev, h_new, ok, 0, q.shape[0])


@njit(inline="always", **_OPTS)
def _gru_units(a, r_, b_h, b_hn, q, h_prev, h_new, ok, lo, hi):
    """:func:`_gru_cell` for the units lo..hi − 1 only (the unit split's share; arrays full width, loops
    over views of the share, as in :func:`_lstm_units`)."""
    H = q.shape[0]
    _sigmoid_of_sum(a[lo:hi], r_[lo:hi], b_h[lo:hi])  # z
    _sigmoid_of_sum(a[H + lo : H + hi], r_[H + lo : H + hi], b_h[H + lo : H + hi])  # r
    z, r, n = a[lo:hi], a[H + lo : H + hi], a[2 * H + lo : 2 * H + hi]
    qs, rn, bn, bxn = q[lo:hi], r_[2 * H + lo : 2 * H + hi], b_hn[lo:hi], b_h[2 * H + lo : 2 * H + hi]
    for j in range(hi - lo):
        qs[j] = rn[j] + bn[j]
    for j in range(hi - lo):
        n[j] = tanh(n[j] + bxn[j] + r[j] * qs[j])
    hp, hn = h_prev[lo:hi], h_new[lo:hi]
    if not ok:
        for j in range(hi - lo):
            hn[j] = hp[j]
        return
    for j in range(hi - lo):
        hn[j] = hp[j] + z[j] * (n[j] - hp[j])


@njit(inline="always", **_OPTS)
def _sigmoid_of_sum(a, r, b):
    """a = σ(a + r + b) = ½·tanh(½(a + r + b)) + ½ elementwise."""
    for j in range(a.shape[0]):
        a[j] = f32(0.5) * tanh(f32(0.5) * (a[j] + r[j] + b[j])) + f32(0.5)


@njit(**_OPTS)
def gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid):
    """reset_after GRU. gates[t] (B, 3H) = W_xh x_t; rec (B, 3H) = W_hh h_{t-1}; b_h (3H,) and b_hn (H,)
    (zeros without). Writes the activated z, r, h̃ into gates[t], hn[t] = W_hn h_{t-1} + b_hn and h_t
    (:func:`_gru_cell`)."""
    for b in range(rec.shape[0]):
        _gru_cell(gates[t, b], rec[b], b_h, b_hn, hn[t, b], hs[t, b], hs[t + 1, b], valid[t, b] != 0)


@njit(**_OPTS)
def gru_infer_step(t, k, gates, rec, b_h, b_hn, hs, hn, valid):
    """The inference form of :func:`gru_forward_step`: gates (Tc, B, 3H) a chunk of steps (step t at row
    k), hn (B, H) a scratch; h_t to hs[t + 1]."""
    for b in range(rec.shape[0]):
        _gru_cell(gates[k, b], rec[b], b_h, b_hn, hn[b], hs[t, b], hs[t + 1, b], valid[t, b] != 0)


@njit(**_OPTS)
def gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid):
    """δh_t = dh_rec + carry + d_hs[t]; writes the recurrent pre-activation gradients dah[t] (B, 3H)
    = [δa_z, δa_r, r⊙δa_n], the candidate's da_n[t], and carry = δh_t ⊙ (1 − z) (the direct path)."""
    B = dh_rec.shape[0]
    H = hs.shape[2]
    for b in range(B):
        _gru_back_units(
            gates[t, b], dah[t, b], da_n[t, b], carry[b], dh_rec[b], d_hs[t, b], hs[t, b], hn[t, b],
            valid[t, b] != 0, 0, H,
        )  # fmt: skip


@njit(inline="always", **_OPTS)
def _gru_back_units(g3, d3, dn, carry, dh_rec, dhs, h_prev, q, ok, lo, hi):
    """:func:`gru_backward_step` for one sequence and the units lo..hi − 1 (the unit split's share;
    arrays full width, loops over views of the share)."""
    H = q.shape[0]
    n = hi - lo
    cr = _delta_h(carry, dh_rec, dhs, lo, hi)
    dz, dr, drn, dnn = d3[lo:hi], d3[H + lo : H + hi], d3[2 * H + lo : 2 * H + hi], dn[lo:hi]
    if not ok:
        for j in range(n):
            dz[j] = 0
            dr[j] = 0
            drn[j] = 0
            dnn[j] = 0
        return
    z, r, c, hp, qs = g3[lo:hi], g3[H + lo : H + hi], g3[2 * H + lo : 2 * H + hi], h_prev[lo:hi], q[lo:hi]
    for j in range(n):  # δa_z
        dz[j] = cr[j] * (c[j] - hp[j]) * z[j] * (f32(1) - z[j])
    for j in range(n):  # δa_n (input side)
        dnn[j] = cr[j] * z[j] * (f32(1) - c[j] * c[j])
    for j in range(n):  # δa_r
        dr[j] = dnn[j] * qs[j] * r[j] * (f32(1) - r[j])
    for j in range(n):  # r ⊙ δa_n (recurrent side)
        drn[j] = dnn[j] * r[j]
    for j in range(n):
        cr[j] *= f32(1) - z[j]


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
@njit(inline="always", **_OPTS)
def _rnn_cell(x, r, bias, d, h_prev, h_new, relu, ok, with_d):
    """One sequence's RNN step, shared by the training and the inference walks: x (H,) holds W_xh x_t and
    becomes σ(a_t); d gets σ'(a_t) when with_d (training); h_new h_t (h_{t-1} where ok is False)."""
    H = x.shape[0]
    if relu:
        for j in range(H):
            a = x[j] + r[j] + bias[j]
            x[j] = a if a > 0 else f32(0)
        if with_d:
            for j in range(H):
                d[j] = f32(1) if x[j] > 0 else f32(0)
    else:
        for j in range(H):
            x[j] = tanh(x[j] + r[j] + bias[j])
        if with_d:
            for j in range(H):
                d[j] = f32(1) - x[j] * x[j]
    if not ok:
        for j in range(H):
            h_new[j] = h_prev[j]
    else:
        for j in range(H):
            h_new[j] = x[j]


@njit(**_OPTS)
def rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid):
    """xp[t] (B, H) = W_xh x_t, rec = W_hh h_{t-1}, bias b_h (zeros without):
    h_t = σ(a_t), dact[t] = σ'(a_t) (:func:`_rnn_cell`)."""
    for b in range(rec.shape[0]):
        _rnn_cell(xp[t, b], rec[b], bias, dact[t, b], hs[t, b], hs[t + 1, b], relu, valid[t, b] != 0, True)


@njit(**_OPTS)
def rnn_infer_step(t, k, xp, rec, bias, hs, relu, valid):
    """The inference form of :func:`rnn_forward_step`: xp (Tc, B, H) a chunk of steps (step t at row k),
    no σ'; h_t to hs[t + 1]."""
    for b in range(rec.shape[0]):
        _rnn_cell(xp[k, b], rec[b], bias, rec[b], hs[t, b], hs[t + 1, b], relu, valid[t, b] != 0, False)


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


# ------------------------------------------------------------------------------ streaming: whole stacks
# ``RecurrentLayer.step`` at B = 1 is dominated by call overhead, not arithmetic: on the cell path a step
# is, per layer, a dict of params, two ``np.matmul`` and a gate kernel (lstm_step above), then ``np.stack``
# of the states and ``np.isfinite`` checks, each NumPy call ~1–2 µs (measured, B = 1, I = H, one thread:
# LSTM H=32 14.7 µs a step for ~1 µs of arithmetic, H=128 21 µs for ~7 µs). Each *_stack kernel below
# runs one step of a whole unidirectional stack in one call: the finiteness check of the inputs, both
# mat-vecs and the gate arithmetic for every layer, into output arrays the caller allocates (now 3.5 and
# 9.9 µs; see README, Performance). :mod:`unrolled.kernels.streaming` keeps the parameter tuples they take.
#
# Per layer l the input x is x_t for l = 0 and the new h of layer l − 1 above it; the equations are those
# of :mod:`unrolled.cells` (σ = sigmoid above). The mat-vecs are row-wise dot products over the contiguous
# rows of W (out[b, j] = Σ_k W[j, k]·x[b, k]), which LLVM vectorizes as reductions (``reassoc``).
#
# Each kernel returns a status: OK; NOT_FINITE, some input (x, h, c) holds a NaN or inf; BAD_SHAPES, the
# parameter shapes do not fit the layer. On a non-zero status nothing useful was written and the caller
# takes the checked path, which words the error. Compiling costs about 2 s per kernel and signature on
# first use (the first LSTM step 4.5 s with Numba's import, GRU and RNN 1.7–1.8 s each), then ~0.3 s to
# load from the disk cache. The signature includes the number of layers (the length of the W and b
# tuples) and the layouts of x and the state: a non-contiguous or read-only input compiles its own
# specialization once.
OK, NOT_FINITE, BAD_SHAPES = 0, 1, 2


@njit(inline="always", **_OPTS)
def _finite(a):
    """True when a (B, K) holds no NaN or inf: v·0 is 0 for a finite v and NaN otherwise, and a sum of
    those never overflows (the multiply stays: without nnan/ninf LLVM may not fold v·0 to 0)."""
    s = f32(0)
    for n in range(a.shape[0]):
        an = a[n]
        for k in range(a.shape[1]):
            s += an[k] * f32(0)
    return s == f32(0)


@njit(inline="always", **_OPTS)
def all_finite(h):
    """_finite over each layer of h (L, B, K)."""
    for l in range(h.shape[0]):
        if not _finite(h[l]):
            return False
    return True


@njit(inline="always", **_OPTS)
def _dots(W, x, out, bias):
    """out[n, j] = W[j]·x[n] (+ bias[j] unless bias is empty) for every row j of W (G, K) and n < B.

    Rows go eight at a time: the eight dot products share each load of x[n] and keep eight independent
    vector accumulators (one row at a time waits on each row's reduction; measured at H = 128, where
    the weights stream from L2: 9.0 µs one row at a time, 6.7 four, 6.3 eight, 4.6 for a bare read). A
    single row of x (a streaming step at B = 1, float32) goes to :func:`_matvec_rows` instead."""
    G, K = W.shape
    B = x.shape[0]
    with_bias = bias.shape[0] > 0
    G8 = G - G % 8
    start = G if B == 1 and _matvec(x, W, out) else 0  # one row: matmul_nt's vector mat-vec (below)
    for j in range(start, G8, 8):
        w0, w1, w2, w3 = W[j], W[j + 1], W[j + 2], W[j + 3]
        w4, w5, w6, w7 = W[j + 4], W[j + 5], W[j + 6], W[j + 7]
        for n in range(B):
            xn = x[n]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = f32(0)
            for k in range(K):
                xk = xn[k]
                s0 += w0[k] * xk
                s1 += w1[k] * xk
                s2 += w2[k] * xk
                s3 += w3[k] * xk
                s4 += w4[k] * xk
                s5 += w5[k] * xk
                s6 += w6[k] * xk
                s7 += w7[k] * xk
            o = out[n]
            o[j], o[j + 1], o[j + 2], o[j + 3] = s0, s1, s2, s3
            o[j + 4], o[j + 5], o[j + 6], o[j + 7] = s4, s5, s6, s7
    for j in range(max(start, G8), G):
        w0 = W[j]
        for n in range(B):
            xn = x[n]
            s0 = f32(0)
            for k in range(K):
                s0 += w0[k] * xn[k]
            out[n, j] = s0
    if with_bias:
        for n in range(B):
            o = out[n]
            for j in range(G):
                o[j] += bias[j]


@njit(inline="always", **_OPTS)
def _inputs_fit(x, h, W, biases_per_layer, b):
    """The shapes agree: W = (W_xh_0, W_hh_0, W_xh_1, ...) with W_xh_l (G, I_l), I_0 = x's width and
    I_l = H above, W_hh_l (G, H); h (L, B, H) with B = x's rows; b holds biases_per_layer vectors per
    layer, each (G,) or empty (the GRU's second, b_hn, is (H,) or empty)."""
    L = len(W) // 2
    if len(W) != 2 * L or L == 0 or len(b) != biases_per_layer * L:
        return False
    G, H = W[1].shape
    B = x.shape[0]
    if h.shape[0] != L or h.shape[1] != B or h.shape[2] != H:
        return False
    for l in range(L):
        I = x.shape[1] if l == 0 else H
        if W[2 * l].shape[0] != G or W[2 * l].shape[1] != I:
            return False
        if W[2 * l + 1].shape[0] != G or W[2 * l + 1].shape[1] != H:
            return False
        for i in range(biases_per_layer):
            n = b[biases_per_layer * l + i].shape[0]
            if n != 0 and n != (G if i == 0 else H):
                return False
    return True


@njit(**_OPTS)
def lstm_stack(x, h, c, W, b, y, h_out, c_out):
    """x (B, I); h, c (L, B, H); W = (W_xh_0, W_hh_0, W_xh_1, W_hh_1, ...) with W_xh_l (4H, I_l),
    W_hh_l (4H, H); b = (b_h_0, b_h_1, ...), each (4H,) or empty -> h_out, c_out (L, B, H) and
    y (B, H) = h_out[L − 1]. Returns a status (module docstring)."""
    if not _inputs_fit(x, h, W, 1, b) or c.shape != h.shape:
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h) or not all_finite(c):
        return NOT_FINITE
    L, B, H = h.shape
    G = 4 * H
    ax = np.empty((B, G), dtype=f32)
    ah = np.empty((B, G), dtype=f32)
    for l in range(L):
        _dots(W[2 * l], x if l == 0 else h_out[l - 1], ax, b[l])
        _dots(W[2 * l + 1], h[l], ah, b[l][:0])
        for n in range(B):
            a = ax[n]
            r = ah[n]
            for j in range(2 * H):  # i, f
                a[j] = sigmoid(a[j] + r[j])
            for j in range(2 * H, 3 * H):  # g
                a[j] = tanh(a[j] + r[j])
            for j in range(3 * H, G):  # o
                a[j] = sigmoid(a[j] + r[j])
            cp = c[l, n]
            co = c_out[l, n]
            for j in range(H):
                co[j] = a[H + j] * cp[j] + a[j] * a[2 * H + j]
            ho = h_out[l, n]
            for j in range(H):
                ho[j] = a[3 * H + j] * tanh(co[j])
    y[...] = h_out[L - 1]
    return OK


@njit(**_OPTS)
def gru_stack(x, h, W, b, y, h_out):
    """reset_after GRU. x (B, I); h (L, B, H); W as for lstm_stack with 3H rows (z, r, n);
    b = (b_h_0, b_hn_0, b_h_1, b_hn_1, ...), (3H,) / (H,) or empty -> h_out (L, B, H), y (B, H)."""
    if not _inputs_fit(x, h, W, 2, b):
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h):
        return NOT_FINITE
    L, B, H = h.shape
    G = 3 * H
    ax = np.empty((B, G), dtype=f32)
    ah = np.empty((B, G), dtype=f32)
    for l in range(L):
        _dots(W[2 * l], x if l == 0 else h_out[l - 1], ax, b[2 * l])
        _dots(W[2 * l + 1], h[l], ah, b[2 * l][:0])
        b_hn = b[2 * l + 1]
        for n in range(B):
            a = ax[n]
            q = ah[n]
            for j in range(2 * H):  # z, r
                a[j] = sigmoid(a[j] + q[j])
            if b_hn.shape[0] > 0:
                for j in range(H):
                    q[2 * H + j] += b_hn[j]
            for j in range(H):  # n = tanh(W_xn x + b_n + r ⊙ (W_hn h + b_hn))
                a[2 * H + j] = tanh(a[2 * H + j] + a[H + j] * q[2 * H + j])
            hp = h[l, n]
            ho = h_out[l, n]
            for j in range(H):
                ho[j] = hp[j] + a[j] * (a[2 * H + j] - hp[j])
    y[...] = h_out[L - 1]
    return OK


@njit(**_OPTS)
def rnn_stack(x, h, W, b, relu, y, h_out):
    """x (B, I); h (L, B, H); W as for lstm_stack with H rows; b = (b_h_0, ...), (H,) or empty;
    h_t = relu(a) if relu else tanh(a) -> h_out (L, B, H), y (B, H)."""
    if not _inputs_fit(x, h, W, 1, b):
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h):
        return NOT_FINITE
    L, B, H = h.shape
    ax = np.empty((B, H), dtype=f32)
    ah = np.empty((B, H), dtype=f32)
    for l in range(L):
        _dots(W[2 * l], x if l == 0 else h_out[l - 1], ax, b[l])
        _dots(W[2 * l + 1], h[l], ah, b[l][:0])
        for n in range(B):
            a = ax[n]
            r = ah[n]
            ho = h_out[l, n]
            if relu:
                for j in range(H):
                    v = a[j] + r[j]
                    ho[j] = v if v > f32(0) else f32(0)
            else:
                for j in range(H):
                    ho[j] = tanh(a[j] + r[j])
    y[...] = h_out[L - 1]
    return OK


# ------------------------------------------------------------------- layer-normalised LSTM and GRU
# The compiled steps of :mod:`unrolled.kernels.layernorm` (LSTMVariantCell with layer_norm only, and
# GRUVariantCell): LN(a; γ, β) = γ ⊙ â + β, â = (a − μ)·ρ, ρ = 1/sqrt(σ² + ε) over one row, and its
# backward δa = ρ·(δâ − mean(δâ) − â·mean(δâ ⊙ â)), δâ = δy ⊙ γ (:mod:`unrolled.cells.layernorm`).
LN_EPS = f32(1e-5)  # ε, as unrolled.cells.layernorm.EPS


@njit(inline="always", **_OPTS)
def _ln_normalise(a, a_hat):
    """â = (a − μ)·ρ over the row a (N,) into a_hat; returns ρ = 1/sqrt(σ² + ε), with μ = mean(a) and
    σ² = mean((a − μ)²) (two passes, as the reference)."""
    N = a.shape[0]
    s = f32(0)
    for j in range(N):
        s += a[j]
    mu = s / f32(N)
    q = f32(0)
    for j in range(N):
        d = a[j] - mu
        a_hat[j] = d
        q += d * d
    rho = f32(1) / np.sqrt(q / f32(N) + LN_EPS)
    for j in range(N):
        a_hat[j] *= rho
    return rho


@njit(inline="always", **_OPTS)
def _ln_back(dy, a_hat, rho, gain, da, dgain, dbias):
    """δa = ρ·(δâ − mean(δâ) − â·mean(δâ ⊙ â)) with δâ = δy ⊙ γ, into da (may be dy itself); adds
    δy ⊙ â to dgain and δy to dbias (∂L/∂γ, ∂L/∂β, float64 sums over the walk)."""
    N = dy.shape[0]
    m1 = f32(0)
    m2 = f32(0)
    for j in range(N):
        g = dy[j] * gain[j]
        m1 += g
        m2 += g * a_hat[j]
        dgain[j] += dy[j] * a_hat[j]
        dbias[j] += dy[j]
    m1 /= f32(N)
    m2 /= f32(N)
    for j in range(N):
        da[j] = rho * (dy[j] * gain[j] - m1 - a_hat[j] * m2)


@njit(**_OPTS)
def ln_forward_rows(a, gain, bias, a_hat, rho):
    """Row by row of a (N, G), in place: a ← γ ⊙ â + bias, â = (a − μ)·ρ into a_hat (N, G), ρ =
    1/sqrt(σ² + ε) into rho (N,). (bias: β, or β + b_h where a bias follows the LN.)"""
    for n in range(a.shape[0]):
        r = _ln_normalise(a[n], a_hat[n])
        rho[n] = r
        row, hat = a[n], a_hat[n]
        for j in range(row.shape[0]):
            row[j] = gain[j] * hat[j] + bias[j]


@njit(**_OPTS)
def ln_backward_rows(dy, a_hat, rho, gain, da, dparams):
    """Row by row of dy (N, G): da = ρ·(δâ − mean(δâ) − â·mean(δâ ⊙ â)), δâ = dy ⊙ γ; dparams (2, G)
    float64 gets ∂L/∂γ = Σ dy ⊙ â (row 0) and ∂L/∂β = Σ dy (row 1) added."""
    for n in range(dy.shape[0]):
        _ln_back(dy[n], a_hat[n], rho[n], gain, da[n], dparams[0], dparams[1])


@njit(**_OPTS)
def ln_lstm_forward_step(
    t, gates, rec, scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid
):
    """Layer-normalised LSTM, one step. gates[t] (B, 4H) holds LN(W_xh x_t; ln_x) + b_h, rec (B, 4H)
    W_hh h_{t-1}. Per row: v̂ = (v − μ)·ρ_v (stored), a = gates + γ_h ⊙ v̂ + β_h, activated in place
    (v = s·tanh(s·a) + o: i, f, o sigmoids, g tanh), c̃_t = f ⊙ c_{t-1} + i ⊙ g, n̂ = (c̃ − μ)·ρ_n
    (stored), tanh_n = tanh(γ_c ⊙ n̂ + β_c), h_t = o ⊙ tanh_n. A sequence with valid[t, b] == 0 keeps its
    state (its gates and LN statistics are written but never read)."""
    B = rec.shape[0]
    H = cs.shape[2]
    for b in range(B):
        a, vh, nh, tn = gates[t, b], v_hat[t, b], n_hat[t, b], tanh_n[t, b]
        rho_v[t, b] = _ln_normalise(rec[b], vh)
        for j in range(4 * H):
            a[j] = scale[j] * tanh(scale[j] * (a[j] + hg[j] * vh[j] + hb[j])) + offset[j]
        c_prev, c_new, h_prev, h_new = cs[t, b], cs[t + 1, b], hs[t, b], hs[t + 1, b]
        for j in range(H):
            c_new[j] = a[H + j] * c_prev[j] + a[j] * a[2 * H + j]
        rho_n[t, b] = _ln_normalise(c_new, nh)
        for j in range(H):
            tn[j] = tanh(cg[j] * nh[j] + cb[j])
        for j in range(H):
            h_new[j] = a[3 * H + j] * tn[j]
        if valid[t, b] == 0:
            for j in range(H):
                c_new[j] = c_prev[j]
                h_new[j] = h_prev[j]


@njit(**_OPTS)
def ln_lstm_backward_step(
    t,
    d_hs,
    dh_rec,
    carry,
    dc,
    gates,
    cs,
    v_hat,
    rho_v,
    n_hat,
    rho_n,
    tanh_n,
    hg,
    cg,
    da,
    dv,
    dh_params,
    dc_params,
    valid,
):
    """δh_t = dh_rec + carry + d_hs[t] (dh_rec = δv_{t+1} W_hh). Per row:
    δa_o = δh ⊙ tanh_n ⊙ o(1 − o); δn = δh ⊙ o ⊙ (1 − tanh_n²);
    δc̃ = δc + LN_backward(δn; n̂, ρ_n, γ_c)  (∂L/∂γ_c += δn ⊙ n̂, ∂L/∂β_c += δn into dc_params);
    δa_i = δc̃ ⊙ g ⊙ i(1 − i), δa_f = δc̃ ⊙ c_{t-1} ⊙ f(1 − f), δa_g = δc̃ ⊙ i ⊙ (1 − g²), δc_{t-1} = f ⊙ δc̃;
    δv = LN_backward(δa; v̂, ρ_v, γ_h)  (∂L/∂γ_h += δa ⊙ v̂, ∂L/∂β_h += δa into dh_params).
    Writes δa_t into da[t], δv_t into dv[t], δc_{t-1} into dc; carry gets what reaches h_{t-1} other
    than through W_hh (all of δh_t for a finished sequence, whose δa_t and δv_t are zero)."""
    B, H = dc.shape
    for b in range(B):
        g4, d4, dv4 = gates[t, b], da[t, b], dv[t, b]
        cr, dhr, dhs = carry[b], dh_rec[b], d_hs[t, b]
        for j in range(H):
            cr[j] = dhr[j] + cr[j] + dhs[j]  # δh_t
        if valid[t, b] == 0:
            for j in range(4 * H):
                d4[j] = 0
                dv4[j] = 0
            continue
        dcb, tn, nh, c_prev = dc[b], tanh_n[t, b], n_hat[t, b], cs[t, b]
        for j in range(H):  # δa_o, then δn into cr (δh_t is not needed again)
            o, tnj, dh = g4[3 * H + j], tn[j], cr[j]
            d4[3 * H + j] = dh * tnj * o * (f32(1) - o)
            cr[j] = dh * o * (f32(1) - tnj * tnj)
        _ln_back(cr, nh, rho_n[t, b], cg, cr, dc_params[0], dc_params[1])
        for j in range(H):  # δa_i, δa_f, δa_g, then δc_{t-1}
            dcj = dcb[j] + cr[j]
            i, f, g = g4[j], g4[H + j], g4[2 * H + j]
            d4[j] = dcj * g * i * (f32(1) - i)
            d4[H + j] = dcj * c_prev[j] * f * (f32(1) - f)
            d4[2 * H + j] = dcj * i * (f32(1) - g * g)
            dcb[j] = dcj * f
        _ln_back(d4, v_hat[t, b], rho_v[t, b], hg, dv4, dh_params[0], dh_params[1])
        for j in range(H):
            cr[j] = 0


@njit(**_OPTS)
def ln_gru_forward_step(t, gates, rec, hg, hb, b_hn, hs, hn, v_hat, rho_v, valid):
    """Layer-normalised GRU (reset_after), one step. gates[t] (B, 3H) holds LN(W_xh x_t; ln_x) + b_h, rec
    (B, 3H) W_hh h_{t-1}. Per row: v̂ = (v − μ)·ρ_v (stored), v = γ_h ⊙ v̂ + β_h; z = σ(a_z + v_z),
    r = σ(a_r + v_r), hn[t] = v_n + b_hn, h̃ = tanh(a_n + r ⊙ hn[t]) (z, r, h̃ into gates[t]);
    h_t = h_{t-1} + z ⊙ (h̃ − h_{t-1}) (h_{t-1} where valid[t, b] == 0)."""
    B = rec.shape[0]
    H = hn.shape[2]
    for b in range(B):
        a, vh, q = gates[t, b], v_hat[t, b], hn[t, b]
        rho_v[t, b] = _ln_normalise(rec[b], vh)
        for j in range(2 * H):
            a[j] = f32(0.5) * tanh(f32(0.5) * (a[j] + hg[j] * vh[j] + hb[j])) + f32(0.5)
        for j in range(H):
            q[j] = hg[2 * H + j] * vh[2 * H + j] + hb[2 * H + j] + b_hn[j]
        for j in range(H):
            a[2 * H + j] = tanh(a[2 * H + j] + a[H + j] * q[j])
        h_prev, h_new = hs[t, b], hs[t + 1, b]
        if valid[t, b] == 0:
            for j in range(H):
                h_new[j] = h_prev[j]
        else:
            for j in range(H):
                h_new[j] = h_prev[j] + a[j] * (a[2 * H + j] - h_prev[j])


@njit(**_OPTS)
def ln_gru_backward_step(
    t, d_hs, dh_rec, carry, gates, hs, hn, v_hat, rho_v, hg, du, dw, dh_params, d_bhn, valid
):
    """δh_t = dh_rec + carry + d_hs[t] (dh_rec = δw_{t+1} W_hh). Per row:
    δa_z = δh ⊙ (h̃ − h_{t-1}) ⊙ z(1 − z), δa_n = δh ⊙ z ⊙ (1 − h̃²), δa_r = δa_n ⊙ hn ⊙ r(1 − r)
    into du[t] = (δa_z, δa_r, δa_n); δv = (δa_z, δa_r, r ⊙ δa_n) (∂L/∂b_hn += r ⊙ δa_n into d_bhn);
    dw[t] = LN_backward(δv; v̂, ρ_v, γ_h) (∂L/∂γ_h += δv ⊙ v̂, ∂L/∂β_h += δv into dh_params);
    carry = δh ⊙ (1 − z) (all of δh_t for a finished sequence, whose du, dw are zero)."""
    B = dh_rec.shape[0]
    H = hs.shape[2]
    for b in range(B):
        g3, d3, w3 = gates[t, b], du[t, b], dw[t, b]
        cr, dhr, dhs = carry[b], dh_rec[b], d_hs[t, b]
        for j in range(H):
            cr[j] = dhr[j] + cr[j] + dhs[j]  # δh_t
        if valid[t, b] == 0:
            for j in range(3 * H):
                d3[j] = 0
                w3[j] = 0
            continue
        h_prev, q = hs[t, b], hn[t, b]
        for j in range(H):  # δa_z
            d3[j] = cr[j] * (g3[2 * H + j] - h_prev[j]) * g3[j] * (f32(1) - g3[j])
        for j in range(H):  # δa_n (input side)
            d3[2 * H + j] = cr[j] * g3[j] * (f32(1) - g3[2 * H + j] * g3[2 * H + j])
        for j in range(H):  # δa_r
            d3[H + j] = d3[2 * H + j] * q[j] * g3[H + j] * (f32(1) - g3[H + j])
        for j in range(2 * H):
            w3[j] = d3[j]
        for j in range(H):  # r ⊙ δa_n (recurrent side)
            w3[2 * H + j] = d3[2 * H + j] * g3[H + j]
            d_bhn[j] += w3[2 * H + j]
        _ln_back(w3, v_hat[t, b], rho_v[t, b], hg, w3, dh_params[0], dh_params[1])
        for j in range(H):
            cr[j] *= f32(1) - g3[j]


@njit(**_OPTS)
def ln_lstm_forward_seq(
    gates, W_hh, scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid, rec
):
    """:func:`ln_lstm_forward_step` over all T, the recurrent product by :func:`matmul_nt` (W_hh as is)."""
    for t in range(gates.shape[0]):
        matmul_nt(hs[t], W_hh, rec)
        ln_lstm_forward_step(
            t, gates, rec, scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid
        )


@njit(**_OPTS)
def ln_lstm_backward_seq(
    d_hs,
    dh_rec,
    carry,
    dc,
    gates,
    cs,
    v_hat,
    rho_v,
    n_hat,
    rho_n,
    tanh_n,
    hg,
    cg,
    da,
    dv,
    dh_params,
    dc_params,
    valid,
    WT,
):
    """:func:`ln_lstm_backward_step` from t = T − 1 down to 0, dh_rec = δv_t W_hh by :func:`matmul_nt`
    (WT = W_hhᵀ)."""
    for t in range(gates.shape[0] - 1, -1, -1):
        ln_lstm_backward_step(
            t,
            d_hs,
            dh_rec,
            carry,
            dc,
            gates,
            cs,
            v_hat,
            rho_v,
            n_hat,
            rho_n,
            tanh_n,
            hg,
            cg,
            da,
            dv,
            dh_params,
            dc_params,
            valid,
        )
        matmul_nt(dv[t], WT, dh_rec)


@njit(**_OPTS)
def ln_gru_forward_seq(gates, W_hh, hg, hb, b_hn, hs, hn, v_hat, rho_v, valid, rec):
    """:func:`ln_gru_forward_step` over all T, the recurrent product by :func:`matmul_nt`."""
    for t in range(gates.shape[0]):
        matmul_nt(hs[t], W_hh, rec)
        ln_gru_forward_step(t, gates, rec, hg, hb, b_hn, hs, hn, v_hat, rho_v, valid)


@njit(**_OPTS)
def ln_gru_backward_seq(
    d_hs, dh_rec, carry, gates, hs, hn, v_hat, rho_v, hg, du, dw, dh_params, d_bhn, valid, WT
):
    """:func:`ln_gru_backward_step` from t = T − 1 down to 0, dh_rec = δw_t W_hh by :func:`matmul_nt`."""
    for t in range(gates.shape[0] - 1, -1, -1):
        ln_gru_backward_step(
            t, d_hs, dh_rec, carry, gates, hs, hn, v_hat, rho_v, hg, du, dw, dh_params, d_bhn, valid
        )
        matmul_nt(dw[t], WT, dh_rec)


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


# ---- one row of A (B = 1, a single sequence): the mat-vec, as LLVM vectors
# At B = 1 each weight is used once per step, so the product is a read of M from cache. Eight rows of M
# share each 16-float load of x; each row keeps a 16-lane accumulator; the last K mod 16 columns are one
# masked load (lanes past the row read as 0). The eight accumulators are then summed across lanes
# together — a tree of shuffles that halves eight vectors into one of eight sums (7 adds for 8 rows instead
# of 4 per row) — which matters at small K, where the horizontal sums cost as much as the products.
# Explicit 16-lane types run in 512-bit registers where AVX-512 exists and in halves elsewhere.
_MV = 16
_FL = ("reassoc", "nsz", "contract")


def _shuffle(b, u, v, lanes):
    return b.shuffle_vector(u, v, ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes))


def _sum8(b, acc):
    """Eight 16-lane vectors -> one 8-lane vector of their lane sums (lane r: the sum of acc[r])."""
    half = 16
    while len(acc) > 1:  # each level: pairs of vectors, the first and second half of every run of lanes
        half //= 2
        runs = [(i, i + half) for i in range(0, 16, 2 * half)]
        lo = [j for a, _ in runs for j in range(a, a + half)]
        hi = [j for _, c in runs for j in range(c, c + half)]
        acc = [
            b.fadd(
                _shuffle(b, acc[i], acc[i + 1], lo + [16 + j for j in lo]),
                _shuffle(b, acc[i], acc[i + 1], hi + [16 + j for j in hi]),
                flags=_FL,
            )
            for i in range(0, len(acc), 2)
        ]
    v = acc[0]  # lanes 2r, 2r + 1: the two partial sums of row r
    return b.fadd(
        _shuffle(b, v, v, list(range(0, 16, 2))), _shuffle(b, v, v, list(range(1, 16, 2))), flags=_FL
    )


@intrinsic
def _dot8(typingctx, M, j, x):
    """(M[j + r] · x for r < 8) as a tuple of 8 float32: M (N, K) float32 with unit-stride rows, x (K,)
    float32 unit-stride (the caller checks both)."""
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 for a in (M, x)):
        return None
    if M.ndim != 2 or x.ndim != 1:
        return None
    ret = types.UniTuple(types.float32, 8)

    def codegen(context, builder, sig, args):
        i64, f = ir.IntType(64), ir.FloatType()
        vf, vb = ir.VectorType(f, _MV), ir.VectorType(ir.IntType(1), _MV)
        ma = context.make_array(sig.args[0])(context, builder, args[0])
        xa = context.make_array(sig.args[2])(context, builder, args[2])
        jj = context.cast(builder, args[1], sig.args[1], types.intp)
        K = builder.extract_value(ma.shape, 1)
        stride = builder.extract_value(ma.strides, 0)
        base = builder.bitcast(ma.data, ir.IntType(8).as_pointer())
        at = [
            builder.mul(builder.add(jj, ir.Constant(i64, r)), stride) for r in range(8)
        ]  # bytes to row j + r
        rows = [builder.bitcast(builder.gep(base, [a]), f.as_pointer()) for a in at]
        xs = xa.data
        zero = ir.Constant(vf, [0.0] * _MV)
        acc = [cgutils.alloca_once_value(builder, zero) for _ in range(8)]
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vf, [vf, vf, vf]), "llvm.fmuladd.v16f32"
        )
        ptr = vf.as_pointer()
        masked = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vf, [ptr, ir.IntType(32), vb, vf]),
            "llvm.masked.load.v16f32.p0v16f32",
        )
        K16 = builder.sub(K, builder.srem(K, ir.Constant(i64, _MV)))
        with cgutils.for_range_slice(builder, ir.Constant(i64, 0), K16, ir.Constant(i64, _MV)) as (k, _):
            xv = builder.load(builder.bitcast(builder.gep(xs, [k]), ptr), align=4)
            for r in range(8):
                w = builder.load(builder.bitcast(builder.gep(rows[r], [k]), ptr), align=4)
                builder.store(builder.call(fma, [w, xv, builder.load(acc[r])]), acc[r])
        with builder.if_then(builder.icmp_signed("<", K16, K)):  # the last K mod 16 columns
            left = builder.trunc(builder.sub(K, K16), ir.IntType(32))
            lanes = ir.Constant(ir.VectorType(ir.IntType(32), _MV), list(range(_MV)))
            splat = builder.insert_element(
                ir.Constant(ir.VectorType(ir.IntType(32), _MV), None), left, ir.Constant(ir.IntType(32), 0)
            )
            splat = _shuffle(builder, splat, splat, [0] * _MV)
            mask = builder.icmp_signed("<", lanes, splat)
            align = ir.Constant(ir.IntType(32), 4)

            def load(p):
                return builder.call(masked, [builder.bitcast(builder.gep(p, [K16]), ptr), align, mask, zero])

            xv = load(xs)
            for r in range(8):
                builder.store(builder.call(fma, [load(rows[r]), xv, builder.load(acc[r])]), acc[r])
        v = _sum8(builder, [builder.load(a) for a in acc])
        sums = [builder.extract_element(v, ir.Constant(ir.IntType(32), r)) for r in range(8)]
        return context.make_tuple(builder, ret, sums)

    return ret(M, j, x), codegen


@njit(**_OPTS)
def _matvec_rows(x, M, o):
    """o[n] = Σ_k x[k]·M[n, k] for every row n of M, eight rows at a time (:func:`_dot8`); float32, x
    and the rows of M unit-stride. The last N mod 8 rows one at a time."""
    N = M.shape[0]
    N8 = N - N % 8
    for n in range(0, N8, 8):
        s = _dot8(M, n, x)
        for r in range(8):
            o[n + r] = s[r]
    for n in range(N8, N):
        m = M[n]
        t = f32(0)
        for k in range(x.shape[0]):
            t += x[k] * m[k]
        o[n] = t


def _matvec(A, M, out):
    """out[0] = A[0] @ Mᵀ by :func:`_matvec_rows` where it applies (True), else False. Compiled code only."""
    raise NotImplementedError("_matvec runs inside compiled kernels")


@overload(_matvec, inline="always", jit_options=dict(fastmath=_FLAGS, error_model="numpy"))
def _matvec_for(A, M, out):
    if A.dtype == M.dtype == out.dtype == types.float32:

        def vector(A, M, out):
            if A.strides[1] != 4 or M.strides[1] != 4:
                return False
            _matvec_rows(A[0], M, out[0])
            return True

        return vector
    return lambda A, M, out: False  # float64 (the tests' precision): the tiles below


@njit(**_OPTS)
def matmul_nt(A, M, out):
    """out (B, N) = A (B, K) @ Mᵀ for M (N, K) stored row by row: out[b, n] = Σ_k A[b, k]·M[n, k].

    In 4×4 tiles: 16 independent sums over k in one loop, which LLVM vectorizes along k (8 loads feed
    16 fused multiply-adds, so the loop runs at the FMA units' rate, not the loads'); the 4 rows of M
    stay in L1 while every row block of A passes them. Remainder rows and columns one at a time. A single
    row of A (float32, unit-stride rows) goes to the mat-vec above instead."""
    if A.shape[0] == 1 and _matvec(A, M, out):
        return
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
def lstm_infer_seq(t0, gates, W_hh, bias, scale, offset, hs, cs, tc, valid, rec):
    for k in range(gates.shape[0]):
        matmul_nt(hs[t0 + k], W_hh, rec)
        lstm_infer_step(t0 + k, k, gates, rec, bias, scale, offset, hs, cs, tc, valid)


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
def gru_infer_seq(t0, gates, W_hh, b_h, b_hn, hs, hn, valid, rec):
    for k in range(gates.shape[0]):
        matmul_nt(hs[t0 + k], W_hh, rec)
        gru_infer_step(t0 + k, k, gates, rec, b_h, b_hn, hs, hn, valid)


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
def rnn_infer_seq(t0, xp, W_hh, bias, hs, relu, valid, rec):
    for k in range(xp.shape[0]):
        matmul_nt(hs[t0 + k], W_hh, rec)
        rnn_infer_step(t0 + k, k, xp, rec, bias, hs, relu, valid)


@njit(**_OPTS)
def rnn_backward_seq(d_hs, dh_rec, carry, dact, da, valid, WT):
    for t in range(dact.shape[0] - 1, -1, -1):
        rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
        matmul_nt(da[t], WT, dh_rec)


# ------------------------------------------------------------------------------------ the unit split
# At a single sequence there are no rows to split across workers, but a step's work is one product
# W_hh h_{t-1} and gate arithmetic that is independent per hidden unit. So the units are cut into k shares
# (``bounds``), and each step of the walk is k pieces of work, one per share: its rows of every gate block
# and its units of h_t, c_t. Worker w does share w each step (its share of W_hh then stays in its own core's
# cache: at H = 256 an LSTM's W_hh is 1 MiB, each half 512 KiB), then takes any share of the same step
# that no one has started (a partner that lost its core to another thread: the step goes on without it, at
# the one-worker speed, rather than waiting a whole time slice for it). Before step t a worker waits until
# every share of step t − 1 is done (all of h_{t-1} is written).
#
# Coordination is two counters per share, each in its own 128-byte slot of ``flags`` (int64): ``claimed``
# (steps started: a worker starts share j of step t by moving it from t to t + 1, compare-and-swap, so
# exactly one does) and ``done`` (steps finished; written with release, read with acquire ordering: LLVM
# atomics, as an ordinary load could be hoisted out of the waiting loop). A waiting worker spins
# (``pause``) briefly, then yields its core (``sched_yield``). Then the abort flag: set by the Python side
# when a worker fails before its walk, it makes a waiting worker return False instead of waiting forever.
# Then ``ready``, the steps whose input projection is written, and ``tail``, claimed (1) by the worker that
# projects the rest: a forward walk may start on the head of a chunk while a partner projects its tail,
# and waits for ``ready`` before each step; a worker that finds the tail unclaimed there claims it and
# returns 2, to project it in Python and start its walk again (so a partner that has not started yet is
# not waited for). Orchestrated by :mod:`unrolled.kernels._units`.
UNIT_SLOT = 16  # int64s per counter (128 bytes: two cache lines, so no two counters share a line)
_SPINS = 200  # pause loops (~5 µs at 25 ns each on Zen 4) before a waiting worker starts yielding its core


def _element_pointer(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx])


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """arr[idx] (int64) read with acquire ordering."""
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_element_pointer(context, builder, sig.args[0], *args), "acquire", 8)

    return sig, codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):
    """arr[idx] = val (int64) written with release ordering."""
    sig = types.void(arr, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _compare_swap(typingctx, arr, idx, expected, new):
    """arr[idx] = new if it holds ``expected`` (atomically, acquire-release); True if it did."""
    sig = types.boolean(arr, types.intp, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.extract_value(builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire"), 1)

    return sig, codegen


@intrinsic
def _pause(typingctx):
    """The x86 ``pause`` instruction (a spinning core's hint; spares the partner's cycles and power)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        pause = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, pause, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return sig, codegen


_sched_yield = types.ExternalFunction("sched_yield", types.int32())


@njit(inline="always", **_OPTS)
def _await_step(flags, k, t):
    """Wait until every one of the k shares has finished t steps. False if a worker aborted."""
    for j in range(k):
        spins = 0
        while _load_acquire(flags, (2 * j + 1) * UNIT_SLOT) < t:
            if spins < _SPINS:
                spins += 1
                _pause()
            else:
                if _load_acquire(flags, 2 * k * UNIT_SLOT) != 0:
                    return False
                _sched_yield()
    return True


@njit(inline="always", **_OPTS)
def _await_inputs(flags, k, t):
    """Wait until the input projection of step t is written: the ``ready`` slot counts the projected
    steps of the chunk (the tail, past the head the caller projected, is projected by whichever worker
    claims it first: :func:`unrolled.kernels._units.run`). 1: written; 2: no worker had claimed the tail,
    and this one now has (its walk returns 2, projects it and starts again); 0: a worker aborted."""
    spins = 0
    while _load_acquire(flags, (2 * k + 1) * UNIT_SLOT) <= t:
        if _compare_swap(flags, (2 * k + 2) * UNIT_SLOT, 0, 1):
            return 2
        if spins < _SPINS:
            spins += 1
            _pause()
        else:
            if _load_acquire(flags, 2 * k * UNIT_SLOT) != 0:
                return 0
            _sched_yield()
    return 1


@njit(**_OPTS)
def claim_tail(flags):
    """Claim the projection of the chunk's tail (True: this worker projects it). Called from Python."""
    k = (flags.shape[0] // UNIT_SLOT - 3) // 2
    return _compare_swap(flags, (2 * k + 2) * UNIT_SLOT, 0, 1)


@njit(**_OPTS)
def publish(flags, i, value):
    """flags[i] = value with release ordering (what was written before, e.g. a projection, is seen by a
    worker that reads the slot with acquire ordering). Called from Python."""
    _store_release(flags, i, value)


@njit(inline="always", **_OPTS)
def _claim(flags, j, t):
    """Start share j of step t, unless a worker already has (True: this worker does it)."""
    return _compare_swap(flags, 2 * j * UNIT_SLOT, t, t + 1)


@njit(inline="always", **_OPTS)
def _finish(flags, j, t):
    """Share j of step t is done (its units of h_t written)."""
    _store_release(flags, (2 * j + 1) * UNIT_SLOT, t + 1)


@njit(inline="always", **_OPTS)
def _unit_products(h, W_hh, lo, hi, rec):
    """rec[:, rows] = h W_hh[rows]ᵀ for the rows of units lo..hi − 1 in each gate block of W_hh (G·H, H)."""
    H = W_hh.shape[1]
    for q in range(W_hh.shape[0] // H):
        matmul_nt(h, W_hh[q * H + lo : q * H + hi], rec[:, q * H + lo : q * H + hi])


@njit(**_OPTS)
def lstm_forward_units(gates, W_hh, bounds, bias, scale, offset, hs, cs, tanh_c, valid, rec, flags, me):
    """Worker ``me``'s part of :func:`lstm_forward_seq` split into the shares of ``bounds`` (the same
    arrays; rec this worker's own). Returns 1 when the walk is done, 0 if another worker aborted, 2 when
    this worker has claimed the projection of the steps still missing (:func:`_await_inputs`)."""
    k = bounds.shape[0] - 1
    for t in range(gates.shape[0]):
        if not _await_step(flags, k, t):
            return 0
        got = _await_inputs(flags, k, t)
        if got != 1:
            return got
        for i in range(k):
            j = (me + i) % k  # its own share first
            if _claim(flags, j, t):
                lo, hi = bounds[j], bounds[j + 1]
                _unit_products(hs[t], W_hh, lo, hi, rec)
                for b in range(rec.shape[0]):
                    _lstm_units(
                        gates[t, b], rec[b], bias, scale, offset, cs[t, b], cs[t + 1, b], tanh_c[t, b],
                        hs[t, b], hs[t + 1, b], valid[t, b] != 0, lo, hi,
                    )  # fmt: skip
                _finish(flags, j, t)
    return 1 if _await_step(flags, k, gates.shape[0]) else 0


@njit(**_OPTS)
def lstm_infer_units(t0, gates, W_hh, bounds, bias, scale, offset, hs, cs, tc, valid, rec, flags, me):
    """Worker ``me``'s part of :func:`lstm_infer_seq` (a chunk of steps from t0; ``flags`` count the
    chunk's steps from 0)."""
    k = bounds.shape[0] - 1
    for s in range(gates.shape[0]):
        if not _await_step(flags, k, s):
            return 0
        got = _await_inputs(flags, k, s)
        if got != 1:
            return got
        t = t0 + s
        for i in range(k):
            j = (me + i) % k
            if _claim(flags, j, s):
                lo, hi = bounds[j], bounds[j + 1]
                _unit_products(hs[t], W_hh, lo, hi, rec)
                for b in range(rec.shape[0]):
                    _lstm_units(
                        gates[s, b], rec[b], bias, scale, offset, cs[t % 2, b], cs[(t + 1) % 2, b], tc[b],
                        hs[t, b], hs[t + 1, b], valid[t, b] != 0, lo, hi,
                    )  # fmt: skip
                _finish(flags, j, s)
    return 1 if _await_step(flags, k, gates.shape[0]) else 0


@njit(**_OPTS)
def gru_forward_units(gates, W_hh, bounds, b_h, b_hn, hs, hn, valid, rec, flags, me):
    """Worker ``me``'s part of :func:`gru_forward_seq` split into the shares of ``bounds``."""
    k = bounds.shape[0] - 1
    for t in range(gates.shape[0]):
        if not _await_step(flags, k, t):
            return 0
        got = _await_inputs(flags, k, t)
        if got != 1:
            return got
        for i in range(k):
            j = (me + i) % k
            if _claim(flags, j, t):
                lo, hi = bounds[j], bounds[j + 1]
                _unit_products(hs[t], W_hh, lo, hi, rec)
                for b in range(rec.shape[0]):
                    _gru_units(
                        gates[t, b], rec[b], b_h, b_hn, hn[t, b], hs[t, b], hs[t + 1, b], valid[t, b] != 0,
                        lo, hi,
                    )  # fmt: skip
                _finish(flags, j, t)
    return 1 if _await_step(flags, k, gates.shape[0]) else 0


@njit(**_OPTS)
def gru_infer_units(t0, gates, W_hh, bounds, b_h, b_hn, hs, hn, valid, rec, flags, me):
    """Worker ``me``'s part of :func:`gru_infer_seq` (a chunk of steps from t0; hn a (B, H) scratch)."""
    k = bounds.shape[0] - 1
    for s in range(gates.shape[0]):
        if not _await_step(flags, k, s):
            return 0
        got = _await_inputs(flags, k, s)
        if got != 1:
            return got
        t = t0 + s
        for i in range(k):
            j = (me + i) % k
            if _claim(flags, j, s):
                lo, hi = bounds[j], bounds[j + 1]
                _unit_products(hs[t], W_hh, lo, hi, rec)
                for b in range(rec.shape[0]):
                    _gru_units(
                        gates[s, b], rec[b], b_h, b_hn, hn[b], hs[t, b], hs[t + 1, b], valid[t, b] != 0,
                        lo, hi,
                    )  # fmt: skip
                _finish(flags, j, s)
    return 1 if _await_step(flags, k, gates.shape[0]) else 0


@njit(**_OPTS)
def lstm_backward_units(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, WT, bounds, flags, me):
    """Worker ``me``'s part of :func:`lstm_backward_seq` split into the shares of ``bounds``: at step t
    (the walk's step T − 1 − t) a share's units of δh from δa_{t+1} (all of it: hence the wait) times its
    rows of W_hhᵀ (WT, (H, 4H)), then its units' gate gradients; last, its units of δa_0 W_hh (for the
    gradient of the initial state)."""
    T = gates.shape[0]
    k = bounds.shape[0] - 1
    for s in range(T + 1):
        if not _await_step(flags, k, s):
            return False
        t = T - 1 - s
        for i in range(k):
            j = (me + i) % k
            if _claim(flags, j, s):
                lo, hi = bounds[j], bounds[j + 1]
                if t < T - 1:  # dh_rec = δa_{t+1} W_hh, this share's units (zero before the last step)
                    matmul_nt(da[t + 1], WT[lo:hi], dh_rec[:, lo:hi])
                if t >= 0:
                    for b in range(dc.shape[0]):
                        _lstm_back_units(
                            gates[t, b], da[t, b], carry[b], dh_rec[b], d_hs[t, b], dc[b], tanh_c[t, b],
                            cs[t, b], valid[t, b] != 0, lo, hi,
                        )  # fmt: skip
                _finish(flags, j, s)
    return _await_step(flags, k, T + 1)


@njit(**_OPTS)
def gru_backward_units(d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, WT, bounds, flags, me):
    """Worker ``me``'s part of :func:`gru_backward_seq` split into the shares of ``bounds`` (as
    :func:`lstm_backward_units`; WT = W_hhᵀ (H, 3H))."""
    T = gates.shape[0]
    k = bounds.shape[0] - 1
    for s in range(T + 1):
        if not _await_step(flags, k, s):
            return False
        t = T - 1 - s
        for i in range(k):
            j = (me + i) % k
            if _claim(flags, j, s):
                lo, hi = bounds[j], bounds[j + 1]
                if t < T - 1:
                    matmul_nt(dah[t + 1], WT[lo:hi], dh_rec[:, lo:hi])
                if t >= 0:
                    for b in range(dh_rec.shape[0]):
                        _gru_back_units(
                            gates[t, b], dah[t, b], da_n[t, b], carry[b], dh_rec[b], d_hs[t, b], hs[t, b],
                            hn[t, b], valid[t, b] != 0, lo, hi,
                        )  # fmt: skip
                _finish(flags, j, s)
    return _await_step(flags, k, T + 1)


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
    return _dnnl.walk_weights(_dnnl.plan(B, H, GH, w_rows_are_n=True), np.ascontiguousarray(W_hh))


def dnnl_backward_weights(W_hh: np.ndarray, B: int) -> np.ndarray:
    """The plan backward walks take: δa_t (B, G·H) times W_hh (G·H, H), packed."""
    GH, H = W_hh.shape
    return _dnnl.walk_weights(_dnnl.plan(B, GH, H, w_rows_are_n=False), np.ascontiguousarray(W_hh))


@njit(**_OPTS)
def lstm_forward_seq_dnnl(gates, plan, bias, scale, offset, hs, cs, tanh_c, valid, rec):
    for t in range(gates.shape[0]):
        dnnl_product(hs[t], plan, rec)
        lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(**_OPTS)
def lstm_infer_seq_dnnl(t0, gates, plan, bias, scale, offset, hs, cs, tc, valid, rec):
    for k in range(gates.shape[0]):
        dnnl_product(hs[t0 + k], plan, rec)
        lstm_infer_step(t0 + k, k, gates, rec, bias, scale, offset, hs, cs, tc, valid)


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
def gru_infer_seq_dnnl(t0, gates, plan, b_h, b_hn, hs, hn, valid, rec):
    for k in range(gates.shape[0]):
        dnnl_product(hs[t0 + k], plan, rec)
        gru_infer_step(t0 + k, k, gates, rec, b_h, b_hn, hs, hn, valid)


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
def rnn_infer_seq_dnnl(t0, xp, plan, bias, hs, relu, valid, rec):
    for k in range(xp.shape[0]):
        dnnl_product(hs[t0 + k], plan, rec)
        rnn_infer_step(t0 + k, k, xp, rec, bias, hs, relu, valid)


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
    # forward-only walks of a chunk of steps t0..t0 + Tc − 1 (the inference path: no backward cache)
    lstm_infer_seq: Callable
    gru_infer_seq: Callable
    rnn_infer_seq: Callable


NT_WALKS = Walks(
    "matmul_nt", nt_forward_weights, nt_backward_weights,
    lstm_forward_seq, lstm_backward_seq, gru_forward_seq, gru_backward_seq, rnn_forward_seq, rnn_backward_seq,
    lstm_infer_seq, gru_infer_seq, rnn_infer_seq,
)  # fmt: skip
DNNL_WALKS = Walks(
    "oneDNN", dnnl_forward_weights, dnnl_backward_weights,
    lstm_forward_seq_dnnl, lstm_backward_seq_dnnl, gru_forward_seq_dnnl, gru_backward_seq_dnnl,
    rnn_forward_seq_dnnl, rnn_backward_seq_dnnl, lstm_infer_seq_dnnl, gru_infer_seq_dnnl, rnn_infer_seq_dnnl,
)  # fmt: skip


# The layer-normalised cells' walks with oneDNN's product (see unrolled.kernels.layernorm).
@njit(**_OPTS)
def ln_lstm_forward_seq_dnnl(
    gates, plan, scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid, rec
):
    for t in range(gates.shape[0]):
        dnnl_product(hs[t], plan, rec)
        ln_lstm_forward_step(
            t, gates, rec, scale, offset, hg, hb, cg, cb, hs, cs, v_hat, rho_v, n_hat, rho_n, tanh_n, valid
        )


@njit(**_OPTS)
def ln_lstm_backward_seq_dnnl(
    d_hs,
    dh_rec,
    carry,
    dc,
    gates,
    cs,
    v_hat,
    rho_v,
    n_hat,
    rho_n,
    tanh_n,
    hg,
    cg,
    da,
    dv,
    dh_params,
    dc_params,
    valid,
    plan,
):
    for t in range(gates.shape[0] - 1, -1, -1):
        ln_lstm_backward_step(
            t,
            d_hs,
            dh_rec,
            carry,
            dc,
            gates,
            cs,
            v_hat,
            rho_v,
            n_hat,
            rho_n,
            tanh_n,
            hg,
            cg,
            da,
            dv,
            dh_params,
            dc_params,
            valid,
        )
        dnnl_product(dv[t], plan, dh_rec)


@njit(**_OPTS)
def ln_gru_forward_seq_dnnl(gates, plan, hg, hb, b_hn, hs, hn, v_hat, rho_v, valid, rec):
    for t in range(gates.shape[0]):
        dnnl_product(hs[t], plan, rec)
        ln_gru_forward_step(t, gates, rec, hg, hb, b_hn, hs, hn, v_hat, rho_v, valid)


@njit(**_OPTS)
def ln_gru_backward_seq_dnnl(
    d_hs, dh_rec, carry, gates, hs, hn, v_hat, rho_v, hg, du, dw, dh_params, d_bhn, valid, plan
):
    for t in range(gates.shape[0] - 1, -1, -1):
        ln_gru_backward_step(
            t, d_hs, dh_rec, carry, gates, hs, hn, v_hat, rho_v, hg, du, dw, dh_params, d_bhn, valid
        )
        dnnl_product(dw[t], plan, dh_rec)
