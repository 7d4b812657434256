"""Decoding a trained :class:`~unrolled.seq2seq.model.Seq2Seq`: greedy and beam search, batched.

The model score of a hypothesis y_1 … y_n (y_n = <eos>, or the last token when max_len cuts it) is
log p(y | x) = Σ_t log softmax(z_t)[y_t]. Beam search ranks finished hypotheses by the
length-normalised score  log p(y | x) / n^α  (α = ``length_penalty``; α = 0 is the plain model score,
α = 1 the mean per token), which stops short outputs from winning only because they are short.

Beam search, per source sentence, with beam size K::

    alive = {<bos>} with score 0
    repeat up to max_len times:
        extend every alive hypothesis by every token; keep the 2K best extensions by score
        walking them in order: an extension ending in <eos> becomes a finished hypothesis, the
        others refill `alive` until it holds K
        stop when K hypotheses have finished (α = 0: also as soon as no alive score can still beat
        the best finished one, since log-probabilities only go down)
    unfinished hypotheses at max_len count as finished

Beam search is not monotone in K: the greedy path can drop off the beam and every hypothesis that
pushed it off can end worse. :func:`beam_search` therefore also scores the greedy hypothesis and
returns it when it is better, so its result is never below greedy's under the same objective.
Sentences of a batch share every matrix product; padding of the sources never changes a result.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled._checks import positive_int
from unrolled.nn import log_softmax
from unrolled.seq2seq.attention import Memory
from unrolled.seq2seq.model import DecoderState, Seq2Seq, start_tokens
from unrolled.seq2seq.text import EOS


class Hypothesis(NamedTuple):
    """One decoded sentence."""

    tokens: list[int]  # target ids, <eos> included when it was produced
    score: float  # log p(tokens | source), the model score
    attention: np.ndarray | None  # (len(tokens), S_b) weights over this sentence's source, or None

    def normalized(self, length_penalty: float) -> float:
        """score / len^α, the quantity beam search maximises."""
        return self.score / max(len(self.tokens), 1) ** length_penalty


def _check(
    model: Seq2Seq, src: np.ndarray, src_lengths: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    src, src_lengths = np.asarray(src), np.asarray(src_lengths)
    if src.ndim != 2 or src_lengths.shape != (src.shape[1],):
        raise ValueError(
            f"src: expected (S, B) ids and (B,) lengths, got {src.shape} and {src_lengths.shape}"
        )
    positive_int("max_len", max_len)
    return src, src_lengths


def _select(state: DecoderState, rows: np.ndarray) -> DecoderState:
    return DecoderState(tuple(s[:, rows] for s in state.rnn), state.feed[rows])


def _repeat_memory(mem: Memory, k: int) -> Memory:
    return Memory(*(np.repeat(a, k, axis=0) for a in mem))


def greedy_decode(
    model: Seq2Seq, src: np.ndarray, src_lengths: np.ndarray, max_len: int = 50
) -> list[Hypothesis]:
    """The most probable next token at every step, for a whole batch at once.

    Parameters
    ----------
    src : (S, B) source ids (<eos>-terminated, padded).  src_lengths : (B,).  max_len : most output tokens.

    Returns
    -------
    B hypotheses, in the batch's order.
    """
    src, src_lengths = _check(model, src, src_lengths, max_len)
    B = src.shape[1]
    enc = model.encode(src, src_lengths)
    y, state = start_tokens(B), enc.state0
    tokens = np.zeros((max_len, B), dtype=np.int64)
    scores = np.zeros(B)
    alphas = []
    done = np.zeros(B, dtype=bool)
    lengths = np.full(B, max_len)
    for t in range(max_len):
        out = model.decode_step(y, state, enc.memory)
        logp = log_softmax(out.logits.astype(np.float64))
        y = logp.argmax(axis=1)
        scores += np.where(done, 0.0, logp[np.arange(B), y])
        tokens[t] = y
        alphas.append(out.alpha)
        newly = ~done & (y == EOS)
        lengths[newly] = t + 1
        done |= newly
        state = out.state
        if done.all():
            break
    result = []
    for b in range(B):
        n = int(lengths[b])
        att = None if alphas[0] is None else np.stack([a[b, : src_lengths[b]] for a in alphas[:n]])
        result.append(Hypothesis(tokens[:n, b].tolist(), float(scores[b]), att))
    return result


def beam_search(
    model: Seq2Seq,
    src: np.ndarray,
    src_lengths: np.ndarray,
    beam_size: int = 5,
    max_len: int = 50,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """Beam search (module docstring) for a whole batch; beam_size 1 is greedy decoding.

    Parameters
    ----------
    src : (S, B) ids.  src_lengths : (B,).  beam_size : K ≥ 1.  max_len : most output tokens.
    length_penalty : α ≥ 0 of the normalised score log p / n^α.

    Returns
    -------
    B best hypotheses, in the batch's order (each never below the greedy one under that score).
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam size: expected a positive integer, got {beam_size!r}")
    if not length_penalty >= 0:
        raise ValueError(f"length penalty: expected α ≥ 0, got {length_penalty!r}")
    beams = _beam_search(model, src, src_lengths, beam_size, max_len, length_penalty)
    if beam_size == 1:
        return beams
    greedy = greedy_decode(model, src, src_lengths, max_len)
    return [
        g if g.normalized(length_penalty) > b.normalized(length_penalty) else b
        for b, g in zip(beams, greedy, strict=True)
    ]


def _beam_search(model, src, src_lengths, K: int, max_len: int, alpha: float) -> list[Hypothesis]:
    """The beam itself, without the greedy safeguard (tested on its own: K = 1 equals greedy)."""
    src, src_lengths = _check(model, src, src_lengths, max_len)
    B = src.shape[1]
    enc = model.encode(src, src_lengths)
    mem = _repeat_memory(enc.memory, K)  # row b·K + k is beam k of sentence b
    state = _select(enc.state0, np.repeat(np.arange(B), K))
    y = start_tokens(B * K)
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0  # at the start only one hypothesis is alive
    # Back-pointers to rebuild a hypothesis: per step the token and parent row of every row.
    tok_hist, parent_hist, attn_hist = [], [], []
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)

    def trace(row: int, t: int, last_tok: int, last_alpha) -> tuple[list[int], np.ndarray | None]:
        """Tokens and attention of the hypothesis that is `row` after step t − 1, extended by last_tok."""
        toks, atts = [last_tok], [last_alpha]
        for s in range(t - 1, -1, -1):
            toks.append(int(tok_hist[s][row]))
            atts.append(None if attn_hist[s] is None else attn_hist[s][row])
            row = int(parent_hist[s][row])
        toks.reverse()
        atts.reverse()
        return toks, None if atts[0] is None else np.stack(atts)

    for t in range(max_len):
        out = model.decode_step(y, state, mem)
        logp = log_softmax(out.logits.astype(np.float64))  # (B·K, V)
        V = logp.shape[1]
        cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
        n_top = min(2 * K, K * V)
        top = np.argpartition(-cand, n_top - 1, axis=1)[:, :n_top]
        new_rows = np.zeros(B * K, dtype=np.int64)
        new_tok = np.full(B * K, EOS, dtype=np.int64)
        new_scores = np.full((B, K), -np.inf)
        for b in range(B):
            if done[b]:
                continue
            order = top[b][np.argsort(-cand[b, top[b]], kind="stable")]
            n_alive = 0
            for j in order:
                sc = cand[b, j]
                if not np.isfinite(sc):
                    break
                k, v = divmod(int(j), V)
                row = b * K + k
                if v == EOS:
                    alpha_row = None if out.alpha is None else out.alpha[row]
                    toks, att = trace(row, t, v, alpha_row)
                    finished[b].append(Hypothesis(toks, float(sc), att))
                else:
                    new_rows[b * K + n_alive], new_tok[b * K + n_alive] = row, v
                    new_scores[b, n_alive] = sc
                    n_alive += 1
                if n_alive == K:
                    break
            if len(finished[b]) >= K:
                done[b] = True
            elif alpha == 0 and finished[b] and max(h.score for h in finished[b]) >= new_scores[b].max():
                done[b] = True
        # Rows of finished sentences keep a harmless copy of row b·K (their scores stay −inf).
        for b in np.flatnonzero(done):
            new_rows[b * K : (b + 1) * K] = b * K
        tok_hist.append(new_tok)
        parent_hist.append(new_rows)
        attn_hist.append(None if out.alpha is None else out.alpha[new_rows])
        scores = new_scores
        if done.all():
            break
        state = _select(out.state, new_rows)
        y = new_tok
    else:
        for b in range(B):
            if done[b]:
                continue
            for k in range(K):
                if np.isfinite(scores[b, k]):  # cut by max_len: counted as finished
                    pos = b * K + k
                    last_alpha = None if attn_hist[-1] is None else attn_hist[-1][pos]
                    toks, att = trace(
                        int(parent_hist[-1][pos]), max_len - 1, int(tok_hist[-1][pos]), last_alpha
                    )
                    finished[b].append(Hypothesis(toks, float(scores[b, k]), att))
    result = []
    for b in range(B):
        best = max(finished[b], key=lambda h: h.normalized(alpha))
        att = None if best.attention is None else best.attention[:, : src_lengths[b]]
        result.append(Hypothesis(best.tokens, best.score, att))
    return result
