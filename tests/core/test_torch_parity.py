"""Every recurrent layer equals torch.nn: outputs, h_n, dx, d_h0 and every parameter gradient,
on random configurations including packed variable-length batches."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN
from unrolled.interop.torch import from_torch, to_torch, to_torch_state_dict

from conftest import assert_close, require_torch

TOL = {np.float64: 1e-9, np.float32: 1e-5}


def _torch_run(torch, module, x, h0, lengths, d_out, d_hn):
    """Forward + backward in torch with the same upstream gradients; returns numpy results."""
    xt = torch.tensor(x, requires_grad=True)
    is_lstm = isinstance(module, torch.nn.LSTM)
    h0t = None
    if h0 is not None:
        h0t = (
            tuple(torch.tensor(h, requires_grad=True) for h in h0)
            if is_lstm
            else torch.tensor(h0, requires_grad=True)
        )
    bf = module.batch_first
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False
        )
    else:
        inp = xt
    out, hn = module(inp, h0t)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=bf, total_length=x.shape[1 if bf else 0]
        )
    loss = (out * torch.tensor(d_out)).sum()
    if is_lstm:
        loss = loss + (hn[0] * torch.tensor(d_hn[0])).sum() + (hn[1] * torch.tensor(d_hn[1])).sum()
    else:
        loss = loss + (hn * torch.tensor(d_hn)).sum()
    loss.backward()
    res = {"out": out.detach().numpy(), "dx": xt.grad.numpy()}
    if is_lstm:
        res["h_n"], res["c_n"] = hn[0].detach().numpy(), hn[1].detach().numpy()
        if h0 is not None:
            res["d_h0"], res["d_c0"] = h0t[0].grad.numpy(), h0t[1].grad.numpy()
    else:
        res["h_n"] = hn.detach().numpy()
        if h0 is not None:
            res["d_h0"] = h0t.grad.numpy()
    res["grads"] = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return res


def _configs():
    rng = np.random.default_rng(1234)
    out = []
    for i in range(36):
        kind = ["rnn", "lstm", "gru"][i % 3]
        out.append(
            dict(
                kind=kind,
                dtype=[np.float64, np.float32][(i // 3) % 2],
                num_layers=int(rng.integers(1, 4)),
                bidirectional=bool(rng.integers(0, 2)),
                batch_first=bool(rng.integers(0, 2)),
                bias=bool(rng.random() < 0.8),
                nonlinearity=["tanh", "relu"][int(rng.integers(0, 2))],
                with_h0=bool(rng.integers(0, 2)),
                packed=bool(rng.random() < 0.6),
                T=int(rng.integers(1, 9)),
                B=int(rng.integers(1, 5)),
                I=int(rng.integers(1, 6)),
                H=int(rng.integers(1, 7)),
                seed=i,
            )
        )
    return out


@pytest.mark.parametrize(
    "cfg", _configs(), ids=lambda c: f"{c['kind']}-{np.dtype(c['dtype']).name}-s{c['seed']}"
)
def test_layer_matches_torch_forward_and_every_gradient(cfg):
    torch = require_torch()
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    dtype, T, B, I, H = cfg["dtype"], cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    kw = dict(
        num_layers=cfg["num_layers"],
        bias=cfg["bias"],
        batch_first=cfg["batch_first"],
        bidirectional=cfg["bidirectional"],
    )
    if cfg["kind"] == "rnn":
        module = torch.nn.RNN(I, H, nonlinearity=cfg["nonlinearity"], **kw)
    elif cfg["kind"] == "lstm":
        module = torch.nn.LSTM(I, H, **kw)
    else:
        module = torch.nn.GRU(I, H, **kw)
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32)
    layer = from_torch(module)
    assert layer.dtype == dtype
    D, L = 2 if cfg["bidirectional"] else 1, cfg["num_layers"]
    x = rng.standard_normal((B, T, I) if cfg["batch_first"] else (T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, size=B) if cfg["packed"] else None
    n_states = 2 if cfg["kind"] == "lstm" else 1

    def state():
        return rng.standard_normal((L * D, B, H)).astype(dtype)

    h0 = None
    if cfg["with_h0"]:
        h0 = (state(), state()) if n_states == 2 else state()
    out_shape = (B, T, D * H) if cfg["batch_first"] else (T, B, D * H)
    d_out = rng.standard_normal(out_shape).astype(dtype)
    d_hn = (state(), state()) if n_states == 2 else state()

    ref = _torch_run(torch, module, x, h0, lengths, d_out, d_hn)
    out, h_n = layer.forward(x, h0, lengths)
    dx, d_h0 = layer.backward(d_out, d_hn)
    tol = TOL[dtype]
    assert_close(out, ref["out"], tol)
    if n_states == 2:
        assert_close(h_n[0], ref["h_n"], tol)
        assert_close(h_n[1], ref["c_n"], tol)
    else:
        assert_close(h_n, ref["h_n"], tol)
    assert_close(dx, ref["dx"], tol)
    if h0 is not None:
        if n_states == 2:
            assert_close(d_h0[0], ref["d_h0"], tol)
            assert_close(d_h0[1], ref["d_c0"], tol)
        else:
            assert_close(d_h0, ref["d_h0"], tol)
    grads = to_torch_state_dict(layer, grads=True)
    assert set(grads) == set(ref["grads"])
    for k, g in ref["grads"].items():
        assert_close(grads[k], g, tol, err_msg=k)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RNN(3, 5, 2, nonlinearity="relu", seed=0),
        lambda: LSTM(3, 5, 2, bidirectional=True, seed=0),
        lambda: GRU(3, 5, 1, batch_first=True, dtype=np.float64, seed=0),
    ],
)
def test_round_trip_through_torch_preserves_parameters_and_outputs(make):
    torch = require_torch()
    layer = make()
    module = to_torch(layer)
    back = from_torch(module)
    for k, v in layer.params.items():
        np.testing.assert_allclose(back.params[k], v, atol=1e-6, rtol=0, err_msg=k)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(layer.dtype)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(layer(x)[0], ref, atol=1e-5, rtol=0)


def test_gru_without_reset_after_has_no_torch_equivalent():
    with pytest.raises(ValueError, match="reset_after=False"):
        to_torch_state_dict(GRU(2, 3, reset_after=False))


def test_state_dict_has_torch_keys_and_shapes():
    torch = require_torch()
    for layer, module in [
        (LSTM(3, 4, 2, bidirectional=True), torch.nn.LSTM(3, 4, 2, bidirectional=True)),
        (GRU(3, 4, bias=False), torch.nn.GRU(3, 4, bias=False)),
    ]:
        sd = to_torch_state_dict(layer)
        assert {k: v.shape for k, v in sd.items()} == {
            k: tuple(v.shape) for k, v in module.state_dict().items()
        }


PROJ_CASES = [
    dict(num_layers=1, bidirectional=False, packed=False, with_h0=False, dtype=np.float64),
    dict(num_layers=2, bidirectional=True, packed=True, with_h0=True, dtype=np.float64),
    dict(num_layers=3, bidirectional=False, packed=True, with_h0=True, dtype=np.float64),
    dict(num_layers=2, bidirectional=True, packed=False, with_h0=True, dtype=np.float32),
]


@pytest.mark.parametrize(
    "cfg", PROJ_CASES, ids=lambda c: f"L{c['num_layers']}{'bi' if c['bidirectional'] else ''}"
)
def test_projected_lstm_matches_torch_proj_size_forward_and_every_gradient(cfg):
    """LSTM(proj_size=P) equals torch.nn.LSTM(proj_size=P): out (D·P wide), h_n (P), c_n (H), dx, d_h0,
    d_c0 and every gradient including weight_hr; stacked layers take D·P inputs."""
    torch = require_torch()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    T, B, I, H, P = 5, 3, 4, 5, 3
    L, D, dtype = cfg["num_layers"], 2 if cfg["bidirectional"] else 1, cfg["dtype"]
    module = torch.nn.LSTM(I, H, num_layers=L, bidirectional=cfg["bidirectional"], proj_size=P)
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32)
    layer = from_torch(module)
    assert layer.proj_size == P and layer.output_size == P
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = np.array([5, 2, 4]) if cfg["packed"] else None
    h0 = None
    if cfg["with_h0"]:
        h0 = (
            rng.standard_normal((L * D, B, P)).astype(dtype),
            rng.standard_normal((L * D, B, H)).astype(dtype),
        )
    d_out = rng.standard_normal((T, B, D * P)).astype(dtype)
    d_hn = (
        rng.standard_normal((L * D, B, P)).astype(dtype),
        rng.standard_normal((L * D, B, H)).astype(dtype),
    )
    ref = _torch_run(torch, module, x, h0, lengths, d_out, d_hn)
    out, (h_n, c_n) = layer.forward(x, h0, lengths)
    dx, d_h0 = layer.backward(d_out, d_hn)
    tol = TOL[dtype]
    assert_close(out, ref["out"], tol)
    assert_close(h_n, ref["h_n"], tol)
    assert_close(c_n, ref["c_n"], tol)
    assert_close(dx, ref["dx"], tol)
    if h0 is not None:
        assert_close(d_h0[0], ref["d_h0"], tol)
        assert_close(d_h0[1], ref["d_c0"], tol)
    grads = to_torch_state_dict(layer, grads=True)
    assert set(grads) == set(ref["grads"]) and any(k.startswith("weight_hr") for k in grads)
    for k, g in ref["grads"].items():
        assert_close(grads[k], g, tol, err_msg=k)
    back = to_torch(layer).state_dict()  # and back: the same weights (the two biases summed into bias_ih)
    for k, v in module.state_dict().items():
        if k.startswith("bias_ih"):
            v = v + module.state_dict()["bias_hh" + k[len("bias_ih") :]]
        elif k.startswith("bias_hh"):
            v = 0 * v
        np.testing.assert_allclose(back[k].numpy(), v.numpy(), atol=1e-6, err_msg=k)


def test_lstm_variants_without_a_torch_equivalent_are_refused():
    for layer in (LSTM(2, 3, peephole=True), LSTM(2, 3, layer_norm=True), GRU(2, 3, zoneout=0.1)):
        with pytest.raises(ValueError, match="no torch.nn equivalent"):
            to_torch_state_dict(layer)


def test_a_projected_lstm_sequence_model_converts_to_torch_and_back():
    torch = require_torch()
    from unrolled.interop.torch import from_torch_model, to_torch_model
    from unrolled.models import ModelConfig, SequenceModel

    cfg = ModelConfig(vocab_size=7, embed_dim=3, hidden_size=5, proj_size=2, num_layers=2, bidirectional=True)
    model = SequenceModel(ModelConfig(**{**cfg.to_dict(), "output": "last", "output_size": 4})).eval()
    ids = np.random.default_rng(0).integers(0, 7, size=(6, 3))
    y, _ = model(ids, lengths=[6, 2, 4])
    module = to_torch_model(model)
    with torch.no_grad():
        ref, _ = module(torch.from_numpy(ids), lengths=[6, 2, 4])
    assert_close(y, ref.numpy(), 1e-5)
    back = from_torch_model(module)
    assert back.config.proj_size == 2
    np.testing.assert_allclose(back(ids, lengths=[6, 2, 4])[0], y, atol=1e-6)
