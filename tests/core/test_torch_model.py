"""Whole sequence models through the PyTorch bridge: unrolled -> torch -> unrolled preserves outputs,
final states and (through torch autograd) every gradient; hand-built torch modules load; modules
without an unrolled equivalent are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_torch

pytest.importorskip("unrolled.models")

from unrolled.models import ModelConfig, SequenceModel  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}


def _model(cell, output, inp, bidirectional, dtype="float64", **kw):
    cfg = ModelConfig(
        input=inp,
        vocab_size=11 if inp == "tokens" else None,
        input_size=5 if inp == "dense" else None,
        embed_dim=6 if inp == "tokens" else ModelConfig.embed_dim,
        cell=cell,
        hidden_size=4,
        num_layers=2,
        bidirectional=bidirectional,
        output=output,
        output_size=3,
        dtype=dtype,
        seed=3,
        **kw,
    )
    model = SequenceModel(cfg)
    rng = np.random.default_rng(1)
    for v in model.params.values():  # random biases too: the zero init would hide bias mistakes
        v[...] = 0.5 * rng.standard_normal(v.shape)
    return model.eval()


def _input(rng, inp, dtype, T=7, B=3):
    return rng.integers(0, 11, (T, B)) if inp == "tokens" else rng.standard_normal((T, B, 5)).astype(dtype)


CASES = [
    (cell, output, inp)
    for cell in ("lstm", "gru", "rnn")
    for output, inp in (("sequence", "tokens"), ("last", "dense"), ("mean", "tokens"))
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,output,inp", CASES)
def test_model_to_torch_and_back_preserves_outputs(cell, output, inp, bidirectional):
    torch = require_torch()
    from unrolled.interop.torch import from_torch_model, to_torch_model

    model = _model(cell, output, inp, bidirectional)
    rng = np.random.default_rng(2)
    x, lengths = _input(rng, inp, np.float64), np.array([7, 2, 5])
    y, state = model(x, lengths=lengths)
    module = to_torch_model(model)
    assert not module.training
    ty, tstate = module(torch.from_numpy(x), lengths=lengths)
    np.testing.assert_allclose(ty.detach().numpy(), y, rtol=0, atol=TOL["float64"])
    states = state if cell == "lstm" else (state,)
    tstates = tstate if cell == "lstm" else (tstate,)
    for a, b in zip(states, tstates, strict=True):
        np.testing.assert_allclose(b.detach().numpy(), a, rtol=0, atol=TOL["float64"])
    # full-length batches too (no packing)
    np.testing.assert_allclose(module(torch.from_numpy(x))[0].detach().numpy(), model(x)[0], atol=1e-10)

    back = from_torch_model(module)
    assert back.config.to_dict() == model.config.to_dict() | {"seed": None}
    for k, v in model.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    np.testing.assert_array_equal(back(x, lengths=lengths)[0], y)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_model_gradients_equal_unrolled_bptt(cell):
    """The torch module is the same function, so autograd's gradients equal the hand-written BPTT."""
    torch = require_torch()
    from unrolled.interop.torch import to_torch_model, to_torch_state_dict

    model = _model(cell, "last", "tokens", True)
    rng = np.random.default_rng(4)
    x, lengths = _input(rng, "tokens", np.float64), np.array([7, 3, 5])
    y, _ = model(x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    model.backward(dy)
    module = to_torch_model(model)
    ty, _ = module(torch.from_numpy(x), lengths=lengths)
    (ty * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(module.embed.weight.grad.numpy(), model.grads["embed.W"], atol=1e-10)
    np.testing.assert_allclose(module.head.weight.grad.numpy(), model.grads["head.W"], atol=1e-10)
    np.testing.assert_allclose(module.head.bias.grad.numpy(), model.grads["head.b"], atol=1e-10)
    want = to_torch_state_dict(model.rnn, grads=True)
    for k, p in module.rnn.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want[k], rtol=0, atol=1e-10, err_msg=k)


def test_float32_model_round_trip_and_training_mode():
    torch = require_torch()
    from unrolled.interop.torch import from_torch_model, to_torch_model

    model = _model("gru", "sequence", "dense", True, dtype="float32", input_dropout=0.1, output_dropout=0.2)
    rng = np.random.default_rng(5)
    x = _input(rng, "dense", np.float32)
    y, _ = model(x, lengths=np.array([7, 4, 1]))
    module = to_torch_model(model)
    assert module.rnn.weight_ih_l0.dtype == torch.float32
    ty, _ = module(torch.from_numpy(x), lengths=np.array([7, 4, 1]))
    np.testing.assert_allclose(ty.detach().numpy(), y, rtol=0, atol=TOL["float32"])
    assert module.input_dropout.p == 0.1 and module.output_dropout.p == 0.2
    back = from_torch_model(module.train())
    assert back.training and back.config.input_dropout == 0.1 and back.config.output_dropout == 0.2


def test_hand_built_torch_module_loads():
    """Any module made of Embedding -> LSTM -> Linear loads; the pooling is given by the caller."""
    torch = require_torch()
    from unrolled.interop.torch import from_torch_model

    nn = torch.nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(9, 4)
            self.lstm = nn.LSTM(4, 5, num_layers=2, bidirectional=True)
            self.out = nn.Linear(10, 2)

        def forward(self, ids):
            return self.out(self.lstm(self.emb(ids))[0])

    torch.manual_seed(0)
    net = Tagger().double().eval()
    model = from_torch_model(net, output="sequence")
    x = np.random.default_rng(6).integers(0, 9, (6, 2))
    np.testing.assert_allclose(model(x)[0], net(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-10)


def test_modules_without_equivalent_are_refused():
    torch = require_torch()
    from unrolled.interop.torch import from_torch_model, to_torch_model

    nn = torch.nn
    with pytest.raises(ValueError, match="reset_after=False has no torch.nn equivalent"):
        to_torch_model(_model("gru", "sequence", "tokens", False, reset_after=False))
    with pytest.raises(ValueError, match="exactly one nn.RNN, nn.LSTM or nn.GRU, found 0"):
        from_torch_model(nn.Sequential(nn.Embedding(3, 2), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="found 2"):
        from_torch_model(nn.ModuleList([nn.LSTM(2, 3), nn.LSTM(3, 3), nn.Linear(3, 1)]))
    with pytest.raises(ValueError, match="head takes 4 features, stack gives 3"):
        from_torch_model(nn.ModuleList([nn.LSTM(2, 3), nn.Linear(4, 1)]))
    with pytest.raises(ValueError, match="without biases"):
        from_torch_model(nn.ModuleList([nn.GRU(2, 3, bias=False), nn.Linear(3, 1)]))
    with pytest.raises(ValueError, match="batch_first"):
        from_torch_model(nn.ModuleList([nn.GRU(2, 3, batch_first=True), nn.Linear(3, 1)]))
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        from_torch_model(object())


def test_recurrent_dropout_warns_that_only_eval_mode_is_equal():
    require_torch()
    from unrolled.interop.torch import to_torch_model

    model = _model("lstm", "sequence", "tokens", False, recurrent_dropout=0.2)
    with pytest.warns(UserWarning, match="recurrent_dropout"):
        to_torch_model(model)
