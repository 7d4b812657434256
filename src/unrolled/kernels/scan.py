"""Parallel scans of the linear recurrence h_t = a_t ⊙ h_{t−1} + b_t, and the minGRU/minLSTM cells on them.

The equations of the cells (a_t, b_t from the input; their BPTT) are in :mod:`unrolled.cells.minrnn`, whose
sequential walk is the reference. Here the recurrence (1) and its backward (2)::

    (1)  h_t = a_t h_{t−1} + b_t                       (2)  δh_t = ∂L/∂h_t + a_{t+1} δh_{t+1}

are solved for a whole sequence at once, by associative scans: the pairs (a, b) compose as
(a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂), so any bracketing gives the same h. Two paths:

- **NumPy** (:class:`ScanMinCell`; float64, or float32 without Numba), over all T at once with no Python loop
  per step: in log-space mode the paper's form (Heinsen 2023)::

      log h_t = a*_t + logcumsumexp_{s ≤ t}(log b_s − a*_s),   a*_t = Σ_{s ≤ t} log a_s,  (s = 0: log h_0)

  (:func:`scan_log`, h_0 and b_t ≥ 0), else and for (2), whose δh has either sign, a Hillis–Steele doubling
  scan in linear space (:func:`scan_linear`, ⌈log₂ T⌉ vectorised passes). a_t ∈ (0, 1) here, so the
  linear-space products only shrink: stable, and more accurate than the log form in float32 (whose
  rounding grows with |a*_t|, about T·|log a|).
- **compiled** (:class:`BlockScanMinCell`; float32 with Numba): time cut into K blocks, one per worker of
  :mod:`unrolled.kernels._pool`; each worker projects its block's inputs (one product) and computes its a, b
  and scan from h0 or 0 in one fused compiled pass (:mod:`unrolled.kernels._scan_jit`); a fix-up pass, split
  by channel across the workers, walks the blocks in order adding (∏ a) ⊙ (true entering state). The
  backward finds the true δh carry entering each block from the right (split by channel the same way), then
  each worker runs one reversed fused loop over its block (δh by (2), the gates recomputed, δk, Σ δk) and
  its ∂L/∂x and partial ∂L/∂W products (summed once at the end).

Both return what the reference does, up to rounding (tested against it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, project_inputs
from unrolled.cells.minrnn import MinLSTMCell
from unrolled.kernels import _pool


def scan_linear(a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """h (T, …) with h_t = a_t h_{t−1} + b_t, h_{−1} = h0, by Hillis–Steele doubling (linear space).

    After the pass with offset o, element t holds the composition of steps (t − 2o, t]; element t < 2o is
    then complete (it includes h0)."""
    h = b.copy()
    h[0] += a[0] * h0
    A = a.copy()
    T, off = a.shape[0], 1
    while off < T:
        h[off:] += A[off:] * h[:-off]  # the product is formed before h is written
        A[off:] = A[off:] * A[:-off]
        off *= 2
    return h


def scan_reverse(a: np.ndarray, g: np.ndarray, end: np.ndarray) -> np.ndarray:
    """δh (T, …) with δh_t = g_t + a_{t+1} δh_{t+1}, δh_{T−1} = g_{T−1} + end: (2) as (1) in reversed time."""
    c = np.concatenate([a[1:], np.ones_like(a[:1])])  # coefficient of step t: a_{t+1} (1 past the end)
    return scan_linear(c[::-1], g[::-1], end)[::-1]


def scan_log(log_a: np.ndarray, log_b: np.ndarray, log_h0: np.ndarray) -> np.ndarray:
    """h (T, …) of (1) for b ≥ 0, h0 ≥ 0, from log a, log b and log h0 (−∞ allowed): the paper's form."""
    A = np.cumsum(log_a, axis=0)  # a*_t
    u = np.concatenate([log_h0[None], log_b - A])
    S = np.logaddexp.accumulate(u, axis=0)[1:]
    return np.exp(A + S)


class ScanCache(NamedTuple):
    """What the NumPy scan's forward keeps (as the reference's :class:`~unrolled.cells.minrnn.MinCache`)."""

    x: np.ndarray  # (T, B, I)
    k: np.ndarray  # (T, B, G·H)
    hs: np.ndarray  # (T+1, B, H), hs[0] = h0
    mask: np.ndarray | None


class ScanMinCell:
    """minGRU / minLSTM by whole-sequence scans in NumPy; same signatures as the reference cell."""

    cache_type = ScanCache

    def __init__(self, cell) -> None:
        self.cell = cell
        self.gates, self.state_names = cell.gates, cell.state_names

    def step(self, x_t, state, p):
        return self.cell.step(x_t, state, p)

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache."""
        cell, h0 = self.cell, state0[0]
        k = project_inputs(x, p["W_xh"], p.get("b_h"))
        T, B = x.shape[:2]
        hs = np.empty((T + 1,) + h0.shape, dtype=x.dtype)
        hs[0] = h0
        if cell.log_space:
            log_a, log_b = cell.log_coefficients(k, mask)
            with np.errstate(divide="ignore"):  # log 0 = −∞: a zero state is exact in the log form
                log_h0 = np.log(h0)
            hs[1:] = scan_log(log_a, log_b, log_h0)
        else:
            a, b = cell.coefficients(k, mask)
            hs[1:] = scan_linear(a, b, h0)
        return hs[1:], (hs[T].copy(),), ScanCache(x, k, hs, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: ScanCache, p: dict):
        """(2) by :func:`scan_reverse`, then the gates' backward in bulk -> dx, (d_h0,), grads."""
        x, k, hs, mask = cache
        a, _ = self.cell.coefficients(k, mask)
        dh = scan_reverse(a, d_hs, d_stateT[0])
        dk = self.cell.coefficients_backward(k, hs[:-1], dh, mask)
        grads: dict[str, np.ndarray] = {}
        dx = input_gradients(dk, x, p, grads, bias_key="b_h")
        return dx, (a[0] * dh[0],), grads


CHUNK_ROWS = 1024  # rows (steps · B) per e^{−k} / δk temporary: caps a step's peak memory


def _chunks(t0: int, t1: int, B: int):
    """Slices of [t0, t1) of about :data:`CHUNK_ROWS` rows each."""
    n = max(1, CHUNK_ROWS // max(1, B))
    return [slice(t, min(t1, t + n)) for t in range(t0, t1, n)]


def _mask2(mask: np.ndarray | None, dtype) -> tuple[np.ndarray, bool]:
    """The (T, B) mask the compiled kernels take, and whether there is one (else a 1×1 placeholder)."""
    if mask is None:
        return np.ones((1, 1), dtype=dtype), False
    return np.ascontiguousarray(mask[:, :, 0]), True


class BlockScanCache(NamedTuple):
    """What the blocked forward keeps: the reference's fields (k without the bias: the kernels add it), a
    (T, B, H) and the block bounds."""

    x: np.ndarray
    k: np.ndarray  # (T, B, G·H) W_xh x_t (the bias is added inside the compiled loops)
    hs: np.ndarray  # (T+1, B, H)
    mask: np.ndarray | None
    a: np.ndarray  # (T, B, H) the recurrence coefficients (the backward's carries scan with them)
    bounds: tuple  # K + 1 time boundaries


MIN_BLOCK_STEPS = 16  # a block shorter than this is not worth handing to a worker
MIN_BLOCK_MACS = 2_000_000  # nor one whose input projection (steps·B·G·H·I) is smaller


def blocks_for(T: int, B: int, I: int, G: int, H: int) -> int:
    """How many time blocks (= workers) a compiled min-cell runs: the thread budget, fewer where a block
    would be shorter than :data:`MIN_BLOCK_STEPS` steps or hold under :data:`MIN_BLOCK_MACS`."""
    from unrolled import threads

    k = min(threads.workers_budget(), T // MIN_BLOCK_STEPS, (T * B * G * H * I) // MIN_BLOCK_MACS)
    return max(1, int(k))


def _channel_split(N: int, K: int) -> list[tuple[int, int]]:
    """K contiguous channel ranges of [0, N) (the fix-up and carry passes are split by channel)."""
    return [(N * w // K, N * (w + 1) // K) for w in range(K)]


class BlockScanMinCell(ScanMinCell):
    """minGRU / minLSTM by the blocked scan over the worker pool, its passes compiled and fused."""

    cache_type = BlockScanCache

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None, blocks: int | None = None):
        """x (T, B, I), (h0,) -> hs (T, B, H), (h_T,), cache; ``blocks``: K (else :func:`blocks_for`).

        Each worker: k = x W_xhᵀ for its block (one product), then gates and scan in one compiled pass
        from h0 (the first block) or 0; then, split by channel, the fix-up of every later block."""
        from unrolled import kernels
        from unrolled.kernels import _scan_jit as jit

        cell, h0 = self.cell, state0[0]
        T, B, I = x.shape
        W, bias = p["W_xh"], p.get("b_h")
        GH = W.shape[0]
        H = GH // cell.gates
        bias = np.zeros(GH, dtype=x.dtype) if bias is None else bias
        K = blocks if blocks is not None else blocks_for(T, B, I, cell.gates, H)
        K = max(1, min(K, T))
        tb = tuple(T * i // K for i in range(K + 1))
        k = np.empty((T, B, GH), dtype=x.dtype)
        a = np.empty((T, B, H), dtype=x.dtype)
        hs = np.empty((T + 1, B, H), dtype=x.dtype)
        hs[0] = h0
        h0 = np.ascontiguousarray(h0)
        zeros = np.zeros_like(h0)
        matmul = kernels.bulk_matmul(x.dtype)
        m2, has_mask = _mask2(mask, x.dtype)
        lstm = type(cell) is MinLSTMCell
        x2, k2, WT = x.reshape(T * B, I), k.reshape(T * B, GH), W.T

        def local(i: int) -> None:
            r = slice(tb[i] * B, tb[i + 1] * B)
            matmul(x2[r], WT, out=k2[r])
            t = slice(tb[i], tb[i + 1])
            mi = m2[t] if has_mask else m2
            jit.min_forward(
                k[t], bias, mi, has_mask, lstm, cell.log_space, h0 if i == 0 else zeros, a[t], hs[1:][t]
            )

        _pool.run(local, K)
        if K > 1:
            h2, a2 = hs[1:].reshape(T, B * H), a.reshape(T, B * H)
            bounds = np.array(tb, dtype=np.int64)
            split = _channel_split(B * H, K)
            _pool.run(lambda w: jit.fixup_forward(a2, h2, bounds, *split[w]), K)
        return hs[1:], (hs[T].copy(),), BlockScanCache(x, k, hs, mask, a, tb)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: BlockScanCache, p: dict):
        """The carry entering each block from the right (split by channel), then per block one compiled
        reversed pass (δh, δk, Σδk) per chunk of steps and its products ∂L/∂x, ∂L/∂W_xh."""
        from unrolled import kernels
        from unrolled.kernels import _scan_jit as jit

        x, k, hs, mask, a, tb = cache
        T, B, H = a.shape
        I, GH = x.shape[2], k.shape[2]
        K = len(tb) - 1
        N = B * H
        dtype = a.dtype
        bias = p.get("b_h")
        bias = np.zeros(GH, dtype=dtype) if bias is None else bias
        d_hs = np.ascontiguousarray(d_hs, dtype=dtype)
        carries = np.empty((K, N), dtype=dtype)
        d_end = np.ascontiguousarray(d_stateT[0], dtype=dtype).reshape(N)
        if K > 1:
            bounds = np.array(tb, dtype=np.int64)
            split = _channel_split(N, K)
            a2, g2 = a.reshape(T, N), d_hs.reshape(T, N)
            _pool.run(lambda w: jit.carries_reverse(a2, g2, bounds, d_end, carries, *split[w]), K)
        else:
            carries[0] = d_end
        dx = np.empty(x.shape, dtype=x.dtype)
        m2, has_mask = _mask2(mask, dtype)
        lstm = type(self.cell) is MinLSTMCell
        matmul = kernels.bulk_matmul(x.dtype)
        W = p["W_xh"]

        def finish(i: int):
            carry = carries[i].reshape(B, H).copy()
            db = np.zeros(GH, dtype=dtype)
            dW = np.zeros((GH, I), dtype=dtype)
            chunks = _chunks(tb[i], tb[i + 1], B)
            dk_buf = np.empty((chunks[0].stop - chunks[0].start, B, GH), dtype=dtype)
            for c in reversed(chunks):
                n = c.stop - c.start
                dk = dk_buf[:n]
                mi = m2[c] if has_mask else m2
                jit.min_backward(
                    k[c], bias, hs[c], d_hs[c], mi, has_mask, lstm, self.cell.log_space, carry, dk, db
                )
                dk2, x2 = dk.reshape(n * B, GH), x[c].reshape(n * B, I)
                dW += dk2.T @ x2
                matmul(dk2, W, out=dx[c].reshape(n * B, I))
            return dW, db, carry

        parts = _pool.run(finish, K)
        grads = {"W_xh": parts[0][0]}
        for other in parts[1:]:
            grads["W_xh"] += other[0]
        if "b_h" in p:
            grads["b_h"] = parts[0][1]
            for other in parts[1:]:
                grads["b_h"] += other[1]
        return dx, (parts[0][2],), grads
