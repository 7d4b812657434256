"""Truncated BPTT: chunk length ≥ T is exactly full BPTT; the state is carried from chunk to chunk (the
forward is unchanged); the gradient is cut at each chunk boundary (finite differences of the truncated
objective, with the carried states held constant); the token streams continue across chunks."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy
from unrolled.tbptt import TokenStreams, chunk_bounds, lm_loss, truncated_bptt

from gradcheck import assert_grad_close, numeric_grad


def _model(cell="lstm", **kw):
    cfg = dict(vocab_size=5, embed_dim=3, hidden_size=4, num_layers=2, cell=cell, dtype="float64", seed=1)
    return SequenceModel(ModelConfig(**{**cfg, **kw}))


def _data(T=9, B=2, V=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("k", [9, 20])
def test_chunk_at_least_sequence_length_equals_full_bptt(cell, k):
    model = _model(cell)
    x, y = _data()
    logits, _ = model.forward(x)
    full_loss, dy = cross_entropy(logits, y)
    model.backward(dy)
    full = {name: g.copy() for name, g in model.grads.items()}
    loss, grads, _ = truncated_bptt(model, x, y, k)
    assert loss == full_loss
    for name in full:
        np.testing.assert_array_equal(grads[name], full[name])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_is_carried_across_chunks(cell):
    model = _model(cell)
    x, y = _data(T=10)
    logits, state_full = model.forward(x)
    loss_full, _ = cross_entropy(logits, y)
    loss, _, state = truncated_bptt(model, x, y, k=3)  # chunks 3, 3, 3, 1
    assert np.isclose(loss, loss_full, rtol=1e-12)  # same forward: the state (h and c) was carried
    for a, b in zip(
        state if cell == "lstm" else (state,), state_full if cell == "lstm" else (state_full,), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_truncated_bptt_blocks_gradient_at_chunk_boundary():
    model = _model("lstm")
    x, y = _data(T=8)
    k = 3
    _, grads, _ = truncated_bptt(model, x, y, k)
    # The truncated objective: each chunk's loss with its initial state frozen at the carried value.
    frozen, state = [], None
    for s, e in chunk_bounds(8, k):
        frozen.append(state)
        _, state = model.forward(x[s:e], state)

    def objective():
        return sum(
            (e - s) / 8 * cross_entropy(model.forward(x[s:e], st)[0], y[s:e])[0]
            for (s, e), st in zip(chunk_bounds(8, k), frozen, strict=True)
        )

    for name in ("rnn.W_hh_l0", "embed.W", "head.W"):
        assert_grad_close(grads[name], numeric_grad(objective, model.params[name]), name)
    # and it is not full BPTT: the gradient through the boundaries is missing
    logits, _ = model.forward(x)
    model.backward(cross_entropy(logits, y)[1])
    assert not np.allclose(grads["rnn.W_hh_l0"], model.grads["rnn.W_hh_l0"])


def test_token_streams_continue_across_chunks_and_lm_loss_carries_state():
    ids = np.arange(23) % 7
    streams = TokenStreams(ids, batch_size=2, k=4)  # L = 11 per stream: chunks 4, 4, 3
    assert len(streams) == 3 and streams.stream_len == 11
    xs = np.concatenate([streams[i].x for i in range(3)])
    ys = np.concatenate([streams[i].y for i in range(3)])
    np.testing.assert_array_equal(xs[:, 0], ids[:11])
    np.testing.assert_array_equal(xs[:, 1], ids[11:22])
    np.testing.assert_array_equal(ys[:, 1], ids[12:23])
    model = _model(vocab_size=7)
    state = None
    for i in range(3):
        _, n, state = lm_loss(model, streams[i], state)
    assert n == 2 * 3
    _, full_state = model.forward(xs)
    np.testing.assert_allclose(state[0], full_state[0], rtol=1e-12)
    with pytest.raises(ValueError, match="too few"):
        TokenStreams(np.arange(3), batch_size=4, k=2)
