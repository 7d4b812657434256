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
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_size = 0
_lock = threading.Lock()
_local = threading.local()  # .worker: True in this pool's threads


def _single_threaded_libraries() -> None:
    """This thread's oneDNN (OpenMP) count to one; cheap, so it runs before every task (oneDNN may have
    been loaded after the worker started)."""
    dnnl = sys.modules.get("unrolled.kernels._dnnl")
    if dnnl is not None:
        dnnl.set_threads(1)


def _init_worker() -> None:
    _local.worker = True
    _single_threaded_libraries()


def in_worker() -> bool:
    """True in one of this pool's threads, and in a calling thread while it runs its own share of a
    :func:`run` (a split never nests: it runs inline there; a unit split, whose workers must all run at
    once, is not started there)."""
    return getattr(_local, "worker", False)


def _executor(n: int) -> ThreadPoolExecutor:
    """A pool of at least n threads (grown by replacing it; the old one's threads end when idle, freeing
    their oneDNN plans in their own thread)."""
    global _pool, _size
    with _lock:
        if _pool is None or _size < n:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="unrolled", initializer=_init_worker)
            _size = n
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_pool_in_child() -> None:
    """After fork the child has none of the parent's threads, but would keep the parent's executor, whose
    dead threads it counts as workers: a split there would queue its slices forever. Start afresh."""
    global _pool, _size, _lock
    _pool, _size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _task(fn: Callable, i: int):
    _single_threaded_libraries()
    return fn(i)


def run(fn: Callable[[int], object], n: int) -> Sequence:
    """``[fn(0), fn(1), ..., fn(n − 1)]``, fn(0) in the calling thread and the others in the pool, all at
    once. Every call finishes before this returns; the first exception (the calling thread's first) is
    raised then."""
    if n <= 1 or in_worker():
        return [fn(i) for i in range(n)]
    pool = _executor(n - 1)
    futures = [pool.submit(_task, fn, i) for i in range(1, n)]
    _single_threaded_libraries()  # the calling thread is one of the n: its oneDNN on one thread too
    _local.worker = True  # while it runs its share, the calling thread is a worker like the others
    try:
        first = fn(0)
    finally:  # never return (or raise) while a worker still writes into the caller's arrays
        _local.worker = False
        for f in futures:
            f.exception()
    return [first] + [f.result() for f in futures]
