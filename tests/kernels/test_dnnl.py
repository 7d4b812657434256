"""oneDNN's product (the extra ``onednn``): equal to NumPy's for every operand layout it takes, NumPy's own
product where it cannot take one, its threads set with NumPy's, and the switch that turns it off.
(The walks that call it from compiled code are checked against the reference cells in test_kernels.)"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

from unrolled import kernels
from unrolled.threads import set_blas_threads

pytest.importorskip("numba")
_dnnl = pytest.importorskip("unrolled.kernels._dnnl")
if _dnnl.load() is None:
    pytest.skip("oneDNN (the extra onednn) is not installed", allow_module_level=True)

from numba import njit  # noqa: E402

from unrolled.kernels import _jit  # noqa: E402


@njit
def _product(a, handles, out):
    _jit.dnnl_product(a, handles, out)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(("M", "K", "N"), [(1, 1, 1), (3, 5, 7), (37, 64, 129)])
def test_product_equals_numpy_for_plain_and_transposed_operands(M, K, N, ta, tb):
    rng = np.random.default_rng(M * K * N)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)  # transposed views: F-contiguous
    got = _dnnl.matmul(a, b)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == (M, N) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize(("N", "G", "K"), [(3200, 512, 192), (40, 20, 12)], ids=["large", "small"])
def test_a_weight_gradient_takes_onednn_from_small_product_up_and_equals_float64(N, G, K):
    """outer_sum(δa, v) = δaᵀ v, Σ over N = T·B rows: oneDNN's product (on a transposed view) from
    SMALL_PRODUCT multiply-adds up, NumPy's below (oneDNN's call would cost more than it saves)."""
    from unrolled.cells.bulk import outer_sum

    rng = np.random.default_rng(N)
    d = rng.standard_normal((N, G), dtype=np.float32)
    v = rng.standard_normal((N, K), dtype=np.float32)
    calls = []

    def counted(a, b, out=None):
        calls.append(a.shape)
        return _dnnl.matmul(a, b, out)

    got = outer_sum(d, v, counted)
    ref = d.astype(np.float64).T @ v.astype(np.float64)
    assert got.shape == (G, K) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.sqrt(N))
    assert calls == ([(G, N)] if N * G * K >= kernels.SMALL_PRODUCT else [])


def test_layouts_it_cannot_take_fall_back_to_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 10), dtype=np.float32)[:, ::2]  # strided: neither C nor F contiguous
    b = rng.standard_normal((5, 4), dtype=np.float32)
    np.testing.assert_array_equal(_dnnl.matmul(a, b), np.matmul(a, b))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_array_equal(_dnnl.matmul(a64, b64, np.empty((6, 4))), a64 @ b64)


def test_blas_thread_count_reaches_onednn():
    gomp = ctypes.CDLL("libgomp.so.1")
    before = gomp.omp_get_max_threads()
    try:
        set_blas_threads(1)
        assert gomp.omp_get_max_threads() == 1
    finally:
        set_blas_threads(max(before, 1))


def test_switching_onednn_off_selects_the_other_walks():
    assert kernels.walks_for(32, 4, 128) is kernels.dnnl_walks() is _jit.DNNL_WALKS
    assert kernels.walks_for(1, 4, 8) is _jit.NT_WALKS  # tiny steps: matmul_nt (no ~2 µs call)
    assert kernels.bulk_matmul(np.float32) is _dnnl.matmul
    assert kernels.bulk_matmul(np.float64) is np.matmul
    with kernels.using(dnnl=False):
        assert kernels.walks_for(32, 4, 128) is None  # a BLAS call per step
        assert kernels.walks_for(16, 4, 512) is _jit.NT_WALKS
        assert kernels.bulk_matmul(np.float32) is np.matmul
    assert kernels.walks_for(32, 4, 128) is _jit.DNNL_WALKS  # on again after the block


def test_a_single_sequence_walks_forward_on_the_mat_vec_and_back_on_onednn():
    """At B = 1 the forward (training and inference alike) reads W_hh unpacked by matmul_nt's mat-vec; the
    backward keeps oneDNN's (measured faster at H = 512, see walks_for); B = 2 keeps oneDNN's both ways."""
    for G, H in [(4, 128), (3, 256), (1, 512), (4, 1024)]:
        assert kernels.walks_for(1, G, H) is _jit.NT_WALKS
        assert kernels.walks_for(1, G, H, backward=True) is _jit.DNNL_WALKS
        assert kernels.walks_for(2, G, H) is _jit.DNNL_WALKS


def test_environment_switch_is_read_at_import():
    import os
    import subprocess
    import sys

    code = "import numpy as np, unrolled; print(unrolled.kernels.describe())"
    env = {**os.environ, "UNROLLED_DNNL": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "OpenBLAS" in out.stdout
    env["UNROLLED_DNNL"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "oneDNN" in out.stdout


@pytest.mark.parametrize("w_rows_are_n", [False, True])
@pytest.mark.parametrize(("M", "K", "N"), [(1, 3, 5), (4, 16, 64), (7, 33, 20)])
def test_packed_weights_product_equals_numpy_step_after_step(M, K, N, w_rows_are_n):
    """The compiled walks' product: weights packed once by the plan, then one product per step row."""
    rng = np.random.default_rng(M + K + N)
    W = rng.standard_normal((N, K) if w_rows_are_n else (K, N), dtype=np.float32)
    rows = rng.standard_normal((3, M, K), dtype=np.float32)  # rows[t] as a walk passes hs[t]
    handles = _dnnl.plan(M, K, N, w_rows_are_n).pack(W)
    Wkn = W.T if w_rows_are_n else W
    for t in range(3):
        out = np.full((M, N), np.nan, dtype=np.float32)
        _product(rows[t], handles, out)
        np.testing.assert_allclose(out, rows[t] @ Wkn, rtol=1e-5, atol=1e-4)
    W *= 2  # a new pack sees the change
    handles = _dnnl.plan(M, K, N, w_rows_are_n).pack(W)
    out = np.empty((M, N), dtype=np.float32)
    _product(rows[0], handles, out)
    np.testing.assert_allclose(out, rows[0] @ (W.T if w_rows_are_n else W), rtol=1e-5, atol=1e-4)
    assert _jit.DNNL_WALKS.forward_weights is _jit.dnnl_forward_weights


def test_each_thread_packs_into_its_own_plan():
    plans = []
    t = threading.Thread(target=lambda: plans.append(_dnnl.plan(2, 3, 4, False)))
    t.start()
    t.join()
    assert plans[0] is not _dnnl.plan(2, 3, 4, False)
    assert _dnnl.plan(2, 3, 4, False) is _dnnl.plan(2, 3, 4, False)
    with pytest.raises(RuntimeError, match="closed"):  # its thread ended: closed there, not usable here
        plans[0].pack(np.ones((3, 4), dtype=np.float32))


class _RecordingLib:
    """The loaded library, recording which thread calls each ``*_destroy`` (Python-side frees only: the
    compiled walks call oneDNN by symbol, not through this object)."""

    def __init__(self, lib):
        self.lib, self.frees = lib, []

    def __getattr__(self, name):
        fn = getattr(self.lib, name)
        if not name.endswith("_destroy") or name == "dnnl_memory_desc_destroy":
            return fn

        def recorded(*args):
            self.frees.append((name, threading.get_ident()))
            return fn(*args)

        return recorded


def test_plans_are_freed_in_their_own_thread_when_it_ends_and_walks_go_on(monkeypatch):
    """Threads that ran a layer's oneDNN walks end (their thread-local plans are dropped): every native
    free happens in the thread that built the object, a plan that escaped its thread is closed (and not
    freed again where it is dropped), and walks in this thread and in new threads stay bit-identical."""
    from unrolled import LSTM

    recording = _RecordingLib(_dnnl._lib)
    monkeypatch.setattr(_dnnl, "_lib", recording)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 16, 8), dtype=np.float32)
    dy = rng.standard_normal((12, 16, 96), dtype=np.float32)
    layer = LSTM(8, 96, seed=4)  # B·G·H² large enough for oneDNN's walks

    def walk():
        y, cache = layer.forward(x)
        return y, layer.backward(dy, cache)[0]

    want = walk()
    workers, escaped, got = {}, [], []

    def run():
        workers[threading.get_ident()] = True
        got.append(walk())
        escaped.append(_dnnl.ProductPlan(3, 5, 7, False))  # outlives its thread

    for _ in range(3):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got.append(walk())  # this thread's plans are untouched by the others' ends
    frees_at_join = list(recording.frees)
    assert all(p.closed for p in escaped)
    escaped.clear()  # dropped here: already closed, nothing freed a second time
    assert recording.frees == frees_at_join
    assert {thread for _, thread in frees_at_join} <= set(workers)  # each free in a worker, at its end
    names = {name for name, _ in frees_at_join}
    assert {"dnnl_primitive_destroy", "dnnl_memory_destroy", "dnnl_stream_destroy"} <= names
    for y, dx in got:
        np.testing.assert_array_equal(y, want[0])
        np.testing.assert_array_equal(dx, want[1])


def test_a_plan_refuses_other_threads_and_close_frees_only_in_its_own(monkeypatch):
    recording = _RecordingLib(_dnnl._lib)
    monkeypatch.setattr(_dnnl, "_lib", recording)
    p = _dnnl.ProductPlan(2, 3, 4, False)
    w = np.ones((3, 4), dtype=np.float32)
    errors = []

    def other():
        try:
            p.pack(w)
        except RuntimeError as e:
            errors.append(str(e))
        p.close()  # not its thread: abandoned, not freed

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "another thread" in errors[0]
    assert p.closed and not p.handles.any()  # stale handles are null, never freed memory
    assert recording.frees == []
    p.close()
    assert recording.frees == []
    q = _dnnl.ProductPlan(2, 3, 4, False)
    q.close()  # in its own thread: freed at once
    assert {name for name, _ in recording.frees} == {
        "dnnl_primitive_destroy",
        "dnnl_primitive_desc_destroy",
        "dnnl_memory_destroy",
    }
    with pytest.raises(RuntimeError, match="closed"):
        p.pack(w)


_EXIT_SCRIPT = """
import sys, threading
import numpy as np
from unrolled import LSTM, kernels
assert "oneDNN" in kernels.describe(), kernels.describe()
x = np.random.default_rng(0).standard_normal((30, 16, 8), dtype=np.float32)
layer = LSTM(8, 96, seed=1)
def walks():
    while True:
        layer.forward(x)
if sys.argv[1] == "thread":  # a daemon thread still inside its walks while the interpreter exits
    threading.Thread(target=walks, daemon=True).start()
elif sys.argv[1] == "ended":  # a thread that ran walks and ended just before the exit
    t = threading.Thread(target=lambda: layer.forward(x))
    t.start()
    t.join()
layer.forward(x)
"""


@pytest.mark.parametrize("case", ["main", "thread", "ended"])
def test_interpreter_exits_cleanly_right_after_a_walk(case):
    """Under glibc's and CPython's heap checks, exiting right after a oneDNN walk (in this thread, in a
    thread that just ended, or with a daemon thread still walking) exits 0 and writes nothing."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONMALLOC": "debug", "MALLOC_CHECK_": "3", "PYTHONFAULTHANDLER": "1"}
    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", _EXIT_SCRIPT, case], env=env, capture_output=True, text=True, timeout=120
        )
        assert (p.returncode, p.stderr) == (0, "")


def test_two_threads_running_same_shape_layers_get_their_own_results():
    """The walks release the GIL and the packed weights live in per-thread plans: two layers of the same
    shape running at once in two threads each get exactly what they get alone."""
    from unrolled import LSTM

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 16, 8), dtype=np.float32)
    layers = [LSTM(8, 96, seed=s) for s in (1, 2)]  # B·G·H² large enough for oneDNN's walks
    alone = [layer.forward(x)[0] for layer in layers]
    got: dict = {}

    def run(i):
        got[i] = [layers[i].forward(x)[0] for _ in range(15)]

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        for out in got[i]:
            np.testing.assert_array_equal(out, alone[i])


@pytest.mark.parametrize(
    ("T", "I", "G", "onednn"),
    [(20, 64, 1024, True), (20, 32, 192, False), (200, 32, 128, False), (50, 64, 512, True)],
    ids=["wide, from SMALL_PROJECTION", "below it", "narrow, below SMALL_PRODUCT", "wide"],
)
def test_an_input_projection_takes_onednn_where_it_pays_and_equals_float64(T, I, G, onednn):
    """project_into: x W_xhᵀ by the product it is given from SMALL_PRODUCT multiply-adds up, and already
    from SMALL_PROJECTION where the projection is wide (G ≥ WIDE_PROJECTION: a transposed W_xh costs NumPy
    more); NumPy's below."""
    from unrolled.kernels._common import project_into

    rng = np.random.default_rng(T * G)
    x = rng.standard_normal((T, 1, I), dtype=np.float32)
    W = rng.standard_normal((G, I), dtype=np.float32)
    out = np.empty((T, 1, G), dtype=np.float32)
    calls = []

    def counted(a, b, out=None):
        calls.append(a.shape)
        return _dnnl.matmul(a, b, out)

    project_into(x, W, out, counted)
    ref = x[:, 0].astype(np.float64) @ W.astype(np.float64).T
    np.testing.assert_allclose(out[:, 0], ref, rtol=1e-5, atol=1e-5 * np.sqrt(I))
    assert calls == ([(T, I)] if onednn else [])
    assert T * I * G < kernels.SMALL_PRODUCT  # each case is a small product, below the general threshold


# ---------------------------------------------------------------- one packed copy for a split's workers
def _products(handles, rows, N):
    """The walks' product of each step's rows with the packed weights the handles read."""
    out = np.empty((len(rows), rows.shape[1], N), dtype=np.float32)
    for t in range(len(rows)):
        _product(rows[t], handles, out[t])
    return out


def _share(k: int, K: int, N: int) -> _dnnl.SharedPack:
    return _dnnl.SharedPack(k, np.empty(K * N, dtype=np.float32))


def _private(M, K, N, w_rows_are_n, W, rows):
    plan = _dnnl.plan(M, K, N, w_rows_are_n)
    return plan, _products(plan.pack(W), rows, N)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize(("K", "N", "w_rows_are_n"), [(64, 512, True), (512, 256, False), (96, 768, True)])
def test_pieces_packed_one_after_another_give_the_products_of_one_whole_pack(k, K, N, w_rows_are_n):
    """A member alone (the others' tasks left to run after it) packs every piece itself; the members after
    it find every piece packed, wait for nothing, and read the same copy. Products equal bit for bit."""
    rng = np.random.default_rng(k + K)
    W = rng.standard_normal((N, K) if w_rows_are_n else (K, N), dtype=np.float32)
    rows = rng.standard_normal((3, 8, K), dtype=np.float32)
    plan, whole = _private(8, K, N, w_rows_are_n, W, rows)
    share = _share(k, K, N)
    for me in range(k):
        with _dnnl.sharing(share, me):
            handles = _dnnl.walk_weights(plan, W)
        assert handles is not plan.handles  # the shared copy's handles
        np.testing.assert_array_equal(_products(handles, rows, N), whole)
    assert share.shared == k


def test_members_in_their_own_threads_each_pack_a_piece_and_read_one_copy(monkeypatch):
    K, N, k = 128, 1024, 2
    rng = np.random.default_rng(7)
    W = rng.standard_normal((N, K), dtype=np.float32)
    rows = rng.standard_normal((3, 4, K), dtype=np.float32)
    _, whole = _private(4, K, N, True, W, rows)
    share, packed, results, start = _share(k, K, N), [], {}, threading.Barrier(k)
    piece = _dnnl.ProductPlan.pack_piece

    def recorded(self, w, j, kk, buffer):
        packed.append(j)
        return piece(self, w, j, kk, buffer)

    monkeypatch.setattr(_dnnl.ProductPlan, "pack_piece", recorded)

    def member(me):
        plan = _dnnl.plan(4, K, N, True)  # each thread its own plan, as the split's workers have
        start.wait()
        with _dnnl.sharing(share, me):
            results[me] = _products(_dnnl.walk_weights(plan, W), rows, N)

    threads = [threading.Thread(target=member, args=(me,)) for me in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(packed) == list(range(k))  # every piece packed once, by whichever thread claimed it
    assert share.shared == k
    for me in range(k):
        np.testing.assert_array_equal(results[me], whole)


def _two_members(seed: int, K: int = 64, N: int = 512):
    """Weights (N, K), two steps of rows, this thread's plan with its own products, a share for two."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, K), dtype=np.float32)
    rows = rng.standard_normal((2, 8, K), dtype=np.float32)
    plan, whole = _private(8, K, N, True, W, rows)
    return rng, W, rows, plan, whole, _share(2, K, N)


def test_what_cannot_be_shared_is_packed_privately_and_still_right():
    rng, W, rows, plan, whole, share = _two_members(3)
    K, N = W.shape[1], W.shape[0]
    with _dnnl.sharing(share, 0):
        _dnnl.walk_weights(plan, W)
    other = W.copy()  # the second member brings other weights: its own copy
    with _dnnl.sharing(share, 1):
        handles = _dnnl.walk_weights(plan, other)
    assert handles is plan.handles and share.shared == 1
    np.testing.assert_array_equal(_products(handles, rows, N), whole)
    narrow = _share(2, K, 96)  # 96 columns do not split into pieces of whole 64-column blocks
    W96 = rng.standard_normal((96, K), dtype=np.float32)
    plan96 = _dnnl.plan(8, K, 96, True)
    with _dnnl.sharing(narrow, 0):
        assert _dnnl.walk_weights(plan96, W96) is plan96.handles
    assert narrow.shared == 0


def test_a_failing_piece_raises_and_sends_the_other_members_to_their_own_copy(monkeypatch):
    _, W, rows, plan, whole, share = _two_members(4)
    N = W.shape[0]

    def broken(self, w, j, k, buffer):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_dnnl.ProductPlan, "pack_piece", broken)
        with pytest.raises(KeyboardInterrupt), _dnnl.sharing(share, 0):
            _dnnl.walk_weights(plan, W)
    with _dnnl.sharing(share, 1):  # finds the share failed: packs its own, waits for nothing
        handles = _dnnl.walk_weights(plan, W)
    assert handles is plan.handles and share.shared == 0
    np.testing.assert_array_equal(_products(handles, rows, N), whole)
    with _dnnl.sharing(share, 0):
        assert plan.pack(W) is plan.handles  # a plan's own pack never shares
    assert _dnnl.walk_weights(plan, W) is plan.handles  # outside sharing: its own copy, as always
