"""Numba-compiled float32 streaming steps: one call runs a whole unidirectional stack for one time step.

Why: ``RecurrentLayer.step`` at B = 1 is dominated by call overhead, not arithmetic. On the cell path
a step is, per layer, a dict of params, two ``np.matmul`` and a gate kernel from :mod:`._jit`, then
``np.stack`` of the states and ``np.isfinite`` checks, each NumPy call ~1–2 µs. Measured on that path
(B = 1, I = H, one thread): LSTM H=32 14.7 µs a step for ~1 µs of arithmetic, H=128 21 µs for ~7 µs.
Here everything between the cheap Python checks and the return is one compiled call: the finiteness
check of the inputs, both mat-vecs and the gate arithmetic for every layer, writing into output arrays
that the caller allocates (now 3.5 and 9.9 µs; see README, Performance, for the table against torch).

The equations are those of :mod:`unrolled.cells` (the reference; see there), per layer l with input
x = x_t for l = 0 and the new h of layer l − 1 above it, a = W_xh x + W_hh h_{t-1} + b_h::

    LSTM (gates i, f, g, o):  c_t = σ(a_f)⊙c_{t-1} + σ(a_i)⊙tanh(a_g),  h_t = σ(a_o)⊙tanh(c_t)
    GRU, reset_after (z, r, n), with W_hh h split as (q_z, q_r, q_n):
        z = σ(W_xz x + b_z + q_z),  r = σ(W_xr x + b_r + q_r),  n = tanh(W_xn x + b_n + r⊙(q_n + b_hn))
        h_t = (1 − z)⊙h_{t-1} + z⊙n
    RNN:  h_t = tanh(a) or relu(a)

The mat-vecs are row-wise dot products over the contiguous rows of W (out[b, j] = Σ_k W[j, k]·x[b, k]),
which LLVM vectorizes as reductions (``reassoc`` in the fast-math flags). tanh / σ are the rational
float32 approximation of :mod:`._jit` (≤ 6 ulps, NaN-propagating), copied here rather than imported:
Numba's on-disk cache (``cache=True``) is keyed on this file only, so an inlined function from another
module could change without invalidating these kernels (tests/test_streaming_fast.py checks the two
copies agree).

Each kernel returns a status: 0 done; 1 some input (x, h, c) holds a NaN or inf; 2 the parameter shapes
do not fit the layer. On a non-zero status nothing useful was written and the caller takes the checked
path, which words the error. Imported lazily (``RecurrentLayer.step``), never at ``import unrolled``.

Compiling costs about 2 s per kernel and signature on first use (measured: the first LSTM step 4.5 s
with Numba's import, GRU and RNN 1.7–1.8 s each), then ~0.3 s to load from the disk cache in a new
process. The signature includes the number of layers (the length of the W and b tuples) and the
layouts of x and the state: a non-contiguous or read-only input compiles its own specialization once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The flags of ._jit: fast-math without nnan/ninf (NaN and inf still propagate and are detected),
# error_model="numpy" so the divisions vectorize.
_FLAGS = {"contract", "arcp", "nsz", "afn", "reassoc"}
_OPTS = dict(fastmath=_FLAGS, error_model="numpy", cache=True, nogil=True)
f32 = np.float32
_CLAMP = f32(7.99881172180175781)

OK, NOT_FINITE, BAD_SHAPES = 0, 1, 2


@njit(inline="always", **_OPTS)
def tanh(x):
    """The float32 tanh of ._jit (Eigen / XLA rational approximation), see the module docstring."""
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
    """out = tanh(a) elementwise (1-D); for the test that this copy matches ._jit's."""
    for k in range(a.shape[0]):
        out[k] = tanh(a[k])


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
    the weights stream from L2: 9.0 µs one row at a time, 6.7 four, 6.3 eight, 4.6 for a bare read)."""
    G, K = W.shape
    B = x.shape[0]
    with_bias = bias.shape[0] > 0
    G8 = G - G % 8
    for j in range(0, G8, 8):
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
    for j in range(G8, G):
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
