"""The public layer API other packages build on: key, direction_params, config, last_caches, on_direction."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN

from gradcheck import assert_grad_close, numeric_grad

MAKERS = [
    ("rnn", lambda **kw: RNN(3, 4, nonlinearity="relu", **kw)),
    ("lstm", lambda **kw: LSTM(3, 4, **kw)),
    ("gru", lambda **kw: GRU(3, 4, reset_after=False, **kw)),
]
IDS = [m[0] for m in MAKERS]


def _states(layer, rng, B):
    LD, H = layer.num_layers * layer.num_directions, layer.hidden_size
    s = tuple(rng.standard_normal((LD, B, H)).astype(layer.dtype) for _ in range(layer.num_states))
    return s if layer.num_states == 2 else s[0]


def _pack(layer, states: tuple):
    return states if layer.num_states == 2 else states[0]


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def test_key_names_every_parameter_as_torch_does():
    layer = GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    assert layer.key("W_hh", 1, 1) == "W_hh_l1_reverse"
    assert layer.key("W_xh", 0) == "W_xh_l0"
    keys = {layer.key(n, li, d) for li in range(2) for d in range(2) for n in ("W_xh", "W_hh", "b_h", "b_hn")}
    assert keys == set(layer.params)


@pytest.mark.parametrize(
    "args,match",
    [
        (("W_hh", 2, 0), r"layer: expected an index in 0\.\.1, got 2"),
        (("W_hh", 0, 1), "direction: expected 0 .*, got 1"),
        (("W_hy", 0, 0), "name: expected one of 'W_xh', 'W_hh', 'b_h', 'b_hn', .*got 'W_hy'"),
    ],
)
def test_key_refuses_a_layer_direction_or_name_the_layer_does_not_have(args, match):
    with pytest.raises(ValueError, match=match):
        LSTM(3, 4, num_layers=2, seed=0).key(*args)


def test_direction_params_are_the_live_arrays_under_the_cells_names():
    layer = LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    p = layer.direction_params(1, 1)
    assert set(p) == {"W_xh", "W_hh", "b_h"}
    for name, arr in p.items():
        assert arr is layer.params[layer.key(name, 1, 1)]
    p["W_hh"][0, 0] = 7.0
    assert layer.params["W_hh_l1_reverse"][0, 0] == 7.0
    assert set(LSTM(3, 4, bias=False, seed=0).direction_params(0, 0)) == {"W_xh", "W_hh"}
    with pytest.raises(ValueError, match="direction"):
        LSTM(3, 4, seed=0).direction_params(0, 1)


@pytest.mark.parametrize("need_grad", [True, False], ids=["training forward", "inference"])
def test_a_parameter_array_replaced_in_params_is_the_one_the_next_forward_uses(need_grad):
    """The layer looks up which parameters each direction has once, but their arrays on every call."""
    layer = GRU(3, 4, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    before, _ = layer.forward(x, need_grad=need_grad)
    twin = GRU(3, 4, num_layers=2, seed=1)
    for k in layer.params:
        layer.params[k] = twin.params[k].copy()  # new arrays, not written into the old ones
    after, _ = layer.forward(x, need_grad=need_grad)
    np.testing.assert_array_equal(after, twin.forward(x, need_grad=need_grad)[0])
    assert not np.array_equal(after, before)


@pytest.mark.parametrize("name,make", MAKERS, ids=IDS)
def test_config_builds_a_layer_that_computes_the_same_after_copying_the_weights(name, make):
    rng = np.random.default_rng(0)
    layer = make(num_layers=2, bidirectional=True, batch_first=True, dropout=0.25, dtype=np.float64, seed=1)
    cfg = layer.config
    assert json.loads(json.dumps(cfg)) == cfg  # JSON values only: a checkpoint can store it
    twin = type(layer)(**cfg, seed=2)
    assert twin.config == cfg
    assert not np.array_equal(twin.params["W_hh_l1_reverse"], layer.params["W_hh_l1_reverse"])  # own seed
    for li in range(layer.num_layers):
        for d in range(layer.num_directions):
            for n, arr in layer.direction_params(li, d).items():
                twin.direction_params(li, d)[n][...] = arr
    x = rng.standard_normal((3, 5, 3))
    h0, lengths = _states(layer, rng, 3), np.array([5, 2, 4])
    layer.eval(), twin.eval()
    out, h_n = layer.forward(x, h0, lengths)
    out2, h_n2 = twin.forward(x, h0, lengths)
    np.testing.assert_array_equal(out2, out)
    for a, b in zip(_as_tuple(h_n2), _as_tuple(h_n), strict=True):
        np.testing.assert_array_equal(a, b)


def test_config_keeps_the_cells_own_options():
    assert RNN(2, 3, nonlinearity="relu").config["nonlinearity"] == "relu"
    assert GRU(2, 3, reset_after=False).config["reset_after"] is False
    assert "nonlinearity" not in LSTM(2, 3).config and "seed" not in LSTM(2, 3).config
    assert LSTM(2, 3, dtype=np.float64, recurrent_dropout=0.5).config["recurrent_dropout"] == 0.5


def test_constructors_keep_torchs_named_parameters_in_torchs_order():
    common = ["input_size", "hidden_size", "num_layers"]
    rest = ["bias", "batch_first", "dropout", "bidirectional", "dtype", "seed"]
    rnn_extra = ["recurrent_dropout", "zoneout"]
    assert list(inspect.signature(RNN).parameters) == common + ["nonlinearity"] + rest + rnn_extra
    lstm_extra = ["recurrent_dropout", "proj_size", "peephole", "layer_norm", "zoneout"]
    assert list(inspect.signature(LSTM).parameters) == common + rest + lstm_extra
    gru_extra = ["reset_after", "recurrent_dropout", "layer_norm", "zoneout"]
    assert list(inspect.signature(GRU).parameters) == common + rest + gru_extra
    layer = RNN(3, 4, 2, "relu", False, True, 0.5, True, np.float64, 0, 0.25)  # positional, as torch allows
    assert layer.config == dict(
        input_size=3,
        hidden_size=4,
        num_layers=2,
        bias=False,
        batch_first=True,
        dropout=0.5,
        bidirectional=True,
        dtype="float64",
        recurrent_dropout=0.25,
        zoneout=0.0,
        nonlinearity="relu",
    )


def test_last_caches_hold_each_directions_states_in_its_own_time_order():
    layer = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        layer.last_caches()
    out, _ = layer.forward(np.random.default_rng(0).standard_normal((6, 2, 3)))
    caches = layer.last_caches()
    assert sorted(caches) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    np.testing.assert_array_equal(caches[(1, 0)].hs[1:], out[:, :, :4])  # hs[0] is the initial state
    np.testing.assert_array_equal(caches[(1, 1)].hs[1:][::-1], out[:, :, 4:])


@pytest.mark.parametrize("name,make", MAKERS, ids=IDS)
def test_on_direction_observes_the_gradient_reaching_each_layers_outputs(name, make):
    """What the hook sees at layer 0 is ∂L/∂y0 (layer 0's output, i.e. layer 1's input), checked by
    central differences through a one-layer twin of layer 1 built from its config and weights."""
    rng = np.random.default_rng(3)
    T, B, H = 4, 2, 4
    stack = make(num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    x, lengths = rng.standard_normal((T, B, 3)), np.array([4, 2])
    h0 = _as_tuple(_states(stack, rng, B))
    out, _ = stack.forward(x, _pack(stack, h0), lengths)
    d_out, d_hn = rng.standard_normal(out.shape), _as_tuple(_states(stack, rng, B))
    seen = {}

    def observe(li, d, d_hs, d_state_T):
        seen[(li, d)] = (d_hs.copy(), tuple(s.copy() for s in d_state_T))

    dx, _ = stack.backward(d_out, _pack(stack, d_hn), on_direction=observe)
    assert list(seen) == [(1, 0), (1, 1), (0, 0), (0, 1)]  # the walk's order: top layer first
    grads = {k: v.copy() for k, v in stack.grads.items()}
    dx_plain, _ = stack.backward(d_out, _pack(stack, d_hn))
    np.testing.assert_array_equal(dx, dx_plain)  # observing changes nothing
    for k, v in grads.items():
        np.testing.assert_array_equal(stack.grads[k], v)

    top = type(stack)(**{**stack.config, "input_size": 2 * H, "num_layers": 1})
    for d in range(2):
        for n, arr in stack.direction_params(1, d).items():
            top.direction_params(0, d)[n][...] = arr
    low = type(stack)(**{**stack.config, "num_layers": 1})
    for d in range(2):
        for n, arr in stack.direction_params(0, d).items():
            low.direction_params(0, d)[n][...] = arr
    y0, _ = low.forward(x, _pack(low, tuple(s[:2] for s in h0)), lengths)

    def loss() -> float:
        o, hn = top.forward(y0, _pack(top, tuple(s[2:] for s in h0)), lengths)
        pairs = zip(_as_tuple(hn), d_hn, strict=True)
        return float((o * d_out).sum() + sum((a * b[2:]).sum() for a, b in pairs))

    dy0 = numeric_grad(loss, y0)  # (T, B, 2H) = ∂L/∂(layer 0's output)
    rev = np.zeros_like(dy0[:, :, H:])  # the reverse direction's time order, within each length
    for b, n in enumerate(lengths):
        rev[:n, b] = dy0[n - 1 :: -1, b, H:]
    assert_grad_close(seen[(0, 0)][0], dy0[:, :, :H], "d_hs forward")
    assert_grad_close(seen[(0, 1)][0], rev, "d_hs reverse")
    for d in range(2):
        for got, want in zip(seen[(0, d)][1], d_hn, strict=True):
            np.testing.assert_array_equal(got, want[d])  # layer 0's final state only feeds h_n
