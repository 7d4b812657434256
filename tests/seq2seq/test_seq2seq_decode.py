"""Greedy and beam search: beam 1 is greedy, beam never scores below greedy, a wide beam is exact, and
source padding (which sentences share a batch) never changes a translation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unrolled.nn import log_softmax
from unrolled.seq2seq.decode import _beam_search, beam_search, greedy_decode
from unrolled.seq2seq.model import Seq2Seq, Seq2SeqConfig, start_tokens
from unrolled.seq2seq.text import EOS, make_batch

SOURCES = [[4, 5, 6, 7, 8, 9], [5], [9, 8, 7], [6, 6, 4, 5], [7, 4]]


def _model(attention="general", cell="lstm", V=12, sharpen=4.0, seed=0):
    cfg = Seq2SeqConfig(
        src_vocab_size=10,
        tgt_vocab_size=V,
        embed_dim=6,
        hidden_size=5,
        attention=attention,
        cell=cell,
        dtype="float64",
        seed=seed,
    )
    m = Seq2Seq(cfg).eval()
    m.params["out.W"] *= sharpen  # a peaked output distribution, as after training
    return m


def _batch(sources):
    b = make_batch(sources, [[4]] * len(sources), np.float64)
    return b.src, b.src_lengths


def _score(model, sources, tokens_per_sentence) -> np.ndarray:
    """log p(tokens | source) by feeding each hypothesis through the decoder (teacher forcing)."""
    out = []
    for src, toks in zip(sources, tokens_per_sentence, strict=True):
        s, n = _batch([src])
        enc = model.encode(s, n)
        y, state, total = start_tokens(1), enc.state0, 0.0
        for tok in toks:
            step = model.decode_step(y, state, enc.memory)
            total += log_softmax(step.logits)[0, tok]
            y, state = np.array([tok]), step.state
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("attention", ["general", "additive", "none"])
def test_beam_of_one_is_greedy(attention):
    model = _model(attention)
    src, n = _batch(SOURCES)
    greedy = greedy_decode(model, src, n, max_len=8)
    for beams in (_beam_search(model, src, n, 1, 8, 1.0), beam_search(model, src, n, 1, 8)):
        for g, b in zip(greedy, beams, strict=True):
            assert b.tokens == g.tokens
            assert b.score == pytest.approx(g.score, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("K", [2, 3, 5])
def test_beam_never_returns_a_lower_model_score_than_greedy(K, alpha):
    for seed in range(3):
        model = _model(seed=seed, sharpen=1.5)  # a flat distribution: where greedy is most often wrong
        src, n = _batch(SOURCES)
        greedy = greedy_decode(model, src, n, max_len=6)
        beams = beam_search(model, src, n, beam_size=K, max_len=6, length_penalty=alpha)
        for g, b in zip(greedy, beams, strict=True):
            assert b.normalized(alpha) >= g.normalized(alpha) - 1e-12


def test_reported_scores_are_the_model_log_probabilities():
    model = _model()
    src, n = _batch(SOURCES)
    for decode in (lambda: greedy_decode(model, src, n, 7), lambda: beam_search(model, src, n, 4, 7, 0.0)):
        hyps = decode()
        np.testing.assert_allclose([h.score for h in hyps], _score(model, SOURCES, [h.tokens for h in hyps]))


def test_a_beam_as_wide_as_the_search_space_finds_the_most_probable_output():
    V, L = 6, 3  # every output of at most 3 tokens: exhaustive with a beam of V^(L-1)
    model = _model(V=V, sharpen=1.0)
    candidates = [list(t) for n in range(1, L + 1) for t in itertools.product(range(V), repeat=n)]
    candidates = [c for c in candidates if EOS not in c[:-1] and (c[-1] == EOS or len(c) == L)]
    for src in SOURCES[:3]:
        scores = _score(model, [src] * len(candidates), candidates)
        best = candidates[int(np.argmax(scores))]
        s, n = _batch([src])
        hyp = _beam_search(model, s, n, V ** (L - 1), L, 0.0)[0]
        assert hyp.tokens == best
        assert hyp.score == pytest.approx(scores.max())


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_source_padding_never_changes_a_translation(decode):
    model = _model("additive")

    def run(sources):
        src, n = _batch(sources)
        if decode == "greedy":
            return greedy_decode(model, src, n, max_len=8)
        return beam_search(model, src, n, beam_size=3, max_len=8)

    alone = [run([s])[0] for s in SOURCES]
    together = run(SOURCES)
    shuffled_order = [3, 0, 4, 1, 2]
    shuffled = run([SOURCES[i] for i in shuffled_order])
    pairs = [run(SOURCES[:2]), run(SOURCES[2:])]
    for i in range(len(SOURCES)):
        others = [together[i], shuffled[shuffled_order.index(i)], (pairs[0] + pairs[1])[i]]
        for h in others:
            assert h.tokens == alone[i].tokens
            assert h.score == pytest.approx(alone[i].score, abs=1e-9)
            np.testing.assert_allclose(h.attention, alone[i].attention, atol=1e-12)


def test_attention_of_a_hypothesis_covers_its_own_source_and_sums_to_one():
    model = _model()
    src, n = _batch(SOURCES)
    for h, length in zip(beam_search(model, src, n, 3, 6), n, strict=True):
        assert h.attention.shape == (len(h.tokens), length)
        np.testing.assert_allclose(h.attention.sum(axis=1), 1.0)


def test_bad_decoding_options_are_refused():
    model = _model()
    src, n = _batch(SOURCES)
    with pytest.raises(ValueError, match="beam size"):
        beam_search(model, src, n, beam_size=0)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, src, n, max_len=0)


def test_the_plain_beam_can_fall_below_greedy_which_is_why_greedy_is_kept():
    """Why beam_search also scores the greedy hypothesis: without it, some sentences come out worse."""
    worse = 0
    for seed in range(10):
        model = _model(seed=seed, sharpen=1.5)
        src, n = _batch(SOURCES)
        greedy = greedy_decode(model, src, n, 6)
        plain = _beam_search(model, src, n, 2, 6, 1.0)
        worse += sum(
            b.normalized(1.0) < g.normalized(1.0) - 1e-12 for g, b in zip(greedy, plain, strict=True)
        )
    assert worse > 0
