"""Several user threads calling unrolled at once: what a server handling requests in a thread pool sees.

Each of ``--users`` threads calls its own copy of one row's layer (same weights) in a loop: the inference
forward, or with ``--train`` a training step (forward and backward). Prints the calls per second of all
threads together and the pool's worker threads started in the process, for 1 user and for each count
asked for. The outputs of every call are checked against the single-caller ones (bit for bit).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/concurrent_callers.py \\
        --row 0 --users 1 2 4 [--train] [--calls 300]

A row is an index into the inference grid (:data:`unrolled.bench.inference.INFER_GRID`). To compare two
trees, run the script with each tree's ``src`` first on ``PYTHONPATH``, alternating.
"""

from __future__ import annotations

import argparse
import copy
import threading
import time

import numpy as np


def measure(row: int, users: int, train: bool, calls: int) -> tuple[float, int]:
    """(calls per second of all users together, pool workers started so far in this process)."""
    from unrolled.bench.inference import INFER_GRID, make_pair
    from unrolled.kernels import _pool

    cfg = INFER_GRID[row]
    layer, _ = make_pair(cfg, None)
    x = np.random.default_rng(1).standard_normal((cfg.T, cfg.B, cfg.I), dtype=np.float32)
    layers = [copy.deepcopy(layer) for _ in range(users)]
    for m in layers:
        m.train(train)  # False: evaluation mode

    def call(m):
        if train:
            out, _ = m.forward(x)
            m.backward(np.ones_like(out))
            return out
        return m.forward(x, need_grad=False)[0]

    expected = call(layers[0])
    for m in layers:
        for _ in range(3):
            call(m)
    errors: list[str] = []

    def user(m):
        for _ in range(calls):
            y = call(m)
        if not np.array_equal(y, expected):
            errors.append("an output differs from the single caller's")

    ts = [threading.Thread(target=user, args=(m,)) for m in layers]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(errors[0])
    return users * calls / wall, _pool.started()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", type=int, default=0, help="index into the inference grid (default 0)")
    ap.add_argument("--users", type=int, nargs="+", default=[1, 2, 4], help="user threads calling at once")
    ap.add_argument("--train", action="store_true", help="a training step, not an inference forward")
    ap.add_argument("--calls", type=int, default=300, help="calls per user thread")
    args = ap.parse_args()
    import unrolled
    from unrolled.bench.inference import INFER_GRID

    print(f"{INFER_GRID[args.row]}, {'training step' if args.train else 'inference'} ({unrolled.__file__})")
    for users in args.users:
        rate, started = measure(args.row, users, args.train, args.calls)
        print(f"  {users} user thread(s): {rate:8.1f} calls/s in all, pool workers started so far {started}")


if __name__ == "__main__":
    main()
