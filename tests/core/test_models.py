"""The sequence model as a whole: the full model's gradients equal
central finite differences (float64, dropout masks held fixed), equal an equivalent torch model,
step() equals forward, dropout semantics, the flat params/grads view, and the config."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.models import ModelConfig, SequenceModel

from conftest import require_torch
from gradcheck import assert_grad_close, numeric_grad

CONFIGS = [
    dict(input="tokens", vocab_size=5, embed_dim=3, cell="lstm", num_layers=2, output="sequence"),
    dict(input="tokens", vocab_size=4, embed_dim=2, cell="gru", bidirectional=True, output="last"),
    dict(input="dense", input_size=2, cell="rnn", output="mean", output_size=2),
    dict(
        input="dense", input_size=3, cell="gru", reset_after=False, output="last", output_size=3, num_layers=2
    ),
    dict(input="dense", input_size=2, cell="lstm", bidirectional=True, output="mean", output_size=2),
    dict(
        input="tokens",
        vocab_size=5,
        embed_dim=3,
        cell="lstm",
        num_layers=2,
        dropout=0.3,
        input_dropout=0.2,
        output_dropout=0.4,
        output="sequence",
    ),
    dict(
        input="dense",
        input_size=2,
        cell="gru",
        bidirectional=True,
        num_layers=2,
        dropout=0.5,
        input_dropout=0.3,
        output_dropout=0.3,
        output="last",
        output_size=2,
    ),
    dict(
        input="tokens",
        vocab_size=4,
        embed_dim=3,
        cell="lstm",
        num_layers=2,
        recurrent_dropout=0.4,
        output="sequence",
    ),
    dict(
        input="dense",
        input_size=2,
        cell="rnn",
        recurrent_dropout=0.5,
        dropout=0.2,
        num_layers=2,
        output="mean",
        output_size=2,
    ),
]


def _inputs(model, rng, T, B):
    c = model.config
    if c.input == "tokens":
        return rng.integers(0, c.vocab_size, size=(T, B))
    return rng.standard_normal((T, B, c.input_size))


def _initial_state(model, rng, B):
    L, D, H = model.config.num_layers, model.rnn.num_directions, model.config.hidden_size
    if model.config.cell == "lstm":
        return tuple(rng.standard_normal((L * D, B, H)) for _ in range(2))
    return rng.standard_normal((L * D, B, H))


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=[f"{c['cell']}-{c['input']}-{c['output']}-{i}" for i, c in enumerate(CONFIGS)]
)
def test_whole_model_gradients_match_finite_differences(cfg):
    rng = np.random.default_rng(11)
    model = SequenceModel(ModelConfig(hidden_size=3, dtype="float64", seed=2, **cfg))
    for v in model.params.values():  # biases off zero
        v += 0.2 * rng.standard_normal(v.shape)
    T, B = 4, 3
    x = _inputs(model, rng, T, B)
    lengths = np.array([4, 2, 3])
    state0 = _initial_state(model, rng, B)
    rng_state = model.rng_state()

    def run():
        model.set_rng_state(rng_state)  # the same dropout masks on every call
        return model.forward(x, state0, lengths)

    y, state_n = run()
    dy = rng.standard_normal(y.shape)
    d_state = (
        tuple(rng.standard_normal(s.shape) for s in state_n)
        if isinstance(state_n, tuple)
        else (rng.standard_normal(state_n.shape))
    )

    def loss():
        y, s = run()
        extra = (
            sum((a * b).sum() for a, b in zip(s, d_state, strict=True))
            if isinstance(s, tuple)
            else ((s * d_state).sum())
        )
        return float((y * dy).sum() + extra)

    loss()
    d_state0 = model.backward(dy, d_state)
    for k, p in model.params.items():
        assert_grad_close(model.grads[k], numeric_grad(loss, p), k)
    for i, s in enumerate(state0 if isinstance(state0, tuple) else (state0,)):
        d = d_state0[i] if isinstance(d_state0, tuple) else d_state0
        assert_grad_close(d, numeric_grad(loss, s), f"state0[{i}]")
    if model.config.input == "dense":
        assert_grad_close(model.dx, numeric_grad(loss, x), "x")


def test_flat_params_are_the_live_arrays_with_namespaced_keys():
    model = SequenceModel(ModelConfig(vocab_size=6, embed_dim=4, hidden_size=5, seed=0))
    assert list(model.params)[:2] == ["embed.W", "rnn.W_xh_l0"]
    assert {"rnn.W_hh_l0", "rnn.b_h_l0", "head.W", "head.b"} <= set(model.params)
    assert model.params["embed.W"] is model.embed.params["W"]
    assert model.params["rnn.W_hh_l0"] is model.rnn.params["W_hh_l0"]
    assert model.grads.keys() == model.params.keys()
    x = np.array([[1, 2, 3]])
    y0, _ = model.forward(x)
    model.params["head.b"] += 1.0
    y1, _ = model.forward(x)
    np.testing.assert_allclose(y1 - y0, 1.0, rtol=1e-5)
    model.backward(np.ones_like(y1))
    assert model.grads["head.b"] is model.head.grads["b"]


def test_step_equals_forward_one_step_at_a_time():
    rng = np.random.default_rng(3)
    for cfg in [
        dict(input="tokens", vocab_size=7, embed_dim=3, cell="lstm", num_layers=2, dropout=0.5),
        dict(input="dense", input_size=2, cell="gru", output="last", output_size=2),
    ]:
        model = SequenceModel(ModelConfig(hidden_size=4, dtype="float64", seed=1, **cfg)).eval()
        x = _inputs(model, rng, 5, 2)
        y, state_n = model.forward(x)
        state = None
        for t in range(5):
            y_t, state = model.step(x[t], state)
            if model.config.output == "sequence":
                np.testing.assert_allclose(y_t, y[t], rtol=1e-12, atol=1e-12)
        if model.config.output == "last":
            np.testing.assert_allclose(y_t, y, rtol=1e-12, atol=1e-12)
        for a, b in zip(
            state if isinstance(state, tuple) else (state,),
            state_n if isinstance(state_n, tuple) else (state_n,),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_dropout_is_seeded_in_training_and_off_in_eval():
    cfg = dict(
        vocab_size=5,
        embed_dim=4,
        hidden_size=6,
        num_layers=2,
        dropout=0.5,
        input_dropout=0.5,
        output_dropout=0.5,
    )
    a, b = SequenceModel(ModelConfig(seed=3, **cfg)), SequenceModel(ModelConfig(seed=3, **cfg))
    x = np.random.default_rng(0).integers(0, 5, size=(6, 3))
    ya, _ = a.forward(x)
    yb, _ = b.forward(x)
    np.testing.assert_array_equal(ya, yb)  # same seed, same masks
    ya2, _ = a.forward(x)
    assert not np.array_equal(ya, ya2)  # fresh masks every forward
    a.eval()
    e1, _ = a.forward(x)
    e2, _ = a.forward(x)
    np.testing.assert_array_equal(e1, e2)
    plain = SequenceModel(ModelConfig(seed=3, vocab_size=5, embed_dim=4, hidden_size=6, num_layers=2)).eval()
    np.testing.assert_array_equal(e1, plain.forward(x)[0])  # dropout does not change the initial weights


def test_last_output_picks_each_sequence_last_valid_step():
    rng = np.random.default_rng(0)
    model = SequenceModel(
        ModelConfig(
            input="dense", input_size=2, hidden_size=3, output="last", output_size=2, dtype="float64", seed=0
        )
    )
    x = rng.standard_normal((5, 2, 2))
    y, _ = model.forward(x, lengths=np.array([3, 5]))
    y_short, _ = model.forward(x[:3, :1])
    np.testing.assert_allclose(y[0], y_short[0], rtol=1e-12)


def test_matches_equivalent_torch_model():
    torch = require_torch()
    from unrolled.interop.torch import to_torch_state_dict

    rng = np.random.default_rng(5)
    V, E, H, K, T, B = 6, 3, 4, 6, 5, 3
    model = SequenceModel(
        ModelConfig(
            vocab_size=V,
            embed_dim=E,
            hidden_size=H,
            num_layers=2,
            cell="lstm",
            output_size=K,
            dtype="float64",
            seed=4,
        )
    )
    emb = torch.nn.Embedding(V, E).double()
    lstm = torch.nn.LSTM(E, H, num_layers=2).double()
    lin = torch.nn.Linear(H, K).double()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(model.params["embed.W"]))
        lstm.load_state_dict({k: torch.tensor(v) for k, v in to_torch_state_dict(model.rnn).items()})
        lin.weight.copy_(torch.tensor(model.params["head.W"]))
        lin.bias.copy_(torch.tensor(model.params["head.b"]))
    x = rng.integers(0, V, size=(T, B))
    y, (h_n, c_n) = model.forward(x)
    dy = rng.standard_normal(y.shape)
    model.backward(dy)
    out, (th, tc) = lstm(emb(torch.tensor(x)))
    ty = lin(out)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, th.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.grads["embed.W"], emb.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.grads["head.W"], lin.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    tg = to_torch_state_dict(model.rnn, grads=True)
    for k, p in lstm.named_parameters():
        np.testing.assert_allclose(tg[k], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_bidirectional_last_with_lengths_matches_torch_packed_h_n():
    """output="last" of a bidirectional stack = torch's idiom cat(h_n[-2], h_n[-1]) of a packed sequence."""
    torch = require_torch()
    from unrolled.interop.torch import to_torch_state_dict

    rng = np.random.default_rng(8)
    V, E, H, K, T, B = 5, 3, 4, 2, 6, 3
    model = SequenceModel(
        ModelConfig(vocab_size=V, embed_dim=E, hidden_size=H, cell="gru", bidirectional=True, output="last",
                    output_size=K, dtype="float64", seed=2)
    )  # fmt: skip
    emb, gru, lin = torch.nn.Embedding(V, E).double(), torch.nn.GRU(E, H, bidirectional=True).double(), None
    lin = torch.nn.Linear(2 * H, K).double()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(model.params["embed.W"]))
        gru.load_state_dict({k: torch.tensor(v) for k, v in to_torch_state_dict(model.rnn).items()})
        lin.weight.copy_(torch.tensor(model.params["head.W"]))
        lin.bias.copy_(torch.tensor(model.params["head.b"]))
    x, lengths = rng.integers(0, V, size=(T, B)), np.array([6, 2, 4])
    y, _ = model.forward(x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    model.backward(dy)
    packed = torch.nn.utils.rnn.pack_padded_sequence(emb(torch.tensor(x)), torch.tensor(lengths),
                                                     enforce_sorted=False)  # fmt: skip
    _, h_n = gru(packed)
    ty = lin(torch.cat([h_n[-2], h_n[-1]], dim=-1))
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.grads["embed.W"], emb.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    tg = to_torch_state_dict(model.rnn, grads=True)
    for k, p in gru.named_parameters():
        np.testing.assert_allclose(tg[k], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_config_round_trip_and_clear_errors():
    c = ModelConfig(vocab_size=10, cell="gru", seed=1)
    assert c.output_size == 10
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(
        ValueError,
        match=r"cell: expected one of \('lstm', 'gru', 'rnn', 'mingru', 'minlstm'\), got 'transformer'",
    ):
        ModelConfig(vocab_size=10, cell="transformer")
    with pytest.raises(ValueError, match="vocab_size: expected a positive integer, got None"):
        ModelConfig()
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig(input="dense", output_size=1)
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected a probability in \[0, 1\), got 1.0"):
        ModelConfig(vocab_size=3, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"config: unknown fields \['layers'\]"):
        ModelConfig.from_dict({"vocab_size": 3, "layers": 2})
    model = SequenceModel(ModelConfig(input="dense", input_size=3, output_size=1, hidden_size=2))
    with pytest.raises(ValueError, match=r"x: expected features \(T, B, 3\), got \(4, 2, 2\)"):
        model.forward(np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="x: expected dtype float32, got float64"):
        model.forward(np.zeros((4, 2, 3)))
    tok = SequenceModel(ModelConfig(vocab_size=3, hidden_size=2))
    with pytest.raises(ValueError, match=r"x: expected token ids \(T, B\), got \(4,\)"):
        tok.forward(np.zeros(4, np.int64))
