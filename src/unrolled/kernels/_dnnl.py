"""oneDNN's float32 matrix products for the fast path, when the optional extra ``onednn`` is installed (the
``onednn-cpu-gomp`` wheel: Intel's oneDNN, Apache-2.0, the library behind PyTorch's CPU RNNs).

Why: the recurrent product of a step is small in B and large in W_hh, and NumPy's OpenBLAS repacks W_hh
on every call. Measured here (float32, one thread, µs per product, OpenBLAS / oneDNN): B=32, H=128:
38 / 25; B=64, H=256: 248 / 205; B=16, H=512: 471 / 311; B=4, H=512: 405 / 153. Large products gain
10–30 % too ((3200 × 256)·(256 × 1024): 10.6 / 9.5 ms).

This module finds and loads the library, builds the matmul primitives with packed weights that the
``*_seq_dnnl`` walks of :mod:`unrolled.kernels._jit` call from compiled code (:class:`ProductPlan`), and
offers ``dnnl_sgemm`` to Python (:func:`matmul`, for the products over all steps at once). Nothing here is
imported by ``import unrolled``. Switches: ``UNROLLED_DNNL=0`` (environment, read at first use) or
``unrolled.kernels.set_dnnl(False)``.
Threads follow NumPy's BLAS: at load, oneDNN (OpenMP) gets the thread count OpenBLAS reports, and
:func:`unrolled.threads.set_blas_threads` sets both.
"""

from __future__ import annotations

import ctypes
import os
import threading
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

    Loading also makes oneDNN's symbols resolvable by Numba-compiled code (llvmlite's symbol search)."""
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
    lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
    import llvmlite.binding as llb  # Numba's own LLVM binding: compiled walks link to oneDNN by name

    try:
        llb.load_library_permanently(path)
    except RuntimeError:
        return None
    _lib = lib
    from unrolled.threads import openblas_controls

    getter = openblas_controls()[1]
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


# ------------------------------------------------------------------ the recurrent product, weights packed
# oneDNN's matmul primitive with the weights in the layout it chooses (format "any", packed once per walk
# by a reorder): measured per product, dnnl_sgemm / packed primitive (µs): B=16, H=512: 307 / 257;
# B=32, H=128: 28.2 / 23.0; B=64, H=256: 203 / 172 (the same kernels torch's fused LSTM runs).
_F32, _ANY, _CPU = 3, 1, 1  # dnnl_f32, dnnl_format_tag_any, dnnl_cpu
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS = 1, 17, 33  # DNNL_ARG_SRC (= FROM), DNNL_ARG_DST (= TO), DNNL_ARG_WEIGHTS
_QUERY_WEIGHTS_MD = 131  # dnnl_query_weights_md
_ALLOCATE = ctypes.c_void_p(ctypes.c_size_t(-1).value)  # DNNL_MEMORY_ALLOCATE
_engine = _stream = None
_plans = threading.local()  # .cache: {(M, K, N, w_rows_are_n): ProductPlan}, one per thread
_PLANS_KEPT = 32


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN: {what} failed with status {status}")


def _desc(dims, strides=None):
    """A float32 memory descriptor: plain with the given strides, or format "any" (strides None)."""
    md = ctypes.c_void_p()
    d = (ctypes.c_int64 * 2)(*dims)
    if strides is None:
        _check(_lib.dnnl_memory_desc_create_with_tag(ctypes.byref(md), 2, d, _F32, _ANY), "memory descriptor")
    else:
        s = (ctypes.c_int64 * 2)(*strides)
        _check(
            _lib.dnnl_memory_desc_create_with_strides(ctypes.byref(md), 2, d, _F32, s), "memory descriptor"
        )
    return md


def _memory(md, handle=_ALLOCATE):
    mem = ctypes.c_void_p()
    _check(_lib.dnnl_memory_create(ctypes.byref(mem), md, _engine, handle), "memory")
    return mem


class ProductPlan:
    """out (M, N) = a (M, K) @ w (K, N) by a oneDNN matmul primitive whose weights were packed by
    :meth:`pack`. ``handles`` (int64: primitive, stream, argument list, source memory, destination
    memory) is what the compiled walks take; they point the source and destination at each step's rows.

    ``w_rows_are_n``: the weights come as a row-major (N, K) array (W_hh itself, for the forward product
    h W_hhᵀ) rather than (K, N). One plan per thread and shape (:func:`plan`): a plan's packed weights
    are overwritten by the next :meth:`pack`, so two threads must not share one."""

    def __init__(self, M: int, K: int, N: int, w_rows_are_n: bool) -> None:
        global _engine, _stream
        if _engine is None:
            _engine, _stream = ctypes.c_void_p(), ctypes.c_void_p()
            _check(_lib.dnnl_engine_create(ctypes.byref(_engine), _CPU, 0), "engine")
            _check(_lib.dnnl_stream_create(ctypes.byref(_stream), _engine, 1), "stream")  # in order
        self.shape = (M, K, N)
        src, dst = _desc((M, K), (K, 1)), _desc((M, N), (N, 1))
        plain, chosen = _desc((K, N), (1, K) if w_rows_are_n else (N, 1)), _desc((K, N))
        self._pd, self._rpd = ctypes.c_void_p(), ctypes.c_void_p()
        _check(
            _lib.dnnl_matmul_primitive_desc_create(
                ctypes.byref(self._pd), _engine, src, chosen, None, dst, None
            ),
            "matmul primitive descriptor",
        )
        packed = ctypes.c_void_p(
            _lib.dnnl_primitive_desc_query_md(self._pd, _QUERY_WEIGHTS_MD, 0)
        )  # pd owns it
        _check(
            _lib.dnnl_reorder_primitive_desc_create(
                ctypes.byref(self._rpd), plain, _engine, packed, _engine, None
            ),
            "reorder primitive descriptor",
        )
        self._prim, self._reorder = ctypes.c_void_p(), ctypes.c_void_p()
        _check(_lib.dnnl_primitive_create(ctypes.byref(self._prim), self._pd), "matmul primitive")
        _check(_lib.dnnl_primitive_create(ctypes.byref(self._reorder), self._rpd), "reorder primitive")
        self._plain, self._packed = _memory(plain, None), _memory(packed)
        self._src, self._dst = _memory(src, None), _memory(dst, None)
        for md in (src, dst, plain, chosen):  # the primitive descriptors and memories hold their own copies
            _lib.dnnl_memory_desc_destroy(md)
        self._pack_args = np.array(
            [_ARG_SRC, self._plain.value, _ARG_DST, self._packed.value], dtype=np.int64
        )
        # dnnl_exec_arg_t {int arg; dnnl_memory_t memory;}: 16 bytes each, the int in the low half
        self._args = np.array(
            [_ARG_SRC, self._src.value, _ARG_WEIGHTS, self._packed.value, _ARG_DST, self._dst.value],
            dtype=np.int64,
        )
        self.handles = np.array(
            [self._prim.value, _stream.value, self._args.ctypes.data, self._src.value, self._dst.value],
            dtype=np.int64,
        )

    def __del__(self) -> None:
        try:
            for mem in (self._plain, self._packed, self._src, self._dst):
                _lib.dnnl_memory_destroy(mem)
            for prim in (self._prim, self._reorder):
                _lib.dnnl_primitive_destroy(prim)
            for pd in (self._pd, self._rpd):
                _lib.dnnl_primitive_desc_destroy(pd)
        except (AttributeError, TypeError):  # a half-built plan, or the interpreter shutting down
            pass

    def pack(self, w: np.ndarray) -> np.ndarray:
        """Reorder ``w`` (C-contiguous float32) into the packed weights; returns :attr:`handles`."""
        _check(
            _lib.dnnl_memory_set_data_handle(self._plain, ctypes.c_void_p(w.ctypes.data)), "weights handle"
        )
        _check(
            _lib.dnnl_primitive_execute(
                self._reorder, _stream, 2, ctypes.c_void_p(self._pack_args.ctypes.data)
            ),
            "reorder",
        )
        _check(_lib.dnnl_stream_wait(_stream), "stream wait")
        return self.handles


def plan(M: int, K: int, N: int, w_rows_are_n: bool) -> ProductPlan:
    """The cached plan for this thread and shape (the primitives are built once; the last 32 kept).

    The walks get only a plan's ``handles``: the cache is what keeps the plan alive while a walk runs.
    It is per thread (thread-local, freed when the thread ends), so a plan is only ever evicted by its own
    thread, between two of its walks, never under another thread's running walk (the walks release the GIL).
    """
    cache = getattr(_plans, "cache", None)
    if cache is None:
        cache = _plans.cache = {}
    key = (M, K, N, w_rows_are_n)
    p = cache.get(key)
    if p is None:
        if len(cache) >= _PLANS_KEPT:
            cache.pop(next(iter(cache)))
        p = cache[key] = ProductPlan(M, K, N, w_rows_are_n)
    return p
