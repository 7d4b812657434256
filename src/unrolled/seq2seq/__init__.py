"""Sequence to sequence: an RNN encoder–decoder with attention, trained by BPTT written out by hand.

- :mod:`~unrolled.seq2seq.attention`: additive (Bahdanau) and multiplicative (Luong general / dot) attention.
- :mod:`~unrolled.seq2seq.model`: :class:`Seq2Seq` (encoder, bridge, attentional decoder) and its config.
- :mod:`~unrolled.seq2seq.decode`: greedy decoding and batched beam search.
- :mod:`~unrolled.seq2seq.text`: tokenisation, vocabularies, sentence-pair files, padded batches.
- :mod:`~unrolled.seq2seq.bleu`: corpus BLEU, equal to sacrebleu's default.
"""

from unrolled.seq2seq.attention import Attention, masked_softmax
from unrolled.seq2seq.bleu import corpus_bleu
from unrolled.seq2seq.decode import Hypothesis, beam_search, greedy_decode
from unrolled.seq2seq.model import Seq2Seq, Seq2SeqConfig
from unrolled.seq2seq.text import Vocab, detokenize, make_batch, read_pairs, tokenize

__all__ = [
    "Attention",
    "Hypothesis",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Vocab",
    "beam_search",
    "corpus_bleu",
    "detokenize",
    "greedy_decode",
    "make_batch",
    "masked_softmax",
    "read_pairs",
    "tokenize",
]
