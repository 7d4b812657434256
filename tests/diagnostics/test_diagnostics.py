"""Gradient-flow diagnostics: Jacobians and products against finite differences of the forward pass
(float64), the αI linear-RNN calibration, and BPTT gradient norms against the layer's own backward."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN
from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.diagnostics import (
    LinearRNNCell,
    activation_bound,
    cpath_factors,
    cpath_log10_norms,
    diagnose,
    fit_gamma,
    gradient_flow,
    jacobian_products,
    linear_rnn,
    memory_horizon,
    pairwise_log10_norms,
    regime,
    step_jacobian,
    step_jacobians,
)

CELLS = [
    ("rnn_tanh", RNNCell("tanh"), 1),
    ("rnn_relu", RNNCell("relu"), 1),
    ("linear", LinearRNNCell(), 1),
    ("lstm", LSTMCell(), 4),
    ("gru_reset_after", GRUCell(True), 3),
    ("gru_reset_before", GRUCell(False), 3),
]


def cell_params(rng, G: int, I: int, H: int, reset_after: bool) -> dict:
    p = {
        "W_xh": rng.standard_normal((G * H, I)),
        "W_hh": rng.standard_normal((G * H, H)) * 0.8,
        "b_h": rng.standard_normal(G * H) * 0.5,
    }
    if reset_after:
        p["b_hn"] = rng.standard_normal(H) * 0.5
    return p


def state0(rng, cell, B, H):
    if isinstance(cell, LSTMCell):
        return (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    return (rng.standard_normal((B, H)),)


def flat(state) -> np.ndarray:
    return np.concatenate(state, axis=1)  # (B, S) = [h ; c]


def unflat(s: np.ndarray, n: int) -> tuple:
    return tuple(np.split(s, n, axis=1))


def run_from(cell, p, x, s, mask, rec_mask=None):
    """s_T of the forward pass over x started from the flat state s (B, S)."""
    n = len(cell.state_names)
    return flat(cell.forward(x, unflat(s, n), p, mask, rec_mask)[1])


def fd_jacobian(f, s: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(B, S_out, S_in) central differences of f (B, S) -> (B, S_out), one input coordinate at a time
    (sequences are independent, so each batch row is its own Jacobian)."""
    B, S = s.shape
    cols = []
    for j in range(S):
        e = np.zeros_like(s)
        e[:, j] = eps
        cols.append((f(s + e) - f(s - e)) / (2 * eps))
    return np.stack(cols, axis=2)


@pytest.mark.parametrize("with_mask", [False, True], ids=["full", "lengths+recdrop"])
@pytest.mark.parametrize("name,cell,G", CELLS, ids=[c[0] for c in CELLS])
def test_step_jacobians_match_finite_differences(name, cell, G, with_mask):
    rng = np.random.default_rng(1)
    T, B, I, H = 5, 3, 2, 4
    p = cell_params(rng, G, I, H, isinstance(cell, GRUCell) and cell.reset_after)
    x = rng.standard_normal((T, B, I))
    mask = rec = None
    if with_mask:  # variable lengths, and a recurrent dropout mask d on h_{t-1} where it meets W_hh
        mask = (np.arange(T)[:, None] < np.array([5, 3, 1])[None, :]).astype(np.float64)[:, :, None]
        rec = (rng.random((B, H)) < 0.6) / 0.6
    _, _, cache = cell.forward(x, state0(rng, cell, B, H), p, mask, rec)
    J = step_jacobians(cell, cache, p)
    S = 2 * H if isinstance(cell, LSTMCell) else H
    assert J.shape == (T, B, S, S) and J.dtype == np.float64
    for t in range(T):
        s_t = flat((cache.hs[t], cache.cs[t]) if isinstance(cell, LSTMCell) else (cache.hs[t],))
        m = None if mask is None else mask[t : t + 1]
        num = fd_jacobian(lambda s, t=t, m=m: run_from(cell, p, x[t : t + 1], s, m, rec), s_t)
        np.testing.assert_allclose(J[t], num, atol=1e-7, rtol=1e-6, err_msg=f"{name} step {t}")
    if with_mask:  # a finished sequence carries its state: the step is the identity
        np.testing.assert_array_equal(J[4, 1], np.eye(S))


@pytest.mark.parametrize("name,cell,G", CELLS, ids=[c[0] for c in CELLS])
def test_jacobian_products_match_finite_differences(name, cell, G):
    rng = np.random.default_rng(2)
    T, B, I, H = 6, 2, 2, 3
    p = cell_params(rng, G, I, H, isinstance(cell, GRUCell) and cell.reset_after)
    p["W_hh"] *= 0.7
    x = rng.standard_normal((T, B, I))
    _, _, cache = cell.forward(x, state0(rng, cell, B, H), p, None)
    prods = jacobian_products(cell, cache, p, keep=True)
    assert prods.products.shape[0] == T + 1
    for k in range(T + 1):
        s_k = flat((cache.hs[k], cache.cs[k]) if isinstance(cell, LSTMCell) else (cache.hs[k],))
        if k == T:
            num = np.broadcast_to(np.eye(s_k.shape[1]), prods.products[k].shape)
        else:
            num = fd_jacobian(lambda s, k=k: run_from(cell, p, x[k:], s, None), s_k)
        np.testing.assert_allclose(prods.products[k], num, atol=1e-7, rtol=1e-5, err_msg=f"{name} k={k}")
        with np.errstate(divide="ignore"):  # a dead ReLU path has norm 0, log10 −inf on both sides
            spec, frob = (
                np.log10(np.linalg.norm(num, ord=2, axis=(1, 2))),
                np.log10(np.linalg.norm(num, axis=(1, 2))),
            )
        np.testing.assert_allclose(prods.log10_spectral[k], spec, atol=1e-6)
        np.testing.assert_allclose(prods.log10_frobenius[k], frob, atol=1e-6)


def test_lstm_cpath_is_the_forget_gate_and_matches_finite_differences_holding_h_fixed():
    rng = np.random.default_rng(3)
    T, B, I, H = 4, 2, 2, 3
    cell, p = LSTMCell(), cell_params(rng, 4, I, H, False)
    x = rng.standard_normal((T, B, I))
    _, _, cache = cell.forward(x, state0(rng, cell, B, H), p, None)
    f = cpath_factors(cache)
    for t in range(T):
        h = cache.hs[t]
        num = fd_jacobian(lambda c, t=t, h=h: cell.step(x[t], (h, c), p)[1], cache.cs[t])
        np.testing.assert_allclose(num, f[t][:, :, None] * np.eye(H), atol=1e-8)
    # The product over the whole span: log10 max_j ∏_t f_{t,j}.
    expect = np.log10(np.prod(f, axis=0).max(axis=1))
    np.testing.assert_allclose(cpath_log10_norms(cache)[0], expect)


@pytest.mark.parametrize("alpha,verdict", [(0.5, "vanishing"), (1.0, "stable"), (1.5, "exploding")])
def test_linear_rnn_alpha_identity_gives_alpha_to_the_distance(alpha, verdict):
    T, H = 40, 5
    layer = linear_rnn(alpha, 3, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, 4, 3))
    diag = diagnose(layer, x)
    (rep,) = diag.reports
    d = np.arange(T + 1)
    np.testing.assert_allclose(rep.log10_spectral, d * np.log10(alpha), atol=1e-9)  # ‖∂h_T/∂h_k‖ = α^{T−k}
    np.testing.assert_allclose(rep.log10_frobenius, d * np.log10(alpha) + 0.5 * np.log10(H), atol=1e-9)
    assert abs(rep.gamma - alpha) <= 0.01 * alpha
    assert rep.regime == verdict
    if alpha < 1:
        assert rep.horizon == int(np.ceil(3 / np.log10(1 / alpha) + 1e-12))  # first d with α^d < 1e-3
        assert rep.horizon_extrapolated == pytest.approx(np.log(1e-3) / np.log(alpha))
    else:
        assert rep.horizon is None and rep.horizon_extrapolated is None
    # A loss on the last step only: ‖∂L/∂h_t‖ = α^{T−t} ‖u‖ with ‖u‖ = 1.
    np.testing.assert_allclose(rep.grad_h, alpha ** (T - d), rtol=1e-9)
    assert verdict.upper() in diag.summary()


def test_linear_rnn_long_span_does_not_underflow():
    layer = linear_rnn(0.1, 1, 2, seed=0)
    (rep,) = diagnose(layer, np.zeros((400, 1, 1)), heatmap=False).reports
    assert rep.log10_spectral[-1] == pytest.approx(-400.0)  # 1e-400 is below float64's range
    assert rep.gamma == pytest.approx(0.1)


LAYERS = [
    ("rnn_tanh", lambda **kw: RNN(3, 4, **kw)),
    ("rnn_relu", lambda **kw: RNN(3, 4, nonlinearity="relu", **kw)),
    ("lstm", lambda **kw: LSTM(3, 4, **kw)),
    ("gru_after", lambda **kw: GRU(3, 4, **kw)),
    ("gru_before", lambda **kw: GRU(3, 4, reset_after=False, **kw)),
]


def _random_state(layer, rng, B):
    LD = layer.num_layers * layer.num_directions
    s = tuple(rng.standard_normal((LD, B, layer.hidden_size)) for _ in range(layer.num_states))
    return s if layer.num_states == 2 else s[0]


@pytest.mark.parametrize("name,make", LAYERS, ids=[c[0] for c in LAYERS])
def test_gradient_norms_equal_the_layers_own_backward_at_every_step(name, make):
    """δ_t − d_t of the diagnostics = d_h0 of the layer's backward over the rest of the sequence started
    from s_t (that run does not contain output t, whose gradient d_t the diagnostics add)."""
    rng = np.random.default_rng(4)
    T, B = 6, 2
    layer = make(num_layers=2, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, B, 3))
    h0 = _random_state(layer, rng, B)
    out, _ = layer.forward(x, h0)
    d_out = rng.standard_normal(out.shape)
    d_hn = _random_state(layer, rng, B)
    flows = gradient_flow(layer, d_out, d_hn)
    H = layer.hidden_size
    caches = [layer.last_caches()[(li, 0)] for li in range(2)]
    for t in range(T):
        states = [np.stack([c.hs[t] for c in caches])]
        if layer.num_states == 2:
            states.append(np.stack([c.cs[t] for c in caches]))
        start = tuple(states) if layer.num_states == 2 else states[0]
        layer.forward(x[t:], start)
        _, d_start = layer.backward(d_out[t:], d_hn)
        d_start = d_start if layer.num_states == 2 else (d_start,)
        for li in range(2):
            fl = flows[(li, 0)]
            direct = fl.direct[t - 1] if t >= 1 else 0.0
            np.testing.assert_allclose(fl.delta[t, :, :H] - direct, d_start[0][li], rtol=1e-9, atol=1e-12)
            if t == 0:
                np.testing.assert_allclose(fl.h[0], np.linalg.norm(d_start[0][li], axis=1), rtol=1e-9)
            if layer.num_states == 2:  # nothing arrives at c_t from outside: all of δc_t is recurrent
                np.testing.assert_allclose(fl.c[t], np.linalg.norm(d_start[1][li], axis=1), rtol=1e-9)
    np.testing.assert_array_equal(flows[(1, 0)].direct, d_out)  # the top layer receives the loss gradient
    # At t = T nothing is left to run: the top layer's δ_T is what arrives at h_T (output T plus h_n).
    d_hT = d_hn[0][1] if layer.num_states == 2 else d_hn[1]
    np.testing.assert_allclose(flows[(1, 0)].delta[T, :, :H], d_hT + d_out[-1], rtol=1e-12)


@pytest.mark.parametrize("name,make", LAYERS, ids=[c[0] for c in LAYERS])
def test_gradient_norms_bidirectional_with_lengths_and_dropouts_end_at_the_layers_d_h0(name, make):
    rng = np.random.default_rng(5)
    T, B = 7, 3
    layer = make(
        num_layers=2, bidirectional=True, dropout=0.4, recurrent_dropout=0.3, dtype=np.float64, seed=2
    )
    x = rng.standard_normal((T, B, 3))
    lengths = np.array([7, 4, 2])
    out, _ = layer.forward(x, _random_state(layer, rng, B), lengths=lengths)
    d_out = rng.standard_normal(out.shape)
    d_hn = _random_state(layer, rng, B)
    flows = gradient_flow(layer, d_out, d_hn)
    grads_before = {k: v.copy() for k, v in layer.grads.items()}
    _, d_h0 = layer.backward(d_out, d_hn)
    d_h0 = d_h0 if layer.num_states == 2 else (d_h0,)
    H = layer.hidden_size
    for (li, d), fl in flows.items():
        k = 2 * li + d
        np.testing.assert_allclose(fl.delta[0, :, :H], d_h0[0][k], rtol=1e-9, atol=1e-12)
        if layer.num_states == 2:
            np.testing.assert_allclose(fl.delta[0, :, H:], d_h0[1][k], rtol=1e-9, atol=1e-12)
    assert sorted(flows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert not any(v.any() for v in grads_before.values())  # gradient_flow leaves layer.grads alone


def test_vanilla_bound_is_an_upper_bound_of_each_step():
    rng = np.random.default_rng(6)
    cell, p = RNNCell("tanh"), cell_params(rng, 1, 2, 5, False)
    _, _, cache = cell.forward(rng.standard_normal((8, 3, 2)), state0(rng, cell, 3, 5), p, None)
    bound = activation_bound(cache, p["W_hh"])
    actual = np.linalg.norm(step_jacobians(cell, cache, p), ord=2, axis=(2, 3))
    assert bound.shape == (8, 3)
    assert (actual <= bound + 1e-12).all()
    assert (actual < 0.999 * bound).any()  # a bound, not the value


def test_pairwise_heatmap_row_agrees_with_products():
    rng = np.random.default_rng(7)
    cell, p = GRUCell(), cell_params(rng, 3, 2, 3, True)
    _, _, cache = cell.forward(rng.standard_normal((9, 2, 2)), state0(rng, cell, 2, 3), p, None)
    times = np.array([0, 3, 6, 9])
    M = pairwise_log10_norms(cell, cache, p, times)
    prods = jacobian_products(cell, cache, p)
    np.testing.assert_allclose(M[-1], prods.log10_spectral[times].mean(axis=1), atol=1e-12)
    end6 = jacobian_products(cell, cache, p, end=6)
    np.testing.assert_allclose(M[2, :3], end6.log10_spectral[times[:3]].mean(axis=1), atol=1e-12)
    assert np.isnan(M[0, 1]) and np.all(np.diag(M) == 0)
    M2 = pairwise_log10_norms(cell, cache, p, np.array([2, 5, 9]), batch=slice(1, 2))  # a grid not from 0
    np.testing.assert_allclose(M2[2, 0], prods.log10_spectral[2, 1], atol=1e-12)
    np.testing.assert_allclose(
        M2[1, 0], jacobian_products(cell, cache, p, end=5).log10_spectral[2, 1], atol=1e-12
    )
    with pytest.raises(ValueError, match="times"):
        pairwise_log10_norms(cell, cache, p, np.array([3, 1]))


def test_fit_horizon_and_regime_on_known_curves():
    d = np.arange(51)
    gamma, a, r2 = fit_gamma(np.log10(2.0) + d * np.log10(0.9))
    assert gamma == pytest.approx(0.9) and a == pytest.approx(np.log10(2.0)) and r2 == pytest.approx(1.0)
    y = d * np.log10(0.9)
    assert memory_horizon(y, 0.9)[0] is None  # 0.9^50 = 5e-3: not yet below 1e-3 within the span
    assert memory_horizon(y, 0.9)[1] == pytest.approx(np.log(1e-3) / np.log(0.9))
    assert memory_horizon(y + 1, 0.9, intercept=1.0)[1] == pytest.approx(np.log(1e-3) / np.log(0.9))
    assert memory_horizon(y, 0.9, intercept=1.0)[1] == pytest.approx(np.log(1e-4) / np.log(0.9))
    assert memory_horizon(d * np.log10(0.5), 0.5)[0] == 10
    assert [regime(g) for g in (0.98, 0.995, 1.0, 1.005, 1.02)] == [
        "vanishing",
        "stable",
        "stable",
        "stable",
        "exploding",
    ]
    assert np.isnan(fit_gamma(np.array([0.0, -np.inf, -np.inf]))[0])


def test_bad_input_raises_one_clear_error():
    layer = RNN(2, 3, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        gradient_flow(layer, np.zeros((4, 1, 3), np.float32))
    layer.forward(np.zeros((4, 1, 2), np.float32))
    with pytest.raises(ValueError, match="d_out"):
        gradient_flow(layer, np.zeros((4, 1, 2), np.float32))
    with pytest.raises(TypeError, match="layer"):
        diagnose(object(), np.zeros((4, 1, 2)))
    with pytest.raises(ValueError, match="tol"):
        diagnose(layer, np.zeros((4, 1, 2), np.float32), tol=2.0)
    with pytest.raises(ValueError, match="x"):
        diagnose(layer, np.zeros((4, 1, 5), np.float32))
    _, _, cache = RNNCell().forward(
        np.zeros((3, 1, 2)), (np.zeros((1, 3)),), layer.direction_params(0, 0), None
    )
    with pytest.raises(IndexError, match="t"):
        step_jacobian(RNNCell(), cache, layer.direction_params(0, 0), 3)


def test_diagnose_restores_training_mode_and_reports_every_direction():
    layer = LSTM(2, 3, num_layers=2, bidirectional=True, dropout=0.5, seed=0)
    x = np.random.default_rng(0).standard_normal((12, 2, 2)).astype(np.float32)
    diag = diagnose(layer, x, heatmap_points=5)
    assert layer.training
    assert [(r.layer, r.direction) for r in diag.reports] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    r = diag.reports[0]
    assert r.log10_cpath is not None and r.gamma_cpath is not None and r.bound is None
    assert set(r.spectrum.spectral_radius) == {"i", "f", "g", "o"}
    assert r.heatmap.shape == (5, 5)
    assert "layer 1 reverse" in diag.summary()
    assert diag.to_dict()["reports"][0]["regime"] == r.regime


def test_spectral_norm_and_the_spectral_grid_of_long_sequences():
    from unrolled.diagnostics.jacobians import spectral_norm

    P = np.random.default_rng(8).standard_normal((3, 7, 7))
    np.testing.assert_allclose(spectral_norm(P), np.linalg.norm(P, ord=2, axis=(1, 2)), rtol=1e-12)
    layer = GRU(2, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(9).standard_normal((50, 2, 2))
    full = diagnose(layer, x, heatmap=False).reports[0]
    grid = diagnose(layer, x, heatmap=False, spectral_points=11).reports[0]
    have = np.isfinite(grid.log10_spectral)
    assert have.sum() == 12 and have[[0, 1, 25, 50]].all()  # 11 evenly spaced distances, plus d = 1
    np.testing.assert_allclose(grid.log10_spectral[have], full.log10_spectral[have], atol=1e-12)
    np.testing.assert_allclose(grid.log10_frobenius, full.log10_frobenius)
    assert grid.gamma == pytest.approx(full.gamma, rel=0.02)


@pytest.mark.parametrize(
    "make", [lambda: RNN(2, 5, seed=0), lambda: LSTM(2, 5, seed=0), lambda: GRU(2, 5, seed=0)]
)
def test_fast_kernels_caches_give_the_reference_diagnosis(make):
    """The layers may run a fast kernel (float32 by default); the diagnostics read its cache alike."""
    from unrolled import kernels

    x = np.random.default_rng(10).standard_normal((30, 3, 2)).astype(np.float32)
    fast = diagnose(make(), x, heatmap=False).reports[0]
    with kernels.using(reference=True):
        ref = diagnose(make(), x, heatmap=False).reports[0]
    np.testing.assert_allclose(fast.log10_spectral, ref.log10_spectral, atol=1e-4)
    np.testing.assert_allclose(fast.grad_h, ref.grad_h, rtol=1e-4, atol=1e-9)
    assert fast.gamma == pytest.approx(ref.gamma, rel=1e-4)


def test_batch_first_and_lengths_are_diagnosed_like_the_time_major_layer():
    x = np.random.default_rng(11).standard_normal((9, 3, 2))
    lengths = np.array([9, 6, 4])
    tm = diagnose(LSTM(2, 3, dtype=np.float64, seed=5), x, lengths=lengths, heatmap=False).reports[0]
    layer_bf = LSTM(2, 3, batch_first=True, dtype=np.float64, seed=5)
    bf = diagnose(layer_bf, x.transpose(1, 0, 2).copy(), lengths=lengths, heatmap=False).reports[0]
    np.testing.assert_allclose(bf.log10_spectral, tm.log10_spectral, atol=1e-12)
    np.testing.assert_allclose(bf.grad_h, tm.grad_h, rtol=1e-12)
    # Sequence 2 ends after 4 steps: from T back to its end the product is the identity.
    norms = jacobian_products(layer_bf.cell, layer_bf.last_caches()[(0, 0)], layer_bf.direction_params(0, 0))
    np.testing.assert_allclose(norms.log10_spectral[4:, 2], 0.0, atol=1e-12)


def test_a_gradient_that_shrinks_but_outlives_the_input_is_decaying_not_vanishing():
    # α = 0.95 over T = 100: γ = 0.95 is in the vanishing band, but 0.95^100 = 6e-3 stays above 10⁻³, so the
    # horizon is "> 100 steps": the verdict beside it must not say VANISHING.
    layer = linear_rnn(0.95, 3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((100, 2, 3))
    (rep,) = diagnose(layer, x, heatmap=False).reports
    assert rep.regime == "vanishing" and rep.horizon is None
    assert rep.verdict == "decaying" and rep.to_dict()["verdict"] == "decaying"
    text = rep.summary()
    assert "VANISHING" not in text and "verdict: DECAYING" in text and "memory horizon > 100 steps" in text
    assert "not vanishing within this input" in text


def test_a_gradient_that_falls_below_a_thousandth_within_the_input_is_vanishing():
    layer = linear_rnn(0.5, 3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((40, 2, 3))
    (rep,) = diagnose(layer, x, heatmap=False).reports
    assert rep.horizon == 10 and rep.verdict == "vanishing" and "verdict: VANISHING" in rep.summary()


@pytest.mark.parametrize(
    "gamma_regime,horizon,expected",
    [
        ("vanishing", None, "decaying"),
        ("vanishing", 12, "vanishing"),
        ("stable", None, "stable"),
        ("stable", 3, "vanishing"),  # a drop the fit of γ smooths out: lost within the input all the same
        ("exploding", None, "exploding"),
        ("undetermined", None, "undetermined"),
    ],
)
def test_the_verdict_agrees_with_the_measured_horizon(gamma_regime, horizon, expected):
    from unrolled.diagnostics import verdict

    assert verdict(gamma_regime, horizon) == expected


def test_diagnose_reports_each_stage_on_stderr_only_when_asked(capsys):
    layer = linear_rnn(0.9, 3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((30, 2, 3))
    diagnose(layer, x)
    assert capsys.readouterr().err == ""
    diagnose(layer, x, progress=True)
    err = capsys.readouterr().err
    assert "diagnose: Jacobian products ∂s_T/∂s_k" in err and "30/30" in err
    assert "diagnose: heatmap of 31 times" in err and "496/496" in err  # n(n+1)/2 spectral norms
