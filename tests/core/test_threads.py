"""The thread policy: the budget (cores, UNROLLED_THREADS, set_threads), its checks, and — in a fresh
process, counted, not timed — that a split walk never has more threads at work than cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from unrolled import threads


def test_budget_defaults_to_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("UNROLLED_THREADS", raising=False)
    assert threads.get_threads() == threads.available_cores()
    assert 1 <= threads.available_cores() <= len(os.sched_getaffinity(0))


def test_the_default_budget_counts_the_cores_at_most_once_a_second(monkeypatch):
    """Counting reads the cgroup files (~45 µs): a forward asks once per layer, so the count is reused for
    CORES_TTL_SECONDS, and a changed affinity or quota is seen after it."""
    monkeypatch.delenv("UNROLLED_THREADS", raising=False)
    counted, now = [], [1000.0]
    monkeypatch.setattr(threads, "available_cores", lambda: counted.append(1) or 2 + len(counted))
    monkeypatch.setattr(threads.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(threads, "_cores_seen", None)
    assert [threads.get_threads() for _ in range(5)] == [3] * 5 and len(counted) == 1
    now[0] += threads.CORES_TTL_SECONDS * 0.9
    assert threads.get_threads() == 3 and len(counted) == 1
    now[0] += threads.CORES_TTL_SECONDS * 0.2
    assert threads.get_threads() == 4 and len(counted) == 2  # counted again
    monkeypatch.setenv("UNROLLED_THREADS", "7")
    assert threads.get_threads() == 7  # the environment is read at each call, never cached


def test_cgroup_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 1.5)
    assert threads.available_cores() == 2  # 1.5 cores of quota: two threads share them
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    assert threads.available_cores() == 8


def test_environment_and_set_threads_override_the_budget(monkeypatch):
    monkeypatch.setenv("UNROLLED_THREADS", "3")
    try:
        assert threads.get_threads() == 3
        assert threads.set_threads(5) == 5  # the call wins over the environment
        assert threads.get_threads() == 5
        assert threads.set_threads(None) == 3  # back to the environment
    finally:
        threads.set_threads(None)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_set_threads_refuses_anything_but_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"^threads: expected a positive integer or None, got"):
        threads.set_threads(bad)


def test_a_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("UNROLLED_THREADS", "many")
    with pytest.raises(ValueError, match=r"^UNROLLED_THREADS: expected a positive integer, got 'many'$"):
        threads.get_threads()


def test_explicit_blas_threads_share_the_budget_with_the_workers():
    before = threads.blas_threads()
    try:
        threads.set_threads(4)
        assert threads.blas_threads() == 1 and threads.workers_budget() == 4
        if threads.set_blas_threads(2) is not None:  # OpenBLAS found: each worker could start 2
            assert threads.workers_budget() == 2
    finally:
        threads.set_threads(None)
        threads.set_blas_threads(before)


_COUNT = r"""
import ctypes, json, os, sys
import numpy as np
import unrolled
from unrolled import kernels, threads
from unrolled.kernels import _pool

kernels.MIN_SLICE_MACS, kernels.MIN_SLICE_ROWS = 0, 1  # split even on a small machine

def ticks():  # CPU time (clock ticks) of every thread of this process
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return out

bi = sys.argv[2] == "bi"
layer = unrolled.LSTM(64, 128, seed=0, bidirectional=bi)
rng = np.random.default_rng(0)
x = rng.standard_normal((60, 32, 64), dtype=np.float32)
d = rng.standard_normal((60, 32, 256 if bi else 128), dtype=np.float32)
layer.forward(x); layer.backward(d)  # compile / load, apply the defaults, start the workers
before = ticks()
for _ in range(int(sys.argv[1])):
    layer.forward(x); layer.backward(d)
after = ticks()
busy = sorted(t for t in after if after[t] - before.get(t, 0) > 0)
getter = threads.openblas_controls()[1]
pool = _pool.started()  # the workers started (the caller aside)
try:
    gomp = ctypes.CDLL("libgomp.so.1")
    omp = [gomp.omp_get_max_threads()] + list(_pool.run(lambda i: gomp.omp_get_max_threads(), 2))
except OSError:
    omp = []
print(json.dumps({
    "cores": threads.available_cores(), "budget": threads.get_threads(),
    "workers": kernels.workers_for(60, 32, 64, 4, 128), "blas": int(getter()) if getter else None,
    "slices": kernels.direction_slices(60, 32, 64, 4, 128), "pool": pool,
    "omp": omp, "busy": len(busy), "threads": len(after),
}))
"""


@pytest.mark.parametrize("directions", ["uni", "bi"])
def test_a_split_walk_keeps_no_more_threads_at_work_than_cores(directions):
    """In a fresh process with nothing set: the library's own choice. Threads that ran during the walks
    are counted from /proc (CPU ticks), not timed; spinning BLAS or OpenMP pools beside the workers would
    show up as extra busy threads. Bidirectional: the two directions at once, each over its share of the
    workers, still no more threads than cores."""
    pytest.importorskip("unrolled.kernels._jit")
    env = {k: v for k, v in os.environ.items() if k not in ("UNROLLED_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", _COUNT, "15", directions], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["budget"] == got["cores"]
    assert got["workers"] == min(got["cores"], 32)  # every core, the work being large enough
    assert got["blas"] in (1, None)  # OpenBLAS on one thread (None: another BLAS, nothing to set)
    assert all(n == 1 for n in got["omp"]), got  # oneDNN's OpenMP: one thread in the caller and workers
    assert 1 <= got["busy"] <= got["cores"], got
    assert got["pool"] <= got["cores"] - 1, got  # the calling thread is the first worker
    if directions == "bi" and got["cores"] >= 2:
        assert got["slices"] == min(got["cores"] // 2, 8)  # a worker per direction, 32 rows in 4-row slices


def test_ranks_on_one_machine_share_its_cores(monkeypatch):
    """2 MPI ranks on 2 unbound cores: one worker each (the launcher's environment says how many ranks)."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE", "UNROLLED_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert threads.local_ranks() == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: None)
    assert threads.available_cores() == 8
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")  # MPICH's Hydra
    assert threads.local_ranks() == 2 and threads.available_cores() == 4
    monkeypatch.setenv("MPI_LOCALNRANKS", "16")  # more ranks than cores: still one each
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {2, 3})  # bound by the launcher
    assert threads.available_cores() == 2
