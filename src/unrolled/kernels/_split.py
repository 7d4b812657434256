"""The batch split of the compiled cells: each worker runs a whole forward (or backward) over its rows.

The recurrence is sequential in time but independent across the batch. A split into k slices of
contiguous rows runs, in each worker (:mod:`unrolled.kernels._pool`), the cell's own single-slice code on
copies of its rows: the input projection, the compiled walk over all T steps with the worker's own
product plan and gate buffers, and in the backward the slice's weight gradients in bulk from its stored
gates (one product over all its steps, as unsplit). The k partial gradients are summed once, after the
walks. Each worker copies its slice of the output (∂L/∂x) into the caller's array itself, so the copies
run in parallel too. Where W_hh is large, the workers pack it for oneDNN's walks into one shared copy, a
piece each (:func:`shared_pack`), instead of each into its own.

Results equal the unsplit ones up to float32 summation order (the weight gradients are sums over the
slices' rows, in another order); a slice may take another walk than the whole batch would
(:func:`unrolled.kernels.walks_for` decides by its rows), each of which is tested against the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from unrolled import kernels
from unrolled.kernels import _dnnl, _pool

# From this many entries of W_hh (G·H) on, the workers of a split pack it into one copy, a piece each
# (:class:`unrolled.kernels._dnnl.SharedPack`), instead of each its own. Measured (2 workers, training
# step, shared / own, one process alternating, 16 rounds): LSTM T64 B16 H512 0.988, GRU H512 0.983; LSTM
# T50 B64 H256 1.000, LSTM T100 B32 H128 1.009 (there the pack is cheap and the hand-off is not).
SHARED_PACK = 1 << 19


def shared_pack(k: int, W_hh: np.ndarray) -> _dnnl.SharedPack | None:
    """The one packed copy of W_hh that the k workers of a split pack and read together, or None: one
    worker, a small W_hh (:data:`SHARED_PACK`), or walks without oneDNN (which pack nothing)."""
    if k <= 1 or W_hh.size < SHARED_PACK or W_hh.dtype != np.float32 or kernels.dnnl_walks() is None:
        return None
    raw = np.empty(W_hh.size + 16, dtype=np.float32)
    at = (-raw.ctypes.data % 64) // 4  # 64-byte aligned, as oneDNN allocates its own
    return _dnnl.SharedPack(k, raw[at : at + W_hh.size])


def bounds(B: int, k: int) -> list[int]:
    """k + 1 row boundaries splitting B rows into k slices whose sizes differ by at most one."""
    return [B * i // k for i in range(k + 1)]


class SplitCache:
    """The cache of a split forward: the slices' own caches (``parts``) and their row ``bounds``.

    Read as the unsplit cache would be (``cache.gates``, ``cache.hs``, ...: the diagnostics do), a field
    is put together from the slices on first access, along the batch axis (axis 1 of every field)."""

    def __init__(self, cell, row_bounds: list[int], parts: list) -> None:
        self.cell, self.bounds, self.parts = cell, row_bounds, parts
        self._joined: dict[str, np.ndarray | None] = {}

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in type(self.__dict__["parts"][0])._fields:
            raise AttributeError(name)
        joined = self.__dict__["_joined"]
        if name not in joined:
            pieces = [getattr(c, name) for c in self.parts]
            joined[name] = None if pieces[0] is None else np.concatenate(pieces, axis=1)
        return joined[name]


class Job(NamedTuple):
    """Work for the pool: ``tasks`` run at once, one per worker; ``finish`` turns their results (in order)
    into the cell's result. A whole forward or backward of one direction is a job of one task."""

    tasks: list[Callable[[], object]]
    finish: Callable[[list], object]


def _whole(call: Callable[[], object]) -> Job:
    return Job([call], lambda done: done[0])


def forward_job(cell, k: int, x: np.ndarray, state0, p: dict, mask: np.ndarray | None) -> Job:
    """``cell._forward`` over k slices of the batch (k = 1: the whole batch, no copies); finished, it gives
    hs (T, B, H), state_T and a :class:`SplitCache` (k = 1: the cell's own cache)."""
    if k <= 1:
        return _whole(lambda: cell._forward(x, state0, p, mask))
    T, B, _ = x.shape
    H = p["W_hh"].shape[1]
    rows = bounds(B, k)
    hs = np.empty((T, B, H), dtype=x.dtype)
    share = shared_pack(k, p["W_hh"])

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        m = None if mask is None else np.ascontiguousarray(mask[:, r])
        with _dnnl.sharing(share, i):
            out, state_T, cache = cell._forward(
                np.ascontiguousarray(x[:, r]), tuple(np.ascontiguousarray(s[r]) for s in state0), p, m
            )
        hs[:, r] = out
        return state_T, cache

    def finish(done: list):
        state_T = tuple(np.concatenate([d[0][j] for d in done]) for j in range(len(done[0][0])))
        return hs, state_T, SplitCache(cell, rows, [d[1] for d in done])

    return Job([partial(part, i) for i in range(k)], finish)


def infer(cell, k: int, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
    """``cell._infer`` (the forward without a backward cache) over k slices of the batch at once: hs
    (T, B, H), state_T. The same slices as :func:`forward`, so the outputs equal its bit for bit."""
    T, B, _ = x.shape
    H = p["W_hh"].shape[1]
    rows = bounds(B, k)
    hs = np.empty((T, B, H), dtype=x.dtype)
    share = shared_pack(k, p["W_hh"])

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        m = None if mask is None else np.ascontiguousarray(mask[:, r])
        with _dnnl.sharing(share, i):
            out, state_T = cell._infer(
                np.ascontiguousarray(x[:, r]), tuple(np.ascontiguousarray(s[r]) for s in state0), p, m
            )
        hs[:, r] = out
        return state_T

    kernels.dnnl_walks()
    done = _pool.run(part, k)
    return hs, tuple(np.concatenate([d[j] for d in done]) for j in range(len(done[0])))


def backward_job(cell, d_hs: np.ndarray, d_stateT, cache, p: dict) -> Job:
    """``cell._backward`` of a forward job's cache: over its slices for a :class:`SplitCache` (then
    finished: dx (T, B, I), d_state0, grads summed over the slices), else in one task."""
    if type(cache) is not SplitCache:
        return _whole(lambda: cell._backward(d_hs, d_stateT, cache, p))
    rows, parts = cache.bounds, cache.parts
    T, B, _ = d_hs.shape
    x0 = parts[0].x
    dx = np.empty((T, B, x0.shape[2]), dtype=x0.dtype)
    share = shared_pack(len(parts), p["W_hh"])

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        with _dnnl.sharing(share, i):
            dx_i, d_state0, grads = cell._backward(
                np.ascontiguousarray(d_hs[:, r]), tuple(np.ascontiguousarray(s[r]) for s in d_stateT),
                parts[i], p,
            )  # fmt: skip
        dx[:, r] = dx_i
        return d_state0, grads

    def finish(done: list):
        d_state0 = tuple(np.concatenate([d[0][j] for d in done]) for j in range(len(done[0][0])))
        grads = done[0][1]  # the first slice's own new arrays: the others are added into them
        for name, total in grads.items():
            for d in done[1:]:
                total += d[1][name]
        return dx, d_state0, grads

    return Job([partial(part, i) for i in range(len(parts))], finish)


def run(jobs: list[Job]) -> list:
    """Every task of every job at once, one per worker (the calling thread runs the first); then each
    job's result, in order."""
    tasks = [t for job in jobs for t in job.tasks]
    if len(tasks) > 1:
        kernels.dnnl_walks()  # oneDNN loaded (where used) before the workers start: each sets its OpenMP to 1
    done = _pool.run(lambda i: tasks[i](), len(tasks))
    out, at = [], 0
    for job in jobs:
        out.append(job.finish(list(done[at : at + len(job.tasks)])))
        at += len(job.tasks)
    return out


def forward(cell, k: int, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
    """``cell._forward`` over k slices of the batch at once: hs (T, B, H), state_T, a :class:`SplitCache`."""
    return run([forward_job(cell, k, x, state0, p, mask)])[0]


def backward(cell, d_hs: np.ndarray, d_stateT, cache: SplitCache, p: dict):
    """``cell._backward`` over the slices of a split forward: dx (T, B, I), d_state0, grads (summed)."""
    return run([backward_job(cell, d_hs, d_stateT, cache, p)])[0]


class BatchSplit:
    """What the compiled cells share: ``forward`` splits the batch across workers where
    :func:`unrolled.kernels.workers_for` says it pays, else runs the cell's ``_forward`` directly;
    ``backward`` follows the forward's cache."""

    gates: int

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), state0 -> hs (T, B, H), state_T, cache (see the cell's ``_forward``)."""
        T, B, I = x.shape
        k = kernels.workers_for(T, B, I, self.gates, p["W_hh"].shape[1])
        if k <= 1:
            return self._forward(x, state0, p, mask)
        return forward(self, k, x, state0, p, mask)

    def infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward without a backward cache (the inference path): x (T, B, I), state0 -> hs (T, B, H),
        state_T, equal bit for bit to :meth:`forward`'s; split across workers exactly as it would be."""
        T, B, I = x.shape
        k = kernels.workers_for(T, B, I, self.gates, p["W_hh"].shape[1])
        if k <= 1:
            return self._infer(x, state0, p, mask)
        return infer(self, k, x, state0, p, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache, p: dict):
        """BPTT of a forward of this cell, split or not: dx (T, B, I), d_state0, grads."""
        if type(cache) is SplitCache:
            return backward(self, d_hs, d_stateT, cache, p)
        return self._backward(d_hs, d_stateT, cache, p)
