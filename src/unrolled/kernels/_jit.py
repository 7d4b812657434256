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

import numpy as np
from numba import njit

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


# ------------------------------------------------------------------- whole sequences, for small sizes
# When B·G·H² is small (streaming-sized batches, small H), a NumPy call per step costs more than the
# step's arithmetic: these run the whole walk over time in one call, the recurrent product included.
SMALL_MACS = 32768  # B·G·H·H per step at or below which the whole-sequence kernels are used


@njit(inline="always", **_OPTS)
def _matmul_rows(h, WT, out):
    """out (B, G) = h (B, H) @ WT (H, G), vectorized along G."""
    B, H = h.shape
    G = out.shape[1]
    for b in range(B):
        o = out[b]
        for j in range(G):
            o[j] = 0
        for k in range(H):
            hk = h[b, k]
            w = WT[k]
            for j in range(G):
                o[j] += hk * w[j]


@njit(**_OPTS)
def lstm_forward_seq(gates, WT, bias, scale, offset, hs, cs, tanh_c, valid, rec):
    for t in range(gates.shape[0]):
        _matmul_rows(hs[t], WT, rec)
        lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(**_OPTS)
def lstm_backward_seq(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, W_hh):
    for t in range(gates.shape[0] - 1, -1, -1):
        lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)
        _matmul_rows(da[t], W_hh, dh_rec)


@njit(**_OPTS)
def gru_forward_seq(gates, WT, b_h, b_hn, hs, hn, valid, rec):
    for t in range(gates.shape[0]):
        _matmul_rows(hs[t], WT, rec)
        gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid)


@njit(**_OPTS)
def gru_backward_seq(d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, W_hh):
    for t in range(gates.shape[0] - 1, -1, -1):
        gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid)
        _matmul_rows(dah[t], W_hh, dh_rec)


@njit(**_OPTS)
def rnn_forward_seq(xp, WT, bias, hs, dact, relu, valid, rec):
    for t in range(xp.shape[0]):
        _matmul_rows(hs[t], WT, rec)
        rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid)


@njit(**_OPTS)
def rnn_backward_seq(d_hs, dh_rec, carry, dact, da, valid, W_hh):
    for t in range(dact.shape[0] - 1, -1, -1):
        rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
        _matmul_rows(da[t], W_hh, dh_rec)
