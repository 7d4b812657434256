"""Measurement primitives: thread control, interleaved median timing, the matrix-product peak, peak memory.

Timings are medians of repetitions that alternate between the contenders (unrolled, torch, unrolled, …),
so a burst of load from other processes hits both sides alike instead of one whole series.

The clock: wall-clock time (``perf_counter``). With several threads, thread CPU time would hide the time
a worker waited for a core; with one thread it would flatter a loaded machine, so one clock for all.
``"thread_cpu"`` (``time.thread_time``) stays available for one-thread checks.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from unrolled import threads as unrolled_threads
from unrolled.threads import openblas_controls


def set_threads(n: int | None, torch=None) -> dict:
    """unrolled's thread budget (:func:`unrolled.threads.set_threads`: its workers, BLAS and oneDNN on one
    thread each; None: its default) and torch's intra-op threads (None: left as they are) to ``n``;
    return what each reports now."""
    unrolled_threads.set_threads(n)
    if torch is not None and n is not None:
        torch.set_num_threads(int(n))
    getter = openblas_controls()[1]
    return {
        "unrolled": unrolled_threads.get_threads(),
        "numpy_blas": int(getter()) if getter is not None else None,
        "torch": int(torch.get_num_threads()) if torch is not None else None,
    }


CLOCKS = {"thread_cpu": time.thread_time, "wall": time.perf_counter}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    """Measure with ``"thread_cpu"`` (CPU time of the calling thread) or ``"wall"`` (perf_counter)."""
    global _clock
    _clock = CLOCKS[name]


def _cpu_ticks() -> tuple[int, int] | None:
    """(CPU ticks used by every process, by this one) since boot, from /proc (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(v) - v[3] - v[4], int(own[11]) + int(own[12])  # all but idle and iowait; utime + stime
    except (OSError, ValueError, IndexError):
        return None


FOREIGN_LIMIT = 0.25  # a sample during which other processes used more than this many cores is retaken
retaken = 0  # samples retaken in this process (reported with the results)


def _others_busy(t0: tuple[int, int] | None, seconds: float) -> bool:
    """Whether other processes used more than FOREIGN_LIMIT cores during a sample (clock ticks: coarse)."""
    t1 = _cpu_ticks()
    if t0 is None or t1 is None or seconds <= 0:
        return False
    foreign = ((t1[0] - t0[0]) - (t1[1] - t0[1])) / os.sysconf("SC_CLK_TCK")
    return foreign > FOREIGN_LIMIT * max(seconds, 0.01)


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of n contenders in which each one comes right after each other one equally often (a Williams
    design: n orders for even n, 2n for odd), so that what a contender leaves behind (threads still
    spinning, a cold cache) falls on all the others alike. For n = 2: (0, 1), (1, 0)."""
    first = [0] + [(i + 1) // 2 if i % 2 else n - i // 2 for i in range(1, n)]  # 0, 1, n−1, 2, n−2, …
    rows = [[(x + i) % n for x in first] for i in range(n)]
    return rows + [r[::-1] for r in rows] if n % 2 else rows


def interleaved(
    fns: dict[str, Callable[[], object]],
    reps: int,
    warmup: int = 2,
    inner: int = 1,
    before: dict[str, Callable[[], object]] | None = None,
    retake: int = 0,
):
    """Time each callable ``reps`` times, interleaved in :func:`balanced_orders`; seconds per call.

    Balanced, not merely alternated: with four contenders (unrolled and torch, each at 1 and 2 threads)
    the alternating order put unrolled at 2 threads right after torch in every other repetition, while
    torch's OpenMP threads were still spinning; a never-split row (LSTM T = 200, B = 1, H = 32) then read
    1.09–1.11× slower at 2 threads than at 1 with torch interleaved, 1.00–1.02× without it. With more than
    two contenders each order starts with an untimed call of its first, which so follows itself, as the
    first of every order does (the orders balance only what follows what within an order).

    ``inner`` calls are made per sample (for microsecond-scale work, to get above the clock's resolution).
    ``before[name]``, where given, runs untimed before each of that callable's warm-ups and samples (to set
    its thread count). ``retake``: a sample during which other processes kept more than
    :data:`FOREIGN_LIMIT` cores busy (a shared machine) is taken again, up to that many times; the last
    one counts. Returns {name: [seconds per call, ...]}.
    """
    global retaken
    names = list(fns)
    before = before or {}
    for _ in range(warmup):
        for n in names:
            if n in before:
                before[n]()
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    orders = balanced_orders(len(names))
    for r in range(reps):
        order = [names[i] for i in orders[r % len(orders)]]
        if len(names) > 2:  # the first comes after itself (untimed), not after the last of the order before
            if order[0] in before:
                before[order[0]]()
            fns[order[0]]()
        for n in order:
            fn = fns[n]
            for attempt in range(retake + 1):
                if n in before:
                    before[n]()
                ticks = _cpu_ticks() if retake else None
                t0 = _clock()
                for _ in range(inner):
                    fn()
                t = _clock() - t0
                if attempt == retake or not _others_busy(ticks, t):
                    break
                retaken += 1
            samples[n].append(t / inner)
    return samples


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def matmul_peak(torch=None, n: int = 1024, reps: int = 7) -> dict:
    """The float32 matrix-product rate of this machine at the current thread count, in GFLOP/s.

    Square n×n products through NumPy (OpenBLAS), torch (oneDNN/MKL) and, where unrolled's fast path uses
    it, oneDNN's sgemm (the extra ``onednn``), interleaved; the peak is the fastest median (the bar a
    fraction-of-peak is measured against).
    """
    from unrolled import kernels

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    fns = {"numpy": lambda: np.matmul(a, b, out=c)}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty((n, n), dtype=torch.float32)
        fns["torch"] = lambda: torch.mm(ta, tb, out=tc)
    if kernels.bulk_matmul(np.float32) is not np.matmul:  # oneDNN's product is in use
        fns["onednn"] = lambda: kernels.bulk_matmul(np.float32)(a, b, c)
    s = interleaved(fns, reps)
    flops = 2.0 * n**3
    out = {f"{k}_gflops": flops / median(v) / 1e9 for k, v in s.items()}
    out["peak_gflops"] = max(out.values())
    out["n"] = n
    return out


def rss_kib() -> tuple[int, int] | None:
    """(current resident set, peak resident set since the last reset) in KiB, from /proc (Linux)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(ln.split(":", 1) for ln in f if ":" in ln)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (writes 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.lower().startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
