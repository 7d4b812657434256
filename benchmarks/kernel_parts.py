"""Where a float32 walk's time goes: the per-step recurrent product in each implementation, and a whole LSTM
forward walk split into its product and its gate kernels (the numbers behind kernels/_jit.py's
``whole_sequence`` rule and the choice of oneDNN's packed product; see README, Performance).

python benchmarks/kernel_parts.py products   # µs per product: OpenBLAS, matmul_nt, oneDNN sgemm, packed
python benchmarks/kernel_parts.py walk       # ms per LSTM forward walk: whole, product alone, gates alone
python benchmarks/kernel_parts.py backward   # ms per LSTM backward walk: whole, product alone, gates alone
python benchmarks/kernel_parts.py matvec     # µs per single-sequence mat-vec step against reading W alone
python benchmarks/kernel_parts.py split      # µs per batched product on 2 cores: rows split or columns

One thread, thread CPU time, medians (``split``: two threads at once, wall clock). Needs the extras fast
(Numba); oneDNN's columns (and ``split``) need onednn.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from numba import njit

from unrolled import kernels
from unrolled.kernels import _dnnl
from unrolled.kernels import _jit as J
from unrolled.kernels._common import gate_affine, transpose
from unrolled.kernels.lstm import _PATTERN
from unrolled.threads import set_blas_threads

SHAPES = [(1, 32), (4, 512), (16, 128), (16, 512), (32, 128), (64, 256)]  # (B, H); the product is B×H by H×4H


def median_ms(fn, reps: int = 7, inner: int = 1) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.thread_time()
        for _ in range(inner):
            fn()
        times.append((time.thread_time() - t0) / inner)
    return float(np.median(times)) * 1e3


@njit
def _packed_product(a, handles, out):
    J.dnnl_product(a, handles, out)


@njit
def _products_only(hs, handles, rec):
    for t in range(hs.shape[0] - 1):
        J.dnnl_product(hs[t], handles, rec)


@njit
def _gates_only(gates, rec, bias, scale, offset, hs, cs, tanh_c, valid):
    for t in range(gates.shape[0]):
        J.lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)


@njit(fastmath=True)
def _read(W):
    s = np.float32(0)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            s += W[i, j]
    return s


@njit(fastmath=True)
def _matvec_walk(h, M, o, T):
    for _ in range(T):  # each step's h depends on the last product, as in a walk
        J._matvec_rows(h, M, o)
        h[0] = o[0] * np.float32(1e-3)


@njit(fastmath=True)
def _stream(w, T):
    # Not _read: its loop over rows and columns reads a 30 KiB W in ~1.5 µs, this flat one in 0.14-0.22 —
    # a floor must be the fastest plain read measured. (_read stays as it is: the walk's numbers use it.)
    s = np.float32(0)
    for _ in range(T):
        for i in range(w.shape[0]):
            s += w[i]
    return s


@njit
def _gates_after_reading(W, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid):
    s = np.float32(0)
    for t in range(gates.shape[0]):
        s += _read(W)  # what a product does to the caches: stream all of W
        J.lstm_forward_step(t, gates, rec, bias, scale, offset, hs, cs, tanh_c, valid)
    return s


@njit
def _reads_only(W, T):
    s = np.float32(0)
    for _ in range(T):
        s += _read(W)
    return s


@njit
def _backward_products_only(da, handles, dh_rec):
    for t in range(da.shape[0] - 1, -1, -1):
        J.dnnl_product(da[t], handles, dh_rec)


@njit
def _backward_gates_only(d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid):
    for t in range(gates.shape[0] - 1, -1, -1):
        J.lstm_backward_step(t, d_hs, dh_rec, carry, dc, gates, cs, tanh_c, da, valid)


def backward() -> None:
    if kernels.dnnl_walks() is None:
        raise SystemExit("backward: needs oneDNN (pip install -e '.[fast,onednn]')")
    print("T    B    H    ms per LSTM backward walk: whole  product alone  gates alone")
    rng = np.random.default_rng(0)
    for T, B, H in [(100, 32, 128), (64, 16, 512), (50, 64, 256)]:
        gates = rng.random((T, B, 4 * H), dtype=np.float32)
        cs = rng.standard_normal((T + 1, B, H), dtype=np.float32)
        tanh_c = np.tanh(cs[1:])
        d_hs = rng.standard_normal((T, B, H), dtype=np.float32) * np.float32(0.01)
        state = [np.zeros((B, H), np.float32) for _ in range(3)]  # dh_rec, carry, dc
        da, valid = np.empty_like(gates), np.ones((T, B), np.float32)
        W = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)
        handles = J.dnnl_backward_weights(W, B)
        walk = (d_hs, *state, gates, cs, tanh_c, da, valid)
        cols = (
            median_ms(lambda: J.lstm_backward_seq_dnnl(*walk, handles)),  # noqa: B023 (called here)
            median_ms(lambda: _backward_products_only(da, handles, state[0])),  # noqa: B023
            median_ms(lambda: _backward_gates_only(*walk)),  # noqa: B023
        )
        print(f"{T:<4} {B:<4} {H:<4} " + "".join(f"{c:12.2f}" for c in cols))


def products() -> None:
    dnnl = kernels.dnnl_walks() is not None
    print("B    H    µs per product h (B×H) · W_hhᵀ (H×4H): OpenBLAS  matmul_nt  oneDNN sgemm  oneDNN packed")
    for B, H in SHAPES:
        print(f"{B:<4} {H:<4} " + "".join(f"{1e3 * c:14.1f}" for c in _product_row(B, H, dnnl)))


def _product_row(B: int, H: int, dnnl: bool) -> list[float]:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((B, H), dtype=np.float32)
    W = rng.standard_normal((4 * H, H), dtype=np.float32)
    WT, out = transpose(W), np.empty((B, 4 * H), dtype=np.float32)
    inner = max(5, int(2e6 / (B * 4 * H * H)))
    cols = [median_ms(lambda: np.matmul(h, WT, out=out), inner=inner)]
    cols.append(median_ms(lambda: J.matmul_nt(h, W, out), inner=inner))
    if dnnl:
        cols.append(median_ms(lambda: _dnnl.matmul(h, WT, out), inner=inner))
        handles = J.dnnl_forward_weights(W, B)
        cols.append(median_ms(lambda: _packed_product(h, handles, out), inner=inner))
    return cols


def walk() -> None:
    if kernels.dnnl_walks() is None:
        raise SystemExit("walk: needs oneDNN (pip install -e '.[fast,onednn]')")
    print(
        "T    B    H    ms per LSTM forward walk: whole  product alone  gates alone  gates after a read of W"
    )
    for T, B, H in [(100, 32, 128), (64, 16, 512), (50, 64, 256)]:
        print(f"{T:<4} {B:<4} {H:<4} " + "".join(f"{c:12.2f}" for c in _walk_row(T, B, H)))


def _walk_row(T: int, B: int, H: int) -> tuple[float, ...]:
    rng = np.random.default_rng(0)
    g0 = (rng.standard_normal((T, B, 4 * H)) * 0.5).astype(np.float32)
    gates = g0.copy()
    W = (rng.standard_normal((4 * H, H)) * 0.05).astype(np.float32)
    scale, offset = gate_affine(_PATTERN, H, np.float32)
    bias = np.zeros(4 * H, np.float32)
    hs, cs = np.zeros((T + 1, B, H), np.float32), np.zeros((T + 1, B, H), np.float32)
    tanh_c, rec = np.zeros((T, B, H), np.float32), np.zeros((B, 4 * H), np.float32)
    valid = np.ones((T, B), np.float32)
    handles = J.dnnl_forward_weights(W, B)
    args = (bias, scale, offset, hs, cs, tanh_c, valid)
    reset = median_ms(lambda: np.copyto(gates, g0))  # each timed walk starts from the same inputs
    whole = median_ms(lambda: (np.copyto(gates, g0), J.lstm_forward_seq_dnnl(gates, handles, *args, rec)))
    product = median_ms(lambda: _products_only(hs, handles, rec))
    alone = median_ms(lambda: (np.copyto(gates, g0), _gates_only(gates, rec, *args)))
    after = median_ms(lambda: (np.copyto(gates, g0), _gates_after_reading(W, gates, rec, *args)))
    after -= median_ms(lambda: _reads_only(W, T))
    return whole - reset, product, alone - reset, after - reset


# (rows, columns) of W: an LSTM at H = 256 split over two workers reads (512, 256) each; a GRU at H = 64,
# (192, 64)
MATVEC_SHAPES = [(192, 40), (192, 64), (512, 128), (512, 256), (1024, 256), (2048, 512)]


def matvec() -> None:
    """A single sequence's recurrent product (B = 1: W_hh h, ``_jit._matvec_rows``) per step of a walk of
    steps, against a plain read of the same W (``_stream``: every float once, summed): where the two are
    close, the product runs at the speed of the cache that holds W, and only fewer bytes make it faster."""
    rng = np.random.default_rng(0)
    print("W (rows x columns)     KiB   mat-vec µs   read W µs   mat-vec / read")
    for N, K in MATVEC_SHAPES:
        M = rng.standard_normal((N, K)).astype(np.float32)
        h, o = rng.standard_normal(K).astype(np.float32), np.empty(N, np.float32)
        T = max(50, 200_000 // K)
        mv = median_ms(lambda M=M, h=h, o=o, T=T: _matvec_walk(h, M, o, T), reps=9) * 1e3 / T
        w = M.ravel()
        rd = median_ms(lambda w=w, T=T: _stream(w, T), reps=9) * 1e3 / T
        print(f"{N:5d} x {K:<5d}        {N * K * 4 // 1024:5d}   {mv:10.3f}   {rd:9.3f}   {mv / rd:14.2f}")


@njit(nogil=True)
def _packed_products(a, handles, out, n):
    for _ in range(n):
        J.dnnl_product(a, handles, out)


SPLIT_SHAPES = [(32, 256), (64, 512)]  # (B, H) of the batched LSTM rows of the inference grid


def _both_cores(M: int, N: int, K: int, steps: int, reps: int = 7) -> float:
    """µs per (M × K)·(K × N) packed oneDNN product with two threads each running one at the same time (a
    step of a split walk: each core its own product), the slower of the two, median over ``reps``."""
    times: list[list[float]] = [[], []]
    start = threading.Barrier(2)

    def work(i: int) -> None:
        _dnnl.set_threads(1)
        rng = np.random.default_rng(i)
        W = rng.standard_normal((N, K), dtype=np.float32)  # rows are output columns, as W_hh's are
        a, out = rng.standard_normal((M, K), dtype=np.float32), np.empty((M, N), np.float32)
        plan = _dnnl.plan(M, K, N, w_rows_are_n=True)
        handles = plan.pack(W)
        _packed_products(a, handles, out, steps // 10)
        for _ in range(reps):
            start.wait()
            t0 = time.perf_counter()
            _packed_products(a, handles, out, steps)
            times[i].append((time.perf_counter() - t0) / steps)
        plan.close()

    pair = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    return float(np.median([max(x, y) for x, y in zip(*times, strict=True)])) * 1e6


def split() -> None:
    """A batched LSTM step's recurrent product h_{t-1} W_hhᵀ ((B × H)·(H × 4H)) on two cores at once, as the
    batch split runs it (each core half the rows and all of W_hh) and as a column split would (each core
    all the rows and half of W_hh's rows, i.e. half the gate columns: what torch and onnxruntime do)."""
    if _dnnl.load() is None:
        raise SystemExit("split: needs oneDNN (pip install -e '.[onednn]')")
    print("B    H     rows split µs  GFLOP/s/core   columns split µs  GFLOP/s/core   columns / rows")
    for B, H in SPLIT_SHAPES:
        G, steps = 4 * H, max(200, 400_000_000 // (B * H * 4 * H))
        rows = _both_cores(B // 2, G, H, steps)
        cols = _both_cores(B, G // 2, H, steps)
        rate = B * H * G / 1e3  # FLOP per core per step / 1e3 = GFLOP/s at 1 µs
        print(
            f"{B:<4d} {H:<5d} {rows:13.1f}  {rate / rows:12.0f}   {cols:16.1f}  {rate / cols:12.0f}   "
            f"{cols / rows:14.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["products", "walk", "backward", "matvec", "split"])
    args = p.parse_args()
    set_blas_threads(1)
    kernels.dnnl_walks()  # load oneDNN (if installed) before timing, then one thread for it too
    set_blas_threads(1)
    parts = {"products": products, "walk": walk, "backward": backward, "matvec": matvec, "split": split}
    parts[args.part]()


if __name__ == "__main__":
    main()
