"""How many threads unrolled uses, and how they are shared between its workers, NumPy's BLAS and oneDNN.

The policy (one threading runtime, never more threads at work than cores):

- The **thread budget** is the number of cores this process may use (:func:`available_cores`: its CPU
  affinity, capped by a cgroup CPU quota, shared among the MPI ranks on this machine), overridden by
  ``UNROLLED_THREADS`` (environment, read at each call until :func:`set_threads` is called) or
  :func:`set_threads`.
- **Ranks of a data-parallel job** (:mod:`unrolled.distributed`) on one machine share its cores: where the
  launcher left each rank the whole machine (no binding: MPICH's Hydra by default), each gets
  ``cores // local ranks`` (2 ranks on 2 cores: one worker each); where it bound each rank to its own cores
  (Open MPI's default, ``srun --cpu-bind``), the rank's affinity already says how many.
- Parallelism comes from unrolled's own workers (:mod:`unrolled.kernels._pool`): a compiled recurrent
  layer splits its batch across them, each worker running the whole time walk over its rows.
- The libraries underneath run on **one thread**: OpenBLAS (NumPy's BLAS) and oneDNN's OpenMP, inside
  the workers and in the calling thread alike. Their own pools would otherwise spin beside the workers on
  the same cores (measured on 2 cores with 2 OpenBLAS and 2 OpenMP threads: GRU T=100 B=32 H=128 training
  step 7.8 ms at one thread, 27 ms at two). This is applied once, at the first compiled forward (or at
  :func:`set_threads`, or by the command line at start), unless :func:`set_blas_threads` was called
  before: then BLAS keeps that count and the workers get ``budget // blas threads``.
- What this costs: NumPy products outside the recurrent layers (a dense output head) run on one thread.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from functools import lru_cache

from unrolled._checks import positive_int

_threads: int | None = None  # set_threads' value; None: UNROLLED_THREADS, else every available core
_blas_explicit = False  # set_blas_threads was called: the library leaves BLAS's count alone
_defaults_applied = False


def _cgroup_cpus() -> float | None:
    """The cgroup CPU quota in cores (cgroup v2 ``cpu.max``, else v1 ``cfs_quota_us / cfs_period_us``),
    or None where there is no limit or it cannot be read."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


# How many ranks of this MPI job run on this machine, as the launchers say: MPICH's Hydra and Intel MPI,
# Open MPI, PMIx.
_LOCAL_RANKS_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE")


def local_ranks(environ=None) -> int:
    """The ranks of an MPI job on this machine (1 outside MPI), from the launcher's environment."""
    env = os.environ if environ is None else environ
    for var in _LOCAL_RANKS_VARS:
        try:
            n = int(env.get(var, "").strip())
        except ValueError:
            continue
        if n >= 1:
            return n
    return 1


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (``os.sched_getaffinity``), capped by a cgroup
    CPU quota rounded up (a quota of 1.5 cores lets 2 threads share them); divided among the MPI ranks on
    this machine (:func:`local_ranks`) unless the launcher already bound each rank to its own cores."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    unbound = n >= (os.cpu_count() or n)  # the whole machine: the launcher did not share it out
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    if unbound:
        n //= local_ranks()
    return max(1, n)


# available_cores() reads the cgroup files and the CPU count (~45 µs here): a forward pass asks for the
# budget once per layer, so get_threads() reuses a count for this long (an affinity or quota changed
# while the process runs is seen within a second).
CORES_TTL_SECONDS = 1.0
_cores_seen: tuple[float, int] | None = None  # (time.monotonic() when counted, available_cores())


def _recent_available_cores() -> int:
    global _cores_seen
    now = time.monotonic()
    if _cores_seen is None or now - _cores_seen[0] >= CORES_TTL_SECONDS:
        _cores_seen = (now, available_cores())
    return _cores_seen[1]


def get_threads() -> int:
    """The thread budget: :func:`set_threads`' value, else ``UNROLLED_THREADS``, else
    :func:`available_cores` (counted at most once a second: ``CORES_TTL_SECONDS``)."""
    if _threads is not None:
        return _threads
    env = os.environ.get("UNROLLED_THREADS", "").strip()
    if env:
        try:
            return positive_int("UNROLLED_THREADS", int(env))
        except ValueError:
            raise ValueError(f"UNROLLED_THREADS: expected a positive integer, got {env!r}") from None
    return _recent_available_cores()


def set_threads(n: int | None) -> int:
    """Use ``n`` threads in all: up to ``n`` workers for the recurrent layers, BLAS and oneDNN on one thread
    each (see the module docstring). None returns to the default (``UNROLLED_THREADS``, else every
    available core). Returns the budget now in force."""
    global _threads, _blas_explicit, _defaults_applied
    _threads = positive_int("threads", n, allow_none=True)
    _blas_explicit = False
    _defaults_applied = False
    apply_defaults()
    return get_threads()


def apply_defaults() -> None:
    """Put OpenBLAS and oneDNN on one thread (the policy above), once, unless :func:`set_blas_threads`
    chose a count. Called by the first compiled forward and by the command line."""
    global _defaults_applied
    if _defaults_applied:
        return
    _defaults_applied = True
    if not _blas_explicit:
        _set_library_threads(1)


def blas_threads() -> int:
    """OpenBLAS's thread count now (1 where it cannot be read)."""
    getter = openblas_controls()[1]
    return int(getter()) if getter is not None else 1


def workers_budget() -> int:
    """How many workers a layer may run at once: the budget divided by the BLAS threads each may start."""
    apply_defaults()
    return max(1, get_threads() // max(1, blas_threads()))


@lru_cache(maxsize=1)
def openblas_controls():
    """The OpenBLAS that NumPy loaded, found in this process's memory map (no threadpoolctl needed).

    Returns (set_num_threads, get_num_threads) or (None, None) where it cannot be found. Cached: NumPy
    loads its BLAS once, at import."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln and ".so" in ln.split()[-1]})
    except OSError:
        return None, None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None, None


def _set_library_threads(n: int) -> int | None:
    dnnl = sys.modules.get("unrolled.kernels._dnnl")  # never import it here: that would load the library
    if dnnl is not None:
        dnnl.set_threads(int(n))  # the calling thread's OpenMP count; the workers set their own to 1
    setter, getter = openblas_controls()
    if setter is None:
        return None
    setter(int(n))
    return int(getter())


def set_blas_threads(n: int) -> int | None:
    """Run NumPy's BLAS on ``n`` threads where it can be set; returns the count it reports, or None.

    oneDNN's product (the extra ``onednn``), where loaded, is set to the same count in the calling thread;
    loaded later, it takes the count OpenBLAS reports then. An explicit choice: the library no longer
    puts BLAS on one thread, and its workers share the budget with BLAS's threads
    (:func:`workers_budget`)."""
    global _blas_explicit
    n = positive_int("threads", n)
    _blas_explicit = True
    return _set_library_threads(n)
