"""The one pool of worker threads the compiled layers split their batch across.

Why Python threads and not Numba's parallel threading layer: a worker runs a slice's whole forward or
backward — the input projection, the compiled walk (``nogil``: the GIL is released for the whole time
loop), the bulk weight-gradient products — and the walks on oneDNN need a product plan built, used and
freed in the thread that runs them (:mod:`unrolled.kernels._dnnl`'s lifetime rule). Persistent Python
threads keep their plans between calls; Numba's workers cannot build plans (that is Python code) and
would be a second pool next to OpenMP's. So this pool is the only runtime that runs in parallel: every
worker sets oneDNN's OpenMP to one thread for itself (OpenMP's thread count is per thread), and OpenBLAS
is on one thread (:mod:`unrolled.threads`).

The calling thread runs the first slice itself, so a split over k slices uses k threads (k − 1 here).

Each worker is a daemon thread that waits on its own lock; :func:`run` takes idle workers (starting one
where none is idle), hands each its task by releasing its lock, and waits on one lock of its own that
the last worker to finish releases. No futures, work queue or condition variables
(``concurrent.futures.ThreadPoolExecutor``, used before): measured on the 2-core Zen 4 we benchmark on,
interleaved in one process, a unit-split LSTM walk (H = 256, one sequence) took 12–16 µs less per run
(T = 1: 97.5 → 81.8 µs; T = 100: 932 → 917 µs). What remains of a handoff is the operating system's: a
woken worker then waits for the GIL until the calling thread enters its own compiled walk (an empty
two-task run: 44 → 43 µs).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence

_idle: list[_Worker] = []  # workers waiting for a task
_started = 0  # workers started in this process (the thread-count test reads it)
_lock = threading.Lock()  # guards _idle, _started and each batch's count
_local = threading.local()  # .worker: True in this pool's threads


def _single_threaded_libraries() -> None:
    """This thread's oneDNN (OpenMP) count to one; cheap, so it runs before every task (oneDNN may have
    been loaded after the worker started)."""
    dnnl = sys.modules.get("unrolled.kernels._dnnl")
    if dnnl is not None:
        dnnl.set_threads(1)


def in_worker() -> bool:
    """True in one of this pool's threads, and in a calling thread while it runs its own share of a
    :func:`run` (a split never nests: it runs inline there; a unit split, whose workers must all run at
    once, is not started there)."""
    return getattr(_local, "worker", False)


class _Batch:
    """One :func:`run`'s tasks 1..n − 1: their results and errors, and the count still running (under
    ``_lock``); the last to finish releases ``done``, which the calling thread waits on."""

    def __init__(self, fn: Callable[[int], object], n: int) -> None:
        self.fn, self.left = fn, n - 1
        self.results: list = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        self.done = threading.Lock()
        self.done.acquire()


class _Worker:
    """A daemon thread that runs one task each time its lock is released."""

    def __init__(self) -> None:
        self.go = threading.Lock()
        self.go.acquire()
        self.task: tuple[_Batch, int] | None = None
        threading.Thread(target=self._loop, name="unrolled-worker", daemon=True).start()

    def _loop(self) -> None:
        _local.worker = True
        while True:
            self.go.acquire()
            batch, i = self.task
            self.task = None
            try:
                _single_threaded_libraries()
                batch.results[i] = batch.fn(i)
            except BaseException as e:  # handed to the calling thread, which raises it
                batch.errors[i] = e
            finally:
                with _lock:
                    _idle.append(self)  # idle again before the caller may return and ask for it
                    batch.left -= 1
                    last = batch.left == 0
                if last:
                    batch.done.release()

    def start(self, batch: _Batch, i: int) -> None:
        self.task = (batch, i)
        self.go.release()


def _take(n: int) -> list[_Worker]:
    """n idle workers, started where too few are idle."""
    global _started
    with _lock:
        got = [_idle.pop() for _ in range(min(n, len(_idle)))]
        fresh = n - len(got)
        _started += fresh
    return got + [_Worker() for _ in range(fresh)]


def started() -> int:
    """How many worker threads this process has started (the calling threads aside)."""
    return _started


def _forget_pool_in_child() -> None:
    """After fork the child has none of the parent's threads, but would keep the parent's idle list, whose
    dead threads it would hand tasks that never run. Start afresh."""
    global _idle, _started, _lock
    _idle, _started, _lock = [], 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _wait(batch: _Batch) -> None:
    """Until every worker of ``batch`` has finished, even through a KeyboardInterrupt (a signal can end a
    lock's wait): that is raised once they have."""
    interrupted = None
    while True:
        try:
            batch.done.acquire()
            break
        except BaseException as e:
            interrupted = interrupted or e
    if interrupted is not None:
        raise interrupted


def run(fn: Callable[[int], object], n: int) -> Sequence:
    """``[fn(0), fn(1), ..., fn(n − 1)]``, fn(0) in the calling thread and the others in the pool, all at
    once. Every call finishes before this returns; the first exception (the calling thread's first) is
    raised then."""
    if n <= 1 or in_worker():
        return [fn(i) for i in range(n)]
    batch = _Batch(fn, n)
    for i, w in enumerate(_take(n - 1), start=1):
        w.start(batch, i)
    _single_threaded_libraries()  # the calling thread is one of the n: its oneDNN on one thread too
    _local.worker = True  # while it runs its share, the calling thread is a worker like the others
    try:
        batch.results[0] = fn(0)
    finally:  # never return (or raise) while a worker still writes into the caller's arrays
        _local.worker = False
        _wait(batch)
    for e in batch.errors:
        if e is not None:
            raise e
    return batch.results
