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

The thread budget (:func:`unrolled.threads.workers_budget`) holds across calling threads: a thread inside a
layer's forward or backward (:func:`counts_caller`) or a run counts against it, and so does every worker
not idle; a run adds workers only within it. Tasks left without a thread run in the calling thread after
its own, in order. So two user threads calling layers at once on two cores do not start four threads
(docs/performance.md, "Callers at once share the budget"). The split itself is decided from the budget
alone, so the results do not depend on other threads. No task may wait for another of its run to start:
the batch split's slices are independent, and the unit split's walk takes a share no worker has claimed
(:mod:`unrolled.kernels._units`).

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

import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence

from unrolled import threads

_idle: list[_Worker] = []  # workers waiting for a task
_started = 0  # workers started in this process (the thread-count test reads it); the others are busy
_callers: set[int] = set()  # threads (idents) inside a layer's call or a run, pool workers aside
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
    :func:`run` (a split never nests: it runs inline there, and no unit split is started there)."""
    return getattr(_local, "worker", False)


class _Batch:
    """One :func:`run`'s tasks 1..n − 1: their results and errors, and the count still running (under
    ``_lock``); the last to finish releases ``done``, which the calling thread waits on."""

    def __init__(self, fn: Callable[[int], object], n: int, threads: int) -> None:
        self.fn, self.left = fn, threads - 1  # tasks 1..threads − 1 run in workers
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


def _busy() -> int:
    """The threads that count against the budget now (under ``_lock``): the callers and the workers not
    idle. Nothing to undo when a call ends early: a worker is idle again once its task has run, and a
    caller leaves :data:`_callers` in a ``finally``."""
    return len(_callers) + _started - len(_idle)


def _take(n: int) -> list[_Worker]:
    """Up to n idle workers (started where too few are idle), as many as the thread budget leaves
    beside the threads already busy (:func:`_busy`, the calling thread among them). The budget counts
    threads that may each start BLAS's own (:func:`unrolled.threads.workers_budget`: an explicit
    ``set_blas_threads(k)`` divides it by k)."""
    global _started
    budget = threads.workers_budget()
    with _lock:
        n = max(0, min(n, budget - _busy()))
        got = [_idle.pop() for _ in range(min(n, len(_idle)))]
        fresh = n - len(got)
        _started += fresh  # counted busy from now on, before another caller can count them
    try:
        for _ in range(fresh):
            got.append(_Worker())
            fresh -= 1
    finally:
        if fresh:  # a thread failed to start: give back what was not started, and the others
            with _lock:
                _started -= fresh
                _idle.extend(got)
    return got


def counts_caller(call: Callable) -> Callable:
    """Decorates a public call that may split its work (a layer's forward and backward): while it runs,
    the calling thread counts against the thread budget, so runs started meanwhile by other threads add no
    worker beyond it. So two threads each calling a layer on two cores run one thread each, rather than
    each splitting and four threads sharing two cores. Nested calls and pool workers are counted once."""

    @functools.wraps(call)
    def counted(*args, **kwargs):
        me = threading.get_ident()
        if me in _callers or in_worker():
            return call(*args, **kwargs)
        try:  # added inside the try: a signal's KeyboardInterrupt cannot leave it counted
            _callers.add(me)
            return call(*args, **kwargs)
        finally:
            _callers.discard(me)

    return counted


def started() -> int:
    """How many worker threads this process has started (the calling threads aside)."""
    return _started


def _forget_pool_in_child() -> None:
    """After fork the child has none of the parent's threads, but would keep the parent's idle list, whose
    dead threads it would hand tasks that never run. Start afresh."""
    global _idle, _started, _lock, _callers
    _idle, _started, _lock, _callers = [], 0, threading.Lock(), set()


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
    once as far as the thread budget allows (:func:`_take`); the calling thread runs the tasks that get no
    worker after its own, in order. Every call finishes before this returns; the first exception (the
    calling thread's first) is raised then."""
    if n <= 1 or in_worker():
        return [fn(i) for i in range(n)]
    return _run_counted(fn, n)


@counts_caller  # the calling thread counts against the budget while it runs (once, if a layer call counts it)
def _run_counted(fn: Callable[[int], object], n: int) -> Sequence:
    workers = _take(n - 1)
    m = 1 + len(workers)  # tasks m..n − 1 get no thread of their own: the caller runs them after its own
    batch = _Batch(fn, n, m)
    for i, w in enumerate(workers, start=1):
        w.start(batch, i)
    _single_threaded_libraries()  # the calling thread is one of the n: its oneDNN on one thread too
    _local.worker = True  # while it runs its share, the calling thread is a worker like the others
    try:
        i = 0
        try:
            batch.results[0] = fn(0)
            for i in range(m, n):
                batch.results[i] = fn(i)
        except BaseException as e:  # raised below, once the workers have finished
            batch.errors[i] = e
    finally:  # never return (or raise) while a worker still writes into the caller's arrays
        _local.worker = False
        if m > 1:
            _wait(batch)
    for e in batch.errors:
        if e is not None:
            raise e
    return batch.results
