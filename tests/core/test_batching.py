"""Padding keeps every sequence and reports its length; bucketing groups similar lengths; the order of
an epoch is seeded, differs between epochs, and can be rebuilt exactly (what resume relies on)."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.data.batching import SequenceBatches, batch_order, length_mask, pad_sequences


def test_pad_sequences_time_major_with_lengths():
    x, lengths = pad_sequences([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])], pad_value=-1)
    np.testing.assert_array_equal(lengths, [3, 1, 2])
    np.testing.assert_array_equal(x, [[1, 4, 5], [2, -1, 6], [3, -1, -1]])
    f, _ = pad_sequences([np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)])
    assert f.shape == (2, 2, 3) and f.dtype == np.float32 and f[1, 1].sum() == 0
    np.testing.assert_array_equal(length_mask(lengths, 3), [[1, 1, 1], [1, 0, 1], [1, 0, 0]])


def test_pad_sequences_refuses_empty_and_mismatched():
    with pytest.raises(ValueError, match=r"seqs\[1\]: expected a non-empty sequence"):
        pad_sequences([np.array([1]), np.array([], int)])
    with pytest.raises(ValueError, match=r"seqs\[1\]: expected trailing shape \(3,\)"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))])


def test_every_item_once_per_epoch_seeded_and_epochs_differ():
    lengths = np.arange(1, 101)
    a = np.concatenate(batch_order(lengths, 8, np.random.default_rng(1)))
    b = np.concatenate(batch_order(lengths, 8, np.random.default_rng(1)))
    c = np.concatenate(batch_order(lengths, 8, np.random.default_rng(2)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    assert len(batch_order(lengths, 8, None, drop_last=True)) == 12


def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=2000)

    def padding(order):
        return sum(int(lengths[i].max() * len(i) - lengths[i].sum()) for i in order)

    plain = padding(batch_order(lengths, 16, np.random.default_rng(3)))
    bucketed = padding(batch_order(lengths, 16, np.random.default_rng(3), bucket=True))
    assert bucketed < plain / 5


def test_sequence_batches_targets_and_rebuildable_epochs():
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 5, size=n) for n in rng.integers(1, 9, size=23)]
    labels = rng.integers(0, 3, size=23)
    data = SequenceBatches(inputs, labels, batch_size=5, bucket=True, seed=7)
    assert len(data) == 5
    e0, e0_again, e1 = data.epoch(0), data(0), data.epoch(1)
    seen = []
    for i in range(len(e0)):
        b = e0[i]
        np.testing.assert_array_equal(b.x, e0_again[i].x)
        np.testing.assert_array_equal(b.y, labels[b.index])
        for j, item in enumerate(b.index):
            np.testing.assert_array_equal(b.x[: b.lengths[j], j], inputs[item])
        seen.extend(b.index)
    assert sorted(seen) == list(range(23))
    assert not all(np.array_equal(e0[i].index, e1[i].index) for i in range(len(e0)))
    per_step = SequenceBatches(inputs, [s + 1 for s in inputs], batch_size=4, shuffle=False)
    b = per_step.epoch(0)[0]
    assert b.y.shape == b.x.shape
    np.testing.assert_array_equal(b.y[: b.lengths[0], 0], inputs[0] + 1)


def test_sequence_batches_refuses_bad_input():
    with pytest.raises(ValueError, match="targets: expected 2"):
        SequenceBatches([np.array([1]), np.array([2])], [1])
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        SequenceBatches([np.array([1])], batch_size=0)
