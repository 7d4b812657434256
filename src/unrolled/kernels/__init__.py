"""Fast paths of the cells: same signatures and results as :mod:`unrolled.cells`, fewer NumPy calls.

The layers pick the fast cell automatically. To force the plain reference cells (the readable
transcription of the equations), set the environment variable ``UNROLLED_REFERENCE=1`` before
``import unrolled``, or call ``unrolled.kernels.set_fast(False)`` at any time. float32 runs on the
Numba-compiled gate kernels of :mod:`unrolled.kernels._jit` when Numba is installed (the extra ``fast``;
``UNROLLED_NUMBA=0`` or ``set_jit(False)`` turns them off); float64, or float32 without Numba, runs on the
NumPy fast path of :mod:`~unrolled.kernels.lstm`, :mod:`~unrolled.kernels.gru`, :mod:`~unrolled.kernels.rnn`.
In float32 the walk over time is one compiled call where :func:`walks_for` says so, its recurrent product
oneDNN's (the extra ``onednn``; ``UNROLLED_DNNL=0`` or ``set_dnnl(False)`` turns it off) or ``matmul_nt``.
"""

from __future__ import annotations

import os

import numpy as np


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_fast = not _env_flag("UNROLLED_REFERENCE")
_jit_wanted = os.environ.get("UNROLLED_NUMBA", "").strip().lower() not in ("0", "false", "no", "off")
_jit_module = None
_jit_tried = False
_dnnl_wanted = os.environ.get("UNROLLED_DNNL", "").strip().lower() not in ("0", "false", "no", "off")
_dnnl_walks = None
_dnnl_tried = False


def set_fast(enabled: bool) -> None:
    """Use the fast kernels (True, the default) or always the reference cells (False)."""
    global _fast
    _fast = bool(enabled)


def fast_enabled() -> bool:
    return _fast


def set_jit(enabled: bool) -> None:
    """Use the Numba-compiled float32 gate kernels when Numba is installed (True, the default), or the
    NumPy fast path only (False). Environment: ``UNROLLED_NUMBA=0``."""
    global _jit_wanted
    _jit_wanted = bool(enabled)


def jit_for(dtype):
    """The compiled kernels module for arrays of ``dtype``, or None (float64, Numba absent or disabled)."""
    global _jit_module, _jit_tried
    if not (_fast and _jit_wanted) or dtype != np.float32:
        return None
    if not _jit_tried:
        _jit_tried = True
        try:
            from unrolled.kernels import _jit
        except ImportError:  # Numba is the optional extra "fast"
            _jit = None
        _jit_module = _jit
    return _jit_module


def set_dnnl(enabled: bool) -> None:
    """Use oneDNN's matrix product in the compiled walks when the extra ``onednn`` is installed (True, the
    default), or matmul_nt / OpenBLAS (False). Environment: ``UNROLLED_DNNL=0``."""
    global _dnnl_wanted
    _dnnl_wanted = bool(enabled)


def dnnl_walks():
    """The whole-sequence walks with oneDNN's product (``_jit.DNNL_WALKS``), or None where oneDNN or Numba
    is absent or switched off."""
    global _dnnl_walks, _dnnl_tried
    jit = jit_for(np.float32) if _dnnl_wanted else None
    if jit is None:
        return None
    if not _dnnl_tried:
        _dnnl_tried = True
        from unrolled.kernels import _dnnl

        if _dnnl.load() is not None:  # before any walk that calls oneDNN is compiled or loaded
            _dnnl_walks = jit.DNNL_WALKS
    return _dnnl_walks


def bulk_matmul(dtype):
    """The product for the fast cells' input projections and ∂L/∂x (one product over all steps):
    oneDNN's where its walks are in use (float32), else NumPy's. (For Aᵀ·B, as in the weight gradients,
    OpenBLAS measured faster, so those stay in NumPy.)"""
    if np.dtype(dtype) == np.float32 and dnnl_walks() is not None:
        from unrolled.kernels._dnnl import matmul

        return matmul
    return np.matmul


def walks_for(jit, B: int, G: int, H: int):
    """The whole-sequence walks (a ``_jit.Walks``) that run a float32 layer of batch B, G gates of size H —
    oneDNN's product for all but tiny steps when available, else matmul_nt's where ``jit.whole_sequence``
    says — or None: then a BLAS call and a gate kernel per step."""
    if B * G * H * H > jit.SMALL_MACS:  # below it, oneDNN's ~2 µs per call costs more than matmul_nt
        walks = dnnl_walks()
        if walks is not None:
            return walks
    return jit.NT_WALKS if jit.whole_sequence(B, G, H) else None


def describe() -> str:
    """Which path the layers run now, in words."""
    if not _fast:
        return "reference"
    if not jit_for(np.dtype(np.float32)):
        return "fast (NumPy)"
    product = "oneDNN" if dnnl_walks() is not None else "OpenBLAS"
    return f"fast (Numba float32 gate kernels, {product} recurrent products)"


def _fast_cell(cell):
    """The fast counterpart of a reference cell, or None where there is none for its options."""
    from unrolled.cells import GRUCell, LSTMCell, RNNCell
    from unrolled.kernels.gru import FastGRUCell
    from unrolled.kernels.lstm import FastLSTMCell
    from unrolled.kernels.rnn import FastRNNCell

    if type(cell) is LSTMCell:
        return FastLSTMCell(cell)
    if type(cell) is GRUCell and cell.reset_after:
        return FastGRUCell(cell)
    if type(cell) is RNNCell:
        return FastRNNCell(cell)
    return None


_FAST: dict = {}


def pick(cell, dtype=None, **options):
    """The cell a layer should run: the fast one when enabled and available, else ``cell`` itself.

    Any truthy keyword option that the fast kernels do not implement (for example a recurrent-dropout
    mask) selects the reference cell. Float32 and float64 are both supported.
    """
    if not _fast or any(v is not None and v is not False for v in options.values()):
        return cell
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        return cell
    if cell not in _FAST:
        _FAST[cell] = _fast_cell(cell)
    return _FAST[cell] or cell


def owner(cell, cache):
    """The cell whose ``backward`` matches ``cache`` (the forward may have run on either path)."""
    fast = _FAST.get(cell)
    if fast is not None and isinstance(cache, fast.cache_type):
        return fast
    return cell
