"""Text for character-level models: a vocabulary of characters, and UTF-8 files encoded to ids by streaming.

A file of any size is read in chunks of :data:`CHUNK_BYTES` and decoded incrementally, twice: once to
count its characters and collect the ones it uses, once to write their ids into an array allocated
exactly once. The ids are stored compactly — one byte per character while the vocabulary has at most
256 characters, two bytes up to 65,536 — so a 100 MB text needs about 100 MB of ids (plus one chunk),
never a Python string of it, and never int64 ids of the whole text. Batches are widened to int64 only
when they are cut out of it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unrolled._files import open_regular_file

CHUNK_BYTES = 1 << 20  # 1 MiB of the file at a time; working memory ≈ 30 × this, whatever the file size
MAX_VOCAB = 0x110000  # every Unicode code point: no vocabulary of distinct characters can be larger


class TextError(ValueError):
    """A text that cannot be used: missing, not UTF-8, too short, or with characters outside a vocabulary."""


def _char_name(c: str) -> str:
    return f"{c!r} (U+{ord(c):04X})"


@dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows; a character's id is its position in ``chars`` (sorted by code point).

    Parameters
    ----------
    chars : the distinct characters, each a one-character string, in increasing code-point order.
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
    def from_chars(cls, chars) -> Vocabulary:
        """The vocabulary of a set (or any iterable) of characters."""
        return cls(tuple(sorted(set(chars))))

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

    def encode(self, text: str, where: str = "text", offset: int = 0) -> np.ndarray:
        """The ids of `text`, shape (len(text),), dtype :attr:`dtype`.

        Raises :class:`TextError` naming the first character (and its position, counted from `offset`)
        that is not in the vocabulary.
        """
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids, known = self._index(codes)
        if not known.all():
            k = int(np.argmin(known))
            raise TextError(
                f"{where}: character {_char_name(text[k])} at character {offset + k} is not in the "
                f"model's vocabulary of {self.size} characters"
            )
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
) -> np.ndarray:
    """Second pass: the ids of the files one after the other, shape (Σ characters,), dtype ``vocab.dtype``.

    `lengths` are the files' character counts from :func:`scan_texts` (counted here when omitted).
    Raises :class:`TextError` for a character outside `vocab`, naming file and position.
    """
    if lengths is None:
        lengths = scan_texts(paths, chunk_bytes).lengths
    ids = np.empty(sum(lengths), dtype=vocab.dtype)
    at = 0
    for p, n in zip(paths, lengths, strict=True):
        start = at
        for text in iter_text(p, chunk_bytes):
            if at + len(text) > start + n:
                raise TextError(f"{p}: changed while it was being read")
            ids[at : at + len(text)] = vocab.encode(text, where=str(p), offset=at - start)
            at += len(text)
        if at != start + n:
            raise TextError(f"{p}: changed while it was being read")
    return ids


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
