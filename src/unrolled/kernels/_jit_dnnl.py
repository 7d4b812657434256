"""The whole-sequence walks of :mod:`unrolled.kernels._jit` with oneDNN's product instead of ``matmul_nt``.

Imported only after :func:`unrolled.kernels._dnnl.load` succeeded: the compiled code calls ``dnnl_sgemm``
by name (a Numba ``ExternalFunction``; the symbol is resolved when the module is linked, cached or not),
so the walk over time stays one compiled call with no Python between steps. The gate kernels are
_jit's own; only the recurrent product differs, and with it the layout of W_hh it wants:
oneDNN is fastest with both operands untransposed (measured at B=16, H=512: 307 µs against 444 µs for a
transposed W), so forward walks take W_hhᵀ (H, G·H) and backward walks W_hh (G·H, H) itself —
the opposite of the matmul_nt walks. ``forward_weights`` / ``backward_weights`` give each module's layout.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from unrolled.kernels._common import transpose
from unrolled.kernels._jit import (
    _OPTS,
    f32,
    gru_backward_step,
    gru_forward_step,
    lstm_backward_step,
    lstm_forward_step,
    rnn_backward_step,
    rnn_forward_step,
)

_i64 = types.int64
# dnnl_status_t dnnl_sgemm(char transa, char transb, dim M, N, K, float alpha, const float *A, dim lda,
#                          const float *B, dim ldb, float beta, float *C, dim ldc); row-major. Pointers
# travel as 64-bit integers (the same registers and stack slots in the x86-64 calling convention).
_sgemm = types.ExternalFunction(
    "dnnl_sgemm",
    types.int32(
        types.int8,
        types.int8,
        _i64,
        _i64,
        _i64,
        types.float32,
        _i64,
        _i64,
        _i64,
        _i64,
        types.float32,
        _i64,
        _i64,
    ),
)
_N = np.int8(ord("N"))


@njit(inline="always", **_OPTS)
def product(a, w, out):
    """out (B, N) = a (B, K) @ w (K, N); all three C-contiguous (rows of a (T, B, K) array are)."""
    B, K = a.shape
    N = w.shape[1]
    _sgemm(_N, _N, B, N, K, f32(1), a.ctypes.data, K, w.ctypes.data, N, f32(0), out.ctypes.data, N)


def forward_weights(W_hh: np.ndarray) -> np.ndarray:
    """The operand forward walks multiply h_{t-1} by: W_hhᵀ (H, G·H), contiguous."""
    return transpose(W_hh)


def backward_weights(W_hh: np.ndarray) -> np.ndarray:
    """The operand backward walks multiply δa_t by: W_hh (G·H, H), contiguous."""
    return np.ascontiguousarray(W_hh)


@njit(**_OPTS)
def lstm_forward_seq(gates, WT, bias, scale, offset, hs, cs, tanh_c, valid, rec):
    for t in range(gates.shape[0]):
        product(hs[t], WT, rec)
        lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(**_OPTS)
def lstm_backward_seq(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid, W_hh):
    for t in range(gates.shape[0] - 1, -1, -1):
        lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)
        product(da[t], W_hh, dh_rec)


@njit(**_OPTS)
def gru_forward_seq(gates, WT, b_h, b_hn, hs, hn, valid, rec):
    for t in range(gates.shape[0]):
        product(hs[t], WT, rec)
        gru_forward_step(t, gates, rec, b_h, b_hn, hs, hn, valid)


@njit(**_OPTS)
def gru_backward_seq(d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid, W_hh):
    for t in range(gates.shape[0] - 1, -1, -1):
        gru_backward_step(t, d_hs, dh_rec, carry, gates, hs, hn, dah, da_n, valid)
        product(dah[t], W_hh, dh_rec)


@njit(**_OPTS)
def rnn_forward_seq(xp, WT, bias, hs, dact, relu, valid, rec):
    for t in range(xp.shape[0]):
        product(hs[t], WT, rec)
        rnn_forward_step(t, xp, rec, bias, hs, dact, relu, valid)


@njit(**_OPTS)
def rnn_backward_seq(d_hs, dh_rec, carry, dact, da, valid, W_hh):
    for t in range(dact.shape[0] - 1, -1, -1):
        rnn_backward_step(t, d_hs, dh_rec, carry, dact, da, valid)
        product(da[t], W_hh, dh_rec)
