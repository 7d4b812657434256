"""The layer contract beyond gradients: streaming step(), dropout, initialisation, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNN(3, 4, 3, nonlinearity="relu", seed=1),
        lambda: LSTM(3, 4, 2, seed=1),
        lambda: GRU(3, 4, 2, seed=1),
        lambda: GRU(3, 4, 1, reset_after=False, dtype=np.float64, seed=1),
    ],
)
def test_step_by_step_equals_forward_over_the_sequence(make):
    layer = make()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 2, 3)).astype(layer.dtype)
    out, h_n = layer.forward(x)
    state = None
    for t in range(7):
        y, state = layer.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=1e-5, atol=1e-6)
    for a, b in zip(
        state if isinstance(state, tuple) else (state,),
        h_n if isinstance(h_n, tuple) else (h_n,),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_step_refuses_a_bidirectional_layer():
    with pytest.raises(RuntimeError, match="bidirectional"):
        LSTM(2, 3, bidirectional=True).step(np.zeros((1, 2), np.float32))


def test_dropout_only_in_training_mode_and_reproducible_and_consistent_with_backward():
    x = np.random.default_rng(0).standard_normal((5, 3, 2))
    a = GRU(2, 8, num_layers=3, dropout=0.5, dtype=np.float64, seed=4)
    b = GRU(2, 8, num_layers=3, dropout=0.5, dtype=np.float64, seed=4)
    out_a, out_b = a(x)[0], b(x)[0]
    np.testing.assert_array_equal(out_a, out_b)  # same seed, same masks
    assert not np.allclose(a(x)[0], out_a)  # a fresh mask on each training forward
    a.eval()
    e1, e2 = a(x)[0], a(x)[0]
    np.testing.assert_array_equal(e1, e2)  # no dropout in eval mode
    # The backward uses the forward's masks: finite differences with the masks held fixed.
    a.train()
    state = a.rng.bit_generator.state
    d_out = np.random.default_rng(1).standard_normal(out_a.shape)

    def loss():
        a.rng.bit_generator.state = state
        return float((a(x)[0] * d_out).sum())

    loss()
    dx, _ = a.backward(d_out)
    eps, i = 1e-6, (2, 1, 0)
    x[i] += eps
    fp = loss()
    x[i] -= 2 * eps
    fm = loss()
    x[i] += eps
    assert abs((fp - fm) / (2 * eps) - dx[i]) < 1e-6


def test_initialisation_orthogonal_recurrent_glorot_input_zero_bias_forget_one():
    layer = LSTM(5, 6, seed=0, dtype=np.float64)
    W_hh = layer.params["W_hh_l0"]
    for g in range(4):
        block = W_hh[g * 6 : (g + 1) * 6]
        np.testing.assert_allclose(block @ block.T, np.eye(6), atol=1e-12)
    limit = np.sqrt(6 / (5 + 6))
    assert np.abs(layer.params["W_xh_l0"]).max() <= limit
    b = layer.params["b_h_l0"]
    np.testing.assert_array_equal(b[6:12], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[6:12]), 0.0)
    again = LSTM(5, 6, seed=0, dtype=np.float64)
    for k in layer.params:
        np.testing.assert_array_equal(layer.params[k], again.params[k])


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda l: l.forward(np.zeros((4, 2), np.float32)), ValueError, r"x: expected 3 dimensions"),
        (
            lambda l: l.forward(np.zeros((4, 2, 5), np.float32)),
            ValueError,
            r"x: expected shape \(\*, \*, 3\)",
        ),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float64)),
            ValueError,
            "x: expected dtype float32, got float64",
        ),
        (lambda l: l.forward([[[0.0] * 3]]), TypeError, "x: expected a numpy.ndarray"),
        (lambda l: l.forward(np.full((4, 2, 3), np.nan, np.float32)), ValueError, "x: contains NaN"),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32)),
            ValueError,
            "h0: expected a tuple",
        ),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float32), (np.zeros((1, 3, 4), np.float32),) * 2),
            ValueError,
            r"h0\[0\]: expected shape \(1, 2, 4\), got \(1, 3, 4\)",
        ),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float32), lengths=[4]),
            ValueError,
            "lengths: expected 2",
        ),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float32), lengths=[4, 5]),
            ValueError,
            r"lengths: expected values in 1\.\.4",
        ),
        (lambda l: l.forward(np.zeros((4, 2, 3), np.float32), lengths=[0, 2]), ValueError, "lengths"),
        (
            lambda l: l.forward(np.zeros((4, 2, 3), np.float32), lengths=[1.5, 2]),
            ValueError,
            "lengths: expected integers",
        ),
        (
            lambda l: l.backward(np.zeros((4, 2, 4), np.float32)),
            RuntimeError,
            "backward: called before forward",
        ),
        (
            lambda l: (
                l.forward(np.zeros((4, 2, 3), np.float32)),
                l.backward(np.zeros((4, 2, 5), np.float32)),
            ),
            ValueError,
            r"d_out: expected shape \(4, 2, 4\), got \(4, 2, 5\)",
        ),
        (
            lambda l: (
                l.forward(np.zeros((4, 2, 3), np.float32)),
                l.backward(np.zeros((4, 2, 4), np.float32), 1.0),
            ),
            ValueError,
            "d_hn: expected a tuple",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_argument(call, exc, match):
    layer = LSTM(3, 4, seed=0)
    with pytest.raises(exc, match=match):
        call(layer)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_size=0, hidden_size=3), "input_size: expected a positive integer"),
        (dict(input_size=2, hidden_size=3, num_layers=0), "num_layers"),
        (dict(input_size=2, hidden_size=3, dropout=1.0), "dropout: expected a probability"),
        (dict(input_size=2, hidden_size=3, dtype=np.int32), "dtype: expected float32 or float64"),
        (
            dict(input_size=2, hidden_size=3, nonlinearity="sigmoid"),
            "nonlinearity: expected 'tanh' or 'relu'",
        ),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNN(**kwargs)


def test_batch_first_is_the_transpose_of_time_major():
    rng = np.random.default_rng(0)
    a = GRU(3, 4, 2, bidirectional=True, seed=2)
    b = GRU(3, 4, 2, bidirectional=True, batch_first=True, seed=2)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out_a, h_a = a(x, lengths=[5, 3])
    out_b, h_b = b(x.transpose(1, 0, 2).copy(), lengths=[5, 3])
    np.testing.assert_allclose(out_b, out_a.transpose(1, 0, 2), atol=1e-6)
    np.testing.assert_allclose(h_b, h_a, atol=1e-6)
    d = rng.standard_normal(out_a.shape).astype(np.float32)
    dx_a, _ = a.backward(d)
    dx_b, _ = b.backward(d.transpose(1, 0, 2).copy())
    np.testing.assert_allclose(dx_b, dx_a.transpose(1, 0, 2), atol=1e-6)
