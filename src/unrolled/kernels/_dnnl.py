"""oneDNN's float32 matrix product (``dnnl_sgemm``) for the fast path, when the optional extra ``onednn`` is
installed (the ``onednn-cpu-gomp`` wheel: Intel's oneDNN, Apache-2.0, the library behind PyTorch's CPU RNNs).

Why: the recurrent product of a step is small in B and large in W_hh, and NumPy's OpenBLAS repacks W_hh
on every call. Measured here (float32, one thread, µs per product, OpenBLAS / oneDNN): B=32, H=128:
38 / 25; B=64, H=256: 248 / 205; B=16, H=512: 471 / 311; B=4, H=512: 405 / 153. Large products gain
10–30 % too ((3200 × 256)·(256 × 1024): 10.6 / 9.5 ms).

This module only finds and loads the library; the ``*_seq_dnnl`` walks of :mod:`unrolled.kernels._jit`
call it from compiled code, and :func:`matmul` from Python. Nothing here is imported by
``import unrolled``. Switches: ``UNROLLED_DNNL=0`` (environment, read at first use) or
``unrolled.kernels.set_dnnl(False)``.
Threads follow NumPy's BLAS: at load, oneDNN (OpenMP) gets the thread count OpenBLAS reports, and
:func:`unrolled.threads.set_blas_threads` sets both.
"""

from __future__ import annotations

import ctypes
import os
from importlib import metadata

import numpy as np

DISTRIBUTION = "onednn-cpu-gomp"
_lib = None
_tried = False
_gomp = None


def library_path() -> str | None:
    """The path of the installed ``libdnnl.so.3``, or None (environment ``UNROLLED_DNNL_LIB`` overrides)."""
    env = os.environ.get("UNROLLED_DNNL_LIB")
    if env:
        return env
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libdnnl.so.3":
            return str(f.locate())
    return None


def load():
    """The loaded library (a ctypes.CDLL), or None where it is absent, cannot load, or is switched off.

    Loading also makes ``dnnl_sgemm`` resolvable by Numba-compiled code (llvmlite's symbol search)."""
    global _lib, _tried, _gomp
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("UNROLLED_DNNL", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    path = library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        _gomp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime oneDNN was linked against (already loaded)
    except OSError:
        return None
    P, I, F, C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_char
    lib.dnnl_sgemm.argtypes = [C, C, I, I, I, F, P, I, P, I, F, P, I]
    lib.dnnl_sgemm.restype = ctypes.c_int
    import llvmlite.binding as llb  # Numba's own LLVM binding: compiled kernels link to dnnl_sgemm by name

    try:
        llb.load_library_permanently(path)
    except RuntimeError:
        return None
    _lib = lib
    from unrolled.threads import _openblas

    getter = _openblas()[1]
    set_threads(int(getter()) if getter is not None else 1)
    return _lib


def set_threads(n: int) -> None:
    """oneDNN's (OpenMP's) thread count, where the library is loaded."""
    if _gomp is not None:
        _gomp.omp_set_num_threads(int(n))


def _operand(a: np.ndarray) -> tuple[bytes, int] | None:
    """('N', leading dimension) for a C-contiguous 2-D array, ('T', …) for the transpose of one, else None."""
    if a.flags.c_contiguous:
        return b"N", a.shape[1]
    if a.flags.f_contiguous:
        return b"T", a.shape[0]
    return None


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a (M, K) @ b (K, N) in float32 through oneDNN (either operand may be a transposed view);
    NumPy's matmul where the library is not loaded or an operand is neither layout."""
    lib = load()
    ta, tb = _operand(a), _operand(b)
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = np.empty((M, N), dtype=np.float32)
    plain = a.dtype == b.dtype == out.dtype == np.float32 and out.flags.c_contiguous and 0 not in (M, N, K)
    if lib is None or ta is None or tb is None or not plain:
        return np.matmul(a, b, out=out)
    status = lib.dnnl_sgemm(
        ta[0], tb[0], M, N, K, 1.0, a.ctypes.data, ta[1], b.ctypes.data, tb[1], 0.0, out.ctypes.data, N
    )
    if status != 0:
        raise RuntimeError(f"dnnl_sgemm failed with status {status} for ({M}×{K})·({K}×{N})")
    return out
