"""One training step (forward + BPTT) of the LSTM/GRU variants beside the plain cells and torch.nn, side by
side in one process: what the variants cost on the path they run (the reference, except layer_norm alone:
compiled, unrolled.kernels.layernorm; benchmarks/charlm_cells.py compares the two).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/variants_step.py [--reps 7] [--T 100]
        [--B 32] [--I 64] [--H 128] [--json benchmarks/results/variants_step.json]

Wall clock, median of --reps after one warm-up; one BLAS thread for both libraries (torch.set_num_threads(1)).
Ratios are to the plain LSTM on its default (compiled where Numba is installed) path.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    set_blas_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.T, a.B, a.I)).astype(np.float32)
    P = a.H // 2
    rows = [
        ("LSTM", lambda: LSTM(a.I, a.H, seed=0), None),
        ("LSTM, reference path", lambda: LSTM(a.I, a.H, seed=0), "reference"),
        (f"LSTM proj_size={P}", lambda: LSTM(a.I, a.H, seed=0, proj_size=P), None),
        ("LSTM peephole", lambda: LSTM(a.I, a.H, seed=0, peephole=True), None),
        ("LSTM layer_norm", lambda: LSTM(a.I, a.H, seed=0, layer_norm=True), None),
        ("LSTM zoneout=0.1", lambda: LSTM(a.I, a.H, seed=0, zoneout=0.1), None),
        (
            "LSTM all four",
            lambda: LSTM(a.I, a.H, seed=0, layer_norm=True, peephole=True, proj_size=P, zoneout=0.1),
            None,
        ),
        ("GRU", lambda: GRU(a.I, a.H, seed=0), None),
        ("GRU layer_norm", lambda: GRU(a.I, a.H, seed=0, layer_norm=True), None),
    ]
    results = []
    for name, make, path in rows:
        layer = make()

        def step(layer=layer):
            out, _ = layer(x)
            layer.backward(np.ones_like(out))

        with kernels.using(reference=path == "reference"):
            results.append({"name": name, "seconds": _median_seconds(step, a.reps)})
    try:
        import torch

        torch.set_num_threads(1)
        for name, module in (
            ("torch LSTM", torch.nn.LSTM(a.I, a.H)),
            (f"torch LSTM proj_size={P}", torch.nn.LSTM(a.I, a.H, proj_size=P)),
            ("torch GRU", torch.nn.GRU(a.I, a.H)),
        ):
            xt = torch.from_numpy(x)

            def tstep(module=module, xt=xt):
                out, _ = module(xt)
                out.sum().backward()

            results.append({"name": name, "seconds": _median_seconds(tstep, a.reps)})
    except ImportError:
        print("torch not installed: no torch rows")
    base = results[0]["seconds"]
    print(
        f"one training step, T={a.T} B={a.B} I={a.I} H={a.H}, median of {a.reps}; path: {kernels.describe()}"
    )
    print("| layer | ms per step | × plain LSTM |\n|---|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {1000 * r['seconds']:.1f} | {r['seconds'] / base:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": vars(a), "path": kernels.describe(), "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
