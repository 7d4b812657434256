"""Fast paths of the cells: same signatures and results as :mod:`unrolled.cells`, fewer NumPy calls.

Three paths, one class each, side by side in :mod:`~unrolled.kernels.lstm`, :mod:`~unrolled.kernels.gru`
and :mod:`~unrolled.kernels.rnn`:

- **reference**: the cell of :mod:`unrolled.cells` itself, the readable transcription of the equations;
- **NumPy fast** (``FastLSTMCell``, ``FastGRUCell``, ``FastRNNCell``): float64, or float32 without Numba;
- **compiled** (``CompiledLSTMCell``, ...): float32 with Numba (the extra ``fast``): the gate kernels and
  whole-sequence walks of :mod:`unrolled.kernels._jit`, their recurrent product oneDNN's (the extra
  ``onednn``) or ``matmul_nt`` where :func:`walks_for` says so, else a BLAS call per step. The layer-norm
  variant cells have a compiled cell only (:mod:`~unrolled.kernels.layernorm`).

:func:`pick` is the one decision point: a layer asks it for the cell of each forward (and
:mod:`unrolled.kernels.streaming` for its one-step plans), and :func:`owner` returns the cell whose
backward matches a forward's cache, so the backward follows the forward's path. Only the compiled cells
ask :func:`walks_for` per call, since the best walk depends on the batch and hidden sizes.

Switches, read by :func:`pick` at every call: ``UNROLLED_REFERENCE=1`` (environment, before
``import unrolled``) or ``set_fast(False)`` forces the reference; ``UNROLLED_NUMBA=0`` or ``set_jit(False)``
the NumPy fast path; ``UNROLLED_DNNL=0`` or ``set_dnnl(False)`` matmul_nt / OpenBLAS instead of oneDNN.
``with kernels.using(reference=True): ...`` sets them for a block only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from unrolled import threads
from unrolled.kernels import _pool


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


_fast = not _env_flag("UNROLLED_REFERENCE")
_jit_wanted = not _env_off("UNROLLED_NUMBA")
_dnnl_wanted = not _env_off("UNROLLED_DNNL")
_jit_module = None
_jit_tried = False
_dnnl_walks = None
_dnnl_product = None  # _dnnl.matmul, once oneDNN is loaded
_dnnl_tried = False
# Bumped by every setter: what was decided under other switches (a streaming plan) is decided again.
_switches = 0


def _switched() -> None:
    global _switches
    _switches += 1


def set_fast(enabled: bool) -> None:
    """Use the fast kernels (True, the default) or always the reference cells (False)."""
    global _fast
    _fast = bool(enabled)
    _switched()


def fast_enabled() -> bool:
    return _fast


def set_jit(enabled: bool) -> None:
    """Use the Numba-compiled float32 cells when Numba is installed (True, the default), or the NumPy
    fast path only (False). Environment: ``UNROLLED_NUMBA=0``."""
    global _jit_wanted
    _jit_wanted = bool(enabled)
    _switched()


def set_dnnl(enabled: bool) -> None:
    """Use oneDNN's matrix product in the compiled walks when the extra ``onednn`` is installed (True, the
    default), or matmul_nt / OpenBLAS (False). Environment: ``UNROLLED_DNNL=0``."""
    global _dnnl_wanted
    _dnnl_wanted = bool(enabled)
    _switched()


def _optional_bool(name: str, v) -> bool | None:
    if v is not None and not isinstance(v, bool | np.bool_):
        raise TypeError(f"{name}: expected True, False or None, got {v!r}")
    return None if v is None else bool(v)


@contextmanager
def using(reference: bool | None = None, jit: bool | None = None, dnnl: bool | None = None) -> Iterator[None]:
    """Set the path switches for the ``with`` block, and restore all three afterwards (also when the
    block raises). None leaves a switch as it is; blocks nest.

    Parameters
    ----------
    reference : True forces the reference cells (``set_fast(False)``), False the fast paths.
    jit : the Numba-compiled float32 cells on or off (``set_jit``).
    dnnl : oneDNN's product in the compiled walks on or off (``set_dnnl``).
    """
    reference, jit, dnnl = (
        _optional_bool("reference", reference),
        _optional_bool("jit", jit),
        _optional_bool("dnnl", dnnl),
    )
    saved = _fast, _jit_wanted, _dnnl_wanted
    try:
        if reference is not None:
            set_fast(not reference)
        if jit is not None:
            set_jit(jit)
        if dnnl is not None:
            set_dnnl(dnnl)
        yield
    finally:
        set_fast(saved[0])
        set_jit(saved[1])
        set_dnnl(saved[2])


def _compiled():
    """The compiled kernels module when the compiled path is on, else None (switched off, Numba absent)."""
    global _jit_module, _jit_tried
    if not (_fast and _jit_wanted):
        return None
    if not _jit_tried:
        _jit_tried = True
        try:
            from unrolled.kernels import _jit
        except ImportError:  # Numba is the optional extra "fast"
            _jit = None
        _jit_module = _jit
    return _jit_module


def dnnl_walks():
    """The whole-sequence walks with oneDNN's product (``_jit.DNNL_WALKS``), or None where oneDNN or Numba
    is absent or switched off."""
    global _dnnl_walks, _dnnl_product, _dnnl_tried
    jit = _compiled() if _dnnl_wanted else None
    if jit is None:
        return None
    if not _dnnl_tried:
        _dnnl_tried = True
        from unrolled.kernels import _dnnl

        if _dnnl.load() is not None:  # before any walk that calls oneDNN is compiled or loaded
            _dnnl_walks, _dnnl_product = jit.DNNL_WALKS, _dnnl.matmul
    return _dnnl_walks


# Below this many multiply-adds a bulk product (an input projection, a weight gradient) goes to NumPy's
# matmul: oneDNN's dnnl_sgemm costs ~5 µs more per call (measured: (1 × 40)·(40 × 192) 7.4 µs against 2.1;
# (100 × 40)·(40 × 192) 22.5 against 21.5).
SMALL_PRODUCT = 1 << 21

# A wide input projection x W_xhᵀ (rows: the steps; W_xh read transposed, G ≥ WIDE_PROJECTION columns)
# pays oneDNN's call far sooner. Measured (one thread, OpenBLAS choosing its kernel, µs, NumPy / oneDNN):
# (20 × 64)·(64 × 1024) 64 / 35.5, (8 × 64)·(64 × 512) 22.9 / 13.3, (20 × 32)·(32 × 512) 16.8 / 13.2;
# narrower ones do not ((200 × 32)·(32 × 128): a whole LSTM H = 32 inference 4-5 % slower on oneDNN,
# (100 × 32)·(32 × 192) 17.3 / 17.7), nor any below 2^18 multiply-adds ((8 × 32)·(32 × 192) 5.4 / 7.8).
SMALL_PROJECTION = 1 << 18
WIDE_PROJECTION = 512


def bulk_matmul(dtype):
    """The product for the fast cells' input projections, ∂L/∂x and weight gradients (one product over all
    steps): oneDNN's where its walks are in use (float32), else NumPy's. For the weight gradients' Aᵀ·B,
    one thread, OpenBLAS's kernels chosen by the CPU (OPENBLAS_CORETYPE unset), oneDNN / OpenBLAS measured
    0.77-0.89 where a dimension is ≤ 768 (e.g. (3200 × 512)ᵀ·(3200 × 192) 5.9 against 6.9 ms) and
    0.98-1.04 on the largest ((1024 × 2048)ᵀ·(1024 × 640), (3200 × 1024)ᵀ·(3200 × 512))."""
    if np.dtype(dtype) == np.float32 and dnnl_walks() is not None:
        return _dnnl_product
    return np.matmul


def walks_for(B: int, G: int, H: int, backward: bool = False):
    """The whole-sequence walks (a ``_jit.Walks``) that run a compiled layer of batch B, G gates of size H —
    oneDNN's product for all but tiny steps when available, else matmul_nt's where ``_jit.whole_sequence``
    says — or None: then a BLAS call and a gate kernel per step. Called by the compiled cells only.

    A forward of a single sequence (B = 1, not ``backward``) takes matmul_nt's mat-vec: it reads W_hh as it
    is, where oneDNN first packs it (a 1 MiB reorder per call at H = 256) and then runs no faster at one row.
    Measured (T = 100, I = 64, one thread, interleaved; nt / oneDNN): inference forward LSTM H = 128 0.77,
    256 0.89, 512 0.90, 1024 0.77; GRU 0.70, 0.80, 0.90. The backward keeps oneDNN's (H = 512: nt 1.08–1.13
    slower; H ≤ 256 equal)."""
    from unrolled.kernels import _jit

    if B == 1 and not backward:
        return _jit.NT_WALKS
    if B * G * H * H > _jit.SMALL_MACS:  # below it, oneDNN's ~2 µs per call costs more than matmul_nt
        walks = dnnl_walks()
        if walks is not None:
            return walks
    return _jit.NT_WALKS if _jit.whole_sequence(B, G, H) else None


# A split pays where each slice's forward holds enough work to hide handing it to a worker (~30–40 µs to
# wake a thread, then copying its rows) and the two cores' contention for cache and memory. Measured on
# 2 cores (train-step speed-up from 1 to 2 workers, T = 100, I = 64, quiet machine; per-slice MACs):
# LSTM B=8 H=32 (4.9M) 1.08, LSTM B=16 H=32 (9.8M) 1.18, LSTM B=8 H=64 (13M) 1.14, GRU B=16 H=64 (20M)
# 1.43, LSTM B=16 H=64 (26M) 1.37, RNN B=32 H=128 (39M) 1.64, LSTM B=32 H=128 (157M) 1.82 — and forward
# alone below ~20M often slower on 2 workers than on 1 (0.73-0.95).
MIN_SLICE_ROWS = 4  # rows per slice, at least
MIN_SLICE_MACS = 24_000_000  # multiply-adds of one slice's forward products (T·rows·G·H·(I + H)), at least


def workers_for(T: int, B: int, I: int, G: int, H: int) -> int:
    """How many workers a compiled layer's forward and backward of T steps, batch B, input I, G gates of
    size H split their batch across: the thread budget (:func:`unrolled.threads.workers_budget`), fewer
    where a slice would be too small to pay (:data:`MIN_SLICE_ROWS`, :data:`MIN_SLICE_MACS`); 1: no split."""
    budget = threads.workers_budget()
    if budget <= 1:
        return 1
    per_row = T * G * H * (I + H)
    k = min(budget, B // MIN_SLICE_ROWS, (B * per_row) // max(1, MIN_SLICE_MACS))
    return max(1, int(k))


# The unit split (:mod:`unrolled.kernels._units`) pays where each worker's share of a step's product is
# large against the ~0.1-1 µs the workers take to wait for each other, and its share of W_hh is what a
# core's cache can hold. Measured (T = 100, 2 workers against 1, inference, quiet AMD Zen 4 with 1 MiB of
# L2 per core): LSTM B=1 H=256 1.40x, H=512 1.81x, but H=128 0.98x and H=192 0.93x; GRU B=1 H=256 1.30x,
# H=512 1.76x. At B=2 it does not pay (LSTM H=256 0.94x, H=512 1.01x): the one-worker walk's oneDNN product
# handles two rows better than matmul_nt's remainder path does.
MIN_UNIT_H = 256  # hidden units, at least
MAX_UNIT_B = 1  # a single sequence (larger batches split their rows, or stay whole)
MIN_UNIT_MACS = 2_000_000  # multiply-adds of the whole walk's recurrent products (T·B·G·H·H), at least
MIN_UNIT_SHARE = 128  # units per share, at least (measured with 2 shares only: more workers wait more often)


def unit_workers(T: int, B: int, G: int, H: int) -> int:
    """How many workers share out the hidden units of a compiled walk of T steps, batch B, G gates of size
    H (1: none): the thread budget where the batch is too small to split by rows (B ≤ :data:`MAX_UNIT_B`),
    H ≥ :data:`MIN_UNIT_H` and the walk holds :data:`MIN_UNIT_MACS`, at most one worker per
    :data:`MIN_UNIT_SHARE` units; never inside a pool worker (a run there is inline: one thread would walk
    every share, slower than the one-worker walk)."""
    if B > MAX_UNIT_B or H < MIN_UNIT_H or T * B * G * H * H < MIN_UNIT_MACS or _pool.in_worker():
        return 1
    return max(1, min(threads.workers_budget(), H // MIN_UNIT_SHARE))


def direction_slices(T: int, B: int, I: int, G: int, H: int, D: int = 2) -> int:
    """Whether the D directions of a bidirectional compiled layer run at once, each on its own workers: the
    number of batch slices per direction (1: each direction whole, on one worker), or 0: one direction
    after the other (each split by :func:`workers_for`).

    At once where the budget holds a worker per direction and one direction's work is enough to hand to a
    worker (:data:`MIN_SLICE_MACS`); each direction then splits its batch across ``budget // D`` workers
    where its slices stay large enough (:data:`MIN_SLICE_ROWS`, :data:`MIN_SLICE_MACS`). Never more
    workers than the budget: D × slices ≤ budget."""
    budget = threads.workers_budget()
    work = B * T * G * H * (I + H)  # one direction's forward multiply-adds
    if D < 2 or budget < D or work < MIN_SLICE_MACS:
        return 0
    return max(1, int(min(budget // D, B // MIN_SLICE_ROWS, work // max(1, MIN_SLICE_MACS))))


def _splittable(cells) -> bool:
    if len(cells) < 2:
        return False
    from unrolled.kernels._split import BatchSplit

    return all(isinstance(c, BatchSplit) for c in cells)


def forward_directions(cells: list, xs: list, states0: list, params: list, mask: np.ndarray | None) -> list:
    """``cells[d].forward(xs[d], states0[d], params[d], mask)`` for each direction d of one layer, as a
    list of (hs, state_T, cache): at once on the worker pool where :func:`direction_slices` says it pays
    (compiled cells only), else one after the other. The same results either way: each direction runs its
    own cell's code on its own arrays (bit-equal where the slices are the same)."""
    if _splittable(cells):
        T, B, I = xs[0].shape
        m = direction_slices(T, B, I, cells[0].gates, params[0]["W_hh"].shape[1], len(cells))
        if m:
            from unrolled.kernels import _split

            jobs = [
                _split.forward_job(c, m, x, s, p, mask)
                for c, x, s, p in zip(cells, xs, states0, params, strict=True)
            ]
            return _split.run(jobs)
    return [c.forward(x, s, p, mask) for c, x, s, p in zip(cells, xs, states0, params, strict=True)]


def infer_directions(cells: list, xs: list, states0: list, params: list, mask: np.ndarray | None) -> list:
    """The forward-only walks (``cells[d].infer``) of each direction of one layer, as (hs, state_T): over
    the batch slices :func:`forward_directions` would give each direction, so the outputs equal the
    training forward's bit for bit; one direction after the other."""
    if _splittable(cells):
        T, B, I = xs[0].shape
        m = direction_slices(T, B, I, cells[0].gates, params[0]["W_hh"].shape[1], len(cells))
        if m:
            from unrolled.kernels import _split

            return [
                _split.infer(c, m, x, s, p, mask) if m > 1 else c._infer(x, s, p, mask)
                for c, x, s, p in zip(cells, xs, states0, params, strict=True)
            ]
    return [c.infer(x, s, p, mask) for c, x, s, p in zip(cells, xs, states0, params, strict=True)]


def backward_directions(cells: list, d_hss: list, d_states: list, caches: list, params: list) -> list:
    """``cells[d].backward(d_hss[d], d_states[d], caches[d], params[d])`` for each direction, as a list of
    (dx, d_state0, grads): at once where :func:`direction_slices` says so for the same sizes (each
    direction over the slices its forward used), else one after the other."""
    if _splittable(cells):
        T, B, H = d_hss[0].shape
        p = params[0]
        if direction_slices(T, B, p["W_xh"].shape[1], cells[0].gates, H, len(cells)):
            from unrolled.kernels import _split

            jobs = [
                _split.backward_job(c, g, s, cache, p)
                for c, g, s, cache, p in zip(cells, d_hss, d_states, caches, params, strict=True)
            ]
            return _split.run(jobs)
    return [
        c.backward(g, s, cache, p)
        for c, g, s, cache, p in zip(cells, d_hss, d_states, caches, params, strict=True)
    ]


def describe() -> str:
    """Which path the layers run now, in words."""
    if not _fast:
        return "reference"
    if _compiled() is None:
        return "fast (NumPy)"
    product = "oneDNN" if dnnl_walks() is not None else "OpenBLAS"
    return f"fast (Numba float32 gate kernels, {product} recurrent products)"


def _path_cell(cell, compiled: bool):
    """The NumPy fast or compiled counterpart of a reference cell, or None where there is none."""
    from unrolled.cells import GRUCell, GRUVariantCell, LSTMCell, RNNCell
    from unrolled.cells.minrnn import MinGRUCell, MinLSTMCell
    from unrolled.kernels import gru, lstm, rnn

    if type(cell) in (MinGRUCell, MinLSTMCell):  # the parallel scans of kernels/scan.py
        from unrolled.kernels import scan

        return scan.BlockScanMinCell(cell) if compiled else scan.ScanMinCell(cell)
    if type(cell) is LSTMCell:
        return lstm.CompiledLSTMCell(cell) if compiled else lstm.FastLSTMCell(cell)
    if type(cell) is GRUCell and cell.reset_after:
        return gru.CompiledGRUCell(cell) if compiled else gru.FastGRUCell(cell)
    if type(cell) is RNNCell:
        return rnn.CompiledRNNCell(cell) if compiled else rnn.FastRNNCell(cell)
    if compiled and _layer_norm_only(cell):  # no NumPy fast path for these: float64 keeps the reference
        from unrolled.kernels import layernorm

        if type(cell) is GRUVariantCell:
            return layernorm.CompiledLNGRUCell(cell)
        return layernorm.CompiledLNLSTMCell(cell)
    return None


def _layer_norm_only(cell) -> bool:
    """A variant cell with layer normalisation and nothing else (the compiled cells of
    :mod:`unrolled.kernels.layernorm`)."""
    from unrolled.cells import GRUVariantCell, LSTMVariantCell

    if type(cell) is LSTMVariantCell:
        return cell.layer_norm and not cell.peephole and not cell.proj_size
    return type(cell) is GRUVariantCell and cell.layer_norm and cell.reset_after


_PATHS: dict = {}  # (reference cell, compiled) -> its fast cell, or None where it has none


def pick(cell, dtype, **options):
    """The cell a layer should run for arrays of ``dtype``: the compiled cell (float32, Numba on), the NumPy
    fast cell (float64, or float32 without Numba), or ``cell`` itself.

    The layer-normalised variants (``LSTMVariantCell`` with ``layer_norm`` only, ``GRUVariantCell``) have a
    compiled cell (:mod:`unrolled.kernels.layernorm`) but no NumPy fast one.

    ``cell`` itself where the fast paths are switched off, for another dtype, for a cell they do not
    implement (GRU ``reset_after=False``; the LSTM variants with peepholes or a projection, and any variant
    in float64 or without Numba), or when any keyword option is set that they do not implement (a
    recurrent-dropout ``rec_mask``, ``zoneout=True``: per-unit update masks).
    """
    if not _fast or any(v is not None and v is not False for v in options.values()):
        return cell
    dtype = np.dtype(dtype)
    if dtype != np.float32 and dtype != np.float64:
        return cell
    key = (cell, dtype == np.float32 and _compiled() is not None)
    if key not in _PATHS:
        _PATHS[key] = _path_cell(cell, key[1])
    return _PATHS[key] or cell


def output_is_own(cache) -> bool:
    """Whether the outputs that came with ``cache`` from a forward are an array of their own, which no
    cache holds: the batch split's are (its slices' outputs joined into a new array; each slice's cache
    keeps its own). Then a layer hands them to the caller without a copy."""
    from unrolled.kernels._split import SplitCache

    return type(cache) is SplitCache


def owner(cell, cache):
    """The cell whose ``backward`` matches ``cache``: the one whose forward made it, whatever the switches
    say now (each path's cache has its own type)."""
    from unrolled.kernels._split import SplitCache

    if type(cache) is SplitCache:  # a split forward of a compiled cell: that cell's backward joins it
        return cache.cell
    for compiled in (True, False):
        path = _PATHS.get((cell, compiled))
        if path is not None and type(cache) is path.cache_type:
            return path
    return cell
