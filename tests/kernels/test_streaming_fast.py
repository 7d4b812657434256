"""step()'s lean streaming path (kernels/streaming.py, running the *_stack kernels of kernels/_jit.py): same
results as the cells, used exactly where it should be, live parameters, unchanged error messages, fresh
output arrays."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN, kernels

pytest.importorskip("numba", reason="Numba not installed: no compiled streaming path")

MAKERS = {
    "lstm": lambda I, H, L, bias: LSTM(I, H, L, bias=bias, seed=3),
    "gru": lambda I, H, L, bias: GRU(I, H, L, bias=bias, seed=3),
    "rnn_tanh": lambda I, H, L, bias: RNN(I, H, L, bias=bias, seed=3),
    "rnn_relu": lambda I, H, L, bias: RNN(I, H, L, nonlinearity="relu", bias=bias, seed=3),
}


def _states(s):
    return s if isinstance(s, tuple) else (s,)


@pytest.fixture
def calls(monkeypatch):
    """Count the calls of each compiled streaming kernel (layers built after this see the wrappers)."""
    from unrolled.kernels import _jit

    counts = {}
    for name in ("lstm_stack", "gru_stack", "rnn_stack"):
        real = getattr(_jit, name)

        def counted(*args, real=real, name=name):
            counts[name] = counts.get(name, 0) + 1
            return real(*args)

        monkeypatch.setattr(_jit, name, counted)
    return counts


def _randomize(layer, rng):
    """Non-zero biases (the defaults are mostly zero), so a dropped bias term would show."""
    for k, v in layer.params.items():
        if k.startswith("b_"):
            v[...] = rng.uniform(-0.5, 0.5, v.shape)


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("L,I,H,B,bias", [(1, 4, 5, 1, True), (2, 7, 13, 3, False), (3, 3, 33, 1, True)])
def test_lean_path_equals_reference_cells_and_forward(kind, L, I, H, B, bias, calls):
    rng = np.random.default_rng(L * 100 + H)
    layer = MAKERS[kind](I, H, L, bias)
    _randomize(layer, rng)
    T = 5
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = tuple(rng.standard_normal((L, B, H)).astype(np.float32) for _ in range(layer.num_states))
    state0 = h0 if layer.num_states == 2 else h0[0]
    out, h_n = layer.forward(x, state0)
    fast, ref = [], []
    state = state0
    for t in range(T):
        y, state = layer.step(x[t], state)
        fast.append((y, state))
    assert sum(calls.values()) == T
    with kernels.using(reference=True):
        state = state0
        for t in range(T):
            y, state = layer.step(x[t], state)
            ref.append((y, state))
    assert sum(calls.values()) == T  # the reference mode did not call the kernels
    for t in range(T):
        (yf, sf), (yr, sr) = fast[t], ref[t]
        assert yf.shape == (B, H) and yf.dtype == np.float32
        np.testing.assert_allclose(yf, yr, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(yf, out[t], rtol=2e-5, atol=2e-5)
        assert type(sf) is type(sr)
        for a, b in zip(_states(sf), _states(sr), strict=True):
            assert a.shape == (L, B, H) and a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    for a, b in zip(_states(fast[-1][1]), _states(h_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("H", [8, 64, 130])
def test_larger_sizes_and_a_first_step_from_none(H):
    rng = np.random.default_rng(H)
    for layer in (LSTM(H, H, 2, seed=0), GRU(H, H, seed=0), RNN(H, H, seed=0)):
        _randomize(layer, rng)
        x = rng.standard_normal((1, H)).astype(np.float32)
        y1, s1 = layer.step(x)
        y2, s2 = layer.step(x, s1)
        with kernels.using(reference=True):
            r1, q1 = layer.step(x)
            r2, q2 = layer.step(x, q1)
        np.testing.assert_allclose(y1, r1, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(y2, r2, rtol=2e-5, atol=2e-5)
        for a, b in zip(_states(s2), _states(q2), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_non_contiguous_input_and_a_list_state(calls):
    rng = np.random.default_rng(0)
    layer = LSTM(3, 6, 2, seed=1)
    x = rng.standard_normal((2, 6)).astype(np.float32)[:, ::2]  # (2, 3), not C-contiguous
    h = rng.standard_normal((2, 2, 6)).astype(np.float32)
    c = rng.standard_normal((2, 2, 6)).astype(np.float32)
    y, (hn, cn) = layer.step(x, [h, c])
    assert calls == {"lstm_stack": 1}
    with kernels.using(reference=True):
        yr, (hr, cr) = layer.step(np.ascontiguousarray(x), (h, c))
    np.testing.assert_allclose(y, yr, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(cn, cr, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTM(3, 4, dtype=np.float64, seed=0),
        lambda: GRU(3, 4, dtype=np.float64, seed=0),
        lambda: RNN(3, 4, dtype=np.float64, seed=0),
        lambda: GRU(3, 4, reset_after=False, seed=0),
    ],
)
def test_not_used_for_float64_or_classic_gru(make, calls):
    layer = make()
    x = np.ones((1, 3), layer.dtype)
    y, s = layer.step(x)
    layer.step(x, s)
    assert calls == {}
    assert y.dtype == layer.dtype


def test_not_used_in_reference_or_no_jit_mode_switched_at_any_time(calls):
    layer = GRU(3, 4, seed=0)
    x = np.ones((1, 3), np.float32)
    _, s = layer.step(x)
    assert calls == {"gru_stack": 1}
    for switch in ({"reference": True}, {"jit": False}):
        with kernels.using(**switch):
            y_off, _ = layer.step(x, s)
        assert calls == {"gru_stack": 1}, switch
        y_on, _ = layer.step(x, s)
        assert calls == {"gru_stack": 2}, switch
        calls["gru_stack"] = 1
        np.testing.assert_allclose(y_off, y_on, rtol=2e-5, atol=2e-5)


def test_replaced_and_in_place_changed_params_are_seen():
    rng = np.random.default_rng(1)
    layer = LSTM(4, 5, 2, seed=0)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    y0, _ = layer.step(x)

    def ref():
        with kernels.using(reference=True):
            return layer.step(x)[0]

    # in place, as an optimizer does
    layer.params["W_xh_l0"] *= 0.5
    layer.params["b_h_l1"] += 0.25
    y1, _ = layer.step(x)
    assert not np.allclose(y1, y0)
    np.testing.assert_allclose(y1, ref(), rtol=2e-5, atol=2e-5)
    # a new array under the same key, as load_state_dict / interop may do
    layer.params["W_hh_l1"] = rng.standard_normal((20, 5)).astype(np.float32)
    y2, s2 = layer.step(x, layer.step(x)[1])
    assert not np.allclose(y2, y1)
    with kernels.using(reference=True):
        r2, _ = layer.step(x, layer.step(x)[1])
    np.testing.assert_allclose(y2, r2, rtol=2e-5, atol=2e-5)
    # a replacement the compiled path cannot take (float64, non-contiguous): the cells serve it, then
    # the lean path comes back once the array is a plain float32 one again
    layer.params["W_xh_l1"] = np.asfortranarray(layer.params["W_xh_l1"])
    np.testing.assert_allclose(layer.step(x)[0], ref(), rtol=2e-5, atol=2e-5)
    layer.params["W_xh_l1"] = np.ascontiguousarray(layer.params["W_xh_l1"]) * 2
    y3 = layer.step(x)[0]
    assert layer._stream.kernel is not None  # (checked before ref(): its reference mode drops the plan)
    np.testing.assert_allclose(y3, ref(), rtol=2e-5, atol=2e-5)
    # the whole dict replaced
    layer.params = {k: v.copy() for k, v in layer.params.items()}
    layer.params["b_h_l0"][:] = 0
    np.testing.assert_allclose(layer.step(x)[0], ref(), rtol=2e-5, atol=2e-5)


def test_copied_and_unpickled_layers_run_on_their_own_arrays(calls):
    layer = LSTM(3, 4, seed=0)
    x = np.ones((1, 3), np.float32)
    y, _ = layer.step(x)
    twin, thawed = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(thawed.step(x)[0], y)
    twin.params["W_xh_l0"][...] = 0
    assert not np.allclose(twin.step(x)[0], y)
    np.testing.assert_array_equal(layer.step(x)[0], y)
    assert calls == {"lstm_stack": 4}


def test_a_param_of_the_wrong_shape_is_not_read_out_of_bounds():
    layer = RNN(3, 4, seed=0)
    layer.step(np.ones((1, 3), np.float32))
    layer.params["W_hh_l0"] = np.ones((4, 2), np.float32)  # the cells' matmul refuses it
    with pytest.raises(ValueError):
        layer.step(np.ones((1, 3), np.float32))


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    "make_args,match",
    [
        (lambda f: (f((1, 3)) * np.nan, None), "x_t: contains NaN or inf"),
        (lambda f: (np.where(np.arange(3) == 2, np.inf, f((2, 3))), None), "x_t: contains NaN or inf"),
        (lambda f: (f((1, 3)), (f((2, 1, 4)), f((2, 1, 4)) * np.inf)), r"state\[1\]: contains NaN or inf"),
        (lambda f: (f((1, 3)), (f((2, 1, 4)) * np.nan, f((2, 1, 4)))), r"state\[0\]: contains NaN or inf"),
        (lambda f: (f((1, 5)), None), r"x_t: expected shape \(\*, 3\), got \(1, 5\)"),
        (lambda f: (f((3,)), None), r"x_t: expected 2 dimensions"),
        (lambda f: (f((1, 3)).astype(np.float64), None), "x_t: expected dtype float32, got float64"),
        (lambda f: ([[0.0] * 3], None), "x_t: expected a numpy.ndarray"),
        (lambda f: (f((1, 3)), f((2, 1, 4))), "state: expected a tuple"),
        (lambda f: (f((1, 3)), (f((2, 2, 4)), f((2, 2, 4)))), r"state\[0\]: expected shape \(2, 1, 4\)"),
        (
            lambda f: (f((1, 3)), (f((2, 1, 4)), f((2, 1, 4)).astype(np.float64))),
            r"state\[1\]: expected dtype float32",
        ),
    ],
)
def test_bad_input_gives_the_same_error_as_the_cells(make_args, match):
    layer = LSTM(3, 4, 2, seed=0)

    def f(shape):
        return np.ones(shape, np.float32)

    x, state = make_args(f)
    fast = _error(lambda: layer.step(x, state))
    with kernels.using(reference=True):
        ref = _error(lambda: layer.step(x, state))
    assert fast == ref
    with pytest.raises(fast[0], match=match):
        layer.step(x, state)


@pytest.mark.parametrize(
    "make,state",
    [
        (lambda: GRU(3, 4, seed=0), lambda: np.full((1, 1, 4), np.nan, np.float32)),
        (lambda: RNN(3, 4, 2, seed=0), lambda: np.full((2, 1, 4), -np.inf, np.float32)),
    ],
)
def test_non_finite_state_of_gru_and_rnn(make, state):
    with pytest.raises(ValueError, match="state: contains NaN or inf"):
        make().step(np.ones((1, 3), np.float32), state())


def test_returned_arrays_are_fresh_on_every_call():
    layer = LSTM(3, 4, 2, seed=0)
    x = np.ones((1, 3), np.float32)
    y1, (h1, c1) = layer.step(x)
    keep = [a.copy() for a in (y1, h1, c1)]
    y2, (h2, c2) = layer.step(x * 2, (h1, c1))
    for a, b in zip((y1, h1, c1), keep, strict=True):
        np.testing.assert_array_equal(a, b)  # the second call did not write into the first's arrays
    arrays = (y1, h1, c1, y2, h2, c2, x)
    for i, a in enumerate(arrays):
        for b in arrays[i + 1 :]:
            assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(y2, h2[-1])
