"""Numba kernels that read quantised weights: int8 rows with a float32 scale each, or bf16 (stored as the
upper 16 bits of the float32, ``uint16``). Forward only: a quantised layer is for inference.

The product, for a weight matrix W quantised row by row (see :mod:`unrolled.kernels.quantized`)::

    out[n, j] = s_j · Σ_k widen(Q[j, k]) · x[n, k]  (+ b_j)

widen(q) = float32(q) for int8 (s_j = max_k |W[j, k]| / 127), and for bf16 the float32 whose upper 16
bits are q and lower 16 bits zero (s_j = 1). The sum is float32 (``reassoc``: LLVM vectorizes it as a
reduction, as :func:`unrolled.kernels._jit._dots` does), the scale is applied once per row after the dot
product, and every gate is float32. The gate equations are those of :mod:`unrolled.cells` in the form of
the float32 ``*_stack`` kernels of :mod:`unrolled.kernels._jit` (same ``tanh``/``sigmoid``, imported from
there): only the mat-vec differs, so it is the one thing here.

Why smaller weights help: a step at B = 1 is a read of every weight once; at H = 512 an LSTM's two
matrices are 8 MiB of float32, more than L2, so the step is bound by memory traffic. int8 reads a
quarter of the bytes, bf16 half.

Kernels: ``*_qstack`` (one step of a whole unidirectional stack, the quantised twin of ``*_stack``; same
statuses: 0 OK, 1 NOT_FINITE, 2 BAD_SHAPES) and ``*_qwalk`` (a whole sequence through the stack, layer
after layer: W_xh over all T·B rows in one product, then the recurrent walk).

Numba's disk cache checks only this file: these kernels inline ``tanh`` and the shape checks of
:mod:`unrolled.kernels._jit`, so a change there needs this file touched too (its cache then goes stale
with it); the tests compare these kernels with NumPy's tanh, which a stale copy of a changed tanh fails.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from unrolled.kernels._jit import _OPTS, _finite, _inputs_fit, all_finite, sigmoid, tanh

f32 = np.float32
OK, NOT_FINITE, BAD_SHAPES = 0, 1, 2


@intrinsic
def _bf16_bits_to_f32(typingctx, u):
    """The float32 whose upper half is the uint16 `u` (a bf16 number) and lower half zero: exact."""
    if not (isinstance(u, types.Integer) and u.bitwidth == 16 and not u.signed):
        return None

    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], ir.IntType(32))
        return builder.bitcast(builder.shl(wide, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(u), codegen


def widen(q):  # pragma: no cover - replaced by its overload inside compiled code
    """float32 of one stored weight: int8 as its value, uint16 as the bf16 bits it holds."""
    raise NotImplementedError


@overload(widen, inline="always")
def _widen(q):
    if isinstance(q, types.Integer) and q.bitwidth == 8 and q.signed:
        return lambda q: f32(q)
    if isinstance(q, types.Integer) and q.bitwidth == 16 and not q.signed:
        return lambda q: _bf16_bits_to_f32(q)
    return None


@njit(inline="always", **_OPTS)
def _qdots(Q, s, x, out, bias):
    """out[n, j] = s[j] · Σ_k widen(Q[j, k]) x[n, k] (+ bias[j] unless empty) for every row j of Q (G, K).

    Eight rows at a time share each load of x[n] (as ``_jit._dots``): the weights are read once per call
    when B is small, which is what a step at B = 1 is bound by."""
    G, K = Q.shape
    B = x.shape[0]
    with_bias = bias.shape[0] > 0
    G8 = G - G % 8
    for j in range(0, G8, 8):
        w0, w1, w2, w3 = Q[j], Q[j + 1], Q[j + 2], Q[j + 3]
        w4, w5, w6, w7 = Q[j + 4], Q[j + 5], Q[j + 6], Q[j + 7]
        for n in range(B):
            xn = x[n]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = f32(0)
            for k in range(K):
                xk = xn[k]
                s0 += widen(w0[k]) * xk
                s1 += widen(w1[k]) * xk
                s2 += widen(w2[k]) * xk
                s3 += widen(w3[k]) * xk
                s4 += widen(w4[k]) * xk
                s5 += widen(w5[k]) * xk
                s6 += widen(w6[k]) * xk
                s7 += widen(w7[k]) * xk
            o = out[n]
            o[j], o[j + 1], o[j + 2], o[j + 3] = s0 * s[j], s1 * s[j + 1], s2 * s[j + 2], s3 * s[j + 3]
            o[j + 4], o[j + 5] = s4 * s[j + 4], s5 * s[j + 5]
            o[j + 6], o[j + 7] = s6 * s[j + 6], s7 * s[j + 7]
    for j in range(G8, G):
        w0 = Q[j]
        for n in range(B):
            xn = x[n]
            s0 = f32(0)
            for k in range(K):
                s0 += widen(w0[k]) * xn[k]
            out[n, j] = s0 * s[j]
    if with_bias:
        for n in range(B):
            o = out[n]
            for j in range(G):
                o[j] += bias[j]


@njit(inline="always", **_OPTS)
def _scales_fit(W, S):
    if len(S) != len(W):
        return False
    for i in range(len(W)):
        if S[i].shape[0] != W[i].shape[0]:
            return False
    return True


# ------------------------------------------------------------------------------------------ the gates
# a = W_xh x + b (activated in place), r = W_hh h: the equations of unrolled.cells, as in _jit's *_stack.
@njit(inline="always", **_OPTS)
def _lstm_gates(a, r, cp, co, ho, H):
    for j in range(2 * H):  # i, f
        a[j] = sigmoid(a[j] + r[j])
    for j in range(2 * H, 3 * H):  # g
        a[j] = tanh(a[j] + r[j])
    for j in range(3 * H, 4 * H):  # o
        a[j] = sigmoid(a[j] + r[j])
    for j in range(H):
        co[j] = a[H + j] * cp[j] + a[j] * a[2 * H + j]
    for j in range(H):
        ho[j] = a[3 * H + j] * tanh(co[j])


@njit(inline="always", **_OPTS)
def _gru_gates(a, q, b_hn, hp, ho, H):
    for j in range(2 * H):  # z, r
        a[j] = sigmoid(a[j] + q[j])
    if b_hn.shape[0] > 0:
        for j in range(H):
            q[2 * H + j] += b_hn[j]
    for j in range(H):  # n = tanh(W_xn x + b_n + r ⊙ (W_hn h + b_hn))
        a[2 * H + j] = tanh(a[2 * H + j] + a[H + j] * q[2 * H + j])
    for j in range(H):
        ho[j] = hp[j] + a[j] * (a[2 * H + j] - hp[j])


@njit(inline="always", **_OPTS)
def _rnn_gates(a, r, ho, relu, H):
    if relu:
        for j in range(H):
            v = a[j] + r[j]
            ho[j] = v if v > f32(0) else f32(0)
    else:
        for j in range(H):
            ho[j] = tanh(a[j] + r[j])


# ----------------------------------------------------------------------------- one step of a stack
@njit(**_OPTS)
def lstm_qstack(x, h, c, W, S, b, y, h_out, c_out):
    """``_jit.lstm_stack`` with quantised W = (Q_xh_0, Q_hh_0, ...) and their row scales S (same order)."""
    if not _inputs_fit(x, h, W, 1, b) or c.shape != h.shape or not _scales_fit(W, S):
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h) or not all_finite(c):
        return NOT_FINITE
    L, B, H = h.shape
    ax = np.empty((B, 4 * H), dtype=f32)
    ah = np.empty((B, 4 * H), dtype=f32)
    for l in range(L):
        _qdots(W[2 * l], S[2 * l], x if l == 0 else h_out[l - 1], ax, b[l])
        _qdots(W[2 * l + 1], S[2 * l + 1], h[l], ah, b[l][:0])
        for n in range(B):
            _lstm_gates(ax[n], ah[n], c[l, n], c_out[l, n], h_out[l, n], H)
    y[...] = h_out[L - 1]
    return OK


@njit(**_OPTS)
def gru_qstack(x, h, W, S, b, y, h_out):
    """``_jit.gru_stack`` (reset_after) with quantised weights; b = (b_h_0, b_hn_0, ...)."""
    if not _inputs_fit(x, h, W, 2, b) or not _scales_fit(W, S):
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h):
        return NOT_FINITE
    L, B, H = h.shape
    ax = np.empty((B, 3 * H), dtype=f32)
    ah = np.empty((B, 3 * H), dtype=f32)
    for l in range(L):
        _qdots(W[2 * l], S[2 * l], x if l == 0 else h_out[l - 1], ax, b[2 * l])
        _qdots(W[2 * l + 1], S[2 * l + 1], h[l], ah, b[2 * l][:0])
        for n in range(B):
            _gru_gates(ax[n], ah[n], b[2 * l + 1], h[l, n], h_out[l, n], H)
    y[...] = h_out[L - 1]
    return OK


@njit(**_OPTS)
def rnn_qstack(x, h, W, S, b, relu, y, h_out):
    """``_jit.rnn_stack`` with quantised weights."""
    if not _inputs_fit(x, h, W, 1, b) or not _scales_fit(W, S):
        return BAD_SHAPES
    if not _finite(x) or not all_finite(h):
        return NOT_FINITE
    L, B, H = h.shape
    ax = np.empty((B, H), dtype=f32)
    ah = np.empty((B, H), dtype=f32)
    for l in range(L):
        _qdots(W[2 * l], S[2 * l], x if l == 0 else h_out[l - 1], ax, b[l])
        _qdots(W[2 * l + 1], S[2 * l + 1], h[l], ah, b[l][:0])
        for n in range(B):
            _rnn_gates(ax[n], ah[n], h_out[l, n], relu, H)
    y[...] = h_out[L - 1]
    return OK


# ------------------------------------------------------------------------ a whole sequence, forward
# x (T, B, I) C-contiguous; h0 (and c0) (L, B, H); out (T, B, H) the top layer's outputs; h_n (, c_n)
# (L, B, H). Layer after layer: the input product of all T·B rows in one _qdots (each block of eight
# weight rows read once for the whole sequence), then the walk over t with the recurrent product.
@njit(**_OPTS)
def lstm_qwalk(x, h0, c0, W, S, b, out, h_n, c_n):
    T, B, I = x.shape
    if not _inputs_fit(x[0], h0, W, 1, b) or c0.shape != h0.shape or not _scales_fit(W, S):
        return BAD_SHAPES
    L, _, H = h0.shape
    ah = np.empty((B, 4 * H), dtype=f32)
    inp = x.reshape((T * B, I))
    for l in range(L):
        ax = np.empty((T * B, 4 * H), dtype=f32)
        _qdots(W[2 * l], S[2 * l], inp, ax, b[l])
        ys = out if l == L - 1 else np.empty((T, B, H), dtype=f32)
        h_n[l] = h0[l]
        c_n[l] = c0[l]
        h, c = h_n[l], c_n[l]
        for t in range(T):
            _qdots(W[2 * l + 1], S[2 * l + 1], h, ah, b[l][:0])
            for n in range(B):
                _lstm_gates(ax[t * B + n], ah[n], c[n], c[n], ys[t, n], H)
            h[...] = ys[t]
        inp = ys.reshape((T * B, H))
    return OK


@njit(**_OPTS)
def gru_qwalk(x, h0, W, S, b, out, h_n):
    T, B, I = x.shape
    if not _inputs_fit(x[0], h0, W, 2, b) or not _scales_fit(W, S):
        return BAD_SHAPES
    L, _, H = h0.shape
    ah = np.empty((B, 3 * H), dtype=f32)
    inp = x.reshape((T * B, I))
    for l in range(L):
        ax = np.empty((T * B, 3 * H), dtype=f32)
        _qdots(W[2 * l], S[2 * l], inp, ax, b[2 * l])
        ys = out if l == L - 1 else np.empty((T, B, H), dtype=f32)
        h_n[l] = h0[l]
        h = h_n[l]
        for t in range(T):
            _qdots(W[2 * l + 1], S[2 * l + 1], h, ah, b[2 * l][:0])
            for n in range(B):
                _gru_gates(ax[t * B + n], ah[n], b[2 * l + 1], h[n], ys[t, n], H)
            h[...] = ys[t]
        inp = ys.reshape((T * B, H))
    return OK


@njit(**_OPTS)
def rnn_qwalk(x, h0, W, S, b, relu, out, h_n):
    T, B, I = x.shape
    if not _inputs_fit(x[0], h0, W, 1, b) or not _scales_fit(W, S):
        return BAD_SHAPES
    L, _, H = h0.shape
    ah = np.empty((B, H), dtype=f32)
    inp = x.reshape((T * B, I))
    for l in range(L):
        ax = np.empty((T * B, H), dtype=f32)
        _qdots(W[2 * l], S[2 * l], inp, ax, b[l])
        ys = out if l == L - 1 else np.empty((T, B, H), dtype=f32)
        h_n[l] = h0[l]
        h = h_n[l]
        for t in range(T):
            _qdots(W[2 * l + 1], S[2 * l + 1], h, ah, b[l][:0])
            for n in range(B):
                _rnn_gates(ax[t * B + n], ah[n], ys[t, n], relu, H)
            h[...] = ys[t]
        inp = ys.reshape((T * B, H))
    return OK
