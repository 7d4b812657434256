"""Bidirectional rows: the two directions at once (each on its own workers) against one after the other
(each splitting its batch), and torch, at 1 and 2 threads; training step and inference, wall clock, medians,
side by side in one process.

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_directions.py [--reps 15]
"""

from __future__ import annotations

import argparse
import os
from unittest import mock

import torch

from unrolled import kernels, threads
from unrolled.bench.suite import Config, step_fns
from unrolled.bench.timing import interleaved, load_average, median, set_clock

ROWS = [
    Config("gru", 100, 32, 64, 128, layers=2, bidirectional=True),
    Config("lstm", 100, 32, 64, 128, bidirectional=True),
    Config("lstm", 50, 64, 256, 256, layers=2, bidirectional=True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    set_clock("wall")
    print(f"load {load_average()}, cores {os.cpu_count()}")
    for train in (True, False):
        print("training step" if train else "inference forward")
        print("| row | torch 1 | torch 2 | seq 1 | seq 2 | at once 2 | at once 2 / seq 2 | 1→2 | best/best |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cfg in ROWS:
            fns = step_fns(cfg, torch, train)
            ours, theirs = fns["unrolled"], fns["torch"]

            def seq(ours=ours):
                with mock.patch.object(kernels, "direction_slices", lambda *a, **k: 0):
                    ours()

            runs = {"torch 1": theirs, "torch 2": theirs, "seq 1": seq, "seq 2": seq, "at once 2": ours}
            before = {
                "torch 1": lambda: torch.set_num_threads(1),
                "torch 2": lambda: torch.set_num_threads(2),
                "seq 1": lambda: threads.set_threads(1),
                "seq 2": lambda: threads.set_threads(2),
                "at once 2": lambda: threads.set_threads(2),
            }
            t = {k: median(v) * 1e3 for k, v in interleaved(runs, args.reps, before=before, retake=3).items()}
            best_ours = min(t["seq 1"], t["at once 2"])
            cols = [t[k] for k in runs]
            ratios = t["at once 2"] / t["seq 2"], t["seq 1"] / t["at once 2"], best_ours / min(cols[:2])
            cells = [f"{v:.1f}" for v in cols] + [f"{v:.2f}" for v in ratios]
            print(f"| {cfg.name} | " + " | ".join(cells) + " |", flush=True)
    print(f"load {load_average()}")


if __name__ == "__main__":
    main()
