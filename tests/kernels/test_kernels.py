"""The fast kernels equal the reference cells: forward outputs, final states, ∂L/∂x, ∂L/∂state0 and every
parameter gradient, on random configurations (lengths, bidirectional, several layers, float32 and float64),
and the one-step streaming API. Also: the one decision point (pick / owner), the switches and the
``using`` block that sets them, and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN, kernels
from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.kernels.gru import CompiledGRUCell, FastGRUCell
from unrolled.kernels.lstm import CompiledLSTMCell, FastLSTMCell
from unrolled.kernels.rnn import CompiledRNNCell, FastRNNCell

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
        for jit in ("dnnl-sequence", "numba-sequence", "numba-step", "numpy"):
            if jit == "numpy" or c["dtype"] == np.float32:  # the compiled paths are float32 only
                yield pytest.param(c, jit, id="{kind}-{dtype.__name__}-L{num_layers}-".format(**c) + jit)


@pytest.mark.parametrize(("c", "jit"), list(_paths()))
def test_fast_path_matches_reference_forward_and_every_gradient(c, jit, monkeypatch):
    """dnnl-sequence: the whole walk in one compiled call with oneDNN's product (extra ``onednn``);
    numba-sequence: the same with matmul_nt; numba-step: a BLAS product and one compiled gate kernel per
    step; numpy: the NumPy fast path (float64, or float32 with Numba switched off)."""
    if jit != "numpy":
        _jit = pytest.importorskip("unrolled.kernels._jit")
        if jit == "dnnl-sequence":
            if kernels.dnnl_walks() is None:
                pytest.skip("oneDNN (the extra onednn) is not installed")
            monkeypatch.setattr(_jit, "SMALL_MACS", 0)  # every size counts as large: oneDNN's walks
        else:
            whole = jit == "numba-sequence"
            monkeypatch.setattr(_jit, "whole_sequence", lambda B, G, H: whole)
    layer = _layer(c)
    ref = _run(layer, c, fast=False)
    with kernels.using(dnnl=jit == "dnnl-sequence"):
        fast = _run(layer, c, fast=True, jit=jit != "numpy")
    assert set(ref) == set(fast)
    tol = TOL[c["dtype"]]
    for k in ref:
        assert fast[k].dtype == ref[k].dtype, k
        np.testing.assert_allclose(fast[k], ref[k], rtol=tol, atol=tol, err_msg=k)


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
