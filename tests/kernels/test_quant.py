"""Quantised weights: the int8 / bf16 formats, and the compiled step and sequence walk that read them.

The compiled kernels must compute exactly the dequantised arithmetic: the reference is a float64 layer
whose W_xh / W_hh are the dequantised Ŵ, run through the reference cells (the readable equations). Every
compiled shape here has two layers, so the kernels compile once per cell and format.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import unrolled
from unrolled import kernels
from unrolled.kernels.quantized import (
    QuantizedWeights,
    dequantize,
    from_bf16,
    quantize_rows_int8,
    to_bf16,
)

from conftest import require_torch

CELLS = {
    "lstm": lambda **kw: unrolled.LSTM(5, 16, num_layers=2, seed=3, **kw),
    "gru": lambda **kw: unrolled.GRU(5, 16, num_layers=2, seed=3, **kw),
    "rnn": lambda **kw: unrolled.RNN(5, 16, num_layers=2, seed=3, **kw),
    "rnn-relu": lambda **kw: unrolled.RNN(5, 16, num_layers=2, seed=3, nonlinearity="relu", **kw),
}


@pytest.fixture(autouse=True)
def small_weights_everywhere(request, monkeypatch):
    """The kernel tests below run the small-weight kernels at every shape; a layer otherwise reads them only
    where they are faster than float32 (QuantizedWeights.pays, tested at the end of this file)."""
    if "where_it_pays" not in request.node.name:
        monkeypatch.setattr(QuantizedWeights, "pays", lambda self, B, H, stepping: True)


def float64_reference(q_layer):
    """A float64 copy of a quantised layer: its params are the dequantised Ŵ (and the float biases)."""
    cfg = {**q_layer.config, "dtype": "float64"}
    ref = type(q_layer)(**cfg)
    for k, v in q_layer.params.items():
        ref.params[k][...] = v
    return ref.eval()


def inputs(T=7, B=3, I=5, seed=1):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)


# ------------------------------------------------------------------------------------------ formats
def test_int8_rows_are_symmetric_with_scale_max_over_127():
    W = np.random.default_rng(0).standard_normal((9, 13)).astype(np.float32)
    W[4] = 0  # an all-zero row keeps scale 1 and codes 0
    q, s = quantize_rows_int8(W)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (9,)
    nonzero = np.arange(9) != 4
    np.testing.assert_allclose(s[nonzero], np.abs(W[nonzero]).max(1) / 127, rtol=1e-7)
    assert s[4] == 1 and not q[4].any()
    assert (np.abs(q[nonzero]).max(1) == 127).all()  # each row uses the full range
    assert (np.abs(q.astype(np.int32)) <= 127).all()
    err = np.abs(W - s[:, None].astype(np.float64) * q)  # round to nearest: within half a step
    assert (err <= s[:, None] / 2 * (1 + 1e-6)).all()
    np.testing.assert_array_equal(dequantize(q, s), (q.astype(np.float32) * s[:, None]))


def test_bf16_rounds_to_nearest_even_as_torch_does():
    torch = require_torch()
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((64, 33)) * np.exp(rng.uniform(-20, 20, (64, 33)))).astype(np.float32)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130], np.float32)  # halfway cases, subnormal
    for a in (W, ties[None]):
        theirs = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(to_bf16(a), theirs)
    np.testing.assert_array_equal(from_bf16(to_bf16(ties[None]))[0, :3], [1, 1 + 2**-6, -1])


def test_bad_weights_are_refused_by_name():
    with pytest.raises(ValueError, match="W: expected a 2-D float"):
        quantize_rows_int8(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="W: expected finite"):
        quantize_rows_int8(np.array([[np.nan]], np.float32))
    q, s = quantize_rows_int8(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="W_xh_l0: expected row scales float32"):
        QuantizedWeights("int8", {"W_xh_l0": q}, {"W_xh_l0": s[:3]})
    with pytest.raises(ValueError, match="expected a 2-D uint16 matrix for bf16"):
        QuantizedWeights("bf16", {"W_xh_l0": q}, {"W_xh_l0": s})
    with pytest.raises(ValueError, match="kind: expected one of"):
        QuantizedWeights("int4", {}, {})


# --------------------------------------------------------------------------------- compiled paths
@pytest.mark.parametrize("kind", ["int8", "bf16"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_walk_and_step_compute_the_dequantised_arithmetic(cell, kind):
    q = unrolled.quantize(CELLS[cell](), kind)
    x = inputs()
    ref = float64_reference(q)
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal((2, 3, 16)).astype(np.float32) * 0.5
    state0 = (h0, h0[::-1].copy()) if cell == "lstm" else h0
    want, want_n = ref.forward(x.astype(np.float64), _as64(state0))
    got, got_n = q.forward(x, state0)
    assert q._cache is None  # the small-weight walk ran (the cells would leave a cache)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    for a, b in zip(_parts(got_n), _parts(want_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    state, ys = state0, []
    for t in range(x.shape[0]):
        y, state = q.step(x[t], state)
        ys.append(y)
    np.testing.assert_allclose(np.stack(ys), want, rtol=0, atol=2e-6)
    for a, b in zip(_parts(state), _parts(want_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def _as64(state):
    return (
        tuple(s.astype(np.float64) for s in state) if isinstance(state, tuple) else state.astype(np.float64)
    )


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


def test_the_compiled_step_reads_the_small_weights_not_params():
    """Proof that the kernel path is the one that ran: change Ŵ in params, the step does not move."""
    q = unrolled.quantize(CELLS["lstm"](), "int8")
    x = inputs()[0]
    y0, _ = q.step(x)
    for k in q.quantized.stored:
        q.params[k] *= 2
    y1, _ = q.step(x)
    np.testing.assert_array_equal(y0, y1)
    with kernels.using(jit=False):  # the cells read params
        y2, _ = q.step(x)
    assert np.abs(y2 - y0).max() > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_paths_the_kernels_do_not_serve_run_the_cells_on_the_dequantised_weights(cell):
    """Bidirectional, packed lengths, and the compiled path switched off: the same Ŵ through the cells."""
    x = inputs()
    lengths = np.array([7, 4, 2])
    bi = unrolled.quantize(CELLS[cell](bidirectional=True), "int8")
    want, _ = float64_reference(bi).forward(x.astype(np.float64), None, lengths)
    np.testing.assert_allclose(bi.forward(x, None, lengths)[0], want, rtol=0, atol=2e-6)
    uni = unrolled.quantize(CELLS[cell](), "bf16")
    compiled, _ = uni.forward(x)
    with kernels.using(jit=False):
        plain, _ = uni.forward(x)
    np.testing.assert_allclose(compiled, plain, rtol=0, atol=2e-6)


# The error of quantising: relative to the scale of the values (max |h|), at random orthogonal/Glorot
# initial weights. Per-row int8 rounds each weight within s/2 = max|W_r|/254; bf16 keeps 8 bits of
# mantissa (relative error ≤ 2^-9). Measured here: int8 ~4e-3, bf16 ~2e-3 of max |h| after 7 steps.
STATED_ERROR = {"int8": 0.02, "bf16": 0.01}


@pytest.mark.parametrize("kind", ["int8", "bf16"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_outputs_stay_within_the_stated_error_of_float32(cell, kind):
    layer = CELLS[cell]().eval()
    x = inputs()
    want, _ = layer.forward(x)
    got, _ = unrolled.quantize(layer, kind).forward(x)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert 1e-5 < rel <= STATED_ERROR[kind]  # a difference there is (the weights changed), and small


# ------------------------------------------------------------------------- the vector mat-vec kernel
# bf16: _qdots reads 8 rows at a time in 16-lane float32 vectors, then the rows left (G % 8) one by one,
# and the last K % 16 columns in scalar code. int8: exact integer products of Q with x cut into two int16
# digits, 32 columns a chunk, int32 lanes folded every 2048 columns, the last K % 32 columns scalar. The
# shapes below cover each part alone and together.
def _compiled_qdots():
    from numba import njit

    from unrolled.kernels import _quant

    @njit(cache=False)
    def qdots(Q, s, x, out, bias):
        _quant._qdots(Q, s, x, out, bias)

    return qdots


def _small(kind, W):
    G = W.shape[0]
    return quantize_rows_int8(W) if kind == "int8" else (to_bf16(W), np.ones(G, np.float32))


@pytest.mark.parametrize("kind", ["int8", "bf16"])
@pytest.mark.parametrize(
    "G, K", [(1, 1), (8, 16), (13, 37), (24, 100), (40, 15), (7, 48), (16, 64), (9, 2048), (11, 4133)]
)
def test_the_mat_vec_kernel_equals_float64_on_every_row_and_column(G, K, kind):
    qdots = _compiled_qdots()
    rng = np.random.default_rng(G * 1000 + K)
    W = rng.standard_normal((G, K)).astype(np.float32)
    Q, s = _small(kind, W)
    x = rng.standard_normal((3, K)).astype(np.float32)
    bias = rng.standard_normal(G).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(Q, s).astype(np.float64).T
    for b in (bias, np.empty(0, np.float32)):
        out = np.full((3, G), np.nan, np.float32)
        qdots(Q, s, x, out, b)
        expect = want + (b.astype(np.float64) if b.size else 0)
        err = np.abs(out - expect)
        if kind == "bf16":  # float32 sums: relative to the size of the terms summed
            scale = np.abs(x).sum(axis=1, keepdims=True) * np.abs(dequantize(Q, s)).max()
            assert (err / scale).max() < 1e-6, f"max error {(err / scale).max():.2e} of the terms' scale"
        else:  # exact sums but for x's digits; the float32 Ŵ = fl(s·Q) here; two roundings to float32
            Wabs = np.abs(dequantize(Q, s)).astype(np.float64)
            digits = np.abs(x).max(axis=1, keepdims=True) * Wabs.sum(axis=1) * 2.0**-30
            w_rounding = 2.0**-24 * (np.abs(x) @ Wabs.T)
            rounding = 2.0**-23 * (np.abs(expect) + np.abs(b if b.size else 0))
            assert (err <= digits + w_rounding + rounding).all(), f"max error {err.max():.2e}"


@pytest.mark.parametrize("sign", [1, -1])
def test_the_int8_lanes_do_not_overflow_at_the_largest_weights_and_inputs(sign):
    """Every weight ±127 and every input at the row's maximum: each int32 lane then holds the most it can
    (2,130,641,408 after a block of 2048 columns, folded to four lanes); K spans several blocks."""
    K = 3 * 2048 + 40
    Q = np.full((9, K), 127 * sign, np.int8)
    s = np.linspace(0.5, 2.0, 9).astype(np.float32)
    x = np.full((2, K), 3.0, np.float32)
    x[1] *= -1
    out = np.zeros((2, 9), np.float32)
    _compiled_qdots()(Q, s, x, out, np.empty(0, np.float32))
    want = (x.astype(np.float64) @ (Q.astype(np.float64) * s[:, None]).T).astype(np.float32)
    np.testing.assert_allclose(out, want, rtol=2**-23, atol=0)


def test_the_int8_product_keeps_float32_precision_at_any_scale_of_x():
    """x is cut into digits relative to its own maximum (in float64): a tiny (partly subnormal) or huge
    row loses nothing, a zero row gives the bias, and a row with NaN or inf gives NaN without touching
    the others."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((10, 70)).astype(np.float32)
    Q, s = quantize_rows_int8(W)
    base = rng.standard_normal(70)
    x = np.stack([base * 1e-38, base * 1e30, np.zeros(70), base, base]).astype(np.float32)
    x[3, 5], x[4, 9] = np.nan, np.inf
    out = np.zeros((5, 10), np.float32)
    _compiled_qdots()(Q, s, x, out, np.empty(0, np.float32))
    Wq = dequantize(Q, s).astype(np.float64)
    for n in (0, 1):
        np.testing.assert_allclose(out[n], x[n].astype(np.float64) @ Wq.T, rtol=1e-6, atol=1e-44)
    np.testing.assert_array_equal(out[2], 0)
    assert np.isnan(out[3:]).all()
    bias = rng.standard_normal(10).astype(np.float32)
    _compiled_qdots()(Q, s, x, out, bias)
    np.testing.assert_array_equal(out[2], bias)
    assert np.isnan(out[3:]).all()


@pytest.mark.parametrize("kind", ["int8", "bf16"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("I, H", [(1, 1), (37, 13), (9, 33)])
def test_the_compiled_step_and_walk_match_on_odd_sizes(cell, kind, I, H):
    layer = {"lstm": unrolled.LSTM, "gru": unrolled.GRU, "rnn": unrolled.RNN}[cell](
        I, H, num_layers=2, seed=4
    )
    q = unrolled.quantize(layer, kind)
    ref = float64_reference(q)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, I)).astype(np.float32)
    want, want_n = ref.forward(x.astype(np.float64))
    got, _ = q.forward(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    state, ys = None, []
    for t in range(x.shape[0]):
        xt = np.asfortranarray(x[t])  # not C-contiguous where B, I > 1: the step copies it
        out = q.quantized.step(q, xt, state)
        assert out is not None  # the compiled step served it
        y, state = out
        ys.append(y)
    np.testing.assert_allclose(np.stack(ys), want, rtol=0, atol=2e-6)
    for a, b in zip(_parts(state), _parts(want_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 CPU names")
@pytest.mark.parametrize("cpu", ["x86-64", "haswell"])
def test_the_mat_vec_kernel_is_right_compiled_for_older_x86_cpus(cpu, tmp_path):
    """The vector IR is lowered for the host: compiled for plain x86-64 (SSE2, no FMA) and for Haswell
    (AVX2, no AVX-512) it must give the same numbers (a user's CPU may have neither AVX-512 nor FMA)."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        f"{__file__}",
        "-k",
        "mat_vec_kernel_equals",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


# --------------------------------------------------------------------- where the small weights pay
def test_a_layer_reads_the_small_weights_only_where_it_pays():
    """A step at H = 256 and B = 1 reads Q (doubling the params moves nothing); at H = 128, or with more
    rows than the kind's limit, and a whole sequence at B > 1, the float32 path runs on Ŵ (the params)."""
    from unrolled.kernels import quantized

    rng = np.random.default_rng(0)
    for kind in ("int8", "bf16"):
        for H, B, stepping, small in [
            (256, 1, True, True),
            (256, quantized.MAX_STEP_B[kind], True, True),
            (256, quantized.MAX_STEP_B[kind] + 1, True, False),
            (128, 1, True, False),
            (128, 1, False, True),
            (128, 2, False, False),
        ]:
            q = unrolled.quantize(unrolled.LSTM(8, H, seed=0), kind)
            assert q.quantized.pays(B, H, stepping) is small
            x = rng.standard_normal((3, B, 8)).astype(np.float32)
            run = (lambda q=q, x=x: q.step(x[0])[0]) if stepping else (lambda q=q, x=x: q.forward(x)[0])
            before = run()
            for k in q.quantized.stored:
                q.params[k] *= 2
            moved = np.abs(run() - before).max() > 1e-3
            assert moved is not small, (kind, H, B, stepping)
            for k in q.quantized.stored:
                q.params[k] /= 2  # exact: a power of two
            np.testing.assert_array_equal(run(), before)
