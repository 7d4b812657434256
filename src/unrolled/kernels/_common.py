"""Helpers shared by the fast cells: constant gate vectors and per-step length masks."""

from __future__ import annotations

import threading
from functools import lru_cache, partial

import numpy as np

from unrolled.kernels import SMALL_PRODUCT, SMALL_PROJECTION, WIDE_PROJECTION

_scratch = threading.local()  # this thread's reused buffers: scratch() and _ones()


@lru_cache(maxsize=64)
def _gate_affine(pattern: tuple, H: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    scale = np.repeat(np.asarray(pattern[0], dtype=dtype), H)
    offset = np.repeat(np.asarray(pattern[1], dtype=dtype), H)
    scale.flags.writeable = offset.flags.writeable = False
    return scale, offset


def gate_affine(pattern: tuple, H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-gate constant vectors (G·H,) built from one number per gate block, cached (read-only)."""
    return _gate_affine(pattern, H, np.dtype(dtype))


def step_masks(mask: np.ndarray | None) -> list:
    """For each step t: None when every sequence is still running, else a (B, 1) boolean array that is
    True for the finished sequences (whose state must be carried unchanged)."""
    if mask is None:
        return _AllValid()
    done = mask == 0  # (T, B, 1)
    any_done = done.any(axis=(1, 2))
    return [done[t] if any_done[t] else None for t in range(mask.shape[0])]


class _AllValid:
    """Indexable like step_masks' list, None everywhere (no lengths given)."""

    def __getitem__(self, t: int) -> None:
        return None


def valid_steps(mask: np.ndarray | None, T: int, B: int, dtype) -> np.ndarray:
    """(T, B) with 1 where step t of sequence b is inside the sequence (for the compiled kernels; without a
    mask an array of ones this thread keeps between calls: the kernels only read it)."""
    if mask is None:
        return _ones(T * B, np.dtype(dtype)).reshape(T, B)
    return np.ascontiguousarray(mask[..., 0], dtype=dtype)


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    bufs = _scratch.__dict__
    key = ("ones", dtype)
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = np.ones(max(n, 1024), dtype=dtype)
    return buf[:n]  # writable (a read-only array would compile every walk again), but never written


def bias_or_zeros(p: dict, key: str, n: int, dtype) -> np.ndarray:
    """p[key] as a contiguous vector, or n zeros when the layer has no such bias (kernels add it always)."""
    v = p.get(key)
    return np.zeros(n, dtype=dtype) if v is None else np.ascontiguousarray(v, dtype=dtype)


def as_vector(p: dict, key: str, dtype) -> np.ndarray:
    """p[key] as a contiguous vector, or an empty one when the layer has no such bias."""
    v = p.get(key)
    return np.empty(0, dtype=dtype) if v is None else np.ascontiguousarray(v, dtype=dtype)


def transpose(W: np.ndarray, block: int = 32) -> np.ndarray:
    """A C-contiguous Wᵀ, copied in blocks of rows: ``np.ascontiguousarray(W.T)`` walks a power-of-two
    stride that thrashes the cache (measured 7.7 ms for a (2048, 512) float32 W_hh; 0.62 ms this way in
    blocks of 32 rows, 0.74 in blocks of 64, 1.2 in blocks of 128)."""
    R, C = W.shape
    WT = np.empty((C, R), dtype=W.dtype)
    for i in range(0, R, block):
        WT[:, i : i + block] = W[i : i + block].T
    return WT


# The input projections W_xh x_t of a compiled walk are computed a chunk of steps at a time, in the
# training forward (into its stored gates) and in the inference forward (into one reused buffer) alike:
# the same products over the same rows, so both paths' outputs are equal bit for bit. A chunk holds at
# most PROJECT_CHUNK floats (1 MiB), but at least MIN_CHUNK_ROWS rows (T·B) so each product stays large
# enough to run at the BLAS's speed; small sequences are one chunk.
PROJECT_CHUNK = 1 << 18
MIN_CHUNK_ROWS = 256


def chunk_steps(T: int, B: int, G: int) -> int:
    """Steps per chunk of the input projection of a walk of T steps, batch B, G·H = G projected rows."""
    n = max(-(-MIN_CHUNK_ROWS // B), PROJECT_CHUNK // (B * G))
    return max(1, min(T, n))


def project_into(x: np.ndarray, W_xh: np.ndarray, out: np.ndarray, matmul) -> None:
    """out (Tc, B, G) = W_xh x_t for the Tc steps of x (Tc, B, I), one product (``matmul(a, b, out=)``; a
    small one by NumPy's, whatever ``matmul`` is: below :data:`~unrolled.kernels.SMALL_PRODUCT`
    multiply-adds, or :data:`~unrolled.kernels.SMALL_PROJECTION` where G ≥
    :data:`~unrolled.kernels.WIDE_PROJECTION`; the same choice in the training and inference walks)."""
    Tc, B, I = x.shape
    G = out.shape[2]
    macs = Tc * B * I * G
    if macs < (SMALL_PROJECTION if G >= WIDE_PROJECTION else SMALL_PRODUCT):
        matmul = np.matmul
    matmul(x.reshape(Tc * B, I), W_xh.T, out=out.reshape(Tc * B, G))


# A unit-split walk (:mod:`unrolled.kernels._units`) starts on the head of a chunk while a partner projects
# the chunk's tail, so the calling thread projects only the head before the walk (training and inference
# alike: the same two products, so the outputs stay equal bit for bit).
HEAD_FRACTION = 0.2


def head_steps(steps: int, units: int) -> int:
    """How many of a chunk's ``steps`` the calling thread projects before a walk split over ``units``
    workers starts (:func:`unrolled.kernels._units.run`'s ``head``); 0: the whole chunk in one product
    (no split)."""
    if units <= 1 or steps < 2:
        return 0
    return max(1, int(steps * HEAD_FRACTION))


def project_head(x: np.ndarray, t0: int, g: np.ndarray, W_xh: np.ndarray, matmul, units: int):
    """For the chunk of an inference walk from step t0 (its gates buffer ``g``, (Tc, B, G)): projects
    the chunk's head now, and returns (tail, head): ``tail()`` projects the rest (None where nothing is
    left: the chunk is one product without a unit split), as :func:`project_started` cuts it."""
    nc = g.shape[0]
    cut = head_steps(nc, units) or nc
    project_into(x[t0 : t0 + cut], W_xh, g[:cut], matmul)
    if cut == nc:
        return None, nc
    return partial(project_into, x[t0 + cut : t0 + nc], W_xh, g[cut:], matmul), cut


def project_started(x: np.ndarray, W_xh: np.ndarray, matmul, units: int = 1):
    """W_xh x_t for all T steps of x (T, B, I), in the pieces of the inference walks (the chunks of
    :func:`chunk_steps`; under a unit split, each chunk's head and tail apart, :func:`head_steps`), begun:
    returns (out (T, B, G), tail, head): under a unit split only the first piece (``head`` steps) is
    projected and ``tail()`` projects the others in order, for a training forward's walk to start on the
    head (:func:`unrolled.kernels._units.run`); else every piece is, and ``tail`` is None."""
    T, B, _ = x.shape
    G = W_xh.shape[0]
    out = np.empty((T, B, G), dtype=x.dtype)
    n = chunk_steps(T, B, G)
    pieces = []
    for t0 in range(0, T, n):
        nc = min(n, T - t0)
        cut = head_steps(nc, units) or nc
        pieces += [(t0, t0 + cut)] + ([(t0 + cut, t0 + nc)] if cut < nc else [])

    def project(todo) -> None:
        for a, b in todo:
            project_into(x[a:b], W_xh, out[a:b], matmul)

    if units <= 1 or len(pieces) == 1:  # no walk to start early
        project(pieces)
        return out, None, T
    project(pieces[:1])
    return out, partial(project, pieces[1:]), pieces[0][1]


def project_chunked(x: np.ndarray, W_xh: np.ndarray, matmul, units: int = 1) -> np.ndarray:
    """W_xh x_t for all T steps of x (T, B, I) -> (T, B, G), in the pieces of the inference walks
    (:func:`project_started`), all of them now."""
    out, tail, _ = project_started(x, W_xh, matmul, units)
    if tail is not None:
        tail()
    return out


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A work buffer of ``shape`` kept between calls in this thread (grown when too small): the inference
    walks' gate, state and product buffers, which hold nothing once a walk returns. Contents undefined."""
    bufs = _scratch.__dict__
    n = 1
    for s in shape:
        n *= s
    key = (name, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = np.empty(n, dtype=dtype)
    return buf[:n].reshape(shape)
