"""Peak memory of one training step, each library in a fresh process.

Both libraries are measured the same way: the growth of the resident set's high-water mark (VmHWM, reset
through /proc/self/clear_refs just before the step) over the resident set after the model and the inputs
exist, after a warm-up step on the same shapes with T = 2. For unrolled, tracemalloc's peak (NumPy
reports its buffers to it) is recorded as well; torch's CPU allocator does not report to tracemalloc,
hence the common RSS measure. A fresh process per measurement keeps freed-but-retained heap from earlier
runs out of the number. Linux only (None elsewhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict


def measure(lib: str, cfg_dict: dict, threads: int) -> dict:
    """In this process: build lib's layer, run one training step, return the peak growth in MiB."""
    import tracemalloc

    from unrolled.bench.suite import Config, step_fns
    from unrolled.bench.timing import reset_peak_rss, rss_kib, set_threads

    torch = None
    if lib == "torch":
        import torch
    set_threads(threads, torch)
    # Warm up on the same shapes with T = 2: imports, compiled kernels, oneDNN primitives are loaded
    # before the mark is reset, so the number is the step's own working memory.
    step_fns(Config(**{**cfg_dict, "T": 2}), torch, train=True)[lib]()
    fn = step_fns(Config(**cfg_dict), torch, train=True)[lib]
    out: dict = {}
    if lib == "unrolled":
        tracemalloc.start()
    before = rss_kib()
    if before is not None and reset_peak_rss():
        before = rss_kib()
    fn()
    after = rss_kib()
    if before is not None and after is not None:
        out["rss_peak_mib"] = (after[1] - before[0]) / 1024
    if lib == "unrolled":
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def compare(cfg, threads: int, with_torch: bool = True) -> dict:
    """Peak memory of a training step of ``cfg`` for unrolled (and torch), each in its own process."""
    row = {"config": cfg.name}
    for lib in ("unrolled", "torch") if with_torch else ("unrolled",):
        cmd = [sys.executable, "-m", "unrolled.bench.memory", lib, json.dumps(asdict(cfg)), str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            row[f"{lib}_error"] = (res.stderr.strip().splitlines() or ["failed"])[-1]
            continue
        for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items():
            row[f"{lib}_{k}"] = v
    return row


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))))
