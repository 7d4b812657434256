"""Peak memory of one forward: the training forward (keeps the backward cache) against the inference path
(``need_grad=False``), for each row of the inference grid, each measurement in a fresh process.

python benchmarks/inference_memory.py [--threads N]

Per row and mode: tracemalloc's peak (every NumPy buffer allocated during the call, NumPy reports them) and
the growth of the resident set's high-water mark (VmHWM, reset just before the call) over the resident set
before it, in MiB, after a warm-up call of the same mode and shapes (so the compiled kernels, oneDNN's
primitives and the inference path's reused buffers exist already: the number is one call's own memory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict


def measure(mode: str, cfg_dict: dict, threads: int) -> dict:
    import tracemalloc

    import numpy as np

    from unrolled.bench.suite import Config, make_pair
    from unrolled.bench.timing import reset_peak_rss, rss_kib
    from unrolled.threads import set_threads

    set_threads(threads)
    cfg = Config(**cfg_dict)
    layer, _ = make_pair(cfg, None)
    x = np.random.default_rng(1).standard_normal((cfg.T, cfg.B, cfg.I), dtype=np.float32)
    need_grad = mode == "train"
    layer.forward(x, need_grad=need_grad)  # warm-up
    layer._cache = None  # the warm-up's cache would otherwise be freed during the measured call
    tracemalloc.start()
    before = rss_kib()
    if before is not None and reset_peak_rss():
        before = rss_kib()
    result = layer.forward(x, need_grad=need_grad)
    after = rss_kib()
    out = {"tracemalloc_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20}
    tracemalloc.stop()
    if before is not None and after is not None:
        out["rss_peak_mib"] = (after[1] - before[0]) / 1024
    del result
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], json.loads(args.child[1]), args.threads)))
        return
    from unrolled.bench.inference import INFER_GRID

    print("| row | training forward: tracemalloc / RSS MiB | inference: tracemalloc / RSS MiB | ratio |")
    print("|---|---|---|---:|")
    for cfg in INFER_GRID:
        res = {}
        for mode in ("train", "infer"):
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", mode]
            cmd.append(json.dumps(asdict(cfg)))
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            res[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        t, i = res["train"], res["infer"]
        ratio = i["tracemalloc_peak_mib"] / t["tracemalloc_peak_mib"]
        cells = [f"{r['tracemalloc_peak_mib']:.2f} / {r.get('rss_peak_mib', 0.0):.2f}" for r in (t, i)]
        print(f"| {cfg.name} | {cells[0]} | {cells[1]} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
