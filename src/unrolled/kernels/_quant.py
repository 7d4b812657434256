"""Numba kernels that read quantised weights: int8 rows with a float32 scale each, or bf16 (stored as the
upper 16 bits of the float32, ``uint16``). Forward only: a quantised layer is for inference.

The product, for a weight matrix W quantised row by row (see :mod:`unrolled.kernels.quantized`)::

    out[n, j] = s_j · Σ_k widen(Q[j, k]) · x[n, k]  (+ b_j)

widen(q) = float32(q) for int8 (s_j = max_k |W[j, k]| / 127), and for bf16 the float32 whose upper 16
bits are q and lower 16 bits zero (s_j = 1). The sum is float32, in 16 lanes per row (lane l sums the
columns k ≡ l mod 16, then the lanes are added in a tree; the last K mod 16 columns are added in order),
the scale is applied once per row after the dot product, and every gate is float32. The mat-vec is
written as LLVM vector IR (:func:`_make`) so that it runs in 512-bit registers where the CPU has
AVX-512 and in 256- or 128-bit halves elsewhere. The gate equations are those of :mod:`unrolled.cells`
in the form of the float32 ``*_stack`` kernels of :mod:`unrolled.kernels._jit` (same ``tanh``/``sigmoid``,
imported from there): only the mat-vec differs, so it is the one thing here.

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
from numba.core import cgutils
from numba.extending import intrinsic

from unrolled.kernels._jit import _OPTS, _finite, _inputs_fit, all_finite, sigmoid, tanh

f32 = np.float32
OK, NOT_FINITE, BAD_SHAPES = 0, 1, 2


# ------------------------------------------------------------------ the mat-vec, as LLVM vectors
# Numba's loop vectorizer picks 256-bit vectors on Intel server CPUs (LLVM's prefer-256-bit tuning),
# and widening int8 -> float32 (sign-extend, convert) then costs as much as the multiply-add. Written as
# explicit 16-lane vectors in LLVM IR, the same loop runs in 512-bit registers where AVX-512 exists and is
# split into 2 x 256 (AVX2) or 4 x 128 (SSE) lanes by LLVM elsewhere: one code, any x86-64. R rows share
# each load of x; each row keeps one 16-lane float32 accumulator (llvm.fmuladd: a fused multiply-add
# where the CPU has one), summed across lanes once per row; the last K % 16 columns run scalar.
LANES = 16
_I32, _I64, _F = ir.IntType(32), ir.IntType(64), ir.FloatType()


def _widen_vec(builder, v, signed8):
    """widen() of a vector: int8 -> float32 by value (sitofp); bf16 bits -> float32 by a 16-bit shift."""
    if signed8:
        return builder.sitofp(v, ir.VectorType(_F, LANES))
    wide = builder.zext(v, ir.VectorType(_I32, LANES))
    sh = builder.shl(wide, ir.Constant(ir.VectorType(_I32, LANES), [16] * LANES))
    return builder.bitcast(sh, ir.VectorType(_F, LANES))


def _hsum(builder, v):
    """The sum of a vector's lanes, halving it (a tree: reassociated, as the fast-math sums of _jit)."""
    n = LANES
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n))))
        v = builder.fadd(lo, hi, flags=("reassoc", "nsz", "contract"))
    return builder.extract_element(v, ir.Constant(_I32, 0))


def _make(R):
    @intrinsic
    def qdot(typingctx, Q, j, x, n):
        """(Σ_k widen(Q[j + r, k]) · x[n, k] for r < R) as a tuple of R float32 (Q, x C-contiguous)."""
        if not (isinstance(Q, types.Array) and Q.ndim == 2 and Q.layout == "C"):
            return None
        if Q.dtype not in (types.int8, types.uint16):
            return None
        if not (isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" and x.dtype == types.float32):
            return None
        signed8 = Q.dtype == types.int8
        ret = types.UniTuple(types.float32, R)

        def codegen(context, builder, sig, args):
            qa = context.make_array(sig.args[0])(context, builder, args[0])
            xa = context.make_array(sig.args[2])(context, builder, args[2])
            jj = context.cast(builder, args[1], sig.args[1], types.intp)
            nn = context.cast(builder, args[3], sig.args[3], types.intp)
            K = builder.extract_value(qa.shape, 1)
            qs = builder.extract_value(qa.strides, 0)
            xs = builder.extract_value(xa.strides, 0)
            elt = ir.IntType(8 if signed8 else 16)
            vq = ir.VectorType(elt, LANES)
            vf = ir.VectorType(_F, LANES)
            byte = ir.IntType(8).as_pointer()
            qbase = builder.bitcast(qa.data, byte)
            rows = []
            for r in range(R):
                at = builder.mul(builder.add(jj, ir.Constant(_I64, r)), qs)  # byte offset of row j + r
                rows.append(builder.bitcast(builder.gep(qbase, [at]), elt.as_pointer()))
            xbase = builder.bitcast(xa.data, byte)
            xrow = builder.bitcast(builder.gep(xbase, [builder.mul(nn, xs)]), _F.as_pointer())
            zero = ir.Constant(vf, [0.0] * LANES)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(R)]
            fmuladd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vf, vf]), "llvm.fmuladd.v16f32"
            )
            K16 = builder.sub(K, builder.srem(K, ir.Constant(_I64, LANES)))
            with cgutils.for_range_slice(builder, ir.Constant(_I64, 0), K16, ir.Constant(_I64, LANES)) as (
                k,
                _,
            ):
                xv = builder.load(builder.bitcast(builder.gep(xrow, [k]), vf.as_pointer()), align=4)
                for r in range(R):
                    qv = builder.load(builder.bitcast(builder.gep(rows[r], [k]), vq.as_pointer()), align=1)
                    w = _widen_vec(builder, qv, signed8)
                    builder.store(builder.call(fmuladd, [w, xv, builder.load(accs[r])]), accs[r])
            # the tail (K % 16) in scalar
            sums = [_hsum(builder, builder.load(a)) for a in accs]
            sacc = [cgutils.alloca_once_value(builder, s) for s in sums]
            with cgutils.for_range_slice(builder, K16, K, ir.Constant(_I64, 1)) as (k, _):
                xk = builder.load(builder.gep(xrow, [k]))
                for r in range(R):
                    q = builder.load(builder.gep(rows[r], [k]))
                    if signed8:
                        w = builder.sitofp(q, _F)
                    else:
                        w = builder.bitcast(builder.shl(builder.zext(q, _I32), ir.Constant(_I32, 16)), _F)
                    builder.store(builder.fadd(builder.load(sacc[r]), builder.fmul(w, xk)), sacc[r])
            return context.make_tuple(builder, ret, [builder.load(s) for s in sacc])

        return ret(Q, j, x, n), codegen

    return qdot


_qdot8 = _make(8)
_qdot1 = _make(1)


@njit(inline="always", **_OPTS)
def _qdots(Q, s, x, out, bias):
    """out[n, j] = s[j] · Σ_k widen(Q[j, k]) x[n, k] (+ bias[j] unless empty) for every row j of Q (G, K).

    Eight rows at a time (:func:`_qdot8`) share each load of x[n]: the weights are read once per call
    when B is small, which is what a step at B = 1 is bound by. Q and x must be C-contiguous."""
    G = Q.shape[0]
    B = x.shape[0]
    with_bias = bias.shape[0] > 0
    G8 = G - G % 8
    for n in range(B):
        o = out[n]
        for j in range(0, G8, 8):
            t = _qdot8(Q, j, x, n)
            for r in range(8):
                o[j + r] = t[r] * s[j + r]
        for j in range(G8, G):
            o[j] = _qdot1(Q, j, x, n)[0] * s[j]
        if with_bias:
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
