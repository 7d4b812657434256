"""The unit split of the compiled walks: at a single sequence the workers share out the hidden units.

One sequence has no rows for the batch split (:mod:`unrolled.kernels._split`), yet at H ≥ 256 each step's
product W_hh h_{t-1} is most of the work, and its rows (and all the gate arithmetic after them) belong to
one hidden unit each. So the units are cut into k contiguous shares, one per worker. Every step, worker w
computes the rows of its share in every gate block and writes h_t, c_t for those units, then takes any
share of the step that no worker has started (a worker that lost its core to another thread does not hold
the others up: the step goes on at the one-worker speed); before step t + 1, which reads the whole of h_t,
each waits until every share of step t is done (:mod:`unrolled.kernels._jit`, "the unit split"). A worker
reads only its share of W_hh, which then stays in its own core's cache (at H = 256 an LSTM's W_hh is 1 MiB,
as large as one core's L2 on the machine we measure on).

A forward walk does not wait for the whole chunk's input projection: the calling thread projects its
head (:func:`unrolled.kernels._common.head_steps`) and starts walking, alone at first, while a partner
projects the tail and then joins; each step waits until its projection is written, and the tail goes to
whichever worker claims it first (a partner that has no core yet is not waited for).

Used where :func:`unrolled.kernels.unit_workers` says so, by the training forward and the inference walk
alike, so the two stay equal bit for bit. Each unit's arithmetic is the one-worker kernels' own
(``_jit._lstm_units``, ``_jit._gru_units``); the products are matmul_nt's, where the one-worker walk may
use oneDNN's, so results equal the one-worker walk's up to float32 rounding. The backward runs as after
any forward, split in the same shares (``*_backward_units``: each step, a share's units of
δa_{t+1} W_hh, then its gate gradients; the weight gradients follow in bulk, as after any walk).
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


def run(
    walk: Callable[..., bool],
    k: int,
    H: int,
    before: Sequence,
    after: Sequence = (),
    recs: np.ndarray | None = None,
    tail: Callable[[], None] | None = None,
    head: int = 0,
) -> None:
    """``walk(*before, bounds, *after, [rec,] flags, me)`` on k workers at once over k shares of the H units,
    worker w with ``recs[w]`` (B, G·H) as its product buffer where ``recs`` is given. Returns when every
    worker has finished; a worker's exception is raised here (the others stop waiting for it: the abort
    slot).

    ``tail``: the input projection of the chunk's steps from ``head`` on, still to be written. Worker k − 1
    (a pool thread, never the calling one) claims it first and runs it, then joins the walk; the walk starts
    at once on the ``head`` steps the caller has projected and waits, from step ``head`` on, for the tail
    (the ``ready`` slot). A worker that reaches step ``head`` while the tail is still unclaimed (worker k − 1
    has not started: its core is busy) claims and projects it itself, then walks on. Without ``tail`` every
    step's projection is taken as written."""
    from unrolled.kernels import _jit

    # claimed, done per share; abort; ready (steps projected); tail (claimed)
    flags = np.zeros((2 * k + 3) * _jit.UNIT_SLOT, dtype=np.int64)
    ready = (2 * k + 1) * _jit.UNIT_SLOT
    flags[ready] = head if tail is not None else np.iinfo(np.int64).max
    shares = np.array(bounds(H, k), dtype=np.int64)

    def project_tail() -> None:
        tail()
        _jit.publish(flags, ready, np.iinfo(np.int64).max)

    def task(w: int) -> bool:
        own = () if recs is None else (recs[w],)
        try:
            if tail is not None and w == k - 1 and _jit.claim_tail(flags):
                project_tail()
            while True:
                got = walk(*before, shares, *after, *own, flags, w)
                if got != 2:
                    return bool(got)
                project_tail()  # this worker claimed it in the walk; then the walk goes on where it stopped
        except BaseException:
            flags[2 * k * _jit.UNIT_SLOT] = 1  # the others stop waiting for this worker
            raise

    done = _pool.run(task, k)
    if not all(done):  # not reached: a worker that aborted the walk raised, and run() re-raised it
        raise RuntimeError("unrolled: a worker of the unit split stopped early")
