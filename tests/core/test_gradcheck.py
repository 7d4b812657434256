"""BPTT equals central finite differences of the forward pass (float64) for every cell and option:
both GRU variants, ReLU and tanh RNN, 1–3 layers, bidirectional, with and without bias, with h0,
with variable lengths, on both the reference cells and the fast kernels.
The loss is L = Σ out ⊙ d_out + Σ h_n ⊙ d_hn with random d_out, d_hn."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN, kernels

from gradcheck import assert_grad_close, numeric_grad

CASES = [
    ("rnn_tanh", dict(nonlinearity="tanh")),
    ("rnn_relu", dict(nonlinearity="relu")),
    ("lstm", {}),
    ("gru_reset_after", dict(reset_after=True)),
    ("gru_reset_before", dict(reset_after=False)),
]
VARIANTS = [
    dict(num_layers=1, bidirectional=False, bias=True, h0=False, lengths=False),
    dict(num_layers=2, bidirectional=True, bias=True, h0=True, lengths=True),
    dict(num_layers=3, bidirectional=False, bias=False, h0=True, lengths=True),
    dict(num_layers=1, bidirectional=True, bias=False, h0=False, lengths=False),
]


def make_layer(kind: str, opts: dict, I: int, H: int, variant: dict):
    cls = {"rnn": RNN, "lst": LSTM, "gru": GRU}[kind[:3]]
    return cls(
        I,
        H,
        num_layers=variant["num_layers"],
        bias=variant["bias"],
        bidirectional=variant["bidirectional"],
        dtype=np.float64,
        seed=3,
        **opts,
    )


@pytest.mark.parametrize(
    "variant",
    VARIANTS,
    ids=lambda v: (
        f"L{v['num_layers']}{'bi' if v['bidirectional'] else ''}"
        f"{'-nobias' if not v['bias'] else ''}{'-h0' if v['h0'] else ''}{'-len' if v['lengths'] else ''}"
    ),
)
@pytest.mark.parametrize("kind,opts", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_bptt_matches_finite_differences(kind, opts, variant, path):
    with kernels.using(reference=path == "reference"):
        _check_bptt_against_finite_differences(kind, opts, variant)


def _check_bptt_against_finite_differences(kind, opts, variant):
    rng = np.random.default_rng(7)
    T, B, I, H = 4, 3, 2, 3
    layer = make_layer(kind, opts, I, H, variant)
    for v in layer.params.values():  # move biases off zero so their gradients are exercised
        v += 0.3 * rng.standard_normal(v.shape)
    D, L = layer.num_directions, layer.num_layers
    lstm = kind == "lstm"
    x = rng.standard_normal((T, B, I))
    lengths = np.array([4, 2, 3]) if variant["lengths"] else None

    def state():
        return rng.standard_normal((L * D, B, H))

    h0 = ((state(), state()) if lstm else state()) if variant["h0"] else None
    d_out = rng.standard_normal((T, B, D * H))
    d_hn = (state(), state()) if lstm else state()

    def loss() -> float:
        out, h_n = layer.forward(x, h0, lengths)
        hn = h_n if lstm else (h_n,)
        dh = d_hn if lstm else (d_hn,)
        return float((out * d_out).sum() + sum((a * b).sum() for a, b in zip(hn, dh, strict=True)))

    layer.forward(x, h0, lengths)
    dx, d_h0 = layer.backward(d_out, d_hn)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for k, p in layer.params.items():
        assert_grad_close(grads[k], numeric_grad(loss, p), k)
    assert_grad_close(dx, numeric_grad(loss, x), "x")
    if h0 is not None:
        for i, (a, s) in enumerate(zip(d_h0 if lstm else (d_h0,), h0 if lstm else (h0,), strict=True)):
            assert_grad_close(a, numeric_grad(loss, s), f"h0[{i}]")


def test_gradients_past_a_sequence_end_are_ignored():
    rng = np.random.default_rng(0)
    layer = LSTM(2, 3, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 2))
    lengths = [5, 2]
    layer.forward(x, lengths=lengths)
    d_out = rng.standard_normal((5, 2, 6))
    dx1, _ = layer.backward(d_out)
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    d_out[2:, 1] = 99.0  # garbage past sequence 1's end
    layer.forward(x, lengths=lengths)
    dx2, _ = layer.backward(d_out)
    np.testing.assert_array_equal(dx1, dx2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], layer.grads[k])
    assert np.all(dx1[2:, 1] == 0)


def test_padding_does_not_change_a_sequences_result():
    """A sequence's output, final state and gradients are the same alone or padded in a batch."""
    rng = np.random.default_rng(1)
    layer = GRU(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((6, 2, 2))
    out, h_n = layer.forward(x, lengths=[6, 3])
    alone, h_alone = layer.forward(x[:3, 1:2].copy())
    np.testing.assert_allclose(out[:3, 1:2], alone, atol=1e-12)
    np.testing.assert_allclose(h_n[:, 1:2], h_alone, atol=1e-12)
    assert np.all(out[3:, 1] == 0)


def test_parameters_are_live_arrays():
    """An in-place change to layer.params takes effect on the next forward (no stale copies)."""
    layer = RNN(2, 3, dtype=np.float64, seed=0)
    x = np.ones((2, 1, 2))
    before = layer(x)[0].copy()
    layer.params["W_xh_l0"] *= 2
    assert not np.allclose(layer(x)[0], before)
