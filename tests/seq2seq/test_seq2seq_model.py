"""The whole encoder–decoder against central finite differences in float64, on tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.seq2seq.model import Seq2Seq, Seq2SeqConfig
from unrolled.seq2seq.text import BOS, EOS, PAD

CONFIGS = [
    # one layer each side, bidirectional encoder, no bridge needed (2·H_enc = H_dec)
    dict(cell="lstm", bidirectional=True, attention="general"),
    # stacked decoder, unidirectional GRU encoder: bridged (layers differ), Bahdanau attention
    dict(cell="gru", bidirectional=False, attention="additive", dec_layers=2),
    dict(cell="rnn", bidirectional=True, attention="dot", enc_layers=2, dec_layers=2),
    # no attention, stacked bidirectional encoder into a 1-layer decoder of another width: bridged
    dict(cell="lstm", bidirectional=True, attention="none", enc_layers=2, dec_hidden_size=5),
    dict(cell="lstm", bidirectional=False, attention="general", input_feeding=False, dropout=0.3),
]


def _batch(rng, B=3, S=5, T=4, V_src=7, V_tgt=6):
    src_len = np.array([5, 2, 3])[:B]
    src = rng.integers(4, V_src, size=(S, B))
    src[np.arange(S)[:, None] >= src_len[None, :]] = PAD
    tgt_len = np.array([4, 3, 1])[:B]
    tgt_out = rng.integers(4, V_tgt, size=(T, B))
    tgt_out[tgt_len - 1, np.arange(B)] = EOS
    tgt_out[np.arange(T)[:, None] >= tgt_len[None, :]] = PAD
    tgt_in = np.vstack([np.full((1, B), BOS), tgt_out[:-1]])
    mask = (np.arange(T)[:, None] < tgt_len[None, :]).astype(np.float64)
    return src, src_len, tgt_in, tgt_out, mask


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_encoder_decoder_matches_finite_differences(cfg):
    rng = np.random.default_rng(3)
    config = Seq2SeqConfig(
        src_vocab_size=7, tgt_vocab_size=6, embed_dim=3, hidden_size=2, dtype="float64", **cfg
    )
    model = Seq2Seq(config)
    for v in model.params.values():  # non-zero biases so every term counts
        v += 0.1 * rng.standard_normal(v.shape)
    src, src_len, tgt_in, _, mask = _batch(rng)
    d_logits = rng.standard_normal((tgt_in.shape[0], 3, 6)) * mask[:, :, None]

    def loss() -> float:
        model.rng = np.random.default_rng(11)  # the same dropout masks in every evaluation
        return float((model.forward(src, src_len, tgt_in) * d_logits).sum())

    loss()
    model.backward(d_logits)
    grads = {k: v.copy() for k, v in model.grads.items()}
    assert set(grads) == set(model.params)
    eps = 1e-6
    for k, p in model.params.items():
        idx = list(np.ndindex(p.shape))
        pick = rng.permutation(len(idx))[:25]
        for j in pick:
            i = idx[j]
            old = p[i]
            p[i] = old + eps
            fp = loss()
            p[i] = old - eps
            fm = loss()
            p[i] = old
            num = (fp - fm) / (2 * eps)
            assert abs(num - grads[k][i]) <= 1e-6 + 1e-5 * abs(num), (
                f"{k}{i}: analytic {grads[k][i]} vs {num}"
            )


def test_scheduled_sampling_feeds_predictions_and_still_has_the_exact_gradient():
    rng = np.random.default_rng(4)
    config = Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=6, embed_dim=3, hidden_size=2, dtype="float64")
    model = Seq2Seq(config)
    src, src_len, tgt_in, _, mask = _batch(rng)
    d_logits = rng.standard_normal((tgt_in.shape[0], 3, 6))

    def loss() -> float:
        model.rng = np.random.default_rng(5)
        return float((model.forward(src, src_len, tgt_in, sample_prob=1.0) * d_logits).sum())

    loss()
    fed = model._cache.tokens_in
    assert np.array_equal(fed[0], tgt_in[0])
    model.backward(d_logits)
    p, i, eps = model.params["tgt_embed.W"], (int(fed[1, 0]), 1), 1e-6
    g = model.grads["tgt_embed.W"][i]
    old = p[i]
    p[i] = old + eps
    fp = loss()
    p[i] = old - eps
    fm = loss()
    p[i] = old
    assert abs((fp - fm) / (2 * eps) - g) < 1e-6


@pytest.fixture
def one_blas_thread():
    """Small products on one BLAS thread (on a busy machine, many threads are 10x slower); restored after."""
    from unrolled.bench.timing import openblas_controls

    setter, getter = openblas_controls()
    if setter is None:
        yield
        return
    before = getter()
    setter(1)
    yield
    setter(before)


def test_a_small_attention_model_learns_to_reverse_sequences(one_blas_thread):
    """300 Adam steps of teacher forcing: exact reversal of unseen 3-7 token sequences for >= 95% of them."""
    from unrolled.clip import clip_grad_norm
    from unrolled.optim import Adam
    from unrolled.seq2seq import greedy_decode, make_batch

    rng = np.random.default_rng(0)

    def data(n):
        xs = [list(rng.integers(4, 14, size=rng.integers(3, 8))) for _ in range(n)]
        return xs, [x[::-1] for x in xs]

    model = Seq2Seq(Seq2SeqConfig(14, 14, embed_dim=16, hidden_size=32, attention="general", seed=0))
    opt = Adam(model.params, lr=1e-2)
    for _ in range(300):
        model.loss(*make_batch(*data(32)))
        clip_grad_norm(model.grads, 5.0)
        opt.step(model.grads)
    xs, ys = data(200)
    b = make_batch(xs, ys)
    hyps = greedy_decode(model.eval(), b.src, b.src_lengths, max_len=10)
    accuracy = np.mean([h.tokens == [int(t) for t in y] + [EOS] for h, y in zip(hyps, ys, strict=True)])
    assert accuracy >= 0.95
