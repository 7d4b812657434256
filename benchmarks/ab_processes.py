"""Two trees of unrolled on the same rows, in alternating processes: is a change faster, as a user runs it?

On a shared host the same code reads 10-30 % apart from one minute to the next, so a before / after taken
minutes apart says little. Here each round runs the old tree and the new one, each in a fresh process
(warm-up, then ``--reps`` samples of ``--inner`` calls), in alternating order; a row reports the median of
the processes' medians and 10th percentiles, their ratio, and in how many rounds the new tree was faster.

The old tree is any checkout's ``src`` directory (put first on ``PYTHONPATH`` of its processes); the new is
the installed one. For example::

    git worktree add /tmp/old HEAD~3
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab_processes.py --old /tmp/old/src \\
        --rows lstm:256 gru:256 --threads 2 --rounds 10 [--train]

A row is ``cell:H`` (T = 100, B = 1, I = 64 unless ``--T``, ``--B``, ``--I`` say otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import unrolled
from unrolled import threads

cell, H, T, B, I, n, train, reps, inner = sys.argv[1:]
H, T, B, I, n, reps, inner = map(int, (H, T, B, I, n, reps, inner))
threads.set_threads(n)
layer = {"lstm": unrolled.LSTM, "gru": unrolled.GRU, "rnn": unrolled.RNN}[cell](I, H, seed=0)
rng = np.random.default_rng(1)
x = rng.standard_normal((T, B, I), dtype=np.float32)
d = rng.standard_normal((T, B, H), dtype=np.float32)
if train == "1":
    def call():
        layer.forward(x)
        layer.backward(d)
else:
    def call():
        layer(x, need_grad=False)
for _ in range(3 * inner):
    call()
s = []
for _ in range(reps):
    t0 = time.perf_counter()
    for _ in range(inner):
        call()
    s.append((time.perf_counter() - t0) / inner)
stats = {"median": float(np.median(s)), "p10": float(np.percentile(s, 10))}
print(json.dumps({**stats, "file": unrolled.__file__}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the old tree's src directory")
    ap.add_argument("--rows", nargs="+", default=["lstm:256"], help="cell:H (lstm, gru, rnn)")
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--I", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--train", action="store_true", help="a training step (forward + backward), not inference"
    )
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=41)
    ap.add_argument("--inner", type=int, default=10)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.old, "unrolled")):
        sys.exit(f"--old: expected a src directory holding unrolled/, got {args.old!r}")
    for row in args.rows:
        cell, H = row.split(":")
        argv = [cell, H, args.T, args.B, args.I, args.threads, int(args.train), args.reps, args.inner]
        got: dict[str, dict[str, list[float]]] = {w: {"median": [], "p10": []} for w in ("old", "new")}
        for rnd in range(args.rounds):
            for which in ("old", "new") if rnd % 2 == 0 else ("new", "old"):
                env = dict(os.environ)
                if which == "old":
                    env["PYTHONPATH"] = args.old
                run = subprocess.run(
                    [sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True, env=env
                )
                if run.returncode != 0:
                    sys.exit(f"{which} tree failed on {row}: {run.stderr.strip().splitlines()[-1:]}")
                out = json.loads(run.stdout.strip().splitlines()[-1])
                if out["file"].startswith(os.path.abspath(args.old)) != (which == "old"):
                    sys.exit(f"{which} tree: imported {out['file']}, not the tree asked for")
                for k in ("median", "p10"):
                    got[which][k].append(out[k] * 1e6)
        o, n = (statistics.median(got[w]["median"]) for w in ("old", "new"))
        o10, n10 = (statistics.median(got[w]["p10"]) for w in ("old", "new"))
        wins = sum(b < a for a, b in zip(got["old"]["median"], got["new"]["median"], strict=True))
        what = "training step" if args.train else "inference"
        print(
            f"{row} T{args.T} B{args.B} I{args.I} {what}, {args.threads} threads: "
            f"old {o:.0f} µs, new {n:.0f} µs, new/old {n / o:.3f} (10th percentiles {n10 / o10:.3f}); "
            f"new faster in {wins} of {args.rounds} rounds",
            flush=True,
        )


if __name__ == "__main__":
    main()
