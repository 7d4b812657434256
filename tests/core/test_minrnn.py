"""minGRU and minLSTM layers: BPTT through the scan equals central finite differences (float64) on every
option (log space or not, 1–3 layers, bidirectional, bias, h0, packed lengths), on the sequential reference
and on the scan; the equations equal an independent transcription of the paper's in torch (autograd);
``step`` equals ``forward`` one step at a time; bad input is refused with one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import MinGRU, MinLSTM, kernels

from conftest import require_torch
from gradcheck import assert_grad_close, numeric_grad

KINDS = {"mingru": MinGRU, "minlstm": MinLSTM}
VARIANTS = [
    dict(num_layers=1, bidirectional=False, bias=True, h0=False, lengths=False),
    dict(num_layers=2, bidirectional=True, bias=True, h0=True, lengths=True),
    dict(num_layers=3, bidirectional=False, bias=False, h0=True, lengths=True),
    dict(num_layers=1, bidirectional=True, bias=False, h0=False, lengths=False),
]


def _variant_id(v: dict) -> str:
    return (
        f"L{v['num_layers']}{'bi' if v['bidirectional'] else ''}"
        f"{'-nobias' if not v['bias'] else ''}{'-h0' if v['h0'] else ''}{'-len' if v['lengths'] else ''}"
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("log_space", [True, False], ids=["log", "linear"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("path", ["reference", "scan"])
def test_bptt_through_the_scan_matches_finite_differences(kind, log_space, variant, path):
    rng = np.random.default_rng(11)
    T, B, I, H = 5, 3, 2, 3
    layer = KINDS[kind](
        I,
        H,
        num_layers=variant["num_layers"],
        bias=variant["bias"],
        bidirectional=variant["bidirectional"],
        dtype=np.float64,
        seed=4,
        log_space=log_space,
    )
    for v in layer.params.values():  # biases off zero, weights large enough that g's two branches both occur
        v += 0.5 * rng.standard_normal(v.shape)
    D, L = layer.num_directions, layer.num_layers
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 2, 4]) if variant["lengths"] else None
    h0 = np.abs(rng.standard_normal((L * D, B, H))) if variant["h0"] else None  # ≥ 0 for log space
    d_out = rng.standard_normal((T, B, D * H))
    d_hn = rng.standard_normal((L * D, B, H))

    def loss() -> float:
        out, h_n = layer.forward(x, h0, lengths)
        return float((out * d_out).sum() + (h_n * d_hn).sum())

    with kernels.using(reference=path == "reference"):
        loss()
        dx, dh0 = layer.backward(d_out, d_hn)
        assert_grad_close(dx, numeric_grad(loss, x), "x")
        if h0 is not None:
            assert_grad_close(dh0, numeric_grad(loss, h0), "h0")
        for name, p in layer.params.items():
            assert_grad_close(layer.grads[name], numeric_grad(loss, p), name)


def _torch_min_layer(torch, kind: str, log_space: bool, x, h0, W, b):
    """The paper's equations, step by step in torch (autograd gives the gradients)."""
    H = W.shape[0] // (2 if kind == "mingru" else 3)

    def act(k):
        if not log_space:
            return k
        return torch.where(k >= 0, k + 0.5, torch.sigmoid(k))

    h, hs = h0, []
    for t in range(x.shape[0]):
        k = x[t] @ W.T + b
        if kind == "mingru":
            z = torch.sigmoid(k[:, :H])
            h = (1 - z) * h + z * act(k[:, H:])
        else:
            f, i = torch.sigmoid(k[:, :H]), torch.sigmoid(k[:, H : 2 * H])
            h = f / (f + i) * h + i / (f + i) * act(k[:, 2 * H :])
        hs.append(h)
    return torch.stack(hs)


@pytest.mark.parametrize("log_space", [True, False], ids=["log", "linear"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_equations_match_the_papers_written_in_torch(kind, log_space):
    torch = require_torch()
    rng = np.random.default_rng(2)
    T, B, I, H = 40, 2, 3, 4
    layer = KINDS[kind](I, H, dtype=np.float64, seed=1, log_space=log_space)
    layer.params["b_h_l0"] += rng.standard_normal(layer.params["b_h_l0"].shape)
    x = rng.standard_normal((T, B, I))
    h0 = np.abs(rng.standard_normal((1, B, H)))
    d_out = rng.standard_normal((T, B, H))
    out, h_n = layer(x, h0)
    dx, dh0 = layer.backward(d_out)

    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0[0], requires_grad=True)
    Wt = torch.tensor(layer.params["W_xh_l0"], requires_grad=True)
    bt = torch.tensor(layer.params["b_h_l0"], requires_grad=True)
    ref = _torch_min_layer(torch, kind, log_space, xt, h0t, Wt, bt)
    (ref * torch.tensor(d_out)).sum().backward()
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n[0], ref[-1].detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in [
        (dx, xt),
        (dh0[0], h0t),
        (layer.grads["W_xh_l0"], Wt),
        (layer.grads["b_h_l0"], bt),
    ]:
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", list(KINDS))
def test_step_equals_forward_one_step_at_a_time(kind, dtype):
    rng = np.random.default_rng(5)
    T, B, I, H = 9, 2, 3, 4
    layer = KINDS[kind](I, H, num_layers=2, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = np.abs(rng.standard_normal((2, B, H))).astype(dtype)
    out, h_n = layer(x, h0)
    state = h0
    for t in range(T):
        y, state = layer.step(x[t], state)
        np.testing.assert_allclose(y, out[t], rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)
    np.testing.assert_allclose(state, h_n, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


def test_batch_first_and_lengths_give_the_packed_results():
    """Past a length the output is zero and h_n the last valid state, as a shorter sequence alone gives."""
    rng = np.random.default_rng(3)
    layer = MinLSTM(3, 4, bidirectional=True, batch_first=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((2, 7, 3))
    out, h_n = layer(x, lengths=[7, 4])
    alone, h_alone = layer(x[1:, :4])
    np.testing.assert_allclose(out[1, :4], alone[0], rtol=1e-12)
    assert not out[1, 4:].any()
    np.testing.assert_allclose(h_n[:, 1], h_alone[:, 0], rtol=1e-12)


def test_params_have_no_recurrent_weights_and_config_rebuilds_the_layer():
    layer = MinGRU(3, 5, num_layers=2, bidirectional=True, seed=0, log_space=False)
    assert sorted(layer.params) == sorted(
        f"{n}_l{i}{s}" for n in ("W_xh", "b_h") for i in (0, 1) for s in ("", "_reverse")
    )
    assert layer.params["W_xh_l1"].shape == (10, 10) and layer.params["b_h_l0"].shape == (10,)
    assert MinLSTM(3, 5).params["W_xh_l0"].shape == (15, 3)
    again = type(layer)(**layer.config)
    assert again.config == layer.config and sorted(again.params) == sorted(layer.params)


def test_bad_input_is_refused_with_one_clear_error():
    layer = MinGRU(3, 4, dtype=np.float64)
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match="h0: expected a state ≥ 0"):
        layer(x, -np.ones((1, 2, 4)))
    MinGRU(3, 4, dtype=np.float64, log_space=False)(x, -np.ones((1, 2, 4)))  # either sign is fine there
    with pytest.raises(ValueError, match="x: "):
        layer(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match="dtype: expected float32 or float64"):
        MinLSTM(3, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="hidden_size"):
        MinLSTM(3, 0)
    with pytest.raises(TypeError, match="recurrent_dropout"):
        MinLSTM(3, 4, recurrent_dropout=0.1)
    with pytest.raises(RuntimeError, match="bidirectional"):
        MinGRU(3, 4, bidirectional=True, dtype=np.float64).step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="lengths"):
        layer(x, lengths=[6, 1])
