"""Linear head, Embedding and losses: values against definitions, gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import Linear, cross_entropy, mse, softmax
from unrolled.nn import Embedding

from gradcheck import assert_grad_close, numeric_grad


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    lin = Linear(4, 3, dtype=np.float64, seed=0)
    lin.params["b"] += rng.standard_normal(3)
    x = rng.standard_normal((5, 2, 4))
    dy = rng.standard_normal((5, 2, 3))

    def loss():
        return float((lin(x) * dy).sum())

    lin(x)
    dx = lin.backward(dy)
    for k, p in lin.params.items():
        assert_grad_close(lin.grads[k].copy(), numeric_grad(loss, p), k)
    assert_grad_close(dx, numeric_grad(loss, x), "x")


def test_mse_value_and_gradient_with_mask():
    rng = np.random.default_rng(1)
    pred, target = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]])
    loss, grad = mse(pred, target, mask)
    valid = mask.astype(bool)
    assert loss == pytest.approx(((pred - target)[valid] ** 2).mean())
    assert_grad_close(grad, numeric_grad(lambda: mse(pred, target, mask)[0], pred), "pred")


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4, 5)) * 3
    target = rng.integers(0, 5, size=(3, 4))
    mask = rng.integers(0, 2, size=(3, 4))
    mask[0, 0] = 1
    loss, grad = cross_entropy(logits, target, mask)
    p = softmax(logits)
    nll = -np.log(np.take_along_axis(p, target[..., None], -1)[..., 0])
    assert loss == pytest.approx((nll * mask).sum() / mask.sum())
    assert_grad_close(grad, numeric_grad(lambda: cross_entropy(logits, target, mask)[0], logits), "logits")


def test_sigmoid_cross_entropy_value_gradient_and_extreme_logits():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4, 2, 3)) * 4
    target = rng.integers(0, 2, size=logits.shape).astype(np.float64)
    loss, grad = cross_entropy(logits, target, output="sigmoid")
    s = 1 / (1 + np.exp(-logits))
    assert loss == pytest.approx(-(target * np.log(s) + (1 - target) * np.log(1 - s)).mean())
    assert_grad_close(
        grad, numeric_grad(lambda: cross_entropy(logits, target, output="sigmoid")[0], logits), "a"
    )
    big = np.array([[1000.0, -1000.0]])
    loss, grad = cross_entropy(big, np.array([[0.0, 1.0]]), output="sigmoid")
    assert np.isfinite(loss) and loss == pytest.approx(1000.0)


def test_loss_input_errors():
    with pytest.raises(ValueError, match="target: expected class ids in 0..2"):
        cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="target: expected integer class ids"):
        cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="mask: expected shape"):
        mse(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), mask=np.ones(2))
    with pytest.raises(ValueError, match="output: expected 'softmax' or 'sigmoid'"):
        cross_entropy(np.zeros((2, 3)), np.array([0, 1]), output="tanh")


def test_embedding_backward_scatter_adds_repeated_ids():
    rng = np.random.default_rng(0)
    emb = Embedding(5, 3, dtype=np.float64, seed=1)
    ids = np.array([[0, 2, 2], [4, 2, 0]])
    d = rng.standard_normal((2, 3, 3))
    np.testing.assert_array_equal(emb.forward(ids), emb.params["W"][ids])
    emb.backward(d)
    num = numeric_grad(lambda: float((emb.forward(ids) * d).sum()), emb.params["W"])
    assert_grad_close(emb.grads["W"], num, "embed.W")
    np.testing.assert_allclose(emb.grads["W"][2], d[0, 1] + d[0, 2] + d[1, 1])
    np.testing.assert_array_equal(emb.grads["W"][[1, 3]], 0)


def test_embedding_rejects_out_of_range_and_float_ids():
    emb = Embedding(5, 3)
    with pytest.raises(ValueError, match=r"ids: expected token ids in 0..4, got 0..5"):
        emb.forward(np.array([0, 5]))
    with pytest.raises(ValueError, match="ids: expected an integer ndarray of token ids, got float64"):
        emb.forward(np.array([0.0]))


def test_lecun_uniform_draws_within_its_bound_with_variance_one_over_fan_in():
    from unrolled.init import lecun_uniform

    W = lecun_uniform(np.random.default_rng(0), 400, 50)
    assert W.shape == (400, 50) and np.abs(W).max() <= np.sqrt(3 / 50)
    np.testing.assert_allclose(W.var(), 1 / 50, rtol=0.02)  # U(−a, a) has variance a²/3


def test_linear_draws_its_weights_with_the_given_initialiser():
    from unrolled.init import lecun_uniform

    lin = Linear(6, 3, dtype=np.float64, seed=5, init=lecun_uniform)
    np.testing.assert_array_equal(lin.params["W"], lecun_uniform(np.random.default_rng(5), 3, 6))
    np.testing.assert_array_equal(lin.params["b"], 0)
    with pytest.raises(ValueError, match="in_features: expected a positive integer, got 0"):
        Linear(0, 3)
