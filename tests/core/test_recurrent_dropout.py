"""Variational (recurrent) dropout: one mask d per sequence multiplies h_{t-1} where it meets W_hh,
nothing else. BPTT with the mask held fixed equals central finite differences for every cell."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN
from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.models import ModelConfig, SequenceModel

from gradcheck import assert_grad_close, numeric_grad

CELLS = [
    ("rnn_tanh", RNNCell("tanh"), 1),
    ("rnn_relu", RNNCell("relu"), 1),
    ("lstm", LSTMCell(), 4),
    ("gru_reset_after", GRUCell(True), 3),
    ("gru_reset_before", GRUCell(False), 3),
]


def _params(rng, cell, G, I, H):
    p = {
        "W_xh": rng.standard_normal((G * H, I)) * 0.6,
        "W_hh": rng.standard_normal((G * H, H)) * 0.6,
        "b_h": rng.standard_normal(G * H) * 0.3,
    }
    if isinstance(cell, GRUCell) and cell.reset_after:
        p["b_hn"] = rng.standard_normal(H) * 0.3
    return p


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name,cell,G", CELLS, ids=[c[0] for c in CELLS])
def test_cell_bptt_with_recurrent_mask_matches_finite_differences(name, cell, G, lengths):
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 3, 2, 4
    p = _params(rng, cell, G, I, H)
    x = rng.standard_normal((T, B, I))
    state0 = tuple(rng.standard_normal((B, H)) for _ in cell.state_names)
    rec_mask = (rng.random((B, H)) < 0.6) / 0.6  # fixed: the function being differentiated is deterministic
    mask = None
    if lengths:
        mask = (np.arange(T)[:, None] < np.array([5, 2, 4])[None, :]).astype(np.float64)[:, :, None]
    hs, sT, _ = cell.forward(x, state0, p, mask, rec_mask)
    d_hs = rng.standard_normal(hs.shape)
    d_sT = tuple(rng.standard_normal(s.shape) for s in sT)

    def loss():
        hs, sT, _ = cell.forward(x, state0, p, mask, rec_mask)
        return float((hs * d_hs).sum() + sum((s * d).sum() for s, d in zip(sT, d_sT, strict=True)))

    hs, sT, cache = cell.forward(x, state0, p, mask, rec_mask)
    dx, d_state0, grads = cell.backward(d_hs, d_sT, cache, p)
    for k in p:
        assert_grad_close(grads[k], numeric_grad(loss, p[k]), k)
    assert_grad_close(dx, numeric_grad(loss, x), "x")
    for i, s in enumerate(state0):
        assert_grad_close(d_state0[i], numeric_grad(loss, s), f"state0[{i}]")


@pytest.mark.parametrize("name,cell,G", CELLS, ids=[c[0] for c in CELLS])
def test_all_ones_mask_is_no_dropout(name, cell, G):
    rng = np.random.default_rng(1)
    p = _params(rng, cell, G, 2, 3)
    x = rng.standard_normal((4, 2, 2))
    s0 = tuple(rng.standard_normal((2, 3)) for _ in cell.state_names)
    a, _, _ = cell.forward(x, s0, p, None)
    b, _, _ = cell.forward(x, s0, p, None, np.ones((2, 3)))
    np.testing.assert_array_equal(a, b)


def test_zero_mask_cuts_only_the_w_hh_path():
    """With d = 0 the gates see no h_{t-1}; the LSTM cell path c and the GRU carry (1 − z) h_{t-1} remain."""
    rng = np.random.default_rng(2)
    T, B, I, H = 3, 2, 2, 3
    x = rng.standard_normal((T, B, I))
    zero = np.zeros((B, H))
    # RNN: h_t = σ(W_xh x_t + b_h), no recurrence at all.
    p = _params(rng, RNNCell(), 1, I, H)
    hs, _, _ = RNNCell().forward(x, (rng.standard_normal((B, H)),), p, None, zero)
    np.testing.assert_allclose(hs, np.tanh(x @ p["W_xh"].T + p["b_h"]), rtol=1e-12)
    # LSTM: gates from x only, but c_t = f c_{t-1} + i g still carries c.
    p = _params(rng, LSTMCell(), 4, I, H)
    c0 = rng.standard_normal((B, H))
    hs, (hT, cT), _ = LSTMCell().forward(x, (rng.standard_normal((B, H)), c0), p, None, zero)
    a = x @ p["W_xh"].T + p["b_h"]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = c0
    for t in range(T):
        i, f, g, o = (
            sig(a[t, :, :H]),
            sig(a[t, :, H : 2 * H]),
            np.tanh(a[t, :, 2 * H : 3 * H]),
            sig(a[t, :, 3 * H :]),
        )
        c = f * c + i * g
        np.testing.assert_allclose(hs[t], o * np.tanh(c), rtol=1e-12)
    # GRU: h_t = (1 − z) h_{t-1} + z h̃ with z, h̃ from x only.
    p = _params(rng, GRUCell(True), 3, I, H)
    h = rng.standard_normal((B, H))
    hs, _, _ = GRUCell(True).forward(x, (h,), p, None, zero)
    a = x @ p["W_xh"].T + p["b_h"]
    for t in range(T):
        z, r = sig(a[t, :, :H]), sig(a[t, :, H : 2 * H])
        n = np.tanh(a[t, :, 2 * H :] + r * p["b_hn"])
        h = (1 - z) * h + z * n
        np.testing.assert_allclose(hs[t], h, rtol=1e-12)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_layer_draws_one_mask_per_sequence_in_training_only(cls):
    rng = np.random.default_rng(0)
    layer = cls(2, 6, num_layers=2, bidirectional=True, recurrent_dropout=0.5, dtype=np.float64, seed=1)
    plain = cls(2, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((5, 3, 2))
    y, _ = layer.forward(x)
    for cache in layer.last_caches().values():
        m = cache.rec_mask
        assert m.shape == (3, 6) and set(np.unique(m)) <= {0.0, 2.0}
    assert not np.allclose(y, plain.forward(x)[0])
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x)[0], plain.forward(x)[0])


def test_layer_gradients_with_recurrent_dropout_match_finite_differences():
    rng = np.random.default_rng(4)
    layer = LSTM(2, 3, num_layers=2, bidirectional=True, recurrent_dropout=0.4, dtype=np.float64, seed=2)
    x = rng.standard_normal((4, 2, 2))
    lengths = np.array([4, 3])
    state = layer.rng.bit_generator.state

    def run():
        layer.rng.bit_generator.state = state  # the same masks on every call
        return layer.forward(x, lengths=lengths)

    out, _ = run()
    d_out = rng.standard_normal(out.shape)
    loss = lambda: float((run()[0] * d_out).sum())  # noqa: E731
    loss()
    dx, _ = layer.backward(d_out)
    for k, p in layer.params.items():
        assert_grad_close(layer.grads[k], numeric_grad(loss, p), k)
    assert_grad_close(dx, numeric_grad(loss, x), "x")


def test_model_config_recurrent_dropout_reaches_the_layer():
    m = SequenceModel(ModelConfig(vocab_size=4, hidden_size=3, cell="gru", recurrent_dropout=0.25, seed=0))
    assert m.rnn.recurrent_dropout == 0.25
    with pytest.raises(ValueError, match="recurrent_dropout: expected a probability"):
        GRU(2, 3, recurrent_dropout=1.0)
