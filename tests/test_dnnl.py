"""oneDNN's product (the extra ``onednn``): equal to NumPy's for every operand layout it takes, NumPy's own
product where it cannot take one, its threads set with NumPy's, and the switch that turns it off.
(The walks that call it from compiled code are checked against the reference cells in test_kernels.)"""

from __future__ import annotations

import ctypes

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
    import threading

    plans = []
    t = threading.Thread(target=lambda: plans.append(_dnnl.plan(2, 3, 4, False)))
    t.start()
    t.join()
    assert plans[0] is not _dnnl.plan(2, 3, 4, False)
    assert _dnnl.plan(2, 3, 4, False) is _dnnl.plan(2, 3, 4, False)


def test_two_threads_running_same_shape_layers_get_their_own_results():
    """The walks release the GIL and the packed weights live in per-thread plans: two layers of the same
    shape running at once in two threads each get exactly what they get alone."""
    import threading

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
