"""The inference path (``forward(..., need_grad=False)`` / ``with unrolled.inference():``): outputs equal to
the training forward's bit for bit on every path, no backward cache kept, buffers reused, and a clear error
from a backward that has nothing to walk."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import unrolled
from unrolled import kernels, threads
from unrolled.kernels import _common

CELLS = {"lstm": unrolled.LSTM, "gru": unrolled.GRU, "rnn": unrolled.RNN}


@pytest.fixture(params=["dnnl-sequence", "numba-sequence", "numba-step", "split", "numpy", "reference"])
def path(request, monkeypatch):
    """Which path the layers run: oneDNN's whole-sequence walks, matmul_nt's, a BLAS product and a gate
    kernel per step, the batch split across two workers, the NumPy fast cells, the reference cells. The
    input projections go in chunks of two steps, so every walk crosses chunk boundaries."""
    name = request.param
    monkeypatch.setattr(_common, "PROJECT_CHUNK", 1)
    monkeypatch.setattr(_common, "MIN_CHUNK_ROWS", 2)
    if name in ("numpy", "reference"):
        with kernels.using(reference=name == "reference", jit=False):
            yield name
        return
    _jit = pytest.importorskip("unrolled.kernels._jit")
    dnnl = name == "dnnl-sequence"
    if dnnl:
        if kernels.dnnl_walks() is None:
            pytest.skip("oneDNN (the extra onednn) is not installed")
        monkeypatch.setattr(_jit, "SMALL_MACS", 0)
    elif name == "split":
        monkeypatch.setattr(kernels, "MIN_SLICE_ROWS", 1)
        monkeypatch.setattr(kernels, "MIN_SLICE_MACS", 0)
        threads.set_threads(2)
    else:
        monkeypatch.setattr(_jit, "SMALL_MACS", -1)  # never oneDNN's
        monkeypatch.setattr(_jit, "whole_sequence", lambda B, G, H, w=name == "numba-sequence": w)
    try:
        with kernels.using(reference=False, jit=True, dnnl=dnnl):
            yield name
    finally:
        threads.set_threads(None)


def _states(s) -> tuple:
    return s if isinstance(s, tuple) else (s,)


def test_inference_outputs_equal_the_training_forward_bit_for_bit(path):
    """float32 over cells × layers × directions × lengths × B = 1 / batched, on each path."""
    rng = np.random.default_rng(0)
    cases = itertools.product(CELLS, (1, 2), (False, True), (5, 1), (1, 3), (False, True))
    for cell, L, bi, T, B, lens in cases:
        if lens and (B == 1 or T == 1):
            continue
        layer = CELLS[cell](4, 6, num_layers=L, bidirectional=bi, seed=1)
        x = rng.standard_normal((T, B, 4), dtype=np.float32)
        h0 = rng.standard_normal((L * (2 if bi else 1), B, 6), dtype=np.float32)
        h0 = (h0, h0 * 0.5) if cell == "lstm" else h0
        lengths = [T, T - 2, 1][:B] if lens else None
        out, hn = layer(x, h0, lengths)
        out_i, hn_i = layer(x, h0, lengths, need_grad=False)
        where = f"{path} {cell} L{L} bi={bi} T={T} B={B} lengths={lengths}"
        assert out_i.dtype == np.float32 and np.array_equal(out_i, out), where
        assert all(np.array_equal(a, b) for a, b in zip(_states(hn_i), _states(hn), strict=True)), where


def test_inference_forward_keeps_no_cache_and_backward_says_why():
    layer = unrolled.LSTM(3, 5, seed=0)
    x = np.ones((4, 2, 3), dtype=np.float32)
    layer(x, need_grad=False)
    with pytest.raises(RuntimeError, match="no backward cache.*need_grad=True"):
        layer.backward(np.ones((4, 2, 5), dtype=np.float32))
    with pytest.raises(RuntimeError, match="no backward cache"):
        layer.last_caches()
    layer(x)  # a training forward brings backward back
    dx, _ = layer.backward(np.ones((4, 2, 5), dtype=np.float32))
    assert dx.shape == x.shape


def test_the_inference_block_sets_the_default_and_need_grad_overrides_it():
    layer = unrolled.GRU(3, 5, seed=0)
    x = np.ones((4, 1, 3), dtype=np.float32)
    with unrolled.inference():
        with unrolled.inference():  # blocks nest
            layer(x)
        assert layer._cache is None
        layer(x, need_grad=True)
        assert layer._cache is not None
    layer(x)
    assert layer._cache is not None  # outside the block: training forwards again
    with pytest.raises(TypeError, match="need_grad"):
        layer(x, need_grad="no")


def test_inference_outputs_are_the_callers_own_arrays():
    """Two calls reuse the walks' buffers, never the outputs: the first call's results stay as they were."""
    layer = unrolled.LSTM(3, 8, seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((6, 2, 3), dtype=np.float32) for _ in range(2))
    out1, (h1, c1) = layer(x1, need_grad=False)
    kept = out1.copy(), h1.copy(), c1.copy()
    layer(x2, need_grad=False)
    assert all(np.array_equal(a, b) for a, b in zip((out1, h1, c1), kept, strict=True))


def test_scratch_buffers_are_reused_and_grown():
    a = _common.scratch("test", (2, 3), np.float32)
    b = _common.scratch("test", (3, 2), np.float32)
    assert b.base is a.base  # the same memory, another shape
    c = _common.scratch("test", (4, 4), np.float32)
    assert c.shape == (4, 4) and c.size == 16


def test_chunks_cover_small_sequences_in_one_product_and_bound_large_ones():
    assert _common.chunk_steps(100, 1, 1024) == 100  # one product for B=1
    n = _common.chunk_steps(100, 64, 2048)
    assert n * 64 >= _common.MIN_CHUNK_ROWS and n < 100


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(kernels._compiled() is None, reason="Numba is not installed (the compiled path)")
def test_an_inference_forward_peaks_at_under_a_third_of_a_training_forward():
    """NumPy's allocations (tracemalloc), second call of each (buffers already reused), 2 layers."""
    layer = unrolled.LSTM(16, 64, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((100, 8, 16), dtype=np.float32)
    layer(x, need_grad=False)
    train = _peak(lambda: layer(x))
    layer._cache = None
    infer = _peak(lambda: layer(x, need_grad=False))
    assert infer <= train / 3, (infer, train)


def test_a_sequence_model_runs_the_inference_path_too():
    from unrolled.models import ModelConfig, SequenceModel

    model = SequenceModel(ModelConfig(vocab_size=6, embed_dim=4, hidden_size=5, seed=0))
    ids = np.random.default_rng(0).integers(0, 6, (7, 3))
    y, state = model(ids)
    y_i, state_i = model(ids, need_grad=False)
    assert np.array_equal(y_i, y) and all(np.array_equal(a, b) for a, b in zip(state_i, state, strict=True))
    with pytest.raises(RuntimeError, match="no backward cache"):
        model.backward(np.ones_like(y))
    with unrolled.inference():
        assert np.array_equal(model(ids)[0], y)
    assert model.rnn._cache is None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_mode_dropout_runs_the_inference_path_on_every_layer(cell):
    """With dropout between layers (training mode) the same masks are drawn, the outputs agree, and no
    layer keeps a cache (recurrent dropout runs the reference cell, its cache dropped)."""
    layer = CELLS[cell](3, 5, num_layers=3, dropout=0.5, recurrent_dropout=0.25, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2, 3), dtype=np.float32)
    state = layer.rng.bit_generator.state
    out, _ = layer(x)
    layer.rng.bit_generator.state = state
    out_i, _ = layer(x, need_grad=False)
    assert np.array_equal(out_i, out)
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="no backward cache"):
        layer.backward(np.ones_like(out))
