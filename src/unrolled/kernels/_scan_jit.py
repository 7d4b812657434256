"""Compiled pieces of the blocked linear scan (:mod:`unrolled.kernels.scan`): one block's local scan and the
fix-up of a block from its carry, forward and reverse, on (T, N) arrays (N = B·H channels, contiguous).

They live apart from :mod:`unrolled.kernels._jit` because they inline nothing from it (that module's reason
for being one file is Numba's per-file disk cache and inlined helpers), and so ``import`` of the scan does
not compile or load the LSTM/GRU walks. ``nogil``: the pool's threads run blocks at the same time.
"""

from __future__ import annotations

from numba import njit

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_OPTS)
def local_forward(a, b, h0, h, prod, use_h0):  # pragma: no cover - compiled
    """One block (n, N): h_t = a_t h_{t−1} + b_t from h0 (use_h0: the first block) or 0;
    prod = ∏_t a_t over the block (what the block does to a state that enters it)."""
    n, N = a.shape
    for j in range(N):
        start = h0[j] if use_h0 else 0.0
        h[0, j] = a[0, j] * start + b[0, j]
        prod[j] = a[0, j]
    for t in range(1, n):
        for j in range(N):
            h[t, j] = a[t, j] * h[t - 1, j] + b[t, j]
            prod[j] *= a[t, j]


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
