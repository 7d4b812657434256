"""Batches of variable-length sequences: padding with lengths, optional bucketing by length, seeded shuffling.

Layouts are time-major like the layers: a batch of B sequences of lengths n_b is padded to
T = max n_b, giving x (T, B) for token ids or (T, B, I) for features, and ``lengths`` (B,) is passed
to the layers (packed-sequence semantics) and to the losses as a mask (:func:`length_mask`).

The order of an epoch is a pure function of (seed, epoch): ``SequenceBatches.epoch(e)`` can be
rebuilt at any time, so a resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from unrolled._checks import positive_int

__all__ = ["Batch", "SequenceBatches", "batch_order", "length_mask", "pad_sequences"]


class Batch(NamedTuple):
    """One padded batch: x (T, B) ids or (T, B, I) features; y targets or None; lengths (B,); index (B,)."""

    x: np.ndarray
    y: np.ndarray | None
    lengths: np.ndarray
    index: np.ndarray  # which items of the data set, in batch order


def pad_sequences(seqs: Sequence[np.ndarray], pad_value=0, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of different lengths, time-major, padded at the end.

    Parameters
    ----------
    seqs : B arrays, each (n_b,) or (n_b, I) with the same trailing shape, n_b ≥ 1.
    pad_value : the value of the padding.  dtype : of the result (default: the sequences' common dtype).

    Returns
    -------
    padded : (T, B) or (T, B, I) with T = max n_b.  lengths : (B,) int64.
    """
    if len(seqs) == 0:
        raise ValueError("seqs: expected at least one sequence, got none")
    arrs = [np.asarray(s) for s in seqs]
    tail = arrs[0].shape[1:]
    for i, a in enumerate(arrs):
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"seqs[{i}]: expected a non-empty sequence, got shape {a.shape}")
        if a.shape[1:] != tail:
            raise ValueError(f"seqs[{i}]: expected trailing shape {tail} like seqs[0], got {a.shape[1:]}")
    lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    dtype = np.result_type(*arrs) if dtype is None else np.dtype(dtype)
    out = np.full((int(lengths.max()), len(arrs)) + tail, pad_value, dtype=dtype)
    for b, a in enumerate(arrs):
        out[: a.shape[0], b] = a
    return out, lengths


def length_mask(lengths: np.ndarray, T: int, dtype=np.float32) -> np.ndarray:
    """(T, B) mask: 1 where t < lengths[b] (a valid step), 0 on padding."""
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).astype(dtype)


def batch_order(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
    bucket: bool = False,
    bucket_factor: int = 50,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Split item indices into batches.

    Without ``rng`` the order is 0..N−1. With it the items are shuffled; with ``bucket`` each window of
    ``bucket_factor · batch_size`` shuffled items is sorted by length before it is cut into batches (little
    padding, still random), and the batches themselves are shuffled.
    """
    n = len(lengths)
    batch_size = positive_int("batch_size", batch_size)
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    if bucket:
        lengths = np.asarray(lengths)
        w = batch_size * bucket_factor
        idx = np.concatenate(
            [c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(idx, max(1, -(-n // w)))]
        )
    out = [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    if bucket and rng is not None:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


class SequenceBatches:
    """A data set of variable-length sequences served as padded batches, epoch by epoch.

    Parameters
    ----------
    inputs : N sequences, each (n,) token ids or (n, I) features.
    targets : None, or N targets: per-sequence (scalars / fixed-shape arrays, stacked to (B, …)) or
        per-step (first dimension n equal to the input's, padded like the inputs to (T, B, …)).
    batch_size, shuffle, bucket, drop_last : see :func:`batch_order`.
    seed : the order of epoch e is drawn from ``np.random.default_rng([seed, e])``.
    pad_value : padding of inputs (and per-step targets).

    ``epoch(e)`` returns a list-like of :class:`Batch` (built lazily on indexing); ``len(self)`` is the
    number of batches per epoch.
    """

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        targets: Sequence | np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        bucket: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        pad_value=0,
    ) -> None:
        if len(inputs) == 0:
            raise ValueError("inputs: expected at least one sequence, got none")
        if targets is not None and len(targets) != len(inputs):
            raise ValueError(f"targets: expected {len(inputs)} (one per input), got {len(targets)}")
        self.inputs, self.targets = inputs, targets
        self.lengths = np.array([len(s) for s in inputs], dtype=np.int64)
        if (self.lengths == 0).any():
            raise ValueError(f"inputs[{int(np.argmin(self.lengths))}]: expected a non-empty sequence")
        self.per_step = targets is not None and all(
            np.ndim(t) >= 1 and len(t) == n for t, n in zip(targets, self.lengths, strict=True)
        )
        self.batch_size, self.shuffle, self.bucket, self.drop_last = batch_size, shuffle, bucket, drop_last
        self.seed, self.pad_value = seed, pad_value
        self._n = len(batch_order(self.lengths, batch_size, None, drop_last=drop_last))

    def __len__(self) -> int:
        return self._n

    def order(self, epoch: int) -> list[np.ndarray]:
        """The item indices of each batch of epoch `epoch`."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        return batch_order(self.lengths, self.batch_size, rng, self.bucket, drop_last=self.drop_last)

    def make(self, index: np.ndarray) -> Batch:
        """The padded batch of the given items."""
        x, lengths = pad_sequences([self.inputs[i] for i in index], self.pad_value)
        y = None
        if self.targets is not None:
            ts = [self.targets[i] for i in index]
            y = (
                pad_sequences(ts, self.pad_value)[0]
                if self.per_step
                else np.stack([np.asarray(t) for t in ts])
            )
        return Batch(x, y, lengths, np.asarray(index))

    def epoch(self, epoch: int) -> _Epoch:
        return _Epoch(self, self.order(epoch))

    def __call__(self, epoch: int) -> _Epoch:
        return self.epoch(epoch)


class _Epoch(Sequence):
    """The batches of one epoch, built when indexed (so skipping ahead on resume costs nothing)."""

    def __init__(self, data: SequenceBatches, order: list[np.ndarray]) -> None:
        self.data, self.order = data, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.data.make(self.order[i])
