"""Numba kernels that read quantised weights: int8 rows with a float32 scale each, or bf16 (stored as the
upper 16 bits of the float32, ``uint16``). Forward only: a quantised layer is for inference.

The product, for a weight matrix W quantised row by row (see :mod:`unrolled.kernels.quantized`)::

    out[n, j] = s_j · Σ_k widen(Q[j, k]) · x[n, k]  (+ b_j)

bf16 (widen(q) = the float32 whose upper 16 bits are q and lower 16 bits zero, s_j = 1): the sum is
float32, in 16 lanes per row (lane l sums the columns k ≡ l mod 16, then the lanes are added in a tree; the
last K mod 16 columns are added in order), written as LLVM vector IR (:func:`_make`) so that it runs in
512-bit registers where the CPU has AVX-512 and in 256- or 128-bit halves elsewhere.

int8 (widen(q) = q, s_j = max_k |W[j, k]| / 127): the sum is exact integer arithmetic (:func:`_make16`):
each row of x is cut into two int16 digits of a 31-bit fixed point relative to its maximum, the products
Q[j, k] · digit are summed in int32 lanes (pmaddwd, or AVX-512 VNNI's vpdpwssd), and the two digit sums are
combined in float64 and rounded once to float32 after the scale. Its error is that of x's digits,
≤ max|x| · 2^-31 per column — below float32's own rounding of a sum — so it computes the same
dequantised arithmetic as a float32 kernel would, without widening each weight to float32 (1.5× faster
on a 2048 × 512 product on Zen 4).

Every gate is float32. The gate equations are those of :mod:`unrolled.cells`
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
from numba.extending import intrinsic, overload

from unrolled.kernels._jit import _FLAGS, _OPTS, _finite, _inputs_fit, all_finite, sigmoid, tanh

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


_fdot8 = _make(8)
_fdot1 = _make(1)


# ---------------------------------------------------------------- int8 x int16: exact integer products
# The float mat-vec above is bound by widening (sign-extend, convert, multiply-add per 16 weights). For
# int8 weights the product runs on integers instead: each row of x becomes a 31-bit fixed-point number in
# two int16 digits, every Q_jk · digit is an exact integer, and pairs of them are summed by pmaddwd (one
# instruction per 32 weights and digit; vpdpwssd where the CPU has AVX-512 VNNI, which LLVM picks itself
# from the plain IR below: sign-extend, multiply, add the even and odd lanes).
#
#   t = max_k |x_k| / 32767,   v_k = x_k / t (float64, |v_k| ≤ 32767),
#   hi_k = rint(v_k),   lo_k = rint((v_k − hi_k) · 2^15)        (|lo_k| ≤ 2^14)
#   x_k = t · (hi_k + lo_k / 2^15) + e_k,   |e_k| ≤ t / 2^16 = max|x| · 4.7e-10
#   out_j = s_j · t · (Σ_k Q_jk hi_k + 2^-15 Σ_k Q_jk lo_k)      (sums exact; combined in float64, one
#                                                                   rounding to float32)
#
# So the sum differs from the float32 one by far less than float32's own rounding of it (the tests compare
# both with float64). Each int32 lane adds two products a chunk (≤ 2 · 127 · 32767 = 8,322,818), so after
# a block of 64 chunks (2048 columns) four lanes still add up in int32 (≤ 2,130,641,408 < 2^31); they are
# then widened to float64 as hi + lo / 2^15 (exact) and summed over the blocks in float64.
_V = ir.VectorType
W16 = 32  # int16 digits (and int8 weights) per chunk
BLOCK16 = 64 * W16  # columns per block of int32 lane sums
DIGIT = 32768.0  # 2^15: the weight of the second digit


def _madd16(builder, a, b):
    """<32 x i16> a, b -> <16 x i32> of a[2i]·b[2i] + a[2i+1]·b[2i+1] (pmaddwd, in plain IR)."""
    p = builder.mul(builder.sext(a, _V(_I32, W16)), builder.sext(b, _V(_I32, W16)))
    even = builder.shuffle_vector(p, p, ir.Constant(_V(_I32, W16 // 2), list(range(0, W16, 2))))
    odd = builder.shuffle_vector(p, p, ir.Constant(_V(_I32, W16 // 2), list(range(1, W16, 2))))
    return builder.add(even, odd)


def _fold4(builder, v):
    """<16 x i32> -> <4 x double>: lanes added in int32 down to four (exact: see BLOCK16), then widened."""
    n = W16 // 2
    while n > 4:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(_V(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(v, v, ir.Constant(_V(_I32, n), list(range(n, 2 * n))))
        v = builder.add(lo, hi)
    return builder.sitofp(v, _V(ir.DoubleType(), 4))


def _make16(R):
    @intrinsic
    def idot(typingctx, Q, j, D):
        """(Σ_k Q[j + r, k] · (D[0, k] + D[1, k] / 2^15) for r < R) as R float64: Q (G, K) int8, D (2, ≥ K)
        int16 (the digits hi, lo), both C-contiguous. Exact for K ≤ 65,536 (then 53 bits hold the sum)."""
        if not (isinstance(Q, types.Array) and Q.ndim == 2 and Q.layout == "C" and Q.dtype == types.int8):
            return None
        if not (isinstance(D, types.Array) and D.ndim == 2 and D.layout == "C" and D.dtype == types.int16):
            return None
        ret = types.UniTuple(types.float64, R)

        def codegen(context, builder, sig, args):
            qa = context.make_array(sig.args[0])(context, builder, args[0])
            da = context.make_array(sig.args[2])(context, builder, args[2])
            jj = context.cast(builder, args[1], sig.args[1], types.intp)
            K = builder.extract_value(qa.shape, 1)
            qs = builder.extract_value(qa.strides, 0)
            ds = builder.extract_value(da.strides, 0)
            i8, i16 = ir.IntType(8), ir.IntType(16)
            byte = i8.as_pointer()
            qbase = builder.bitcast(qa.data, byte)
            rows = []
            for r in range(R):
                at = builder.mul(builder.add(jj, ir.Constant(_I64, r)), qs)  # byte offset of row j + r
                rows.append(builder.gep(qbase, [at]))
            dbase = builder.bitcast(da.data, byte)
            digits = [
                builder.bitcast(builder.gep(dbase, [at]), i16.as_pointer())
                for at in (ir.Constant(_I64, 0), ds)
            ]
            zero = ir.Constant(_V(_I32, W16 // 2), [0] * (W16 // 2))
            lanes = [cgutils.alloca_once_value(builder, zero) for _ in range(2 * R)]
            f64 = ir.DoubleType()
            quarter = [
                cgutils.alloca_once_value(builder, ir.Constant(_V(f64, 4), [0.0] * 4)) for _ in range(R)
            ]
            sums = [cgutils.alloca_once_value(builder, ir.Constant(f64, 0.0)) for _ in range(R)]
            unit = ir.Constant(_V(f64, 4), [1.0 / DIGIT] * 4)
            K32 = builder.sub(K, builder.srem(K, ir.Constant(_I64, W16)))
            step = ir.Constant(_I64, BLOCK16)
            with cgutils.for_range_slice(builder, ir.Constant(_I64, 0), K32, step) as (k0, _):
                end = builder.add(k0, step)
                end = builder.select(builder.icmp_signed("<", end, K32), end, K32)
                for a in lanes:
                    builder.store(zero, a)
                with cgutils.for_range_slice(builder, k0, end, ir.Constant(_I64, W16)) as (k, _):
                    dv = [
                        builder.load(builder.bitcast(builder.gep(d, [k]), _V(i16, W16).as_pointer()), align=2)
                        for d in digits
                    ]
                    for r in range(R):
                        qv = builder.load(
                            builder.bitcast(builder.gep(rows[r], [k]), _V(i8, W16).as_pointer()), align=1
                        )
                        w = builder.sext(qv, _V(i16, W16))
                        for p in range(2):
                            a = lanes[2 * r + p]
                            builder.store(builder.add(builder.load(a), _madd16(builder, w, dv[p])), a)
                for r in range(R):  # this block's lanes, hi + lo / 2^15, into four float64 lanes (exact)
                    hi = _fold4(builder, builder.load(lanes[2 * r]))
                    lo = builder.fmul(_fold4(builder, builder.load(lanes[2 * r + 1])), unit)
                    builder.store(builder.fadd(builder.load(quarter[r]), builder.fadd(hi, lo)), quarter[r])
            for r in range(R):
                v = builder.load(quarter[r])
                pair = builder.fadd(
                    builder.shuffle_vector(v, v, ir.Constant(_V(_I32, 2), [0, 1])),
                    builder.shuffle_vector(v, v, ir.Constant(_V(_I32, 2), [2, 3])),
                )
                one = builder.fadd(
                    builder.extract_element(pair, ir.Constant(_I32, 0)),
                    builder.extract_element(pair, ir.Constant(_I32, 1)),
                )
                builder.store(one, sums[r])
            with cgutils.for_range_slice(builder, K32, K, ir.Constant(_I64, 1)) as (k, _):  # K % 32 left
                for r in range(R):
                    q = builder.sext(builder.load(builder.gep(rows[r], [k])), _I64)
                    hi, lo = (builder.sext(builder.load(builder.gep(d, [k])), _I64) for d in digits)
                    both = builder.fadd(
                        builder.sitofp(builder.mul(q, hi), f64),
                        builder.fmul(builder.sitofp(builder.mul(q, lo), f64), ir.Constant(f64, 1.0 / DIGIT)),
                    )
                    builder.store(builder.fadd(builder.load(sums[r]), both), sums[r])
            return context.make_tuple(builder, ret, [builder.load(s) for s in sums])

        return ret(Q, j, D), codegen

    return idot


_idot8 = _make16(8)
_idot1 = _make16(1)


@njit(**_OPTS)
def _digits(xn, D):
    """x (one row) -> its two int16 digits in D[0], D[1] (above), and t; t = 0 for a zero row, NaN for a
    row that is not finite (then D is left as it was and the caller writes NaN)."""
    m = 0.0
    total = 0.0  # Σ|x_k| in float64: finite exactly when every x_k is (no float32 sum overflows it)
    for k in range(xn.shape[0]):
        a = abs(np.float64(xn[k]))
        total += a
        m = a if a > m else m
    if not (total < np.inf):
        return np.nan
    if m == 0.0:
        D[:, : xn.shape[0]] = 0
        return 0.0
    inv = 32767.0 / m
    for k in range(xn.shape[0]):
        v = np.float64(xn[k]) * inv
        hi = np.rint(v)
        D[0, k] = np.int16(hi)
        D[1, k] = np.int16(np.rint((v - hi) * DIGIT))
    return m / 32767.0


@njit(**_OPTS)
def _qdots_int8(Q, s, x, out, bias):
    """out[n, j] = s[j] · Σ_k Q[j, k] x[n, k] (+ bias[j] unless empty) for int8 Q (G, K), by the exact
    integer products above; a row of x that is not finite gives a row of NaN."""
    K = Q.shape[1]
    D = np.empty((2, K), dtype=np.int16)
    for n in range(x.shape[0]):
        t = _digits(x[n], D)
        if np.isnan(t):
            out[n] = np.nan
        else:
            _int8_row(Q, s, D, t, out[n])
        if bias.shape[0] > 0:
            out[n] += bias


@njit(**_OPTS)
def _int8_row(Q, s, D, t, o):
    """o[j] = s[j] · t · (Q[j] · D[0] + Q[j] · D[1] / 2^15), eight rows at a time sharing each load of
    the digits, then the G % 8 rows left one by one."""
    G = Q.shape[0]
    G8 = G - G % 8
    for j in range(0, G8, 8):
        u = _idot8(Q, j, D)
        for r in range(8):
            o[j + r] = f32(u[r] * t * s[j + r])
    for j in range(G8, G):
        u = _idot1(Q, j, D)
        o[j] = f32(u[0] * t * s[j])


@njit(inline="always", **_OPTS)
def _qdots_float(Q, s, x, out, bias):
    """out[n, j] = s[j] · Σ_k widen(Q[j, k]) x[n, k] (+ bias[j] unless empty) for every row j of Q (G, K),
    in float32 (the bf16 weights).

    Eight rows at a time (:func:`_fdot8`) share each load of x[n]: the weights are read once per call
    when B is small, which is what a step at B = 1 is bound by. Q and x must be C-contiguous."""
    G = Q.shape[0]
    B = x.shape[0]
    with_bias = bias.shape[0] > 0
    G8 = G - G % 8
    for n in range(B):
        o = out[n]
        for j in range(0, G8, 8):
            t = _fdot8(Q, j, x, n)
            for r in range(8):
                o[j + r] = t[r] * s[j + r]
        for j in range(G8, G):
            o[j] = _fdot1(Q, j, x, n)[0] * s[j]
        if with_bias:
            for j in range(G):
                o[j] += bias[j]


def _qdots(Q, s, x, out, bias):
    """out[n, j] = s[j] · (Q[j] · x[n]) (+ bias[j] unless empty): int8 Q by exact integer products
    (:func:`_qdots_int8`), bf16 in float32 (:func:`_qdots_float`). Compiled code only."""
    raise NotImplementedError("_qdots runs inside compiled kernels")


@overload(_qdots, inline="always", jit_options=dict(fastmath=_FLAGS, error_model="numpy"))
def _qdots_for(Q, s, x, out, bias):
    if Q.dtype == types.int8:

        def int8(Q, s, x, out, bias):
            _qdots_int8(Q, s, x, out, bias)

        return int8

    def bf16(Q, s, x, out, bias):
        _qdots_float(Q, s, x, out, bias)

    return bf16


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
