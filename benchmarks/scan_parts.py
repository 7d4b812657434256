"""Where one MinGRU training step spends its time, beside the LSTM's and GRU's, at one thread in CPU time
(thread_time: little moved by other processes' load, unlike wall-clock time on a shared machine).

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/scan_parts.py [--T 4096] [--B 2] [--H 128]

Prints the median CPU time of a whole training step (forward + backward) of MinGRU, MinLSTM, LSTM and GRU
(float32, I = H), then the parts of the MinGRU step one by one (the compiled path's pieces, one block).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import unrolled
from unrolled import kernels, threads
from unrolled.cells.bulk import project_inputs
from unrolled.kernels import _scan_jit as jit


def cpu_ms(fn, reps: int = 7) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return statistics.median(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--H", type=int, default=128)
    a = ap.parse_args()
    threads.set_threads(1)
    T, B, H = a.T, a.B, a.H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d = rng.standard_normal((T, B, H), dtype=np.float32)
    whole = {}
    for name, cls in [("MinGRU", unrolled.MinGRU), ("MinLSTM", unrolled.MinLSTM), ("LSTM", unrolled.LSTM),
                      ("GRU", unrolled.GRU)]:  # fmt: skip
        layer = cls(H, H, seed=0)

        def step(layer=layer):
            layer.forward(x)
            layer.backward(d)

        whole[name] = cpu_ms(step)
        print(f"{name:8s} training step {whole[name]:7.1f} ms CPU (1 thread)")
    print(
        f"LSTM / MinGRU {whole['LSTM'] / whole['MinGRU']:.2f}, "
        f"LSTM / MinLSTM {whole['LSTM'] / whole['MinLSTM']:.2f}"
    )
    W = (0.1 * rng.standard_normal((2 * H, H))).astype(np.float32)
    b = np.zeros(2 * H, np.float32)
    mm = kernels.bulk_matmul(np.float32)
    k = project_inputs(x, W, b, matmul=mm)
    E = np.exp(-k)
    a_, h = np.empty((T, B, H), np.float32), np.empty((T, B, H), np.float32)
    one, h0, prod = np.ones((1, 1), np.float32), np.zeros((B, H), np.float32), np.empty((B, H), np.float32)
    dk = np.empty_like(k)
    N = B * H
    y = np.empty((T, N), np.float32)
    parts = {
        "input projection (BLAS/oneDNN)": lambda: project_inputs(x, W, b, matmul=mm),
        "exp(-k)": lambda: np.exp(-k),
        "gates + local scan (compiled)": lambda: jit.min_forward(
            k, E, one, False, False, True, h0, True, a_, h, prod
        ),
        "reverse scan (compiled)": lambda: jit.local_reverse(
            np.ones(N, np.float32),
            a_.reshape(T, N),
            d.reshape(T, N),
            np.zeros(N, np.float32),
            y,
            prod.reshape(N),
        ),
        "gates backward (compiled)": lambda: jit.min_backward(k, E, a_, h, d, one, False, False, True, dk),
        "dW = dkᵀ x (BLAS)": lambda: dk.reshape(-1, 2 * H).T @ x.reshape(-1, H),
        "dx = dk W (BLAS/oneDNN)": lambda: mm(dk.reshape(-1, 2 * H), W),
    }
    total = 0.0
    for name, fn in parts.items():
        t = cpu_ms(fn)
        total += t
        print(f"  {name:32s} {t:6.2f} ms")
    print(f"  {'sum of the parts':32s} {total:6.2f} ms (the rest of the step: copies, allocation, Python)")


if __name__ == "__main__":
    main()
