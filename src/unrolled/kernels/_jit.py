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
def lstm_forward_step(t, gates, rec, bias, hs, cs, tanh_c, valid):
    """gates[t] (B, 4H) holds W_xh x_t + b_h, rec (B, 4H) holds W_hh h_{t-1} (+ bias (4H,) when given a
    non-empty one); writes the activated i, f, g, o into gates[t], and c_t, tanh(c_t), h_t. A sequence
    with valid[b] == 0 keeps its state."""
    B = rec.shape[0]
    H = hs.shape[2]
    with_bias = bias.shape[0] > 0
    for b in range(B):
        a = gates[t, b]
        r = rec[b]
        c_prev = cs[t, b]
        c_new = cs[t + 1, b]
        h_new = hs[t + 1, b]
        tc = tanh_c[t, b]
        for j in range(H):
            ai = a[j] + r[j]
            af = a[H + j] + r[H + j]
            ag = a[2 * H + j] + r[2 * H + j]
            ao = a[3 * H + j] + r[3 * H + j]
            if with_bias:
                ai += bias[j]
                af += bias[H + j]
                ag += bias[2 * H + j]
                ao += bias[3 * H + j]
            i = sigmoid(ai)
            f = sigmoid(af)
            g = tanh(ag)
            o = sigmoid(ao)
            a[j] = i
            a[H + j] = f
            a[2 * H + j] = g
            a[3 * H + j] = o
            c = f * c_prev[j] + i * g
            th = tanh(c)
            tc[j] = th
            c_new[j] = c
            h_new[j] = o * th
        if valid[t, b] == 0:
            for j in range(H):
                c_new[j] = c_prev[j]
                h_new[j] = hs[t, b, j]


@njit(**_OPTS)
def lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid):
    """δh_t = dh_rec + carry + d_hs[t] (dh_rec = δa_{t+1} W_hh); writes δa_t into da[t] and δc_{t-1}
    into dc; carry gets what reaches h_{t-1} other than through W_hh (all of δh_t for a finished sequence)."""
    B, H = dc.shape
    for b in range(B):
        g4 = gates[t, b]
        d4 = da[t, b]
        c_prev = cs[t, b]
        tc = tanh_c[t, b]
        dhr = dh_rec[b]
        cr = carry[b]
        dhs = d_hs[t, b]
        dcb = dc[b]
        if valid[t, b] == 0:
            for j in range(H):
                cr[j] = dhr[j] + cr[j] + dhs[j]
                d4[j] = 0
                d4[H + j] = 0
                d4[2 * H + j] = 0
                d4[3 * H + j] = 0
            continue
        for j in range(H):
            dh = dhr[j] + cr[j] + dhs[j]
            i = g4[j]
            f = g4[H + j]
            g = g4[2 * H + j]
            o = g4[3 * H + j]
            th = tc[j]
            d_c = dcb[j] + dh * o * (f32(1) - th * th)
            d4[j] = d_c * g * i * (f32(1) - i)
            d4[H + j] = d_c * c_prev[j] * f * (f32(1) - f)
            d4[2 * H + j] = d_c * i * (f32(1) - g * g)
            d4[3 * H + j] = dh * th * o * (f32(1) - o)
            dcb[j] = d_c * f
            cr[j] = 0


@njit(**_OPTS)
def lstm_step(xa, ha, bias, c, h_out, c_out):
    """Streaming step: xa = W_xh x, ha = W_hh h (B, 4H), bias (4H,) or empty -> h_out, c_out."""
    B, H = c.shape
    with_bias = bias.shape[0] > 0
    for b in range(B):
        a = xa[b]
        r = ha[b]
        for j in range(H):
            ai, af, ag, ao = (
                a[j] + r[j],
                a[H + j] + r[H + j],
                a[2 * H + j] + r[2 * H + j],
                a[3 * H + j] + r[3 * H + j],
            )
            if with_bias:
                ai += bias[j]
                af += bias[H + j]
                ag += bias[2 * H + j]
                ao += bias[3 * H + j]
            cn = sigmoid(af) * c[b, j] + sigmoid(ai) * tanh(ag)
            c_out[b, j] = cn
            h_out[b, j] = sigmoid(ao) * tanh(cn)


# ----------------------------------------------------------------------------------------------- GRU
@njit(**_OPTS)
def gru_forward_step(t, gates, rec, b_hn, hs, hn, valid):
    """reset_after GRU. gates[t] (B, 3H) = W_xh x_t + b_h; rec (B, 3H) = W_hh h_{t-1}. Writes the
    activated z, r, h̃ into gates[t], hn[t] = W_hn h_{t-1} + b_hn and h_t."""
    B = rec.shape[0]
    H = hs.shape[2]
    with_bhn = b_hn.shape[0] > 0
    for b in range(B):
        a = gates[t, b]
        r_ = rec[b]
        h_prev = hs[t, b]
        h_new = hs[t + 1, b]
        hnb = hn[t, b]
        for j in range(H):
            z = sigmoid(a[j] + r_[j])
            r = sigmoid(a[H + j] + r_[H + j])
            q = r_[2 * H + j]
            if with_bhn:
                q += b_hn[j]
            n = tanh(a[2 * H + j] + r * q)
            a[j] = z
            a[H + j] = r
            a[2 * H + j] = n
            hnb[j] = q
            h_new[j] = h_prev[j] + z * (n - h_prev[j])
        if valid[t, b] == 0:
            for j in range(H):
                h_new[j] = h_prev[j]


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
        h_prev = hs[t, b]
        hnb = hn[t, b]
        dhr = dh_rec[b]
        cr = carry[b]
        dhs = d_hs[t, b]
        if valid[t, b] == 0:
            for j in range(H):
                cr[j] = dhr[j] + cr[j] + dhs[j]
                d3[j] = 0
                d3[H + j] = 0
                d3[2 * H + j] = 0
                dn[j] = 0
            continue
        for j in range(H):
            dh = dhr[j] + cr[j] + dhs[j]
            z = g3[j]
            r = g3[H + j]
            n = g3[2 * H + j]
            d_an = dh * z * (f32(1) - n * n)
            d3[j] = dh * (n - h_prev[j]) * z * (f32(1) - z)
            d3[H + j] = d_an * hnb[j] * r * (f32(1) - r)
            d3[2 * H + j] = d_an * r
            dn[j] = d_an
            cr[j] = dh * (f32(1) - z)


@njit(**_OPTS)
def gru_step(xp, rec, b_h, b_hn, h, h_out):
    """Streaming step: xp (B, 3H) = W_xh x, rec (B, 3H) = W_hh h, biases or empty -> h_out."""
    B, H = h.shape
    with_bh = b_h.shape[0] > 0
    with_bhn = b_hn.shape[0] > 0
    for b in range(B):
        for j in range(H):
            az = xp[b, j] + rec[b, j]
            ar = xp[b, H + j] + rec[b, H + j]
            an = xp[b, 2 * H + j]
            q = rec[b, 2 * H + j]
            if with_bh:
                az += b_h[j]
                ar += b_h[H + j]
                an += b_h[2 * H + j]
            if with_bhn:
                q += b_hn[j]
            z = sigmoid(az)
            r = sigmoid(ar)
            n = tanh(an + r * q)
            h_out[b, j] = h[b, j] + z * (n - h[b, j])


# ----------------------------------------------------------------------------------------------- RNN
@njit(**_OPTS)
def rnn_forward_step(t, xp, rec, hs, dact, relu, valid):
    """xp[t] (B, H) = W_xh x_t + b_h, rec = W_hh h_{t-1}: h_t = σ(xp + rec), dact[t] = σ'(a_t)."""
    B, H = rec.shape
    for b in range(B):
        x = xp[t, b]
        r = rec[b]
        h_new = hs[t + 1, b]
        d = dact[t, b]
        for j in range(H):
            a = x[j] + r[j]
            if relu:
                h = a if a > 0 else f32(0)
                d[j] = f32(1) if a > 0 else f32(0)
            else:
                h = tanh(a)
                d[j] = f32(1) - h * h
            h_new[j] = h
        if valid[t, b] == 0:
            for j in range(H):
                h_new[j] = hs[t, b, j]


@njit(**_OPTS)
def rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid):
    B, H = dh_rec.shape
    for b in range(B):
        dhr = dh_rec[b]
        cr = carry[b]
        dhs = d_hs[t, b]
        d = dact[t, b]
        out = da[t, b]
        keep = valid[t, b] == 0
        for j in range(H):
            dh = dhr[j] + cr[j] + dhs[j]
            if keep:
                out[j] = 0
                cr[j] = dh
            else:
                out[j] = dh * d[j]
                cr[j] = 0
