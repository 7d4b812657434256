"""The inference grid with each library alone in its process: what a user who runs one of them sees.

``bench_rnn.py inference`` times unrolled, onnxruntime and torch side by side in one process, samples
interleaved. That is fair to work that needs one core, but not to parallel work that synchronises every
step: onnxruntime's and OpenMP's worker threads keep spinning for a while after their own call, on the
cores the next library's workers need, and a walk whose workers wait for each other every step (the unit
split at B = 1, onnxruntime's own sequence walk) then waits for a core. Here each (library, thread count)
runs in a process of its own, warm, over the same rows, inputs and weights (the same code builds them:
:func:`unrolled.bench.inference.contenders`); rounds alternate the order, and a row's time is the median
over rounds of each process's median.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/inference_alone.py [--rounds 3]
        [--reps 41] [--rows 0 4] [--json F] [--train]

``--train``: the training grid of ``bench_rnn.py`` (:data:`unrolled.bench.suite.GRID`, a step = forward and
backward, :func:`unrolled.bench.suite.step_fns`), unrolled against torch, each alone in its process the
same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _grid(train: bool) -> list:
    from unrolled.bench.inference import INFER_GRID
    from unrolled.bench.suite import GRID

    return GRID if train else INFER_GRID


def child(row: int, lib: str, n: int, reps: int, train: bool) -> None:
    """Time one library at n threads on one row, alone in this process; print its median in seconds."""
    import numpy as np

    from unrolled.bench.inference import contenders
    from unrolled.bench.suite import _use, step_fns

    torch = ort = None
    if lib == "torch":
        import torch
    if lib == "onnxruntime":
        import onnxruntime as ort
    cfg = _grid(train)[row]
    if train:
        fn = step_fns(cfg, torch, True)[lib]
        _use(lib, n, torch)()
    else:
        fns, before = contenders(cfg, (n,), torch, ort)
        key = f"{lib}@{n}"
        fn = fns[key]
        if key in before:
            before[key]()
    flops = cfg.forward_flops() * (3 if train else 1)
    inner = max(1, min(50, int(2e-3 / max(flops / 20e9, 1e-6))))
    for _ in range(3 * inner):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    print(json.dumps({"median": float(np.median(samples))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=41)
    ap.add_argument("--rows", type=int, nargs="*", help="grid rows (indices) to run; all by default")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--train", action="store_true", help="the training grid: unrolled against torch")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]), args.reps, args.train)
        return

    from unrolled.bench.suite import geomean, thread_counts
    from unrolled.bench.timing import cpu_model, load_average

    libs = ["unrolled", "torch"] if args.train else ["unrolled", "onnxruntime", "torch"]
    counts = thread_counts(None)
    grid = _grid(args.train)
    rows = args.rows if args.rows else range(len(grid))
    what = "training step" if args.train else "forward"
    print(f"{cpu_model()}; {what}; threads {counts}; {args.rounds} rounds; load {load_average()}", flush=True)
    out = []
    for r in rows:
        cfg = grid[r]
        runs = [(lib, n) for lib in libs for n in counts]
        times: dict[tuple, list[float]] = {k: [] for k in runs}
        for rnd in range(args.rounds):
            for lib, n in runs if rnd % 2 == 0 else runs[::-1]:
                cmd = [sys.executable, __file__, "--reps", str(args.reps), "--child", str(r), lib, str(n)]
                cmd += ["--train"] if args.train else []
                got = subprocess.run(cmd, capture_output=True, text=True)
                if got.returncode != 0:
                    print(f"  {lib}@{n}: failed: {got.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                times[(lib, n)].append(json.loads(got.stdout.strip().splitlines()[-1])["median"])
        med = {f"{lib}@{n}": statistics.median(v) * 1e3 for (lib, n), v in times.items() if v}
        best = {lib: min(v for k, v in med.items() if k.startswith(lib + "@")) for lib in libs}
        ratio = best["unrolled"] / min(best[lib] for lib in libs[1:])
        cells = "  ".join(
            f"{lib} " + " / ".join(f"{med[f'{lib}@{n}']:.3g}" for n in counts) + " ms" for lib in libs
        )
        print(f"  {cfg.name:34s} {cells}  ratio {ratio:.2f}", flush=True)
        out.append({"row": cfg.name, "ms": med, "ratio": ratio})
    gm = geomean([o["ratio"] for o in out])
    print(f"geometric mean {gm:.2f} (worst {max(o['ratio'] for o in out):.2f}); load {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cpu": cpu_model(), "what": what, "threads": counts, "rows": out, "geomean": gm}, f, indent=1
            )


if __name__ == "__main__":
    main()
