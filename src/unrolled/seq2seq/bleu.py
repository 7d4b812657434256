"""Corpus BLEU (Papineni et al. 2002), computed exactly as sacrebleu's default ``BLEU()`` does.

For hypotheses h_i with reference sets R_i, after the ``13a`` tokenisation (mteval-v13a, WMT's)::

    p_n   = Σ_i Σ_{g ∈ n-grams(h_i)} min(count_{h_i}(g), max_{r ∈ R_i} count_r(g)) / Σ_i |n-grams(h_i)|
    c     = Σ_i |h_i|,   r = Σ_i |closest reference of h_i|   (ties: the shorter one)
    BP    = 1 if c ≥ r else exp(1 − r / c)
    BLEU  = 100 · BP · exp((1/4) Σ_{n=1..4} log p_n)

Smoothing is sacrebleu's default "exp" (the NIST one): the k-th order with no match at all counts as
p_n = 1 / (2^k · total_n). The result equals ``sacrebleu.corpus_bleu`` (tested against it where sacrebleu
is installed); sacrebleu is an optional extra, this module has no dependency.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

MAX_ORDER = 4

# The mteval-v13a rules as sacrebleu writes them (sacrebleu/tokenizers/tokenizer_re.py).
_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols and ASCII punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


class BLEUScore(NamedTuple):
    score: float  # 0..100
    precisions: list[float]  # p_1..p_4 in percent
    brevity_penalty: float
    sys_len: int
    ref_len: int


def tokenize_13a(line: str) -> list[str]:
    """sacrebleu's default tokenizer: split off punctuation and symbols, keep numbers like 3.5 and 1,000."""
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for rx, repl in _RULES:
        line = rx.sub(repl, line)
    return line.split()


def _ngrams(tokens: list[str]) -> Counter:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, MAX_ORDER + 1) for i in range(len(tokens) - n + 1)
    )


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> BLEUScore:
    """BLEU of detokenised hypotheses against one or more detokenised references per hypothesis.

    Parameters
    ----------
    hypotheses : N sentences.
    references : N lists of reference sentences (each non-empty; the number may vary per sentence).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"bleu: {len(hypotheses)} hypotheses but {len(references)} reference sets")
    if not hypotheses:
        raise ValueError("bleu: no sentences")
    correct, total = [0] * MAX_ORDER, [0] * MAX_ORDER
    sys_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        if not refs:
            raise ValueError("bleu: a sentence without any reference")
        h = tokenize_13a(hyp)
        ref_toks = [tokenize_13a(r) for r in refs]
        best: Counter = Counter()
        for r in ref_toks:
            for g, c in _ngrams(r).items():
                best[g] = max(best[g], c)
        closest = min((abs(len(r) - len(h)), len(r)) for r in ref_toks)[1]
        sys_len += len(h)
        ref_len += closest
        for g, c in _ngrams(h).items():
            total[len(g) - 1] += c
            correct[len(g) - 1] += min(c, best[g])
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    precisions = [0.0] * MAX_ORDER
    if not any(correct):
        return BLEUScore(0.0, precisions, bp, sys_len, ref_len)
    smooth = 1.0
    for n in range(MAX_ORDER):
        if total[n] == 0:
            break  # sacrebleu leaves p_n = 0 here, which gives BLEU 0 (a corpus of 1-3 word sentences)
        if correct[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    log_sum = sum(math.log(p) if p > 0 else -9999999999.0 for p in precisions)
    return BLEUScore(bp * math.exp(log_sum / MAX_ORDER), precisions, bp, sys_len, ref_len)
