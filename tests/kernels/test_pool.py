"""The worker pool's contract (:mod:`unrolled.kernels._pool`): every task runs at once, each in its own
thread; run() returns only after all have finished, errors included; concurrent callers each get
their own workers (forked children: test_pool_fork.py)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from unrolled.kernels import _pool


def test_tasks_run_at_once_in_distinct_threads_and_results_keep_their_order():
    barrier = threading.Barrier(3, timeout=10)  # would time out if any task waited for another's end

    def task(i):
        barrier.wait()
        return i * 10, threading.get_ident(), _pool.in_worker()

    out = _pool.run(task, 3)
    assert [r[0] for r in out] == [0, 10, 20]
    assert len({r[1] for r in out}) == 3
    assert out[0][1] == threading.get_ident()  # the caller runs task 0
    assert all(r[2] for r in out)
    assert not _pool.in_worker()


def test_an_error_is_raised_only_after_every_worker_has_finished():
    finished = []

    def task(i):
        if i == 1:
            raise ValueError("task 1 failed")
        time.sleep(0.2)
        finished.append(i)

    with pytest.raises(ValueError, match="task 1 failed"):
        _pool.run(task, 3)
    assert sorted(finished) == [0, 2]


def test_the_callers_own_error_wins_and_still_waits_for_the_workers():
    finished = []

    def task(i):
        if i == 0:
            raise KeyError("caller")
        time.sleep(0.2)
        finished.append(i)
        raise ValueError("worker")

    with pytest.raises(KeyError):
        _pool.run(task, 2)
    assert finished == [1]


def test_two_callers_at_once_each_get_their_own_workers():
    """Each run's tasks must all run at once (a unit split's workers wait for each other): two threads
    calling run() together must not queue one's tasks behind the other's."""
    barrier = threading.Barrier(4, timeout=10)
    results = {}

    def caller(name):
        results[name] = _pool.run(lambda i: (barrier.wait(), i)[1], 2)

    ts = [threading.Thread(target=caller, args=(n,)) for n in "ab"]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=20)
    assert results == {"a": [0, 1], "b": [0, 1]}


def test_a_nested_run_runs_inline():
    out = _pool.run(lambda i: _pool.run(lambda j: threading.get_ident(), 2), 2)
    for ids in out:
        assert ids[0] == ids[1]  # inside a worker, no further threads


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
