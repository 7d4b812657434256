"""The compiled layer-normalised LSTM and GRU (:mod:`unrolled.kernels.layernorm`) equal the reference variant
cells: outputs, final states, ∂L/∂x, ∂L/∂state0 and every parameter gradient (W_xh, W_hh, b_h, b_hn and
every LN gain γ and bias β), on random configurations (lengths, initial state or none, bidirectional,
stacked, batch_first), on each walk: one compiled call over all steps (matmul_nt), a BLAS product plus one
compiled kernel per step, the same one call with oneDNN's product, and the batch split across two workers.

Every parameter, biases and LN β included, is moved to a random value (a zero bias hides a bug in its
gradient); the upstream gradients are random. Tolerance relative to the values' scale: LN's backward
cancels (δâ − mean(δâ) − â·mean(δâ ⊙ â)), so float32 loses a few more digits than the plain cells.
"""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, kernels, threads

from conftest import assert_close

pytest.importorskip("numba")

TOL = 5e-4  # × max(1, max|reference|)
WALKS = ("dnnl", "sequence", "step", "split")


def _configs(n=12):
    rng = np.random.default_rng(21)
    out = []
    for i in range(n):
        out.append(
            dict(
                kind=("lstm", "gru")[i % 2],
                T=int(rng.integers(1, 12)),
                B=int(rng.integers(2, 7)),
                I=int(rng.integers(1, 9)),
                H=int(rng.integers(1, 12)),
                num_layers=int(rng.integers(1, 3)),
                bidirectional=bool(i % 3 == 1),
                lengths=bool(i % 4 >= 2),
                state0=bool(i % 5 != 0),
                batch_first=bool(i % 6 == 5),
                bias=bool(i % 7 != 3),  # one configuration without biases
                seed=i,
            )
        )
    return out


def _layer(c):
    kw = dict(
        num_layers=c["num_layers"], bidirectional=c["bidirectional"], batch_first=c["batch_first"],
        bias=c["bias"], dtype=np.float32, seed=c["seed"], layer_norm=True,
    )  # fmt: skip
    layer = (LSTM if c["kind"] == "lstm" else GRU)(c["I"], c["H"], **kw)
    rng = np.random.default_rng(c["seed"] + 500)
    for v in layer.params.values():  # every weight, bias, γ and β away from its initial value
        v += (0.5 * rng.standard_normal(v.shape)).astype(v.dtype)
    return layer


def _run(layer, c, reference: bool):
    """Forward + backward with random upstream gradients on one path; everything it returns, as a dict."""
    rng = np.random.default_rng(c["seed"] + 1000)
    T, B, H = c["T"], c["B"], c["H"]
    D = 2 if c["bidirectional"] else 1
    LD = c["num_layers"] * D
    x = rng.standard_normal((B, T, c["I"]) if c["batch_first"] else (T, B, c["I"])).astype(np.float32)
    n_states = 2 if c["kind"] == "lstm" else 1
    pack = (lambda s: s) if n_states == 2 else (lambda s: s[0])
    h0 = tuple(rng.standard_normal((LD, B, H)).astype(np.float32) for _ in range(n_states))
    d_hn = tuple(rng.standard_normal((LD, B, H)).astype(np.float32) for _ in range(n_states))
    lengths = rng.integers(1, T + 1, size=B) if c["lengths"] else None
    if lengths is not None:
        lengths[0] = T
    d_out = rng.standard_normal((B, T, D * H) if c["batch_first"] else (T, B, D * H)).astype(np.float32)
    with kernels.using(reference=reference):
        if c["state0"]:
            out, hn = layer.forward(x, pack(h0), lengths)
        else:
            out, hn = layer.forward(x, lengths=lengths)
        caches = {type(cache).__name__ for cache in layer.last_caches().values()}
        dx, dh0 = layer.backward(d_out, pack(d_hn))
    res = {"out": out, "dx": dx}
    hn, dh0 = (hn, dh0) if n_states == 2 else ((hn,), (dh0,))
    for i in range(n_states):
        res[f"h_n[{i}]"], res[f"d_h0[{i}]"] = hn[i], dh0[i]
    res.update({f"grad {k}": v.copy() for k, v in layer.grads.items()})
    return res, caches


@pytest.fixture
def walk(request, monkeypatch):
    """Pins the walk the compiled LN cells take (the batch split: two workers for every B ≥ 2)."""
    from unrolled.kernels import _jit

    if request.param == "dnnl":
        if kernels.dnnl_walks() is None:
            pytest.skip("oneDNN (the extra onednn) is not installed")
        monkeypatch.setattr(_jit, "SMALL_MACS", 0)  # every size counts as large: oneDNN's walks
    elif request.param == "split":
        monkeypatch.setattr(kernels, "MIN_SLICE_ROWS", 1)
        monkeypatch.setattr(kernels, "MIN_SLICE_MACS", 0)
        threads.set_threads(2)
    if request.param in ("sequence", "step"):  # matmul_nt in one call, or BLAS and a kernel per step
        monkeypatch.setattr(kernels, "dnnl_walks", lambda: None)
        whole = request.param == "sequence"
        monkeypatch.setattr(_jit, "whole_sequence", lambda B, G, H: whole)
    yield request.param
    if request.param == "split":
        threads.set_threads(None)


def _id(c):
    return (
        "{kind}-T{T}-B{B}-I{I}-H{H}-L{num_layers}".format(**c)
        + "-bi" * c["bidirectional"]
        + ("-lengths" * c["lengths"] + "-nostate" * (not c["state0"]) + "-nobias" * (not c["bias"]))
    )


@pytest.mark.parametrize("walk", WALKS, indirect=True)
@pytest.mark.parametrize("c", _configs(), ids=_id)
def test_compiled_layer_norm_cells_match_the_reference_forward_and_every_gradient(c, walk):
    layer = _layer(c)
    ref, ref_caches = _run(layer, c, reference=True)
    fast, fast_caches = _run(layer, c, reference=False)
    kind = "LSTM" if c["kind"] == "lstm" else "GRU"
    assert ref_caches == {f"{kind}VariantCache"}
    assert fast_caches <= {f"CompiledLN{kind}Cache", "SplitCache"}, fast_caches
    if walk == "split" and not c["bidirectional"]:  # (both directions at once: one worker each)
        assert fast_caches == {"SplitCache"}
    assert set(ref) == set(fast)
    names = {k for k in ref if k.startswith("grad ")}
    for want in ("W_xh", "W_hh", "ln_x_g", "ln_x_b", "ln_h_g", "ln_h_b") + (
        ("ln_c_g", "ln_c_b") if kind == "LSTM" else ()
    ):
        assert any(k.startswith(f"grad {want}_") for k in names), (want, names)
    if c["bias"]:
        assert any(k.startswith("grad b_h_") for k in names)
    for k in ref:
        assert fast[k].dtype == ref[k].dtype == np.float32, k
        assert_close(fast[k], ref[k], TOL, err_msg=k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_compiled_layer_norm_step_and_inference_equal_the_training_forward(kind):
    """``layer.step`` (one compiled walk of one step) streams what ``forward`` computes; the inference
    forward (no backward cache) equals the training forward bit for bit."""
    c = dict(kind=kind, I=5, H=7, num_layers=2, bidirectional=False, batch_first=False, bias=True, seed=3)
    layer = _layer(c)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    out, h_n = layer.forward(x)
    with kernels.using(reference=False):
        state = None
        for t in range(6):
            y, state = layer.step(x[t], state) if state is not None else layer.step(x[t])
            assert_close(y, out[t], 1e-5, err_msg=f"step {t}")
        import unrolled

        with unrolled.inference():
            out_inf, _ = layer.forward(x)
    np.testing.assert_array_equal(out_inf, out)


def test_owner_returns_the_compiled_backward_for_its_cache():
    from unrolled.cells import GRUVariantCell, LSTMVariantCell
    from unrolled.kernels.layernorm import CompiledLNGRUCell, CompiledLNLSTMCell

    for cell, cls, n in (
        (LSTMVariantCell(layer_norm=True), CompiledLNLSTMCell, 2),
        (GRUVariantCell(), CompiledLNGRUCell, 1),
    ):
        fast = kernels.pick(cell, np.float32)
        assert type(fast) is cls
        G = cell.gates
        rng = np.random.default_rng(0)
        p = {"W_xh": rng.standard_normal((G * 3, 2)), "W_hh": rng.standard_normal((G * 3, 3))}
        p.update({k: rng.standard_normal(s) for k, s in cell.extra_params(3).items()})
        p = {k: v.astype(np.float32) for k, v in p.items()}
        x = rng.standard_normal((4, 2, 2)).astype(np.float32)
        state0 = tuple(np.zeros((2, 3), np.float32) for _ in range(n))
        _, _, cache = fast.forward(x, state0, p, None)
        assert kernels.owner(cell, cache) is fast
        _, _, ref_cache = cell.forward(x, state0, p, None)
        assert kernels.owner(cell, ref_cache) is cell
