"""Truncated backpropagation through time for long sequences (a text of millions of characters).

A sequence of T steps is walked in chunks of k steps. Each chunk starts from the state the previous
chunk ended in — the hidden state h and, for an LSTM, the cell state c are *carried* — but that state
is a constant for the chunk's backward: the gradient is *cut* at the boundary, so BPTT runs back at
most k steps and memory is O(k), not O(T)::

    s_0 = state0
    for chunk c = [t_c, t_c + k):   y_c, s_{c+1} = model(x_c, s_c)        (s_c held constant)
                                    ∂L_c/∂θ by BPTT inside the chunk only

With k ≥ T there is one chunk and the result is full BPTT. :func:`truncated_bptt` sums the chunks'
gradients for one update; the Trainer instead makes one update per chunk (``carry_state=True``
with :func:`lm_loss` and :class:`TokenStreams`), as char-rnn does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from unrolled._checks import positive_int
from unrolled.data.batching import Batch
from unrolled.nn import cross_entropy

__all__ = ["TokenStreams", "chunk_bounds", "lm_loss", "truncated_bptt"]


def chunk_bounds(T: int, k: int) -> list[tuple[int, int]]:
    """[(start, stop), …] covering 0..T in chunks of k steps (the last may be shorter)."""
    k = positive_int("k", k)
    return [(s, min(s + k, T)) for s in range(0, T, k)]


def _copy_state(state):
    if state is None:
        return None
    return tuple(s.copy() for s in state) if isinstance(state, tuple) else state.copy()


def truncated_bptt(
    model,
    x: np.ndarray,
    target: np.ndarray,
    k: int,
    state=None,
    loss: Callable = cross_entropy,
):
    """Gradients of the mean loss over a long sequence by truncated BPTT with chunks of k steps.

    Parameters
    ----------
    model : a SequenceModel with output="sequence".
    x : (T, B) token ids or (T, B, I) features.  target : what ``loss(y, target)`` compares with y
        for each chunk, time-major (T, B) class ids or (T, B, K).
    k : chunk length; k ≥ T is full BPTT.  state : initial state (zeros if None).
    loss : ``loss(y_chunk, target_chunk) -> (mean loss, ∂/∂y)``, cross_entropy by default.

    Returns
    -------
    loss : the mean over all T·B steps.  grads : name -> ∂loss/∂θ summed over the chunks (new arrays).
    state : the final state, to carry on into the next stretch of the sequence.
    """
    T = x.shape[0]
    if target.shape[0] != T:
        raise ValueError(f"target: expected {T} steps like x, got shape {target.shape}")
    total = 0.0
    grads = {name: np.zeros_like(v) for name, v in model.params.items()}
    for start, stop in chunk_bounds(T, k):
        y, state_n = model.forward(x[start:stop], state)
        chunk_loss, dy = loss(y, target[start:stop])
        w = (stop - start) / T  # chunk means → the mean over the whole sequence
        total += w * chunk_loss
        model.backward(dy * dy.dtype.type(w))  # no d_state: the gradient is cut at the chunk's end …
        for name in grads:
            grads[name] += model.grads[name]
        state = _copy_state(state_n)  # … and the carried state is a constant for the next chunk
    return total, grads, state


class TokenStreams(Sequence):
    """A long token sequence as B parallel streams, served in chunks of k steps for truncated BPTT.

    The ids (N,) are cut into B contiguous streams of L = (N − 1) // B tokens each; chunk i holds
    x = steps [i·k, i·k + k) of every stream (k, B) and y = the next token of each (k, B). Chunk i + 1
    continues each stream exactly where chunk i stopped, so the carried state is meaningful. The last
    chunk may be shorter than k.

    Memory: the ids themselves (a view, not a copy) and O(1) Python objects, whatever N, B and k — a
    chunk's bounds are computed when it is asked for, never listed (a list of N/k tuples was ~125 bytes
    per character with ``k = B = 1``), and a chunk's (k, B) int64 arrays exist only while it is used.

    Data-parallel (:mod:`unrolled.distributed`): ``streams=(lo, hi)`` serves only streams lo … hi − 1 of
    the B (a rank's share, ``distributed.shard(B, rank, size)``), chunk i being columns lo … hi − 1 of the
    whole chunk i; it keeps a copy of just the ids those streams read, ``ids[lo·L : hi·L + 1]``, so the
    caller may drop the whole array.

    Parameters
    ----------
    ids : (N,) integer token ids.  batch_size : B.  k : chunk length (the truncation horizon).
    streams : (lo, hi), the streams to serve (default all B).
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, k: int, streams: tuple[int, int] | None = None
    ) -> None:
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"ids: expected a 1-D integer array of token ids, got {ids.dtype.name}{ids.shape}"
            )
        batch_size = positive_int("batch_size", batch_size)
        L = (len(ids) - 1) // batch_size
        if L < 1:
            raise ValueError(
                f"ids: {len(ids)} tokens are too few for {batch_size} streams (need ≥ {batch_size + 1})"
            )
        lo, hi = (0, batch_size) if streams is None else streams
        if isinstance(lo, bool) or isinstance(hi, bool) or not 0 <= lo < hi <= batch_size:
            raise ValueError(f"streams: expected (lo, hi) with 0 <= lo < hi <= {batch_size}, got {streams!r}")
        self.k, self.stream_len, self.streams = positive_int("k", k), L, (int(lo), int(hi))
        self.batch_size = hi - lo  # the streams served here
        self.global_batch_size = batch_size
        # Only what these streams read: positions lo·L … hi·L (the last stream's last target included).
        self._ids = ids if streams is None else ids[lo * L : hi * L + 1].copy()
        self._cols = (np.arange(hi - lo) * L)[None, :]  # (1, B) where each stream begins in self._ids

    def __len__(self) -> int:
        return -(-self.stream_len // self.k)  # ceil(L / k)

    def bounds(self, i: int) -> tuple[int, int]:
        """(start, stop) of chunk i within each stream: [i·k, min(i·k + k, L))."""
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not -n <= i < n:
            raise IndexError(f"chunk {i!r} out of range (0..{n - 1})")
        start = (int(i) % n) * self.k
        return start, min(start + self.k, self.stream_len)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start, stop = self.bounds(i)
        t = np.arange(start, stop)[:, None] + self._cols  # (k, B) positions in ids
        x = self._ids[t].astype(np.int64)
        y = self._ids[t + 1].astype(np.int64)
        lengths = np.full(self.batch_size, stop - start, dtype=np.int64)
        return Batch(x, y, lengths, np.arange(*self.streams))

    def __call__(self, epoch: int) -> TokenStreams:
        """The same chunks every epoch (the Trainer's batch factory interface)."""
        return self


def lm_loss(model, batch: Batch, state=None):
    """One chunk of truncated BPTT for a language model: the Trainer's ``loss_fn`` with ``carry_state=True``.

    Forward from the carried ``state``, mean cross-entropy of next-token prediction, backward with the
    gradient cut at the chunk's end. Returns (loss, number of predicted tokens, the state to carry on).
    """
    y, state_n = model.forward(batch.x, state)
    loss, dy = cross_entropy(y, batch.y)  # in y's dtype: float32 logits are never widened
    del y  # the (k, B, V) logits are not needed by the backward: one such array fewer at its peak
    model.backward(dy)
    return loss, int(batch.y.size), _copy_state(state_n)
