"""The worker pool's contract (:mod:`unrolled.kernels._pool`): the tasks of a run go at once, each in its
own thread, as far as the thread budget holds them, and the rest in the calling thread after its own;
run() returns only after all have finished, errors included; callers at once never run more threads
than the budget between them (forked children: test_pool_fork.py)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from unrolled import threads
from unrolled.kernels import _pool


@pytest.fixture
def budget():
    """Sets the thread budget for one test (``budget(n)``), then returns to the default."""
    yield threads.set_threads
    threads.set_threads(None)


def test_tasks_run_at_once_in_distinct_threads_and_results_keep_their_order(budget):
    budget(3)
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


def test_an_error_is_raised_only_after_every_worker_has_finished(budget):
    budget(3)
    finished = []

    def task(i):
        if i == 1:
            raise ValueError("task 1 failed")
        time.sleep(0.2)
        finished.append(i)

    with pytest.raises(ValueError, match="task 1 failed"):
        _pool.run(task, 3)
    assert sorted(finished) == [0, 2]


def test_the_callers_own_error_wins_and_still_waits_for_the_workers(budget):
    budget(2)
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


def test_two_callers_at_once_each_get_their_own_workers_where_the_budget_holds_them(budget):
    """Two threads calling run() together, with threads enough for both: neither's tasks queue behind the
    other's (each run's tasks meet at one barrier)."""
    budget(4)
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


def test_a_caller_adds_no_worker_while_the_runs_in_progress_hold_the_budget(budget):
    """On a budget of two, a run holding its caller and one worker leaves no thread to add: two more
    callers meanwhile run both their tasks themselves, in order, and no worker is started for them
    (threads counted, not timed). Once it has finished, the next run gets its worker again."""
    budget(2)
    hold, holding = threading.Event(), threading.Barrier(3, timeout=10)

    def held(i):
        holding.wait()  # both of the first run's threads are inside it
        hold.wait(timeout=10)
        return threading.get_ident()

    first = threading.Thread(target=lambda: _pool.run(held, 2))
    first.start()
    holding.wait()
    started = _pool.started()
    results = {}

    def caller(name):
        results[name] = (threading.get_ident(), _pool.run(lambda i: (i, threading.get_ident()), 2))

    try:
        others = [threading.Thread(target=caller, args=(n,)) for n in "bc"]
        for t in others:
            t.start()
        for t in others:
            t.join(timeout=20)
    finally:
        hold.set()
        first.join(timeout=20)
    assert sorted(results) == ["b", "c"]
    for me, out in results.values():
        assert out == [(0, me), (1, me)]  # both tasks in the calling thread, in order
    assert _pool.started() == started  # no worker started while the budget was held
    after = _pool.run(lambda i: threading.get_ident(), 2)
    assert after[0] != after[1]  # the budget is free again


def test_a_thread_inside_a_layer_call_counts_against_the_budget_once(budget):
    """A layer's forward or backward (decorated with counts_caller) counts its thread for as long as it
    runs, not only inside a run: on a budget of two, another thread's run meanwhile gets no worker. The
    call's own run counts it once (it still gets its one worker), and so do nested calls."""
    budget(2)
    inside, leave = threading.Event(), threading.Event()

    @_pool.counts_caller
    def layer_call(nested: bool):
        if nested:
            return layer_call(False)
        inside.set()
        leave.wait(timeout=10)
        return _pool.run(lambda i: threading.get_ident(), 2)

    got = []
    t = threading.Thread(target=lambda: got.append(layer_call(True)))
    t.start()
    try:
        assert inside.wait(timeout=10)
        meanwhile = _pool.run(lambda i: threading.get_ident(), 2)
    finally:
        leave.set()
        t.join(timeout=20)
    assert meanwhile == [threading.get_ident()] * 2  # the budget was held by the other thread's call
    assert got[0][0] != got[0][1]  # within its own call, a thread counted once takes its worker
    after = _pool.run(lambda i: threading.get_ident(), 2)
    assert after[0] != after[1]  # and leaving the call gave its count back

    @_pool.counts_caller
    def failing_call():
        raise ValueError("x: expected (T, B, I)")

    with pytest.raises(ValueError):
        failing_call()
    after = _pool.run(lambda i: threading.get_ident(), 2)
    assert after[0] != after[1]  # so did a call that raised

    def interrupted(i):  # Ctrl-C in a notebook: the KeyboardInterrupt lands in the caller's own task
        if i == 0:
            raise KeyboardInterrupt
        time.sleep(0.05)

    with pytest.raises(KeyboardInterrupt):
        _pool.counts_caller(_pool.run)(interrupted, 2)
    after = _pool.run(lambda i: threading.get_ident(), 2)
    assert after[0] != after[1]  # and a run and a call that a KeyboardInterrupt ended


def test_threads_that_each_run_blas_on_several_count_as_that_many(budget):
    """An explicit set_blas_threads(2) on a budget of 4: each thread of a run may start a second for BLAS,
    so a run of three tasks takes one worker (2 × 2 threads), and the caller runs the third task."""
    budget(4)
    if threads.set_blas_threads(2) != 2:
        pytest.skip("NumPy's BLAS thread count cannot be set here")
    out = _pool.run(lambda i: threading.get_ident(), 3)
    assert out[0] == out[2] == threading.get_ident() and out[1] != out[0]


def test_tasks_without_a_thread_run_in_the_calling_thread_in_order_and_errors_still_raise(budget):
    budget(1)
    out = _pool.run(lambda i: (i, threading.get_ident(), _pool.in_worker()), 3)
    assert [r[0] for r in out] == [0, 1, 2]
    assert {r[1] for r in out} == {threading.get_ident()}
    assert all(r[2] for r in out) and not _pool.in_worker()

    def task(i):
        if i == 1:
            raise ValueError("task 1 failed")

    with pytest.raises(ValueError, match="task 1 failed"):
        _pool.run(task, 3)


def test_a_nested_run_runs_inline():
    out = _pool.run(lambda i: _pool.run(lambda j: threading.get_ident(), 2), 2)
    for ids in out:
        assert ids[0] == ids[1]  # inside a worker, no further threads


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
