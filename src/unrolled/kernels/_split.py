"""The batch split of the compiled cells: each worker runs a whole forward (or backward) over its rows.

The recurrence is sequential in time but independent across the batch. A split into k slices of
contiguous rows runs, in each worker (:mod:`unrolled.kernels._pool`), the cell's own single-slice code on
copies of its rows: the input projection, the compiled walk over all T steps with the worker's own
product plan and gate buffers, and in the backward the slice's weight gradients in bulk from its stored
gates (one product over all its steps, as unsplit). The k partial gradients are summed once, after the
walks. Each worker copies its slice of the output (∂L/∂x) into the caller's array itself, so the copies
run in parallel too.

Results equal the unsplit ones up to float32 summation order (the weight gradients are sums over the
slices' rows, in another order); a slice may take another walk than the whole batch would
(:func:`unrolled.kernels.walks_for` decides by its rows), each of which is tested against the reference.
"""

from __future__ import annotations

import numpy as np

from unrolled.kernels import _pool


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


def forward(cell, k: int, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
    """``cell._forward`` over k slices of the batch at once: hs (T, B, H), state_T, a :class:`SplitCache`."""
    T, B, _ = x.shape
    H = p["W_hh"].shape[1]
    rows = bounds(B, k)
    hs = np.empty((T, B, H), dtype=x.dtype)

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        m = None if mask is None else np.ascontiguousarray(mask[:, r])
        out, state_T, cache = cell._forward(
            np.ascontiguousarray(x[:, r]), tuple(np.ascontiguousarray(s[r]) for s in state0), p, m
        )
        hs[:, r] = out
        return state_T, cache

    from unrolled import kernels

    kernels.dnnl_walks()  # oneDNN loaded (where used) before the workers start: each sets its OpenMP to 1
    done = _pool.run(part, k)
    state_T = tuple(np.concatenate([d[0][j] for d in done]) for j in range(len(done[0][0])))
    return hs, state_T, SplitCache(cell, rows, [d[1] for d in done])


def infer(cell, k: int, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
    """``cell._infer`` (the forward without a backward cache) over k slices of the batch at once: hs
    (T, B, H), state_T. The same slices as :func:`forward`, so the outputs equal its bit for bit."""
    T, B, _ = x.shape
    H = p["W_hh"].shape[1]
    rows = bounds(B, k)
    hs = np.empty((T, B, H), dtype=x.dtype)

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        m = None if mask is None else np.ascontiguousarray(mask[:, r])
        out, state_T = cell._infer(
            np.ascontiguousarray(x[:, r]), tuple(np.ascontiguousarray(s[r]) for s in state0), p, m
        )
        hs[:, r] = out
        return state_T

    from unrolled import kernels

    kernels.dnnl_walks()
    done = _pool.run(part, k)
    return hs, tuple(np.concatenate([d[j] for d in done]) for j in range(len(done[0])))


def backward(cell, d_hs: np.ndarray, d_stateT, cache: SplitCache, p: dict):
    """``cell._backward`` over the slices of a split forward: dx (T, B, I), d_state0, grads (summed)."""
    rows, parts = cache.bounds, cache.parts
    T, B, _ = d_hs.shape
    x0 = parts[0].x
    dx = np.empty((T, B, x0.shape[2]), dtype=x0.dtype)

    def part(i: int):
        r = slice(rows[i], rows[i + 1])
        dx_i, d_state0, grads = cell._backward(
            np.ascontiguousarray(d_hs[:, r]), tuple(np.ascontiguousarray(s[r]) for s in d_stateT), parts[i], p
        )
        dx[:, r] = dx_i
        return d_state0, grads

    done = _pool.run(part, len(parts))
    d_state0 = tuple(np.concatenate([d[0][j] for d in done]) for j in range(len(done[0][0])))
    grads = done[0][1]  # the first slice's own new arrays: the others are added into them
    for name, total in grads.items():
        for d in done[1:]:
            total += d[1][name]
    return dx, d_state0, grads


class BatchSplit:
    """What the compiled cells share: ``forward`` splits the batch across workers where
    :func:`unrolled.kernels.workers_for` says it pays, else runs the cell's ``_forward`` directly;
    ``backward`` follows the forward's cache."""

    gates: int

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """x (T, B, I), state0 -> hs (T, B, H), state_T, cache (see the cell's ``_forward``)."""
        from unrolled import kernels

        T, B, I = x.shape
        k = kernels.workers_for(T, B, I, self.gates, p["W_hh"].shape[1])
        if k <= 1:
            return self._forward(x, state0, p, mask)
        return forward(self, k, x, state0, p, mask)

    def infer(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The forward without a backward cache (the inference path): x (T, B, I), state0 -> hs (T, B, H),
        state_T, equal bit for bit to :meth:`forward`'s; split across workers exactly as it would be."""
        from unrolled import kernels

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
