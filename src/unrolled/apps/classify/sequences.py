"""Labelled sequences for classification: the file layouts a user brings, the built-in datasets,
a character vocabulary and a stratified split.

A dataset is a list of items, one per sequence, and one label per item:

- ``kind="dense"``: each item is a float array (T_i, F) — T_i time steps of F features;
- ``kind="text"``: each item is a string, read character by character (token ids via :class:`CharVocab`).

File layouts (documented in the README):

- **NPZ**: ``x`` (N, T, F) float, zero-padded; ``y`` (N,) labels (integers or strings);
  optional ``lengths`` (N,) valid steps per sequence (default: all T).
- **long CSV** (dense): one row per time step, a sequence-id column, a label column and feature
  columns; a sequence's rows in time order (they need not be contiguous), its label the same on every row.
- **text CSV**: one row per sequence, a text column and a label column.
- **text folder**: one ``<label>.txt`` per class, one sequence per line (the names-to-language data).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unrolled._files import open_regular_file, read_text_file
from unrolled._optional import install_hint


@dataclass
class SequenceDataset:
    """N labelled sequences: ``items`` (arrays (T_i, F) or strings), ``labels`` (N,) ids into ``classes``."""

    items: list
    labels: np.ndarray  # (N,) int64 in 0..K-1
    classes: list[str]  # K class names, id order
    kind: str  # "dense" | "text"
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "text"):
            raise ValueError(f"kind: expected 'dense' or 'text', got {self.kind!r}")
        if len(self.items) != len(self.labels):
            raise ValueError(f"labels: expected {len(self.items)} labels, got {len(self.labels)}")
        if len(self.items) == 0:
            raise ValueError(f"{self.name or 'dataset'}: no sequences")
        if len(self.classes) < 2:
            raise ValueError(f"{self.name or 'dataset'}: expected 2 or more classes, got {len(self.classes)}")

    @property
    def input_size(self) -> int | None:
        """F for dense items, None for text."""
        return int(self.items[0].shape[1]) if self.kind == "dense" else None

    def repeats(self) -> np.ndarray:
        """Indices of items that repeat an earlier (sequence, label) pair exactly."""
        seen, rep = set(), []
        for i, (x, y) in enumerate(zip(self.items, self.labels.tolist(), strict=True)):
            key = (x if isinstance(x, str) else (x.shape, x.tobytes()), y)
            if key in seen:
                rep.append(i)
            seen.add(key)
        return np.array(rep, dtype=np.int64)

    def deduplicated(self) -> SequenceDataset:
        """The data set without exact repeats (a repeat split into both train and test inflates the score)."""
        keep = np.setdiff1d(np.arange(len(self.items)), self.repeats())
        return self.subset(keep)

    def subset(self, idx: np.ndarray) -> SequenceDataset:
        items = [self.items[i] for i in idx]
        return SequenceDataset(items, self.labels[idx], self.classes, self.kind, self.name)


def _encode_labels(raw: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(raw))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[r] for r in raw], dtype=np.int64), classes


# --------------------------------------------------------------------------- user layouts
@dataclass
class Records:
    """Sequences as read from a file, labelled or not: ``ids`` name them in outputs."""

    ids: list[str]
    items: list  # (T_i, F) float32 arrays, or strings
    labels: list[str] | None  # raw labels, or None where the file has none

    def dataset(self, kind: str, name: str) -> SequenceDataset:
        if self.labels is None:
            raise ValueError(f"{name}: the file has no labels (training needs a label per sequence)")
        y, classes = _encode_labels(self.labels)
        return SequenceDataset(self.items, y, classes, kind, name)


def read_npz(path: str | Path, need_labels: bool = True) -> Records:
    """``x`` (N, T, F) zero-padded features, ``y`` (N,) labels (optional when ``need_labels`` is False),
    optional ``lengths`` (N,)."""
    path = Path(path)
    with open_regular_file(path, "npz file") as fh:  # a device or FIFO is refused, never read
        data = fh.read()
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle: a data file must not run code
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable NPZ of plain arrays ({error_text(e)})") from None
    if not hasattr(z, "files"):
        raise ValueError(f"{path}: a single .npy array, expected an .npz with arrays x, y (and lengths)")
    for k in ("x", "y") if need_labels else ("x",):
        if k not in z.files:
            raise ValueError(f"{path}: no array {k!r} (arrays: {', '.join(z.files)}; expected x, y, lengths)")
    x = z["x"]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: x: expected numbers shaped (N, T, F), got {x.dtype.name} {x.shape}")
    y = z["y"] if "y" in z.files else None
    if y is not None and y.shape != (len(x),):
        raise ValueError(f"{path}: y: expected ({len(x)},) labels, got {y.shape}")
    lengths = z["lengths"] if "lengths" in z.files else np.full(len(x), x.shape[1])
    if lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype, np.integer):
        got = f"{lengths.dtype.name} {lengths.shape}"
        raise ValueError(f"{path}: lengths: expected ({len(x)},) integers, got {got}")
    if len(x) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
        got = f"{lengths.min()}..{lengths.max()}"
        raise ValueError(f"{path}: lengths: expected values in 1..{x.shape[1]}, got {got}")
    items = [np.asarray(x[i, : lengths[i]], dtype=np.float32) for i in range(len(x))]
    if any(not np.isfinite(a).all() for a in items):
        raise ValueError(f"{path}: x contains NaN or inf inside a sequence's valid steps")
    labels = [str(v) for v in y.tolist()] if y is not None else None
    return Records([str(i) for i in range(len(x))], items, labels)


def read_long_csv(
    path: str | Path, id_column: str, label_column: str | None, features: list[str] | None = None
) -> Records:
    """One row per time step: ``id_column`` groups rows into sequences (in order of first appearance),
    ``label_column`` (None: unlabelled) gives each sequence's label, ``features`` (default: every other
    column) its per-step inputs."""
    path = Path(path)
    with io.StringIO(read_text_file(path, "csv file"), newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise ValueError(f"{path}: empty file or blank first line (expected a header row)")
        feats = list(features or [h for h in header if h not in (id_column, label_column)])
        for c in [id_column, *([label_column] if label_column else []), *feats]:
            if c not in header:
                raise ValueError(f"{path}: no column {c!r} (columns: {', '.join(header)})")
        if not feats:
            raise ValueError(f"{path}: no feature columns besides {id_column!r} and {label_column!r}")
        i_id = header.index(id_column)
        i_lab = header.index(label_column) if label_column else None
        i_f = [header.index(c) for c in feats]
        steps: dict[str, list] = {}
        labels: dict[str, str] = {}
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) < len(header):
                raise ValueError(f"{path}: line {line} has {len(rec)} fields, the header has {len(header)}")
            sid = rec[i_id].strip()
            if i_lab is not None:
                lab = rec[i_lab].strip()
                if labels.setdefault(sid, lab) != lab:
                    change = f"{labels[sid]!r} → {lab!r}"
                    raise ValueError(f"{path}: line {line}: sequence {sid!r} changes label ({change})")
            row = []
            for j in i_f:
                try:
                    row.append(float(rec[j]))
                except ValueError:
                    what = rec[j].strip()[:30]
                    raise ValueError(
                        f"{path}: column {header[j]!r}, line {line}: {what!r} is not a number"
                    ) from None
            if not np.isfinite(row).all():
                raise ValueError(f"{path}: line {line}: a missing or non-finite feature value")
            steps.setdefault(sid, []).append(row)
    if not steps:
        raise ValueError(f"{path}: no data rows")
    items = [np.asarray(v, dtype=np.float32) for v in steps.values()]
    return Records(list(steps), items, [labels[s] for s in steps] if i_lab is not None else None)


def read_text_csv(path: str | Path, text_column: str, label_column: str | None) -> Records:
    """One row per sequence: a text (read character by character) and its label (None: unlabelled)."""
    path = Path(path)
    with io.StringIO(read_text_file(path, "csv file"), newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        if not any(cols):
            raise ValueError(f"{path}: empty file or blank first line (expected a header row)")
        for c in (text_column, *([label_column] if label_column else [])):
            if c not in cols:
                raise ValueError(f"{path}: no column {c!r} (columns: {', '.join(cols)})")
        texts, raw = [], []
        for rec in reader:
            rec = {k.strip(): v for k, v in rec.items() if k is not None}
            t = _normalise(rec[text_column] or "")
            if t:
                texts.append(t)
                raw.append((rec[label_column] or "").strip() if label_column else "")
    if not texts:
        raise ValueError(f"{path}: no non-empty text rows")
    return Records(list(texts), texts, raw if label_column else None)


def read_text_lines(path: str | Path) -> Records:
    """Unlabelled texts, one per line (for prediction)."""
    path = Path(path)
    lines = read_text_file(path, "text file").splitlines()
    texts = [t for t in (_normalise(line) for line in lines) if t]
    if not texts:
        raise ValueError(f"{path}: no non-empty lines")
    return Records(list(texts), texts, None)


def load_npz(path: str | Path) -> SequenceDataset:
    """A labelled NPZ (see :func:`read_npz`)."""
    return read_npz(path).dataset("dense", Path(path).stem)


def load_long_csv(
    path: str | Path, id_column: str, label_column: str, features: list[str] | None = None
) -> SequenceDataset:
    """A labelled long CSV (see :func:`read_long_csv`)."""
    return read_long_csv(path, id_column, label_column, features).dataset("dense", Path(path).stem)


def load_text_csv(path: str | Path, text_column: str, label_column: str) -> SequenceDataset:
    """A labelled text CSV (see :func:`read_text_csv`)."""
    return read_text_csv(path, text_column, label_column).dataset("text", Path(path).stem)


def load_text_folder(directory: str | Path) -> SequenceDataset:
    """One ``<label>.txt`` per class, one sequence per line (blank lines skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a folder (expected one <label>.txt file per class)")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise ValueError(f"{directory}: no .txt files (expected one <label>.txt file per class)")
    texts, raw = [], []
    for f in files:
        for line in read_text_file(f, "text file").splitlines():
            t = _normalise(line)
            if t:
                texts.append(t)
                raw.append(f.stem)
    y, classes = _encode_labels(raw)
    return SequenceDataset(texts, y, classes, "text", directory.name)


def error_text(e: BaseException) -> str:
    """An exception's message without an ``[Errno N]`` prefix."""
    return getattr(e, "strerror", None) or str(e)


def _normalise(s: str) -> str:
    """NFC and stripped: the same name typed two ways becomes the same characters."""
    return unicodedata.normalize("NFC", s.strip())


# --------------------------------------------------------------------------- built-in datasets
BUILTIN_DATASETS = {
    "digits-rows": "scikit-learn's 8x8 handwritten digits, row by row: 8 steps x 8 features, 10 classes",
    "digits-pixels": "the same digits pixel by pixel: 64 steps x 1 feature (a long-dependency test)",
    "names": "surnames to 18 languages, character by character (unrolled data fetch names, or --data-dir)",
}


def load_builtin(name: str, data_dir: str | Path | None = None) -> SequenceDataset:
    """``digits-rows``, ``digits-pixels`` (scikit-learn, the optional extra ``data``) or ``names``
    (a text folder: ``data_dir``, else the registry's ``names`` dataset, downloaded once into the cache by
    :func:`unrolled.datasets.ensure`)."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown dataset {name!r} (choose from: {', '.join(BUILTIN_DATASETS)})")
    if name == "names":
        if data_dir is None:
            from unrolled import datasets

            d = datasets.ensure("names")
        else:
            d = Path(data_dir)
        if not d.is_dir():
            raise ValueError(f"names data not found at {d}: pass --data-dir (a folder of <language>.txt)")
        ds = load_text_folder(d)
        ds.name = "names"
        return ds
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            f"dataset {name!r} needs scikit-learn: {install_hint('data', 'scikit-learn')}"
        ) from None
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (N, 8, 8), pixel intensities 0..16 -> 0..1
    items = list(images) if name == "digits-rows" else [im.reshape(64, 1) for im in images]
    return SequenceDataset(items, d.target.astype(np.int64), [str(k) for k in range(10)], "dense", name)


# --------------------------------------------------------------------------- text to token ids
class CharVocab:
    """Characters → token ids. Id 0 is ``<unk>`` (a character not seen in training; also the padding
    value, which the lengths keep out of every result)."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = ["<unk>", *chars]
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: list[str]) -> CharVocab:
        """From the training texts only: every character they use, sorted."""
        return cls(sorted(set("".join(texts))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """(T,) int64 ids; unseen characters → 0."""
        return np.array([self.index.get(c, 0) for c in text], dtype=np.int64)

    def to_list(self) -> list[str]:
        return self.chars[1:]


# --------------------------------------------------------------------------- splits
def stratified_split(
    labels: np.ndarray, test_frac: float, val_frac: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle each class with ``rng`` and cut it into train | validation | test in the given fractions
    (at least one training example per class). Returns three sorted index arrays."""
    for nm, v in (("test_frac", test_frac), ("val_frac", val_frac)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{nm}: expected a fraction in [0, 1), got {v!r}")
    if test_frac + val_frac >= 1.0:
        raise ValueError(f"test_frac + val_frac: expected below 1, got {test_frac + val_frac}")
    parts: list[list[np.ndarray]] = [[], [], []]
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_test = int(round(test_frac * len(idx)))
        n_val = int(round(val_frac * len(idx)))
        n_test, n_val = min(n_test, len(idx) - 1), min(n_val, max(len(idx) - 1 - n_test, 0))
        parts[0].append(idx[n_test + n_val :])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[2].append(idx[:n_test])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test
