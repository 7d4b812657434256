"""The fast kernels equal the reference cells: forward outputs, final states, ∂L/∂x, ∂L/∂state0 and every
parameter gradient, on random configurations (lengths, bidirectional, several layers, float32 and float64),
and the one-step streaming API. Also: the one decision point (pick / owner), the switches and the
``using`` block that sets them, and the fallbacks."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN, kernels, threads
from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.kernels.gru import CompiledGRUCell, FastGRUCell
from unrolled.kernels.lstm import CompiledLSTMCell, FastLSTMCell
from unrolled.kernels.rnn import CompiledRNNCell, FastRNNCell

from conftest import assert_close

TOL = {np.float64: 1e-10, np.float32: 2e-5}


def _configs(n=30):
    rng = np.random.default_rng(8)
    out = []
    for i in range(n):
        out.append(
            dict(
                kind=["lstm", "gru", "rnn", "rnn_relu"][i % 4],
                dtype=[np.float64, np.float32][(i // 4) % 2],
                num_layers=int(rng.integers(1, 4)),
                bidirectional=bool(rng.integers(0, 2)),
                lengths=bool(rng.integers(0, 2)),
                batch_first=bool(rng.integers(0, 2)),
                bias=bool(rng.integers(0, 4)),  # mostly with bias
                T=int(rng.integers(1, 9)),
                B=int(rng.integers(1, 6)),
                I=int(rng.integers(1, 7)),
                H=int(rng.integers(1, 8)),
                seed=i,
            )
        )
    return out


def _layer(c):
    kw = dict(
        num_layers=c["num_layers"], bidirectional=c["bidirectional"], batch_first=c["batch_first"],
        bias=c["bias"], dtype=c["dtype"], seed=c["seed"],
    )  # fmt: skip
    if c["kind"] == "lstm":
        return LSTM(c["I"], c["H"], **kw)
    if c["kind"] == "gru":
        return GRU(c["I"], c["H"], **kw)
    return RNN(c["I"], c["H"], nonlinearity="relu" if c["kind"] == "rnn_relu" else "tanh", **kw)


def _run(layer, c, fast: bool, jit: bool = True):
    """Forward + backward with random upstream gradients on one path; everything it returns, as a dict."""
    rng = np.random.default_rng(c["seed"] + 1000)
    dt, T, B, H = c["dtype"], c["T"], c["B"], c["H"]
    D = 2 if c["bidirectional"] else 1
    LD = c["num_layers"] * D
    x = rng.standard_normal((B, T, c["I"]) if c["batch_first"] else (T, B, c["I"])).astype(dt)
    n_states = 2 if c["kind"] == "lstm" else 1
    h0 = tuple(rng.standard_normal((LD, B, H)).astype(dt) for _ in range(n_states))
    d_hn = tuple(rng.standard_normal((LD, B, H)).astype(dt) for _ in range(n_states))
    lengths = rng.integers(1, T + 1, size=B) if c["lengths"] else None
    if lengths is not None:
        lengths[0] = T
    d_out = rng.standard_normal((B, T, D * H) if c["batch_first"] else (T, B, D * H)).astype(dt)
    pack = (lambda s: s) if n_states == 2 else (lambda s: s[0])
    with kernels.using(reference=not fast, jit=jit):
        out, hn = layer.forward(x, pack(h0), lengths)
        dx, dh0 = layer.backward(d_out, pack(d_hn))
    res = {"out": out, "dx": dx}
    hn, dh0 = (hn, dh0) if n_states == 2 else ((hn,), (dh0,))
    for i in range(n_states):
        res[f"h_n[{i}]"], res[f"d_h0[{i}]"] = hn[i], dh0[i]
    res.update({f"grad {k}": v.copy() for k, v in layer.grads.items()})
    return res


def _paths():
    """(configuration, path) pairs: every configuration on every path that runs its dtype."""
    for c in _configs():
        for jit in ("dnnl-sequence", "numba-sequence", "numba-step", "split-dnnl", "split", "numpy"):
            if jit == "numpy" or c["dtype"] == np.float32:  # the compiled paths are float32 only
                if jit.startswith("split") and c["B"] < 2:
                    continue  # one row: nothing to split
                yield pytest.param(c, jit, id="{kind}-{dtype.__name__}-L{num_layers}-".format(**c) + jit)


@pytest.fixture
def split_in_two(monkeypatch):
    """Every compiled layer with B ≥ 2 splits its batch across two workers, whatever its size and the
    machine's cores (the budget is restored after)."""
    monkeypatch.setattr(kernels, "MIN_SLICE_ROWS", 1)
    monkeypatch.setattr(kernels, "MIN_SLICE_MACS", 0)
    threads.set_threads(2)
    yield
    threads.set_threads(None)


@pytest.mark.parametrize(("c", "jit"), list(_paths()))
def test_fast_path_matches_reference_forward_and_every_gradient(c, jit, request, monkeypatch):
    """dnnl-sequence: the whole walk in one compiled call with oneDNN's product (extra ``onednn``);
    numba-sequence: the same with matmul_nt; numba-step: a BLAS product and one compiled gate kernel per
    step; split-dnnl / split: the batch split across two workers, each walking its rows (on oneDNN's
    walks / on the walks chosen by the slice's size); numpy: the NumPy fast path (float64, or float32
    with Numba switched off)."""
    if jit != "numpy":
        _jit = pytest.importorskip("unrolled.kernels._jit")
        if jit.startswith("split"):
            request.getfixturevalue("split_in_two")
        if jit in ("dnnl-sequence", "split-dnnl"):
            if kernels.dnnl_walks() is None:
                pytest.skip("oneDNN (the extra onednn) is not installed")
            monkeypatch.setattr(_jit, "SMALL_MACS", 0)  # every size counts as large: oneDNN's walks
        elif jit != "split":
            whole = jit == "numba-sequence"
            monkeypatch.setattr(_jit, "whole_sequence", lambda B, G, H: whole)
    layer = _layer(c)
    ref = _run(layer, c, fast=False)
    with kernels.using(dnnl=jit in ("dnnl-sequence", "split-dnnl", "split")):
        fast = _run(layer, c, fast=True, jit=jit != "numpy")
    assert set(ref) == set(fast)
    tol = TOL[c["dtype"]]
    for k in ref:
        assert fast[k].dtype == ref[k].dtype, k
        np.testing.assert_allclose(fast[k], ref[k], rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("products", ["one wider", "two"])
def test_weight_gradients_from_one_wider_product_or_two_match_the_reference(kind, products, monkeypatch):
    """The compiled LSTM and RNN take ∂L/∂W_hh and ∂L/∂W_xh from one product over [h_{t−1} ; x_t] below
    SPLIT_WEIGHT_GRADS entries of W_hh and from two products from it on: both ways equal the reference,
    and hand out C-contiguous gradients."""
    pytest.importorskip("unrolled.kernels._jit")
    from unrolled.cells import bulk

    monkeypatch.setattr(bulk, "SPLIT_WEIGHT_GRADS", 1 << 62 if products == "one wider" else 0)
    c = dict(kind=kind, dtype=np.float32, num_layers=1, bidirectional=False, lengths=True, batch_first=False,
             bias=True, T=9, B=5, I=7, H=12, seed=4)  # fmt: skip
    layer = _layer(c)
    ref = _run(layer, c, fast=False)
    fast = _run(layer, c, fast=True)
    for k in ref:
        np.testing.assert_allclose(fast[k], ref[k], rtol=2e-5, atol=2e-5, err_msg=k)
    assert all(g.flags.c_contiguous for g in layer.grads.values())


@pytest.mark.parametrize("jit", [True, False], ids=["numba", "numpy"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "rnn_relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 3])
def test_fast_streaming_step_matches_reference_step(kind, dtype, B, jit):
    c = dict(kind=kind, dtype=dtype, num_layers=2, bidirectional=False, batch_first=False, bias=True, seed=3)
    layer = _layer({**c, "I": 5, "H": 6})
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, B, 5)).astype(dtype)
    results = {}
    for fast in (False, True):
        with kernels.using(reference=not fast, jit=jit):
            state, ys = None, []
            for x_t in xs:
                y, state = layer.step(x_t, state)
                ys.append(y)
        results[fast] = (np.stack(ys), state)
    tol = TOL[dtype]
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=tol, atol=tol)
    for a, b in zip(np.atleast_1d(results[True][1]), np.atleast_1d(results[False][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("B", [1, 2, 3, 4, 5, 8, 11])
@pytest.mark.parametrize("N", [1, 3, 4, 7, 12])
def test_compiled_product_with_rows_of_m_equals_numpy_for_every_tile_remainder(B, N):
    """matmul_nt (the recurrent product of the whole-sequence walks) in 4×4 tiles plus remainder rows
    and columns: out = A Mᵀ for every B, N mod 4, on non-contiguous slices of A as the walks pass them."""
    _jit = pytest.importorskip("unrolled.kernels._jit")
    rng = np.random.default_rng(B * 100 + N)
    K = 37
    A = rng.standard_normal((2, B, K), dtype=np.float32)[1]  # a (B, K) slice, as hs[t] is
    M = rng.standard_normal((N, K), dtype=np.float32)
    out = np.full((B, N), np.nan, dtype=np.float32)
    _jit.matmul_nt(A, M, out)
    ref = A.astype(np.float64) @ M.T.astype(np.float64)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N", [1, 7, 8, 9, 24, 192])
@pytest.mark.parametrize("K", [1, 15, 16, 17, 40, 64, 256])
def test_the_single_row_product_equals_float64_for_every_row_and_column_remainder(N, K):
    """matmul_nt at B = 1 (the mat-vec of a single sequence: eight rows of M at a time, 16 columns per
    load, the last K mod 16 columns by a masked load) equals the float64 product within float32 rounding,
    on the slices the unit split passes: rows of a gate block of W_hh and columns of its product buffer."""
    _jit = pytest.importorskip("unrolled.kernels._jit")
    rng = np.random.default_rng(N * 1000 + K)
    W = rng.standard_normal((N + 5, K), dtype=np.float32)  # the rows lo..hi of a larger matrix
    M = W[2 : 2 + N]
    A = rng.standard_normal((3, 1, K), dtype=np.float32)[1]
    rec = np.full((1, N + 4), np.nan, dtype=np.float32)
    out = rec[:, 1 : 1 + N]
    _jit.matmul_nt(A, M, out)
    ref = A.astype(np.float64) @ M.T.astype(np.float64)
    bound = 4 * K * np.finfo(np.float32).eps * (np.abs(A).astype(np.float64) @ np.abs(M.T).astype(np.float64))
    assert np.all(np.abs(out - ref) <= bound), np.max(np.abs(out - ref) / bound)
    assert np.isnan(rec[0, 0]) and np.all(np.isnan(rec[0, 1 + N :]))  # nothing written outside out


def test_the_single_row_product_propagates_nan_and_inf():
    """A NaN or inf in h reaches every output row it multiplies (the masked tail included)."""
    _jit = pytest.importorskip("unrolled.kernels._jit")
    M = np.ones((16, 40), dtype=np.float32)
    for k in (3, 39):  # in a full 16-column load, and in the masked tail
        for bad in (np.nan, np.inf):
            A = np.zeros((1, 40), dtype=np.float32)
            A[0, k] = bad
            out = np.zeros((1, 16), dtype=np.float32)
            _jit.matmul_nt(A, M, out)
            assert np.all(np.isnan(out) if np.isnan(bad) else np.isinf(out))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 CPU names")
@pytest.mark.parametrize("cpu", ["x86-64", "haswell"])
def test_the_single_row_product_is_right_compiled_for_older_x86_cpus(cpu, tmp_path):
    """The mat-vec's vector IR (512-bit where AVX-512 exists) compiled for plain x86-64 (SSE2, no FMA, no
    masked loads) and for Haswell (AVX2) gives the same numbers: a user's CPU may have neither."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    only = "single_row_product_equals or single_row_product_propagates"
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", only]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_whole_sequence_walks_where_a_blas_call_per_step_costs_more():
    """The rule (measured in _jit.whole_sequence's docstring): tiny steps, and small batches of large H."""
    _jit = pytest.importorskip("unrolled.kernels._jit")
    assert (
        _jit.whole_sequence(1, 4, 32) and _jit.whole_sequence(16, 4, 512) and _jit.whole_sequence(4, 3, 256)
    )
    assert not _jit.whole_sequence(32, 4, 128) and not _jit.whole_sequence(64, 4, 256)
    assert not _jit.whole_sequence(32, 4, 512)


def test_sigmoid_through_halved_weights_is_exact_in_float32():
    """The fast LSTM's σ(a) = ½·tanh(a/2) + ½ from weights pre-scaled by ½ equals the reference's
    σ bit for bit when the products are the same (scaling by a power of two is exact)."""
    from unrolled.cells.bulk import sigmoid

    a = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 8
    fast = np.tanh(a * np.float32(0.5)) * np.float32(0.5) + np.float32(0.5)
    np.testing.assert_array_equal(fast, sigmoid(a.copy()))


def test_compiled_tanh_is_within_a_few_float32_ulps_and_propagates_nan():
    """The vectorizable rational tanh of the Numba kernels, against float64 tanh on a dense sweep."""
    pytest.importorskip("numba")
    from unrolled.kernels import _jit

    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32), np.float32([0, 1e-30, -1e-8])])
    got = np.empty_like(x)
    _jit.tanh_array(x, got)
    want = np.tanh(x.astype(np.float64))
    err = np.abs(got - want)
    assert err.max() <= 4e-7
    assert (err / np.spacing(np.abs(want).astype(np.float32))).max() <= 8  # ulps of the float32 result
    assert np.all(np.abs(got) <= 1)
    _jit.tanh_array(np.float32([np.nan, np.inf, -np.inf]), got[:3])
    assert np.isnan(got[0]) and got[1] == 1 and got[2] == -1


def test_pick_selects_one_cell_per_path_and_falls_back_to_the_reference():
    compiled = kernels.describe().startswith("fast (Numba")  # Numba installed and on
    f32 = (
        (CompiledLSTMCell, CompiledGRUCell, CompiledRNNCell)
        if compiled
        else (FastLSTMCell, FastGRUCell, FastRNNCell)
    )
    assert type(kernels.pick(LSTMCell(), np.float32)) is f32[0]
    assert type(kernels.pick(GRUCell(reset_after=True), np.float32)) is f32[1]
    assert type(kernels.pick(RNNCell("relu"), np.float32)) is f32[2]
    assert type(kernels.pick(LSTMCell(), np.float64)) is FastLSTMCell  # the compiled path is float32 only
    assert type(kernels.pick(GRUCell(reset_after=True), np.float64)) is FastGRUCell
    assert type(kernels.pick(RNNCell("tanh"), np.float64)) is FastRNNCell
    assert kernels.pick(GRUCell(reset_after=False), np.float32) == GRUCell(reset_after=False)
    assert type(kernels.pick(LSTMCell(), np.float16)) is LSTMCell
    rm = np.ones((2, 3), np.float32)
    assert type(kernels.pick(LSTMCell(), np.float32, rec_mask=rm)) is LSTMCell  # recurrent dropout
    assert type(kernels.pick(LSTMCell(), np.float32, rec_mask=None)) is f32[0]
    with kernels.using(jit=False):
        assert type(kernels.pick(LSTMCell(), np.float32)) is FastLSTMCell
    with kernels.using(reference=True):
        assert type(kernels.pick(LSTMCell(), np.float32)) is LSTMCell
        assert kernels.describe() == "reference"


def test_using_sets_the_switches_for_its_block_and_restores_them_on_exit_exception_and_nesting():
    before = kernels.describe()
    with kernels.using(reference=True):
        assert kernels.describe() == "reference"
        with kernels.using(reference=False, jit=False):
            assert kernels.describe() == "fast (NumPy)"
            with kernels.using(dnnl=False):  # None leaves the others as they are
                assert kernels.describe() == "fast (NumPy)"
        assert kernels.describe() == "reference"
    assert kernels.describe() == before
    with pytest.raises(KeyError, match="inside"):
        with kernels.using(reference=True, jit=False, dnnl=False):
            raise KeyError("inside")
    assert kernels.describe() == before
    assert kernels.fast_enabled()
    with pytest.raises(TypeError, match="jit: expected True, False or None, got 'no'"):
        with kernels.using(jit="no"):
            pass  # pragma: no cover
    assert kernels.describe() == before


def test_backward_follows_the_path_of_the_forward_when_the_switch_flips_between():
    layer = LSTM(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    d = np.random.default_rng(1).standard_normal((5, 2, 4)).astype(np.float32)
    layer.forward(x)
    dx_fast, _ = layer.backward(d)
    layer.forward(x)
    with kernels.using(reference=True, jit=False):
        dx_mixed, _ = layer.backward(d)  # the cache is a fast one: its own backward must run
    np.testing.assert_array_equal(dx_mixed, dx_fast)


def test_reference_env_switch_is_read_at_import(tmp_path):
    import subprocess
    import sys

    code = "from unrolled import kernels; print(kernels.describe())"
    for env, want in (("1", "reference"), ("", "fast")):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={"UNROLLED_REFERENCE": env}
        )
        assert out.stdout.strip().startswith(want), out.stderr


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_two_workers_give_the_one_worker_outputs_and_gradients(kind, split_in_two):
    """The split walks equal the unsplit ones up to float32 summation order (the weight gradients sum
    the slices' rows in another order), with lengths, two layers, both directions (at once, each over its
    own two slices: four workers) and odd slice sizes."""
    pytest.importorskip("unrolled.kernels._jit")
    c = dict(kind=kind, dtype=np.float32, num_layers=2, bidirectional=True, lengths=True, batch_first=False,
             bias=True, T=9, B=7, I=5, H=6, seed=3)  # fmt: skip
    layer = _layer(c)
    threads.set_threads(4)  # the two directions at once, each split across two workers
    split = _run(layer, c, fast=True)
    caches = layer.last_caches()
    assert all(type(cache).__name__ == "SplitCache" for cache in caches.values())
    gates = {k: getattr(cache, "gates", getattr(cache, "dact", None)).copy() for k, cache in caches.items()}
    threads.set_threads(1)
    assert kernels.workers_for(c["T"], c["B"], c["I"], 4, c["H"]) == 1
    whole = _run(layer, c, fast=True)
    assert set(split) == set(whole)
    for k in whole:
        assert_close(split[k], whole[k], 1e-5, err_msg=k)
    for k, cache in layer.last_caches().items():  # a split cache reads as the unsplit one
        assert type(cache).__name__ != "SplitCache"
        assert_close(gates[k], getattr(cache, "gates", getattr(cache, "dact", None)), 1e-6, err_msg=str(k))


@pytest.mark.parametrize("workers", ["started", "none"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_split_workers_reading_one_packed_copy_give_the_own_copies_results_bit_for_bit(
    kind, workers, split_in_two, monkeypatch
):
    """The workers of a split pack W_hh into one copy, a piece each, forward, backward and inference (both
    directions at once: two copies, four tasks; with no worker to be had, all four run in the calling
    thread, one after the other); outputs, states and every gradient equal bit for bit those of each
    worker packing its own copy."""
    _jit = pytest.importorskip("unrolled.kernels._jit")
    if kernels.dnnl_walks() is None:
        pytest.skip("oneDNN (the extra onednn) is not installed")
    from unrolled.kernels import _split

    monkeypatch.setattr(_jit, "SMALL_MACS", 0)  # oneDNN's walks, which pack W_hh, at this small size
    c = dict(kind=kind, dtype=np.float32, num_layers=1, bidirectional=True, lengths=True, batch_first=False,
             bias=True, T=5, B=6, I=8, H=128, seed=5)  # fmt: skip
    layer = _layer(c)
    made = []
    real = _split.shared_pack
    monkeypatch.setattr(_split, "shared_pack", lambda k, W: made.append(real(k, W)) or made[-1])
    threads.set_threads(4)
    if workers == "none":  # as when other callers hold the whole thread budget
        from unrolled.kernels import _pool

        monkeypatch.setattr(_pool, "_take", lambda n: [])
    results = {}
    for shared in (True, False):
        monkeypatch.setattr(_split, "SHARED_PACK", 0 if shared else W_HH_NEVER_SHARED)
        with kernels.using(dnnl=True):
            results[shared] = _run(layer, c, fast=True)
            x = np.random.default_rng(9).standard_normal((c["T"], c["B"], c["I"])).astype(np.float32)
            results[shared]["inference"] = layer(x, need_grad=False)[0]
    assert len(made) == 3 * 2 * 2  # forward, backward, inference; two directions; each mode
    assert [s.shared for s in made[:6]] == [2] * 6  # shared: both workers read the one copy
    assert made[6:] == [None] * 6
    for k, v in results[False].items():
        np.testing.assert_array_equal(results[True][k], v, err_msg=k)


W_HH_NEVER_SHARED = 1 << 62


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_caller_may_change_the_outputs_in_place_without_changing_the_backward(kind, split, split_in_two):
    """The outputs a training forward returns belong to the caller: written over in place, they change
    nothing the backward computes (unsplit they are a copy of the cache's states; split, the joined slices,
    which no cache holds)."""
    pytest.importorskip("unrolled.kernels._jit")
    c = dict(kind=kind, dtype=np.float32, num_layers=2, bidirectional=False, lengths=False, batch_first=False,
             bias=True, T=6, B=6, I=5, H=8, seed=6)  # fmt: skip
    threads.set_threads(2 if split else 1)
    layer = _layer(c)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((c["T"], c["B"], c["I"])).astype(np.float32)
    d_out = rng.standard_normal((c["T"], c["B"], c["H"])).astype(np.float32)
    runs = []
    for scribble in (False, True):
        out, _ = layer.forward(x)
        assert all((type(cache).__name__ == "SplitCache") == split for cache in layer.last_caches().values())
        if scribble:
            out[...] = 1e3
        runs.append((layer.backward(d_out)[0], {k: v.copy() for k, v in layer.grads.items()}))
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[1][1][k], runs[0][1][k], err_msg=k)


_DIRECTION_CELLS = {"lstm": CompiledLSTMCell, "gru": CompiledGRUCell, "rnn": CompiledRNNCell}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_directions_at_once_give_the_one_after_the_other_results_bit_for_bit(kind, split_in_two, monkeypatch):
    """Two workers, a bidirectional stack: the forward and reverse directions of each layer run at the same
    time on different threads, each whole (the same arithmetic as one after the other on one thread), so
    outputs, final states, ∂L/∂x, ∂L/∂state0 and every gradient are bit-equal to the one-worker run."""
    pytest.importorskip("unrolled.kernels._jit")
    import threading

    from unrolled.kernels import _pool

    c = dict(kind=kind, dtype=np.float32, num_layers=2, bidirectional=True, lengths=True, batch_first=True,
             bias=True, T=9, B=7, I=5, H=6, seed=4)  # fmt: skip
    cls = _DIRECTION_CELLS[kind]
    ran: dict[str, set] = {"_forward": set(), "_backward": set()}
    pool_calls: list[int] = []
    for name in ran:
        original = getattr(cls, name)

        def spy(self, *args, _original=original, _name=name):
            ran[_name].add(threading.get_ident())
            return _original(self, *args)

        monkeypatch.setattr(cls, name, spy)
    real_run = _pool.run
    monkeypatch.setattr(_pool, "run", lambda fn, n: pool_calls.append(n) or real_run(fn, n))
    layer = _layer(c)
    assert kernels.direction_slices(c["T"], c["B"], c["I"], cls.gates, c["H"]) == 1
    at_once = _run(layer, c, fast=True)
    assert pool_calls == [2] * 4  # each layer's forward, then each layer's backward: one task per direction
    assert len(ran["_forward"]) >= 2 and len(ran["_backward"]) >= 2  # the walks ran on more than one thread
    assert all(type(cache).__name__ != "SplitCache" for cache in layer.last_caches().values())
    threads.set_threads(1)
    pool_calls.clear()
    one_after_the_other = _run(layer, c, fast=True)
    assert pool_calls == []  # nothing handed to a worker
    for k in at_once:
        np.testing.assert_array_equal(at_once[k], one_after_the_other[k], err_msg=k)


def test_directions_run_at_once_only_with_a_worker_each_and_enough_work(monkeypatch):
    monkeypatch.setattr(kernels, "MIN_SLICE_ROWS", 4)
    monkeypatch.setattr(kernels, "MIN_SLICE_MACS", 1000)
    try:
        threads.set_threads(1)
        assert kernels.direction_slices(10, 64, 8, 4, 8) == 0  # one worker: one direction after the other
        threads.set_threads(2)
        assert kernels.direction_slices(10, 64, 8, 4, 8) == 1  # a worker each, each direction whole
        assert kernels.direction_slices(10, 64, 8, 4, 8, D=1) == 0  # one direction: the batch split's job
        assert kernels.direction_slices(1, 2, 1, 1, 1) == 0  # 4 multiply-adds: not worth a worker
        threads.set_threads(5)
        assert kernels.direction_slices(10, 64, 8, 4, 8) == 2  # 2 × 2 workers of 5; never more than 5
        assert kernels.direction_slices(10, 4, 8, 4, 8) == 1  # 4 rows: no slices below 4 rows
    finally:
        threads.set_threads(None)


def test_workers_follow_the_budget_and_never_split_small_work(monkeypatch):
    monkeypatch.setattr(kernels, "MIN_SLICE_ROWS", 4)
    monkeypatch.setattr(kernels, "MIN_SLICE_MACS", 1000)
    try:
        threads.set_threads(3)
        assert kernels.workers_for(10, 64, 8, 4, 8) == 3  # 64 rows, plenty of work per slice
        assert kernels.workers_for(10, 8, 8, 4, 8) == 2  # 4 rows per slice at least
        assert kernels.workers_for(10, 1, 8, 4, 8) == 1  # one row (streaming, B = 1): never
        assert kernels.workers_for(1, 64, 1, 1, 1) == 1  # 128 multiply-adds in all: not worth a worker
        threads.set_threads(1)
        assert kernels.workers_for(10, 64, 8, 4, 8) == 1
    finally:
        threads.set_threads(None)
