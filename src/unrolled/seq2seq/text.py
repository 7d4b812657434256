"""Text for sequence-to-sequence models: reading sentence pairs, tokenising, vocabularies.

Two tokenisations, both exactly reversible (``detokenize(tokenize(s)) == " ".join(s.split())``):

- ``"char"``: one token per character (spaces included).
- ``"word"``: words (``\\w+``) and single punctuation marks; a token that follows a space carries a
  leading ``▁`` (as in SentencePiece), so "Va !" → ["▁Va", "▁!"] and "Hi." → ["▁Hi", "."]: the
  French space before "!" survives the round trip, and BLEU is computed on real sentences.

A :class:`Vocab` maps tokens to ids with four reserved ids (pad 0, unk 1, bos 2, eos 3), keeps the
most frequent tokens up to a size cap (ties broken alphabetically, so it is deterministic) and is
saved with the model as JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
MODES = ("char", "word")
_SPACE = "▁"
_WORD = re.compile(r"\s*(?:\w+|[^\w\s])")


def tokenize(text: str, mode: str) -> list[str]:
    """Split one sentence into tokens (see the module docstring); whitespace runs count as one space."""
    text = " ".join(text.split())
    if mode == "char":
        return list(text)
    if mode == "word":
        out = []
        for m in _WORD.finditer(text):
            tok = m.group(0)
            out.append(_SPACE + tok.lstrip() if tok[0].isspace() or m.start() == 0 else tok)
        return out
    raise ValueError(f"tokenizer: expected one of {', '.join(MODES)}, got {mode!r}")


def detokenize(tokens: Iterable[str], mode: str) -> str:
    """The inverse of :func:`tokenize`."""
    if mode == "char":
        return "".join(tokens)
    return "".join(tokens).replace(_SPACE, " ").strip()


class Vocab:
    """Token ↔ id. ``ids[0:4]`` are the specials ``<pad> <unk> <bos> <eos>``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary: the first entries must be {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary: duplicate tokens")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences: Iterable[list[str]], max_size: int | None = None, min_freq: int = 1) -> Vocab:
        """Most frequent tokens first, at most ``max_size`` entries in all (specials included)."""
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(
                f"vocab size: expected more than {len(SPECIALS)} (the special tokens), got {max_size}"
            )
        counts = Counter(t for s in sentences for t in s)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of the tokens; a token outside the vocabulary becomes ``<unk>``."""
        return [self.index.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the ids, stopping at ``<eos>``; pad and bos are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.tokens[i])
        return out

    def to_list(self) -> list[str]:
        return list(self.tokens)


def read_pairs(path: str | Path, source_col: int = 1, target_col: int = 2) -> list[tuple[str, str]]:
    """Sentence pairs from a tab-separated UTF-8 file; columns are 1-based (``cut -f`` numbering).

    Blank lines are skipped. Raises ValueError with one line naming the file and line on an empty file,
    a line without a tab, a column index past the line's columns, or an empty sentence.
    """
    for name, c in (("source column", source_col), ("target column", target_col)):
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"{name}: expected a 1-based column number (1, 2, ...), got {c!r}")
    if source_col == target_col:
        raise ValueError(f"source and target column are both {source_col}: expected two different columns")
    from unrolled._files import read_text_file

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a tab-separated pairs file")
    text = read_text_file(path, "pairs file", encoding="utf-8")  # a device or FIFO is refused at once
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise ValueError(f"{path}:{n}: no tab in this line; expected tab-separated columns")
        need = max(source_col, target_col)
        if len(cols) < need:
            raise ValueError(f"{path}:{n}: column {need} requested but this line has {len(cols)} columns")
        src, tgt = cols[source_col - 1].strip(), cols[target_col - 1].strip()
        if not src or not tgt:
            raise ValueError(f"{path}:{n}: empty {'source' if not src else 'target'} sentence")
        pairs.append((src, tgt))
    if not pairs:
        raise ValueError(f"{path}: no sentence pairs (the file is empty)")
    return pairs


def pad_batch(seqs: Sequence[Sequence[int]], add_bos: bool = False, add_eos: bool = True):
    """Time-major padded ids (T, B) and lengths (B,), with optional <bos> / <eos> around each sequence."""
    seqs = [([BOS] if add_bos else []) + list(s) + ([EOS] if add_eos else []) for s in seqs]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if lengths.size == 0 or lengths.min() == 0:
        raise ValueError("batch: every sequence needs at least one token")
    ids = np.full((int(lengths.max()), len(seqs)), PAD, dtype=np.int64)
    for b, s in enumerate(seqs):
        ids[: len(s), b] = s
    return ids, lengths


class PairBatch(NamedTuple):
    """A padded batch of sentence pairs, time-major."""

    src: np.ndarray  # (S, B) source ids, each ending in <eos>
    src_lengths: np.ndarray  # (B,)
    tgt_in: np.ndarray  # (T, B) decoder inputs: <bos> y_1 … y_{n-1}
    tgt_out: np.ndarray  # (T, B) what to predict: y_1 … y_n with y_n = <eos>
    tgt_mask: np.ndarray  # (T, B) 1.0 at real target tokens, 0.0 at padding


def make_batch(
    src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], dtype=np.float32
) -> PairBatch:
    """Pad B source and target id lists (without specials) into a :class:`PairBatch`."""
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"batch: {len(src_ids)} sources but {len(tgt_ids)} targets")
    src, src_len = pad_batch(src_ids)
    tgt_out, tgt_len = pad_batch(tgt_ids)
    tgt_in = np.vstack([np.full((1, len(tgt_ids)), BOS, dtype=np.int64), tgt_out[:-1]])
    tgt_in[tgt_in == EOS] = PAD  # an <eos> is never a decoder input
    mask = (np.arange(tgt_out.shape[0])[:, None] < tgt_len[None, :]).astype(dtype)
    return PairBatch(src, src_len, tgt_in, tgt_out, mask)
