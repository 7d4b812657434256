"""One training step (forward + BPTT) of the char-LM's recurrent cells, compiled path against the reference:
the plain LSTM and GRU, and their layer-normalised variants (:mod:`unrolled.kernels.layernorm`).

    python benchmarks/charlm_cells.py [--reps 7] [--T 100] [--B 32] [--I 64] [--H 128]

float32, one BLAS thread, wall clock: the median of --reps after one warm-up (which also compiles or loads
the Numba kernels). The reference path is ``kernels.using(reference=True)``. The upstream gradient is
random (never all ones).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from unrolled import GRU, LSTM, kernels
from unrolled.threads import set_blas_threads


def _median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("reps", 7), ("T", 100), ("B", 32), ("I", 64), ("H", 128)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args()
    set_blas_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.T, a.B, a.I)).astype(np.float32)
    d_out = rng.standard_normal((a.T, a.B, a.H)).astype(np.float32)
    layers = (
        ("LSTM", LSTM(a.I, a.H, seed=0)),
        ("LN-LSTM", LSTM(a.I, a.H, seed=0, layer_norm=True)),
        ("GRU", GRU(a.I, a.H, seed=0)),
        ("LN-GRU", GRU(a.I, a.H, seed=0, layer_norm=True)),
    )
    print(f"T={a.T} B={a.B} I={a.I} H={a.H} float32, median of {a.reps}; {kernels.describe()}")
    print(f"{'cell':<10}{'compiled ms':>13}{'reference ms':>14}{'speed-up':>10}")
    for name, layer in layers:

        def step(layer=layer):
            layer(x)
            layer.backward(d_out)

        with kernels.using(reference=False):
            fast = _median_seconds(step, a.reps)
        with kernels.using(reference=True):
            ref = _median_seconds(step, a.reps)
        print(f"{name:<10}{1e3 * fast:>13.2f}{1e3 * ref:>14.2f}{ref / fast:>9.2f}×")


if __name__ == "__main__":
    main()
