"""Where one min-cell training step spends its time, against the LSTMs, in CPU time and wall clock.

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/scan_parts.py [--T 4096] [--B 2] [--H 128]
    [--reps 7]

1. A whole training step (forward + backward, float32, I = H, one layer) of MinGRU, MinLSTM, our LSTM
   (compiled path) and torch's nn.LSTM: median CPU time (thread_time of the calling thread, at 1 thread:
   little moved by other processes) and median wall clock at 1 and at 2 threads (unrolled's budget and
   torch's intra-op threads; on a shared machine the wall clock at 2 threads needs a free second core).
2. The parts of the compiled MinGRU and MinLSTM steps at 1 thread, one block (CPU time): the products
   (x·W_xhᵀ, ∂L/∂x = δk·W_xh, ∂L/∂W = δkᵀ·x — unavoidable), and the fused compiled passes. The floor: a
   step can take no less than its products, so LSTM / (sum of the products) bounds the ratio at 1 thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import unrolled
from unrolled import kernels, threads
from unrolled.kernels import _scan_jit as jit


def timed(fn, clock, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts) * 1e3


def steps(T: int, B: int, H: int):
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d = rng.standard_normal((T, B, H), dtype=np.float32)
    out = {}
    for name, cls in [("MinGRU", unrolled.MinGRU), ("MinLSTM", unrolled.MinLSTM), ("LSTM", unrolled.LSTM)]:
        layer = cls(H, H, seed=0)

        def step(layer=layer):
            layer.forward(x)
            layer.backward(d)

        out[name] = step
    module = torch.nn.LSTM(H, H)
    xt, dt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(d)

    def torch_step():
        xt.grad = None
        module.zero_grad(set_to_none=True)
        module(xt)[0].backward(dt)

    out["torch LSTM"] = torch_step
    return out


def parts(T: int, B: int, H: int, G: int, reps: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d = rng.standard_normal((T, B, H), dtype=np.float32)
    W = (0.1 * rng.standard_normal((G * H, H))).astype(np.float32)
    bias = np.zeros(G * H, np.float32)
    mm = kernels.bulk_matmul(np.float32)
    k = mm(x.reshape(T * B, H), W.T).reshape(T, B, G * H)
    a, h = np.empty((T, B, H), np.float32), np.empty((T + 1, B, H), np.float32)
    one, h0 = np.ones((1, 1), np.float32), np.zeros((B, H), np.float32)
    lstm = G == 3
    jit.min_forward(k, bias, one, False, lstm, True, h0, a, h[1:])
    dk, db = np.empty_like(k), np.zeros(G * H, np.float32)
    fns = {
        "x·W_xhᵀ (product)": lambda: mm(x.reshape(T * B, H), W.T),
        "gates + scan (fused, compiled)": lambda: jit.min_forward(
            k, bias, one, False, lstm, True, h0, a, h[1:]
        ),
        "δh + gates' backward + Σδk (fused)": lambda: jit.min_backward(
            k, bias, h[:-1], d, one, False, lstm, True, np.zeros((B, H), np.float32), dk, db
        ),
        "∂L/∂W = δkᵀ·x (product)": lambda: dk.reshape(-1, G * H).T @ x.reshape(-1, H),
        "∂L/∂x = δk·W_xh (product)": lambda: mm(dk.reshape(-1, G * H), W),
    }
    return {n: timed(f, time.thread_time, reps) for n, f in fns.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    import os

    import torch

    T, B, H = a.T, a.B, a.H
    fns = steps(T, B, H)
    res = {}
    for n in (1, 2):
        threads.set_threads(n)
        torch.set_num_threads(n)
        for name, fn in fns.items():
            res[name, n, "wall"] = timed(fn, time.perf_counter, a.reps)
            if n == 1:
                res[name, n, "cpu"] = timed(fn, time.thread_time, a.reps)
    print(f"T = {T}, B = {B}, H = I = {H}, float32; load average {os.getloadavg()}")
    print(f"{'step':12s} {'CPU 1 thr':>10s} {'wall 1 thr':>11s} {'wall 2 thr':>11s}   (ms)")
    for name in fns:
        print(
            f"{name:12s} {res[name, 1, 'cpu']:10.1f} {res[name, 1, 'wall']:11.1f} "
            f"{res[name, 2, 'wall']:11.1f}"
        )
    for mine in ("MinGRU", "MinLSTM"):
        r = [res["LSTM", 1, "cpu"] / res[mine, 1, "cpu"], res["LSTM", 1, "wall"] / res[mine, 1, "wall"]]
        r.append(res["LSTM", 2, "wall"] / res[mine, 2, "wall"])
        print(f"LSTM / {mine}: CPU 1 thr {r[0]:.1f}×, wall 1 thr {r[1]:.1f}×, wall 2 thr {r[2]:.1f}×")
    threads.set_threads(1)
    for mine, G in (("MinGRU", 2), ("MinLSTM", 3)):
        p = parts(T, B, H, G, a.reps)
        print(f"{mine} parts (CPU ms, 1 thread):")
        for name, t in p.items():
            print(f"  {name:36s} {t:6.2f}")
        prod = sum(t for n, t in p.items() if "product" in n)
        print(
            f"  sum {sum(p.values()):.2f}; products {prod:.2f} -> floor of LSTM / {mine} at 1 thread "
            f"{res['LSTM', 1, 'cpu'] / prod:.1f}×"
        )


if __name__ == "__main__":
    main()
