"""The unit split: at a single sequence the workers share out the hidden units of a compiled walk.

Each worker computes its units' rows of every gate block and their states, then waits for the others
before the next step. It must give the one-worker results (outputs, final states and, through the
backward that follows it, every gradient), keep the inference path equal to the training forward bit for
bit, run only where it pays and never inside a pool worker (there it would run inline, every share in one
thread), give the same results bit for bit when its partner gets no thread, and a worker that fails must
not leave the others waiting forever."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from kernels.test_kernels import _layer, _run

from unrolled import kernels, threads
from unrolled.kernels import _units

from conftest import assert_close

pytest.importorskip("unrolled.kernels._jit")


@pytest.fixture
def units_on(monkeypatch):
    """Unit splits at any walk size from H = 128 (shares of 64 units and more) and a budget of two workers;
    counts the walks that ran split."""
    monkeypatch.setattr(kernels, "MIN_UNIT_H", 128)
    monkeypatch.setattr(kernels, "MIN_UNIT_MACS", 0)
    monkeypatch.setattr(kernels, "MIN_UNIT_SHARE", 64)
    calls = []
    real = _units.run

    def counted(walk, k, *args):
        calls.append((walk.__name__.split("_")[1], k))  # ("forward" | "infer" | "backward", workers)
        return real(walk, k, *args)

    monkeypatch.setattr(_units, "run", counted)
    threads.set_threads(2)
    yield calls
    threads.set_threads(None)


def _config(kind, **kw):
    c = dict(kind=kind, dtype=np.float32, num_layers=2, bidirectional=False, lengths=False, batch_first=False,
             bias=True, T=7, B=1, I=5, H=128, seed=11)  # fmt: skip
    c.update(kw)
    return c


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize(("H", "budget"), [(128, 2), (200, 3)], ids=["2 shares", "3 uneven shares"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_unit_split_gives_the_one_worker_outputs_states_and_every_gradient(kind, H, budget, bias, units_on):
    """Forward and backward split. Random h0 (and c0), random upstream gradients for the outputs and the
    final states, two layers."""
    c = _config(kind, H=H, bias=bias)
    layer = _layer(c)
    threads.set_threads(budget)
    split = _run(layer, c, fast=True)
    L = c["num_layers"]
    assert units_on == [("forward", budget)] * L + [("backward", budget)] * L  # every walk ran split
    threads.set_threads(1)
    whole = _run(layer, c, fast=True)
    assert len(units_on) == 2 * L  # and the one-worker run did not
    assert set(split) == set(whole)
    for k in whole:
        assert_close(split[k], whole[k], 1e-5, err_msg=k)
    reference = _run(layer, c, fast=False)
    for k in reference:
        assert_close(split[k], reference[k], 1e-4, err_msg=k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_inference_equals_the_training_forward_bit_for_bit_under_the_unit_split(kind, units_on):
    """T = 1100 steps: the inference walk runs in chunks of steps (one unit split per chunk), the training
    forward in one; a sequence of length < T keeps its state in both."""
    from unrolled import GRU, LSTM

    rng = np.random.default_rng(5)
    layer = (LSTM if kind == "lstm" else GRU)(3, 128, dtype=np.float32, seed=2)
    x = rng.standard_normal((1100, 1, 3)).astype(np.float32)
    for lengths in (None, [837]):
        out_train, hn_train = layer.forward(x, lengths=lengths)
        n_train = len(units_on)
        out_infer, hn_infer = layer.forward(x, lengths=lengths, need_grad=False)
        assert n_train == 1 and len(units_on) >= 3  # one split walk for training, one per chunk for inference
        assert {w for w, _ in units_on[1:]} == {"infer"}
        units_on.clear()
        np.testing.assert_array_equal(out_infer, out_train)
        for a, b in zip(np.atleast_1d(hn_infer) if kind == "gru" else hn_infer, hn_train, strict=False):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_unit_split_whose_partner_gets_no_thread_runs_every_share_itself_bit_for_bit(kind, units_on):
    """Another caller's run holds the whole budget of two threads: the split walks (forward, backward and
    inference) get no partner and the calling thread runs both shares of every step itself. Outputs, states
    and gradients equal those of the split run with a partner, bit for bit (the same shares, the same
    arithmetic), and no worker is started for it."""
    from unrolled.kernels import _pool

    c = _config(kind, T=30, num_layers=1)
    layer = _layer(c)
    x = np.random.default_rng(3).standard_normal((c["T"], 1, c["I"])).astype(np.float32)

    def everything():
        got = _run(layer, c, fast=True)
        got["inference"] = layer.forward(x, need_grad=False)[0]
        return got

    free = everything()
    assert {w for w, _ in units_on} == {"forward", "backward", "infer"} and all(k == 2 for _, k in units_on)
    hold, holding = threading.Event(), threading.Barrier(3, timeout=10)
    first = threading.Thread(target=lambda: _pool.run(lambda i: (holding.wait(), hold.wait(timeout=30)), 2))
    first.start()
    holding.wait()
    started, n_split = _pool.started(), len(units_on)
    try:
        held = everything()
    finally:
        hold.set()
        first.join(timeout=30)
    assert len(units_on) == 2 * n_split and _pool.started() == started
    for k in free:
        np.testing.assert_array_equal(held[k], free[k], err_msg=k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_single_sequence_is_right_whether_or_not_the_directions_run_at_once(
    kind, units_on, monkeypatch
):
    """Directions run at once on the pool's workers do not split their units (a split there would run
    inline, in one thread): they run whole. One after the other, each splits its units, forward and backward.
    Both equal one worker."""
    c = _config(kind, bidirectional=True, lengths=True, num_layers=1, T=6)
    layer = _layer(c)
    threads.set_threads(1)
    whole = _run(layer, c, fast=True)
    threads.set_threads(2)
    for slices, split_walks in ((1, 0), (0, 4)):  # at once (one slice each) / one after the other
        monkeypatch.setattr(kernels, "direction_slices", lambda *a, slices=slices, **k: slices)
        units_on.clear()
        got = _run(layer, c, fast=True)
        assert len(units_on) == split_walks
        for k in whole:
            assert_close(got[k], whole[k], 1e-5, err_msg=f"{k} (slices {slices})")


def test_unit_workers_only_for_one_sequence_with_large_units_enough_steps_and_never_in_a_worker():
    from unrolled.kernels import _pool

    try:
        threads.set_threads(2)
        assert kernels.unit_workers(100, 1, 4, 256) == 2
        assert kernels.unit_workers(100, 2, 4, 256) == 1  # two rows: the one-worker walk is as fast
        assert kernels.unit_workers(100, 1, 4, 128) == 1  # a small W_hh: waiting costs what sharing saves
        assert kernels.unit_workers(2, 1, 4, 256) == 1  # too little work to wake a worker for
        threads.set_threads(8)
        assert kernels.unit_workers(100, 1, 4, 256) == 2  # shares of at least 128 units
        assert kernels.unit_workers(100, 1, 4, 1024) == 8
        inside = _pool.run(lambda i: kernels.unit_workers(100, 1, 4, 256), 2)
        assert inside[1] == 1  # in a pool worker: never
        threads.set_threads(1)
        assert kernels.unit_workers(100, 1, 4, 512) == 1
    finally:
        threads.set_threads(None)


@pytest.mark.parametrize(("H", "k"), [(256, 2), (200, 3), (128, 2), (1000, 7)])
def test_shares_cover_the_units_in_order_on_cache_line_boundaries(H, k):
    u = _units.bounds(H, k)
    assert u[0] == 0 and u[-1] == H and len(u) == k + 1
    assert all(a < b for a, b in zip(u, u[1:], strict=False))
    assert all(b % _units.ALIGN == 0 for b in u[1:-1])
    sizes = np.diff(u)
    assert sizes.max() - sizes.min() <= 2 * _units.ALIGN


def test_a_worker_that_fails_releases_the_others_and_its_error_is_raised():
    """Worker 1 raises before its walk; worker 0 (the calling thread) is already waiting for its first
    step. The abort slot releases it and run() raises worker 1's error, instead of hanging."""
    from unrolled.kernels import _jit

    H, T = 128, 5
    rng = np.random.default_rng(0)
    gates = rng.standard_normal((T, 1, 4 * H)).astype(np.float32)
    W = rng.standard_normal((4 * H, H)).astype(np.float32)
    f = np.float32
    hs, cs = np.zeros((T + 1, 1, H), f), np.zeros((T + 1, 1, H), f)
    args = ((gates, W), (np.zeros(4 * H, f), np.ones(4 * H, f), np.zeros(4 * H, f), hs, cs,
            np.zeros((T, 1, H), f), np.ones((T, 1), f)))  # fmt: skip

    def walk(*a):
        if a[-1] == 1:
            raise MemoryError("worker 1 could not start")
        return _jit.lstm_forward_units(*a)

    error = _error_of_a_split_run(lambda: _units.run(walk, 2, H, *args, np.empty((2, 1, 4 * H), f)))
    assert isinstance(error, MemoryError) and "could not start" in str(error)


def _error_of_a_split_run(run) -> BaseException | None:
    """What ``run()`` (a unit split on a budget of two) raised, called in a thread of its own; fails the
    test if that thread is still waiting after 60 s (a walk left waiting for a worker that failed)."""
    outcome: list[BaseException] = []

    def call():
        try:
            threads.set_threads(2)
            run()
        except BaseException as e:
            outcome.append(e)
        finally:
            threads.set_threads(None)

    t = threading.Thread(target=call)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "the split run is still waiting for a worker that failed"
    return outcome[0] if outcome else None


def test_a_worker_that_starts_late_is_not_waited_for_the_others_do_its_share():
    """Worker 1 starts 0.3 s late (its core busy with another thread): worker 0 takes worker 1's share of
    every step and finishes the walk before worker 1 starts; the results are those of two punctual ones."""
    import time

    from unrolled.kernels import _jit

    H, T = 128, 20
    rng = np.random.default_rng(1)
    f = np.float32
    gates = rng.standard_normal((T, 1, 4 * H)).astype(f)
    W = (rng.standard_normal((4 * H, H)) * 0.1).astype(f)
    scale, offset = np.full(4 * H, 0.5, f), np.full(4 * H, 0.5, f)

    def walk_all(late: float):
        hs, cs = np.zeros((T + 1, 1, H), f), np.zeros((T + 1, 1, H), f)
        args = ((gates.copy(), W), (np.zeros(4 * H, f), scale, offset, hs, cs, np.zeros((T, 1, H), f),
                np.ones((T, 1), f)))  # fmt: skip
        spans = {}

        def walk(*a):
            if a[-1] == 1:
                time.sleep(late)
            t0 = time.perf_counter()
            ok = _jit.lstm_forward_units(*a)
            spans[a[-1]] = (t0, time.perf_counter())
            return ok

        threads.set_threads(2)
        try:
            _units.run(walk, 2, H, *args, np.empty((2, 1, 4 * H), f))
        finally:
            threads.set_threads(None)
        return hs, cs, spans

    hs, cs, _ = walk_all(0.0)
    hs_late, cs_late, spans = walk_all(0.3)
    assert spans[0][1] < spans[1][0]  # worker 0 was done before worker 1 began
    np.testing.assert_array_equal(hs_late, hs)
    np.testing.assert_array_equal(cs_late, cs)


def _infer_walk_args(T: int, H: int, seed: int):
    """An LSTM inference walk of one chunk (T steps from t0 = 0): its gates and the (before, after) of
    :func:`_units.run`, with fresh state buffers."""
    rng = np.random.default_rng(seed)
    f = np.float32
    gates = rng.standard_normal((T, 1, 4 * H)).astype(f)
    W = (rng.standard_normal((4 * H, H)) * 0.1).astype(f)
    scale, offset = np.full(4 * H, 0.5, f), np.full(4 * H, 0.5, f)
    hs, cs = np.zeros((T + 1, 1, H), f), np.zeros((2, 1, H), f)
    after = (np.zeros(4 * H, f), scale, offset, hs, cs, np.empty((1, H), f), np.ones((T, 1), f))
    return gates, (0, gates, W), after


def _walk_with_the_tail_unprojected(H: int, T: int, head: int, seed: int):
    """The hs of a walk whose every step was projected first (a budget of two workers), then the same
    walk's arrays set back to its start with the steps from ``head`` on unprojected (NaN): (before, after,
    the gates those steps should get, the expected hs)."""
    from unrolled.kernels import _jit

    gates, before, after = _infer_walk_args(T, H, seed)
    whole_gates = gates.copy()
    _units.run(_jit.lstm_infer_units, 2, H, before, after, np.empty((2, 1, 4 * H), np.float32))
    expected = after[3].copy()  # hs
    gates[:head] = whole_gates[:head]  # the walk leaves its activations in the gates it is given
    gates[head:] = np.nan
    after[3][1:] = 0.0  # h_1.. (h_0 stays zero)
    after[4][0] = 0.0  # c_0
    return before, after, whole_gates, expected


def test_the_walk_starts_on_the_head_and_waits_for_the_tail_a_partner_projects():
    """The caller has projected the head (4 of 20 steps); worker 1 claims the tail and projects it, slowly
    (0.2 s); the caller's walk starts before it is written. The tail is NaN until then, so a step read
    too early would spread NaN. The outputs equal those of a walk whose every step was projected first."""
    import time

    from unrolled.kernels import _jit

    H, T, head = 128, 20, 4
    threads.set_threads(2)
    try:
        before, after, whole_gates, expected = _walk_with_the_tail_unprojected(H, T, head, seed=3)
        gates = before[1]
        spans = {}

        def tail():
            spans["tail"], spans["by"] = time.perf_counter(), threading.get_ident()
            time.sleep(0.2)
            gates[head:] = whole_gates[head:]

        def walk(*a):
            if a[-1] == 0:
                time.sleep(0.05)  # so worker 1 claims the tail first (else the caller would project it)
            spans.setdefault(a[-1], time.perf_counter())
            return _jit.lstm_infer_units(*a)

        _units.run(walk, 2, H, before, after, np.empty((2, 1, 4 * H), np.float32), tail, head)
    finally:
        threads.set_threads(None)
    np.testing.assert_array_equal(after[3], expected)
    assert spans["by"] != threading.get_ident()  # worker 1 projected the tail
    assert spans[0] < spans["tail"] + 0.2  # the caller walked the head before the tail was written


def test_a_tail_that_fails_releases_the_walk_and_its_error_is_raised():
    """The partner's projection of the tail raises; the caller, waiting at the first unprojected step, is
    released (the abort slot) and run() raises the projection's error instead of hanging."""
    from unrolled.kernels import _jit

    H, T = 128, 10
    _, before, after = _infer_walk_args(T, H, seed=4)

    def tail():
        raise MemoryError("no room for the tail's projection")

    recs = np.empty((2, 1, 4 * H), np.float32)
    error = _error_of_a_split_run(
        lambda: _units.run(_jit.lstm_infer_units, 2, H, before, after, recs, tail, 3)
    )
    assert isinstance(error, MemoryError) and "tail's projection" in str(error)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_training_and_inference_project_the_same_pieces_a_head_and_a_tail_per_chunk(
    kind, units_on, monkeypatch
):
    """Bit-equality of the two paths rests on the same products over the same rows: under the unit split
    each chunk's head and tail apart (the head first, by the caller), in both; without it one product
    per chunk."""
    from unrolled import GRU, LSTM
    from unrolled.kernels import _common

    pieces = []
    real = _common.project_into

    def spied(x, W_xh, out, matmul):
        pieces.append(x.shape[0])
        return real(x, W_xh, out, matmul)

    monkeypatch.setattr(_common, "project_into", spied)
    layer = (LSTM if kind == "lstm" else GRU)(3, 128, dtype=np.float32, seed=2)
    x = np.random.default_rng(6).standard_normal((1100, 1, 3)).astype(np.float32)
    n = _common.chunk_steps(1100, 1, (4 if kind == "lstm" else 3) * 128)
    chunks = [min(n, 1100 - t0) for t0 in range(0, 1100, n)]
    expected = []
    for c in chunks:
        expected += [_common.head_steps(c, 2), c - _common.head_steps(c, 2)]
    layer.forward(x)
    assert pieces == expected and 0 < expected[0] < chunks[0]
    pieces.clear()
    layer.forward(x, need_grad=False)
    assert pieces == expected
    pieces.clear()
    threads.set_threads(1)  # no unit split: one product per chunk
    layer.forward(x, need_grad=False)
    assert pieces == chunks


def test_a_partner_that_starts_late_is_not_waited_for_the_caller_projects_the_tail_itself(monkeypatch):
    """Worker 1 starts 0.3 s late (its core busy): the caller, at the first unprojected step, finds the
    tail unclaimed, projects it itself and walks every step alone. The tail is projected exactly once,
    and the outputs are those of a walk whose every step was projected first."""
    import time

    from unrolled.kernels import _jit

    H, T, head = 128, 20, 4
    threads.set_threads(2)
    try:
        before, after, whole_gates, expected = _walk_with_the_tail_unprojected(H, T, head, seed=5)
        gates = before[1]
        projected_by = []

        def tail():
            projected_by.append(threading.get_ident())
            gates[head:] = whole_gates[head:]

        real_claim = _jit.claim_tail

        def late_claim(flags):
            time.sleep(0.3)
            return real_claim(flags)

        monkeypatch.setattr(_jit, "claim_tail", late_claim)
        _units.run(
            _jit.lstm_infer_units, 2, H, before, after, np.empty((2, 1, 4 * H), np.float32), tail, head
        )
    finally:
        threads.set_threads(None)
    assert projected_by == [threading.get_ident()]  # once, by the calling thread
    np.testing.assert_array_equal(after[3], expected)
