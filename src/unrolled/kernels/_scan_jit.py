"""Compiled pieces of the blocked scan (:mod:`unrolled.kernels.scan`): one block's gates and local scan in one
pass (:func:`min_forward`), the gates' backward (:func:`min_backward`), and the reverse scan and fix-ups of
a block from its carry on (T, N) arrays (N = B·H channels, contiguous).

The transcendental work is one NumPy ``exp(−k)`` per block (NumPy's vectorised exp is ~5× faster than
Numba's scalar libm calls here); every gate is then formed from E = e^{−k} by division only:
σ(k) = 1/(1 + E), 1 − σ(k) = E/(1 + E), f' = (1 + E_i)/(2 + E_f + E_i), which keeps small gates accurate
to relative rounding (the reference's tanh-based σ loses digits for k ≪ 0).

They live apart from :mod:`unrolled.kernels._jit` because they inline nothing from it (that module's reason
for being one file is Numba's per-file disk cache and inlined helpers), and so ``import`` of the scan does
not compile or load the LSTM/GRU walks. ``nogil``: the pool's threads run blocks at the same time.
"""

from __future__ import annotations

import math

from numba import njit

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always", **_OPTS)
def _one_minus_sigmoid(E):  # pragma: no cover - compiled
    """1 − σ(k) from E = e^{−k}, as E / (1 + E) (no cancellation when σ(k) is near 1; 1 when E = inf)."""
    return 1.0 if E > 1e30 else E / (1.0 + E)


@njit(inline="always", **_OPTS)
def _softplus(x):  # pragma: no cover - compiled
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(inline="always", **_OPTS)
def _normalised(kf, ki, Ef, Ei):  # pragma: no cover - compiled
    """minLSTM's f' = f / (f + i) and i' = i / (f + i) from E = e^{−k}: f' = (1 + E_i) / (2 + E_f + E_i);
    where an E overflows, by d = softplus(−k_i) − softplus(−k_f), f' = σ(d) (the reference's form)."""
    if Ef > 1e30 or Ei > 1e30:
        d = _softplus(-ki) - _softplus(-kf)
        fn = 1.0 / (1.0 + math.exp(-d))
        return fn, 1.0 / (1.0 + math.exp(d))
    s = 2.0 + Ef + Ei
    return (1.0 + Ei) / s, (1.0 + Ef) / s


@njit(inline="always", **_OPTS)
def _candidate(kh, Eh, log_space):  # pragma: no cover - compiled
    """(h̃, dh̃/dk): g(k) and g'(k) in log-space mode, else (k, 1)."""
    if not log_space:
        return kh, 1.0
    if kh >= 0:
        return kh + 0.5, 1.0
    s = 1.0 / (1.0 + Eh)
    return s, s * (1.0 - s)


@njit(**_OPTS)
def min_forward(k, E, m, has_mask, lstm, log_space, h0, use_h0, a, h, prod):  # pragma: no cover
    """One block (n, B, ·) of a min-cell: the coefficients a_t, b_t from k and E = e^{−k} (the gates of
    :mod:`unrolled.cells.minrnn`; a = 1, b = 0 where m = 0) and the scan h_t = a_t h_{t−1} + b_t from h0
    (use_h0: the first block) or 0, in one pass; a stored; prod = ∏_t a_t (B, H)."""
    n, B, H = a.shape
    for t in range(n):
        for bi in range(B):
            keep = m[t, bi] != 0 if has_mask else True
            for j in range(H):
                if not keep:
                    at, bt = 1.0, 0.0
                elif lstm:
                    fn, i_n = _normalised(k[t, bi, j], k[t, bi, H + j], E[t, bi, j], E[t, bi, H + j])
                    ht, _ = _candidate(k[t, bi, 2 * H + j], E[t, bi, 2 * H + j], log_space)
                    at, bt = fn, i_n * ht
                else:
                    z = 1.0 / (1.0 + E[t, bi, j])
                    ht, _ = _candidate(k[t, bi, H + j], E[t, bi, H + j], log_space)
                    at, bt = _one_minus_sigmoid(E[t, bi, j]), z * ht
                if t > 0:
                    prev = h[t - 1, bi, j]
                else:
                    prev = h0[bi, j] if use_h0 else 0.0
                h[t, bi, j] = at * prev + bt
                a[t, bi, j] = at
                prod[bi, j] = at if t == 0 else prod[bi, j] * at


@njit(**_OPTS)
def min_backward(k, E, a, h_prev, dh, m, has_mask, lstm, log_space, dk):  # pragma: no cover
    """One block of the gates' backward: δk (n, B, G·H) from δh_t (the scanned total gradient), h_{t−1},
    the stored a and E = e^{−k}; zero where m = 0 (see :mod:`unrolled.cells.minrnn` for the formulas).
    ``dk`` may be ``E`` itself: every element's E values are read before its δk values are written."""
    n, B, H = a.shape
    for t in range(n):
        for bi in range(B):
            keep = m[t, bi] != 0 if has_mask else True
            for j in range(H):
                d = dh[t, bi, j] if keep else 0.0
                hp = h_prev[t, bi, j]
                if lstm:
                    fn, i_n = _normalised(k[t, bi, j], k[t, bi, H + j], E[t, bi, j], E[t, bi, H + j])
                    ht, gp = _candidate(k[t, bi, 2 * H + j], E[t, bi, 2 * H + j], log_space)
                    dd = d * (hp - ht) * fn * i_n
                    dk[t, bi, j] = dd * _one_minus_sigmoid(E[t, bi, j])
                    dk[t, bi, H + j] = -dd * _one_minus_sigmoid(E[t, bi, H + j])
                    dk[t, bi, 2 * H + j] = d * i_n * gp
                else:
                    z = 1.0 / (1.0 + E[t, bi, j])
                    ht, gp = _candidate(k[t, bi, H + j], E[t, bi, H + j], log_space)
                    dk[t, bi, j] = d * (ht - hp) * z * a[t, bi, j]
                    dk[t, bi, H + j] = d * z * gp


@njit(**_OPTS)
def fixup_forward(a, h, carry):  # pragma: no cover - compiled
    """Add the entering state's share to a block scanned from 0: h_t += (∏_{s≤t} a_s) carry."""
    n, N = a.shape
    q = carry.copy()
    for t in range(n):
        for j in range(N):
            q[j] *= a[t, j]
            h[t, j] += q[j]


@njit(**_OPTS)
def local_reverse(a_next, a, g, end, y, prod):  # pragma: no cover - compiled
    """One block (n, N) of δh_t = g_t + a_{t+1} δh_{t+1}, backwards from y_{n−1} = g_{n−1} + a_next end
    (a_next: the next block's first a, or 1 after the last step; end: ∂L/∂h_T for the last block, else
    0); prod = a_next ∏_{s=1..n−1} a_s (what the block does to a gradient entering it from the right)."""
    n, N = a.shape
    for j in range(N):
        y[n - 1, j] = g[n - 1, j] + a_next[j] * end[j]
        prod[j] = a_next[j]
    for t in range(n - 2, -1, -1):
        for j in range(N):
            y[t, j] = g[t, j] + a[t + 1, j] * y[t + 1, j]
            prod[j] *= a[t + 1, j]


@njit(**_OPTS)
def fixup_reverse(a_next, a, y, carry):  # pragma: no cover - compiled
    """y_t += (a_next ∏_{s=t+1..n−1} a_s) carry, carry = the true δh just after the block."""
    n, N = a.shape
    q = a_next * carry
    for t in range(n - 1, -1, -1):
        for j in range(N):
            y[t, j] += q[j]
            q[j] *= a[t, j]
