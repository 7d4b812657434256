"""Text for character-level models: a vocabulary of characters, and UTF-8 files encoded to ids by streaming.

Unknown characters. A vocabulary built for a new model holds one more entry, :data:`UNK`: a lone
surrogate code point, which no UTF-8 text can decode to, so training text never produces it. A text
scored or continued later may hold characters the model never saw; :data:`UNKNOWN_POLICIES` says what
becomes of them: ``error`` refuses the text naming them, ``skip`` leaves them out (the text reads as if
they were absent), ``map`` reads each one as :data:`UNK`. Vocabularies saved before :data:`UNK` existed
have no such entry; ``map`` is refused for them.

A file of any size is read in chunks of :data:`CHUNK_BYTES` and decoded incrementally, twice: once to
count its characters and collect the ones it uses, once to write their ids into an array allocated
exactly once. The ids are stored compactly — one byte per character while the vocabulary has at most
256 characters, two bytes up to 65,536 — so a 100 MB text needs about 100 MB of ids (plus one chunk),
never a Python string of it, and never int64 ids of the whole text. Batches are widened to int64 only
when they are cut out of it.
"""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unrolled._files import open_regular_file

CHUNK_BYTES = 1 << 20  # 1 MiB of the file at a time; working memory ≈ 30 × this, whatever the file size
MAX_VOCAB = 0x110000  # every Unicode code point: no vocabulary of distinct characters can be larger
# The "unknown character" entry of new vocabularies: a lone surrogate, which strict UTF-8 decoding never
# yields, so no training text holds it; JSON writes it as the escape "\udfff" and reads it back.
UNK = "\udfff"
UNKNOWN_POLICIES = ("error", "skip", "map")


class TextError(ValueError):
    """A text that cannot be used: missing, not UTF-8, too short, or with characters outside a vocabulary."""


def _char_name(c: str) -> str:
    return f"{c!r} (U+{ord(c):04X})"


def describe_chars(counts: Counter, n: int = 5) -> str:
    """The `n` most frequent characters of `counts` in words: ``'=' (U+003D) ×12, 'é' (U+00E9) ×3, …``."""
    shown = [f"{_char_name(c)} ×{k:,}" for c, k in counts.most_common(n)]
    more = len(counts) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


class UnknownCharacterError(TextError):
    """A text holds characters outside the model's vocabulary (policy ``error``).

    Attributes: ``where`` (the files), ``chars`` (the distinct unknown characters, in order of code
    point), ``vocab`` (the model's vocabulary). :meth:`message` words it with a caller's advice."""

    def __init__(self, where: str, chars: Sequence[str], vocab: Vocabulary, advice: str | None = None):
        self.where, self.chars, self.vocab = where, tuple(chars), vocab
        super().__init__(self.message(advice))

    def message(self, advice: str | None = None) -> str:
        shown = ", ".join(_char_name(c) for c in self.chars[:5])
        more = f" and {len(self.chars) - 5:,} more" if len(self.chars) > 5 else ""
        n = len(self.chars)
        if advice is None:
            advice = "score them with unknown='skip' (leave them out)" + (
                " or unknown='map' (read them as <unk>)" if self.vocab.unk_id is not None else ""
            )
        return (
            f"{self.where}: {n:,} character{'s' if n != 1 else ''} not in the model's vocabulary of "
            f"{self.vocab.size:,}: {shown}{more}; {advice}"
        )


@dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows; a character's id is its position in ``chars`` (sorted by code point).

    Parameters
    ----------
    chars : the distinct characters, each a one-character string, in increasing code-point order;
        :data:`UNK` among them when the model has an "unknown character" id.
    """

    chars: tuple[str, ...]
    _codes: np.ndarray = field(init=False, repr=False, compare=False)  # (V,) uint32 code points, sorted

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TextError("vocabulary: expected one-character strings")
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        if len(chars) < 2 or (np.diff(codes.astype(np.int64)) <= 0).any():
            raise TextError("vocabulary: expected at least 2 distinct characters in code-point order")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "_codes", codes)

    @classmethod
    def from_chars(cls, chars, unk: bool = False) -> Vocabulary:
        """The vocabulary of a set (or any iterable) of characters; with `unk`, :data:`UNK` added."""
        return cls(tuple(sorted(set(chars) | ({UNK} if unk else set()))))

    @property
    def unk_id(self) -> int | None:
        """The id of :data:`UNK`, or None for a vocabulary saved before it existed."""
        ids, known = self._index(np.array([ord(UNK)], np.uint32))
        return int(ids[0]) if known[0] else None

    @property
    def text_chars(self) -> tuple[str, ...]:
        """The characters a text can hold (all but :data:`UNK`)."""
        return tuple(c for c in self.chars if c != UNK)

    @property
    def size(self) -> int:
        """Number of characters V (the model's input and output size)."""
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, c: object) -> bool:
        return isinstance(c, str) and len(c) == 1 and self._index(np.array([ord(c)], np.uint32))[1].all()

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return np.dtype(np.uint8 if self.size <= 1 << 8 else np.uint16 if self.size <= 1 << 16 else np.uint32)

    def _index(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids of code points, and where each one is actually in the vocabulary."""
        ids = np.searchsorted(self._codes, codes).clip(max=self.size - 1)
        return ids, self._codes[ids] == codes

    def encode(
        self,
        text: str,
        where: str = "text",
        offset: int = 0,
        unknown: str = "error",
        counts: Counter | None = None,
    ) -> np.ndarray:
        """The ids of `text`, shape (len(text),) — fewer with ``unknown="skip"`` —, dtype :attr:`dtype`.

        unknown : what becomes of a character outside the vocabulary (see the module docstring):
            ``"error"`` raises :class:`TextError` naming the first one (and its position, counted from
            `offset`); ``"skip"`` leaves it out; ``"map"`` gives it :attr:`unk_id`.
        counts : where the skipped or mapped characters are counted, if given.
        """
        check_unknown_policy(unknown, self)
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids, known = self._index(codes)
        if self.unk_id is not None:  # UNK itself in a text (only from a Python string) is unknown too
            known &= codes != ord(UNK)
        if not known.all():
            if unknown == "error":
                k = int(np.argmin(known))
                raise TextError(
                    f"{where}: character {_char_name(text[k])} at character {offset + k} is not in the "
                    f"model's vocabulary of {self.size} characters"
                )
            if counts is not None:
                found, n = np.unique(codes[~known], return_counts=True)
                counts.update({chr(int(c)): int(k) for c, k in zip(found, n, strict=True)})
            if unknown == "skip":
                ids = ids[known]
            else:
                ids = np.where(known, ids, self.unk_id)
        return ids.astype(self.dtype)

    def decode(self, ids) -> str:
        """The text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_json(self) -> str:
        """The characters as one string, for a JSON field (JSON escapes what it must)."""
        return "".join(self.chars)

    @classmethod
    def from_json(cls, s: str) -> Vocabulary:
        """Inverse of :meth:`to_json`."""
        if not isinstance(s, str):
            raise TextError(f"vocabulary: expected a string of characters, got {type(s).__name__}")
        if len(s) > MAX_VOCAB:  # checked before the tuple: ~60 bytes of Python objects per character
            raise TextError(f"vocabulary: expected at most {MAX_VOCAB:,} characters, got {len(s):,}")
        return cls(tuple(s))


def check_unknown_policy(unknown: str, vocab: Vocabulary | None = None) -> str:
    """`unknown` if it is one of :data:`UNKNOWN_POLICIES` (and, for ``map``, `vocab` has an <unk> id)."""
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"--unknown: expected one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
    if unknown == "map" and vocab is not None and vocab.unk_id is None:
        raise TextError(
            "--unknown map: this model has no <unk> id (it was trained before unrolled reserved one); "
            "use --unknown skip"
        )
    return unknown


# --------------------------------------------------------------------------- streaming
def iter_text(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Decode a UTF-8 file chunk by chunk (a leading byte-order mark is dropped).

    Raises :class:`TextError` for a missing/unreadable file or bytes that are not UTF-8, with the byte offset.
    """
    path = Path(path)
    if path.is_dir():
        raise TextError(f"{path}: is a directory, expected a text file")
    try:
        # A regular file only: /dev/zero would be read forever, a FIFO would block until a writer comes.
        f = open_regular_file(path, "text")  # closed below; a generator cannot use `with` around its error
    except ValueError as e:
        raise TextError(str(e)) from None
    except OSError as e:
        raise TextError(f"{path}: cannot read ({e.strerror})") from None
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    pos = 0
    with f:
        while True:
            raw = f.read(chunk_bytes)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                # The decoder may hold back up to 3 bytes of an unfinished character from the previous chunk.
                at = pos - (len(e.object) - len(raw)) + e.start
                raise TextError(
                    f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte offset {at} cannot be "
                    "decoded); convert it, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            if text:
                yield text
            if not raw:
                return
            pos += len(raw)


@dataclass(frozen=True)
class TextStats:
    """What one pass over some files found: the characters used and how many of them each file has."""

    chars: frozenset[str]
    lengths: tuple[int, ...]  # characters per file, in order

    @property
    def total(self) -> int:
        return sum(self.lengths)


def scan_texts(paths: Sequence[str | Path], chunk_bytes: int = CHUNK_BYTES) -> TextStats:
    """First pass: count the characters of each file and collect the distinct ones."""
    if not paths:
        raise TextError("no text given")
    seen: set[int] = set()
    lengths = []
    for p in paths:
        n = 0
        for text in iter_text(p, chunk_bytes):
            codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            seen.update(np.unique(codes).tolist())
            n += len(text)
        lengths.append(n)
    return TextStats(frozenset(chr(c) for c in seen), tuple(lengths))


def encode_texts(
    paths: Sequence[str | Path],
    vocab: Vocabulary,
    lengths: Sequence[int] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    unknown: str = "error",
    counts: Counter | None = None,
) -> np.ndarray:
    """Second pass: the ids of the files one after the other, shape (Σ characters,), dtype ``vocab.dtype``
    (fewer ids with ``unknown="skip"``: the characters left out).

    `lengths` are the files' character counts from :func:`scan_texts` (counted here when omitted).
    `unknown` and `counts`: see :meth:`Vocabulary.encode`. Raises :class:`TextError` for a character
    outside `vocab` (policy ``error``), naming file and position.
    """
    if lengths is None:
        lengths = scan_texts(paths, chunk_bytes).lengths
    ids = np.empty(sum(lengths), dtype=vocab.dtype)
    at = 0  # ids written
    for p, n in zip(paths, lengths, strict=True):
        read = 0  # characters of this file read
        for text in iter_text(p, chunk_bytes):
            if read + len(text) > n:
                raise TextError(f"{p}: changed while it was being read")
            chunk = vocab.encode(text, where=str(p), offset=read, unknown=unknown, counts=counts)
            ids[at : at + len(chunk)] = chunk
            at += len(chunk)
            read += len(text)
        if read != n:
            raise TextError(f"{p}: changed while it was being read")
    return ids if at == len(ids) else ids[:at]


def check_trainable(stats: TextStats, paths: Sequence[str | Path]) -> None:
    """Refuse texts a language model cannot learn from: empty, or a single distinct character."""
    for p, n in zip(paths, stats.lengths, strict=True):
        if n == 0:
            raise TextError(f"{p}: the file is empty")
    if stats.total < 2:
        raise TextError(f"{', '.join(map(str, paths))}: only one character; a language model needs more text")
    if len(stats.chars) < 2:
        (c,) = stats.chars
        raise TextError(
            f"{', '.join(map(str, paths))}: every character is {_char_name(c)}; there is nothing to predict"
        )


def split_validation(ids: np.ndarray, fraction: float, min_len: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the last `fraction` of the ids is validation (views, no copy).

    Each part keeps at least `min_len` ids (one input and one target); raises :class:`TextError` if the
    text is too short for that.
    """
    if not 0.0 < fraction < 1.0:
        raise TextError(f"validation fraction: expected a number in (0, 1), got {fraction}")
    n_val = max(min_len, int(round(len(ids) * fraction)))
    if len(ids) - n_val < min_len:
        raise TextError(
            f"text: {len(ids)} characters are too few to split off {fraction:.0%} for validation "
            f"(each part needs at least {min_len})"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]
