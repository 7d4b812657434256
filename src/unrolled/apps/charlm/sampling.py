"""Drawing the next token from a model's output, and streaming generation through the one-step API.

The next-token distribution at temperature τ restricted to the top k logits is

    p_j ∝ exp(y_j / τ)  for j among the k largest y_j,   p_j = 0 otherwise,

and τ = 0 is its limit: the arg max (greedy decoding). Randomness comes only from the
``np.random.Generator`` passed in, so a fixed seed reproduces a sample exactly.

Greedy decoding of a character model soon repeats itself (often a run of spaces): once the state comes
back to where it was, the arg max does too. The repetition penalty of CTRL (Keskar et al., 2019) makes
the recent tokens less likely before the draw: with penalty θ ≥ 1, for each distinct token j among the
last W of the context,

    y_j ← y_j / θ  if y_j > 0,     y_j ← y_j · θ  otherwise,

(:func:`apply_repetition_penalty`); θ = 1 changes nothing. :func:`repeating_period` tells a loop apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Raise ValueError with a clear message for a negative/non-finite temperature or a top-k below 1."""
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top-k: expected a positive integer, got {top_k}")


def check_penalty(penalty: float, window: int) -> None:
    """Raise ValueError for a repetition penalty below 1 (or not finite) or a window below 1."""
    if not np.isfinite(penalty) or penalty < 1:
        raise ValueError(f"--repetition-penalty: expected a number >= 1 (1 = off), got {penalty}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"--repetition-window: expected a positive integer, got {window!r}")


def apply_repetition_penalty(logits: np.ndarray, recent: Sequence[int], penalty: float) -> np.ndarray:
    """A copy of logits (K,) with each distinct token of `recent` penalised once: a positive logit divided
    by `penalty`, a negative one multiplied by it (so the token gets less likely either way)."""
    z = np.array(logits, dtype=np.float64).reshape(-1)
    if penalty == 1 or len(recent) == 0:
        return z
    j = np.unique(np.asarray(recent, dtype=np.int64))
    z[j] = np.where(z[j] > 0, z[j] / penalty, z[j] * penalty)
    return z


def repeating_period(ids: Sequence[int], max_period: int = 64, min_tail: int = 60) -> int | None:
    """The period p of a loop at the end of `ids`: the smallest p <= `max_period` such that the last
    max(3p, min(`min_tail`, N/2)) ids repeat with period p (N = len(ids)); None when there is none."""
    a = np.asarray(ids).reshape(-1)
    n = len(a)
    for p in range(1, min(max_period, n // 3) + 1):
        tail = max(3 * p, min(min_tail, n // 2))
        if tail <= n and np.array_equal(a[n - tail + p :], a[n - tail : n - p]):
            return p
    return None


def next_distribution(logits: np.ndarray, temperature: float, top_k: int | None = None) -> np.ndarray:
    """p (K,) float64 over the next token from logits (K,): softmax(logits / τ) on the top k, zero elsewhere.

    τ = 0 gives the one-hot of the arg max (first one on ties).
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    K = z.shape[0]
    if top_k is not None and top_k < K:
        keep = np.argpartition(z, K - top_k)[K - top_k :]  # the k largest, in any order
        cut = np.full(K, -np.inf)
        cut[keep] = z[keep]
        z = cut
    if temperature == 0:
        p = np.zeros(K)
        p[int(np.argmax(z))] = 1.0
        return p
    z = z / temperature
    p = np.exp(z - z.max())  # the max becomes exp(0) = 1; masked entries exp(-inf) = 0
    return p / p.sum()


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One token id drawn from :func:`next_distribution` (inverse CDF: exactly one uniform draw per token)."""
    p = next_distribution(logits, temperature, top_k)
    if temperature == 0:
        return int(np.argmax(p))
    cdf = np.cumsum(p)
    # side="right": an id of probability 0 has cdf equal to its predecessor's and is never chosen.
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def generate(
    model,
    prime: np.ndarray,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: np.random.Generator | None = None,
    *,
    repetition_penalty: float = 1.0,
    repetition_window: int = 32,
    banned: Sequence[int] = (),
) -> Iterator[int]:
    """Yield `length` token ids continuing `prime`, one at a time, as they are drawn.

    Parameters
    ----------
    model : a token model with ``forward(ids (T, B), state) -> (logits (T, B, K), state)`` and
        ``step(ids (B,), state) -> (logits (B, K), state)``; it is put in eval mode (no dropout).
    prime : (P,) ids, P >= 1, read once by ``forward``; afterwards each drawn id is fed back by one
        ``step``, so the cost per character is constant: the prefix is never recomputed.
    length : number of ids to draw.
    temperature, top_k : see :func:`next_distribution`.
    rng : the only source of randomness (default: a fresh unseeded generator).
    repetition_penalty, repetition_window : :func:`apply_repetition_penalty` with the last
        `repetition_window` ids of the context (the prime's, then the drawn ones) before each draw.
    banned : ids never drawn (e.g. <unk>): their logits are set to −inf.
    """
    prime = np.asarray(prime, dtype=np.int64).reshape(-1)
    if prime.size == 0:
        raise ValueError("prime: expected at least one token to start from")
    check_sampling(temperature, top_k)
    check_penalty(repetition_penalty, repetition_window)
    rng = rng if rng is not None else np.random.default_rng()
    banned = np.asarray(banned, dtype=np.int64)
    recent = deque(prime[-repetition_window:].tolist(), maxlen=repetition_window)
    model.eval()
    logits, state = model.forward(prime[:, None], None)  # (P, 1, K): the prefix, read once
    y = logits[-1, 0]
    for n in range(length):
        if repetition_penalty != 1 or banned.size:
            y = apply_repetition_penalty(y, recent, repetition_penalty)
            y[banned] = -np.inf
        token = sample_next(y, temperature, top_k, rng)
        recent.append(token)
        yield token
        if n + 1 < length:
            y_t, state = model.step(np.array([token], dtype=np.int64), state)  # (1, K)
            y = y_t[0]
