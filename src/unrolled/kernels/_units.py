"""The unit split of the compiled walks: at a small batch the workers share out the hidden units.

A batch of one or a few sequences has too few rows for the batch split (:mod:`unrolled.kernels._split`),
yet at H ≥ 128 each step's product W_hh h_{t-1} is most of the work, and its rows (and all the gate
arithmetic after it) belong to one hidden unit each. So k workers each take a contiguous share of the
units, lo..hi − 1: every step, each computes the rows of its units in every gate block and writes h_t,
c_t for them; then all wait for each other (one counter per worker: :func:`unrolled.kernels._jit._arrive`)
before step t + 1 reads the whole of h_t. A worker reads only its share of W_hh, which then stays in its
own core's cache (at H = 256 an LSTM's W_hh is 1 MiB, as large as a core's L2 on the machine we measure on).

Used where :func:`unrolled.kernels.unit_workers` says so, by the training forward and the inference walk
alike (so the two stay equal bit for bit). Each unit's arithmetic is the single-worker kernels' own
(``_jit._lstm_units``, ``_jit._gru_units``), and each row of the product is computed as the single-worker
matmul_nt walk computes it: results equal that walk's; the backward runs as after any forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from unrolled.kernels import _pool

ALIGN = 16  # share boundaries are multiples of 16 units: 64 bytes of float32, so no cache line of h is shared


def bounds(H: int, k: int) -> list[int]:
    """k + 1 unit boundaries 0 = u_0 < u_1 < ... < u_k = H, the inner ones multiples of :data:`ALIGN`,
    the shares as equal as that allows (needs H ≥ k·ALIGN)."""
    inner = [round(H * i / k / ALIGN) * ALIGN for i in range(1, k)]
    return [0, *inner, H]


def run(walk: Callable[..., bool], k: int, before: Sequence, after: Sequence, recs: np.ndarray) -> None:
    """``walk(*before, lo, hi, *after, rec, flags, me)`` on k workers at once: worker w on share w of the
    H units (H from W_hh (G·H, H), the last of ``before``), ``recs[w]`` (B, G·H)
    its product buffer. Returns when every worker has finished; a worker's exception is raised here (the
    others stop waiting for it: the abort slot)."""
    from unrolled.kernels import _jit

    flags = np.zeros((k + 1) * _jit.UNIT_SLOT, dtype=np.int64)
    u = bounds(before[-1].shape[1], k)

    def task(w: int) -> bool:
        try:
            return walk(*before, u[w], u[w + 1], *after, recs[w], flags, w)
        except BaseException:
            flags[k * _jit.UNIT_SLOT] = 1  # the others stop waiting for this worker
            raise

    done = _pool.run(task, k)
    if not all(done):  # not reached: a worker that aborted the walk raised, and run() re-raised it
        raise RuntimeError("unrolled: a worker of the unit split stopped early")
