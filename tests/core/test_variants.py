"""The LSTM/GRU variants (layer norm, peepholes, projection) and zoneout: BPTT equals central finite
differences in float64 on every option combination, and each option does what its equation says.

Loss L = Σ out ⊙ d_out + Σ h_n ⊙ d_hn (+ c_n) with random d_out, d_hn; parameters moved off their initial
values so every gradient is exercised. Zoneout in training draws its masks from the layer's rng: the rng
is reset before every forward so the finite differences see the same masks as BPTT.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN, kernels
from unrolled.cells import GRUVariantCell, LSTMCell, LSTMVariantCell

from gradcheck import assert_grad_close, numeric_grad

T, B, I, H, P = 3, 2, 2, 3, 2
ZONEOUT = {"none": (0.0, True), "train": (0.4, True), "eval": (0.4, False)}


def _check_bptt(layer, *, lengths, rec_dropout_seed=11):
    rng = np.random.default_rng(5)
    for v in layer.params.values():
        v += 0.3 * rng.standard_normal(v.shape)
    LD = layer.num_layers * layer.num_directions
    widths = layer.state_sizes
    x = rng.standard_normal((T, B, layer.input_size))
    h0 = tuple(rng.standard_normal((LD, B, w)) for w in widths)
    d_hn = tuple(rng.standard_normal((LD, B, w)) for w in widths)
    d_out = rng.standard_normal((T, B, layer.num_directions * layer.output_size))
    pack = (lambda s: s) if len(widths) == 2 else (lambda s: s[0])

    def run():
        layer.rng = np.random.default_rng(rec_dropout_seed)  # the same zoneout / dropout masks every call
        return layer.forward(x, pack(h0), lengths)

    def loss() -> float:
        out, h_n = run()
        hn = h_n if len(widths) == 2 else (h_n,)
        return float((out * d_out).sum() + sum((a * b).sum() for a, b in zip(hn, d_hn, strict=True)))

    run()
    dx, d_h0 = layer.backward(d_out, pack(d_hn))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for k, p in layer.params.items():
        assert_grad_close(grads[k], numeric_grad(loss, p), k)
    assert_grad_close(dx, numeric_grad(loss, x), "x")
    for i, (a, s) in enumerate(zip(d_h0 if len(widths) == 2 else (d_h0,), h0, strict=True)):
        assert_grad_close(a, numeric_grad(loss, s), f"h0[{i}]")


LSTM_OPTIONS = list(itertools.product([False, True], [False, True], [0, P]))


@pytest.mark.parametrize("lengths", [None, [3, 2]], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("zoneout", list(ZONEOUT), ids=[f"zo-{z}" for z in ZONEOUT])
@pytest.mark.parametrize(
    "layer_norm,peephole,proj_size",
    LSTM_OPTIONS,
    ids=[f"ln{int(a)}-peep{int(b)}-proj{c}" for a, b, c in LSTM_OPTIONS],
)
def test_lstm_variant_bptt_matches_finite_differences(
    layer_norm, peephole, proj_size, zoneout, bidirectional, lengths
):
    p, training = ZONEOUT[zoneout]
    layer = LSTM(
        I,
        H,
        bidirectional=bidirectional,
        dtype=np.float64,
        seed=0,
        layer_norm=layer_norm,
        peephole=peephole,
        proj_size=proj_size,
        zoneout=p,
    ).train(training)
    _check_bptt(layer, lengths=lengths)


@pytest.mark.parametrize("lengths", [None, [3, 2]], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("zoneout", list(ZONEOUT), ids=[f"zo-{z}" for z in ZONEOUT])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "ln"])
def test_gru_variant_bptt_matches_finite_differences(layer_norm, zoneout, bidirectional, lengths):
    p, training = ZONEOUT[zoneout]
    layer = GRU(
        I, H, bidirectional=bidirectional, dtype=np.float64, seed=0,
        layer_norm=layer_norm, zoneout=p,
    ).train(training)  # fmt: skip
    _check_bptt(layer, lengths=lengths)


@pytest.mark.parametrize("zoneout", ["train", "eval"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru_reset_before"])
def test_zoneout_on_the_plain_cells_bptt_matches_finite_differences(kind, zoneout):
    p, training = ZONEOUT[zoneout]
    if kind == "rnn_tanh":
        layer = RNN(I, H, bidirectional=True, dtype=np.float64, seed=0, zoneout=p)
    else:
        layer = GRU(I, H, bidirectional=True, dtype=np.float64, seed=0, reset_after=False, zoneout=p)
    _check_bptt(layer.train(training), lengths=[3, 1])


def test_stacked_bidirectional_variants_bptt_matches_finite_differences():
    """Two bidirectional layers, every option on: layer 1 takes the D·P-wide output of layer 0."""
    for layer in (
        LSTM(
            I,
            H,
            2,
            bidirectional=True,
            dtype=np.float64,
            seed=0,
            layer_norm=True,
            peephole=True,
            proj_size=P,
            zoneout=0.3,
        ),
        GRU(I, H, 2, bidirectional=True, dtype=np.float64, seed=0, layer_norm=True, zoneout=0.3),
    ):
        _check_bptt(layer, lengths=[3, 2])


def test_variants_with_recurrent_dropout_bptt_matches_finite_differences():
    for layer in (
        LSTM(
            I, H, dtype=np.float64, seed=0, layer_norm=True, peephole=True, proj_size=P, recurrent_dropout=0.3
        ),
        GRU(I, H, dtype=np.float64, seed=0, layer_norm=True, zoneout=0.2, recurrent_dropout=0.3),
    ):
        _check_bptt(layer, lengths=None)


# ----------------------------------------------------------------------------- what each option does


def test_all_options_off_is_the_plain_lstm():
    """The variant cell with nothing switched on computes the plain LSTM cell's outputs and gradients."""
    rng = np.random.default_rng(0)
    plain = LSTM(I, H, dtype=np.float64, seed=1)
    p = plain.direction_params(0)
    x, h0, c0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    d = rng.standard_normal((T, B, H))
    a = LSTMCell().forward(x, (h0, c0), p, None)
    b = LSTMVariantCell().forward(x, (h0, c0), p, None)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    ga = LSTMCell().backward(d, (h0, c0), a[2], p)
    gb = LSTMVariantCell().backward(d, (h0, c0), b[2], p)
    np.testing.assert_allclose(ga[0], gb[0], rtol=1e-12)
    for k in ga[2]:
        np.testing.assert_allclose(ga[2][k], gb[2][k], rtol=1e-12, err_msg=k)


def test_projection_shapes_follow_torch():
    """h, the output and h_n are P wide, c_n H wide; layer l > 0 takes D·P inputs; W_hr is (P, H)."""
    layer = LSTM(5, 4, num_layers=2, bidirectional=True, proj_size=3, seed=0)
    out, (h_n, c_n) = layer(np.zeros((6, 2, 5), np.float32))
    assert out.shape == (6, 2, 6) and h_n.shape == (4, 2, 3) and c_n.shape == (4, 2, 4)
    assert layer.params["W_hh_l0"].shape == (16, 3) and layer.params["W_hr_l0_reverse"].shape == (3, 4)
    assert layer.params["W_xh_l1"].shape == (16, 6)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(5, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(5, 4, proj_size=-1)


def test_peepholes_see_the_cell_state():
    """Peephole weights change the result (through c), and zero peepholes are the plain LSTM."""
    rng = np.random.default_rng(0)
    layer = LSTM(I, H, dtype=np.float64, seed=0, peephole=True)
    plain = LSTM(I, H, dtype=np.float64, seed=0)
    x = rng.standard_normal((T, B, I))
    np.testing.assert_allclose(layer(x)[0], plain(x)[0], rtol=1e-12)  # peepholes start at zero
    layer.params["p_o_l0"][:] = 0.7
    assert not np.allclose(layer(x)[0], plain(x)[0])


def test_layer_norm_makes_the_output_invariant_to_the_scale_of_the_weights():
    """LN on W_xh x and W_hh h: scaling W_xh and W_hh by any factor leaves the layer's output unchanged."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    for layer in (
        LSTM(I, H, dtype=np.float64, seed=0, layer_norm=True),
        GRU(I, H, dtype=np.float64, seed=0, layer_norm=True),
    ):
        layer.params["b_h_l0"][:] = 0.1 * rng.standard_normal(layer.params["b_h_l0"].shape)
        layer.params["W_xh_l0"] *= 100.0  # pre-activations far above LN's ε = 1e-5 in variance
        layer.params["W_hh_l0"] *= 100.0
        before = layer(x)[0].copy()
        layer.params["W_xh_l0"] *= 7.0
        layer.params["W_hh_l0"] *= 0.2
        np.testing.assert_allclose(
            layer(x)[0], before, rtol=1e-5, atol=1e-6
        )  # ε = 1e-5 still has a small share
    with pytest.raises(ValueError, match="reset_after"):
        GRU(I, H, layer_norm=True, reset_after=False)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_zoneout_keeps_units_with_probability_p_and_its_expectation_in_eval(cls):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 50, I))
    layer = cls(I, H, dtype=np.float64, seed=0, zoneout=0.3)
    out, _ = layer(x)
    h_prev = np.concatenate([np.zeros((1, 50, H)), out[:-1]])
    kept = np.isclose(out, h_prev, atol=0)
    assert abs(kept.mean() - 0.3) < 0.03  # a unit keeps its previous value 30% of the time
    # Evaluation: h_t = p·h_{t−1} + (1 − p)·h̃_t with h̃_t the cell's step from (h_{t−1}, c_{t−1}).
    layer.eval()
    out, _ = layer(x[:5])
    plain = cls(I, H, dtype=np.float64, seed=0)
    for k in plain.params:
        plain.params[k][...] = layer.params[k]
    state = None
    for t in range(5):
        y, new_state = plain.step(x[t], state)
        if state is None:
            state = (
                tuple(np.zeros_like(s) for s in new_state)
                if isinstance(new_state, tuple)
                else np.zeros_like(new_state)
            )
        mix = lambda new, old: 0.3 * old + 0.7 * new  # noqa: E731
        state = tuple(map(mix, new_state, state)) if isinstance(state, tuple) else mix(new_state, state)
        h = state[0] if isinstance(state, tuple) else state
        np.testing.assert_allclose(out[t], h[0], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="zoneout"):
        cls(I, H, zoneout=1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTM(
            I,
            H,
            num_layers=2,
            dtype=np.float64,
            seed=0,
            layer_norm=True,
            peephole=True,
            proj_size=P,
            zoneout=0.2,
        ),
        lambda: GRU(I, H, num_layers=2, dtype=np.float64, seed=0, layer_norm=True, zoneout=0.2),
        lambda: RNN(I, H, num_layers=2, seed=0, zoneout=0.2),
        lambda: LSTM(I, H, seed=0, zoneout=0.2),
    ],
    ids=["lstm-all", "gru-ln", "rnn-zoneout-f32", "lstm-zoneout-f32"],
)
def test_step_streams_what_forward_computes_in_eval(make):
    rng = np.random.default_rng(0)
    layer = make().eval()
    x = rng.standard_normal((5, 2, I)).astype(layer.dtype)
    out, state_T = layer(x)
    state = None
    for t in range(5):
        y, state = layer.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=1e-5, atol=1e-6)
    for a, b in zip(
        state if isinstance(state, tuple) else (state,),
        state_T if isinstance(state_T, tuple) else (state_T,),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pick_routes_only_the_layer_norm_variants_to_the_compiled_path():
    """The layer-norm-only LSTM variant and the LN GRU have a compiled cell (float32 with Numba); peepholes,
    a projection, float64, the reference switch and zoneout's per-unit masks run the reference."""
    from unrolled.kernels.layernorm import CompiledLNGRUCell, CompiledLNLSTMCell

    for dtype in (np.float32, np.float64):
        for cell in (LSTMVariantCell(), LSTMVariantCell(True, True, 2), LSTMVariantCell(True, False, 2)):
            assert kernels.pick(cell, dtype) is cell
        for cell in (LSTMVariantCell(True, True, 0), LSTMVariantCell(layer_norm=True), GRUVariantCell()):
            assert kernels.pick(cell, np.float64) is cell
            assert kernels.pick(cell, dtype, zoneout=True) is cell
            with kernels.using(reference=True):
                assert kernels.pick(cell, dtype) is cell
        assert kernels.pick(LSTMCell(), dtype, zoneout=True) == LSTMCell()
    if type(kernels.pick(LSTMCell(), np.float32)).__name__ == "CompiledLSTMCell":  # Numba installed
        assert type(kernels.pick(LSTMVariantCell(layer_norm=True), np.float32)) is CompiledLNLSTMCell
        assert type(kernels.pick(GRUVariantCell(), np.float32)) is CompiledLNGRUCell
        layer = LSTM(I, H, seed=0, layer_norm=True)
        layer(np.zeros((T, B, I), np.float32))
        assert all(type(c).__name__ == "CompiledLNLSTMCache" for c in layer.last_caches().values())
    layer = LSTM(I, H, seed=0, zoneout=0.1)
    assert isinstance(layer.cell, LSTMVariantCell)
    layer(np.zeros((T, B, I), np.float32))
    assert all(type(c).__name__ == "LSTMVariantCache" for c in layer.last_caches().values())
    rnn = RNN(I, H, seed=0, zoneout=0.1)
    rnn(np.zeros((T, B, I), np.float32))
    assert all(type(c).__name__ == "RNNCache" for c in rnn.last_caches().values())


def test_config_round_trip_builds_the_same_variant():
    for layer in (
        LSTM(I, H, num_layers=2, proj_size=P, peephole=True, layer_norm=True, zoneout=0.1, seed=0),
        GRU(I, H, layer_norm=True, zoneout=0.2, seed=0),
        RNN(I, H, zoneout=0.3, seed=0),
    ):
        twin = type(layer)(**layer.config)
        assert twin.config == layer.config and twin.cell == layer.cell
        assert {k: v.shape for k, v in twin.params.items()} == {k: v.shape for k, v in layer.params.items()}


@pytest.mark.parametrize("cls", [RNN, GRU])
def test_gradient_flow_of_zoneout_layers_ends_at_the_layers_d_h0(cls):
    """Zoneout's per-unit update mask enters the step Jacobians (J = diag(m) J̃ + diag(1 − m)): the
    diagnostics' δ_0 equals the layer's own ∂L/∂h0."""
    from unrolled.diagnostics import gradient_flow

    rng = np.random.default_rng(0)
    layer = cls(I, H, bidirectional=True, dtype=np.float64, seed=0, zoneout=0.4)
    x, h0 = rng.standard_normal((5, B, I)), rng.standard_normal((2, B, H))
    out, _ = layer(x, h0, lengths=[5, 3])
    d_out = rng.standard_normal(out.shape)
    flows = gradient_flow(layer, d_out)
    _, d_h0 = layer.backward(d_out)
    for (_, d), fl in flows.items():
        np.testing.assert_allclose(fl.delta[0], d_h0[d], rtol=1e-9, atol=1e-12)


def test_gradient_flow_refuses_the_lstm_variants_by_name():
    from unrolled.diagnostics import gradient_flow

    layer = LSTM(I, H, seed=0, layer_norm=True)
    out, _ = layer(np.zeros((T, B, I), np.float32))
    with pytest.raises(TypeError, match="LSTMVariantCell .*no step Jacobian"):
        gradient_flow(layer, np.ones_like(out))
