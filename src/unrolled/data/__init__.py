"""Data handling that several applications share: padding, masks and batches of sequences
(:mod:`~unrolled.data.batching`). Each application's own data code lives in its package under
:mod:`unrolled.apps`."""
