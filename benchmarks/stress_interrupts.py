"""Interrupt ``unrolled train charlm`` at random moments and look for native crashes (the "reliability"
issue: once in 245 interrupted runs glibc aborted with "corrupted size vs. prev_size").

python benchmarks/stress_interrupts.py runs --runs 200 --jobs 2 --seed 0 --log /tmp/stress.jsonl
python benchmarks/stress_interrupts.py plans --cycles 300 --threads 4   # in-process ProductPlan cycles

``runs``: many short training runs (a tiny model, yet large enough that the walks use oneDNN's product:
B·G·H² = 8·4·64² > ``_jit.SMALL_MACS``), each sent SIGINT, SIGTERM or SIGKILL (sometimes a second SIGINT
or SIGTERM soon after: the handler's "abort at once" path) at a seeded random moment, under
``PYTHONMALLOC=debug MALLOC_CHECK_=3 PYTHONFAULTHANDLER=1``. A run counts as a crash when it dies by a
signal it was not sent (SIGABRT, SIGSEGV, ...), when it hangs, or when its stderr shows glibc's or
CPython's heap checks ("corrupted", "double free", "free():", "Debug memory block", "Fatal Python error")
or an unexpected traceback. One JSON line per run goes to ``--log``; the summary to stdout.

``plans``: create / pack / run / free oneDNN plans in several threads that then exit, run under the same
settings in a child process (the variables must be set before the interpreter starts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHECKED_ENV = {"PYTHONMALLOC": "debug", "MALLOC_CHECK_": "3", "PYTHONFAULTHANDLER": "1"}
MODEL = "--steps 40 --hidden 64 --layers 1 --embed 16 --batch 8 --seq-len 20 --val-every 5 --quiet".split()
HEAP_WORDS = ("corrupted", "double free", "free():", "malloc", "Debug memory block", "Fatal Python error")
HANG_S = 30.0


def _text(path: Path) -> None:
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog and then some more words follow here".split()
    path.write_text(" ".join(rng.choice(words) for _ in range(4000)), encoding="utf-8")


def _expected(rc: int, sent: list[int]) -> bool:
    """Exit codes an interrupted run may end with: finished (0), stopped cleanly and checkpointed (130,
    the handler's "interrupted"), or killed by a signal it was sent (a second signal aborts; a signal
    before the handler is installed acts as Python's default: KeyboardInterrupt / death)."""
    return rc in (0, 130) or -rc in sent


def _stderr_problem(err: str) -> str | None:
    for word in HEAP_WORDS:
        if word in err:
            return word
    if "Traceback (most recent call last)" in err and not err.rstrip().endswith("KeyboardInterrupt"):
        return "unexpected traceback"
    return None


def one_run(i: int, seed: int, text: Path, work: Path, max_delay: float, env: dict) -> dict:
    rng = random.Random(seed * 1_000_003 + i)
    sig = rng.choice([signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
    second = sig != signal.SIGKILL and rng.random() < 0.3  # the handler's "a second signal aborts" path
    delay, gap = rng.uniform(0.05, max_delay), rng.uniform(0.0, 0.05)
    out = work / f"run{i}"
    cmd = [sys.executable, "-m", "unrolled.commands", "train", "charlm"]
    cmd += ["--text", str(text), "--out", str(out)]
    with tempfile.TemporaryFile() as err_file:
        start = time.monotonic()
        proc = subprocess.Popen(cmd + MODEL, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        sent = []
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
            sent.append(int(sig))
            if second:
                time.sleep(gap)
                if proc.poll() is None:
                    proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=HANG_S)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, hung = proc.wait(), True
        wall = time.monotonic() - start
        err_file.seek(0)
        err = err_file.read().decode("utf-8", "replace")
    problem = "hung" if hung else _stderr_problem(err)
    if problem is None and not _expected(rc, sent):
        problem = f"exit code {rc}"
    return {
        "run": i,
        "signal": signal.Signals(sig).name if sent else None,
        "twice": second and bool(sent),
        "delay_s": round(delay, 3),
        "rc": rc,
        "wall_s": round(wall, 3),
        "problem": problem,
        "stderr_tail": err[-2000:] if problem else "",
    }


def runs(args: argparse.Namespace) -> int:
    # A job started in the background inherits SIGINT ignored, and so would every run (which trains on):
    # give the runs Python's usual SIGINT (a handled signal is reset to the default on exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env = {**os.environ, **CHECKED_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    results = []
    with tempfile.TemporaryDirectory(prefix="stress_interrupts_") as tmp:
        work = Path(tmp)
        text = work / "small.txt"
        _text(text)
        with ThreadPoolExecutor(args.jobs) as pool, open(args.log, "a") as log:
            futures = [
                pool.submit(one_run, i, args.seed, text, work, args.max_delay, env) for i in range(args.runs)
            ]
            for f in futures:
                r = f.result()
                results.append(r)
                log.write(json.dumps(r) + "\n")
                log.flush()
                if r["problem"]:
                    print(f"run {r['run']}: {r['problem']} (rc {r['rc']})\n{r['stderr_tail']}", flush=True)
    interrupted = [r for r in results if r["signal"] is not None and r["rc"] != 0]
    codes: dict[int, int] = {}
    for r in results:
        codes[r["rc"]] = codes.get(r["rc"], 0) + 1
    bad = [r for r in results if r["problem"]]
    print(
        f"{len(results)} runs, {len(interrupted)} interrupted, {len(bad)} crashed/suspect; "
        f"exit codes {dict(sorted(codes.items()))}; median wall "
        f"{sorted(r['wall_s'] for r in results)[len(results) // 2]:.2f} s"
    )
    return 1 if bad else 0


_PLANS_CHILD = r"""
import sys, threading
import numpy as np
from unrolled import LSTM, kernels
from unrolled.kernels import _dnnl
assert "oneDNN" in kernels.describe(), kernels.describe()
cycles, nthreads = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((6, 8, 8), dtype=np.float32)
layer = LSTM(8, 64, seed=1)
want = layer.forward(x)[0]
escaped = []  # plans that outlive their thread and are dropped by the main thread
def work(k):
    for c in range(cycles // nthreads):
        B, H = 8 + (k + c) % 5, 32 + 8 * ((k * 7 + c) % 6)
        W = np.random.default_rng(k * 1000 + c).standard_normal((4 * H, H), dtype=np.float32)
        p = _dnnl.ProductPlan(B, H, 4 * H, True)
        p.pack(W)
        del p                                       # freed at once, in its own thread
        _dnnl.plan(B, H, 4 * H, True).pack(W)       # cached, evicted, freed at thread exit
        if c % 10 == 0:
            escaped.append(_dnnl.ProductPlan(B, H, 4 * H, False))
        assert np.array_equal(layer.forward(x)[0], want)
for round_ in range(3):
    ts = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in ts: t.start()
    for t in ts: t.join()
    escaped.clear()
    assert np.array_equal(layer.forward(x)[0], want)
print("ok", cycles * 3, "plan cycles")
"""


def plans(args: argparse.Namespace) -> int:
    env = {**os.environ, **CHECKED_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-c", _PLANS_CHILD, str(args.cycles), str(args.threads)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    print(f"exit code {p.returncode}\n{p.stdout}{p.stderr}")
    return 0 if p.returncode == 0 and not p.stderr else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("runs", help="interrupted training runs in subprocesses")
    r.add_argument("--runs", type=int, default=200)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-delay", type=float, default=1.5, help="latest moment of the signal, seconds")
    r.add_argument("--log", default=os.devnull, help="one JSON line per run appended here")
    p = sub.add_parser("plans", help="in-process ProductPlan create/run/free cycles across threads")
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    return runs(args) if args.what == "runs" else plans(args)


if __name__ == "__main__":
    sys.exit(main())
