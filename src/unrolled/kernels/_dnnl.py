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

Lifetime of the native objects (the rule every change here keeps):

- The library is never unloaded and the one engine is never destroyed: the OS reclaims them at exit.
- A thread's stream and :class:`ProductPlan` s (primitives, memories) are built, run and freed in that
  thread only. oneDNN (built without concurrent execution, as the wheel is) shares one scratchpad per
  thread among that thread's primitives, counted per thread: a primitive freed in another thread
  miscounts both threads' scratchpads, and a later product can write past a freed or smaller buffer.
- Freeing is explicit: :meth:`ProductPlan.close` (called on eviction from the cache and by
  :func:`release_plans`), and when a thread ends CPython drops its thread-local registry in that very
  thread, which closes the thread's plans and its stream. ``__del__`` only calls ``close``.
- ``close`` frees nothing outside the owning thread (a plan dropped elsewhere, a fork child dropping the
  other threads' registries) and nothing once the interpreter exits (an ``atexit`` hook, which runs
  before module teardown, while a daemon thread may still be inside a walk): those plans are abandoned
  and the OS reclaims them. An abandoned or closed plan refuses :meth:`ProductPlan.pack`, so no walk
  gets its handles.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import threading
import weakref
from importlib import metadata

import numpy as np

DISTRIBUTION = "onednn-cpu-gomp"
_lib = None
_tried = False
_gomp = None
_loading = threading.Lock()


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
    if _tried:
        return _lib
    with _loading:  # two threads' first walks: one loads, the other waits for it (not "absent")
        if not _tried:
            _load()
    return _lib


def _load() -> None:
    global _lib, _tried, _gomp
    _tried = True
    if os.environ.get("UNROLLED_DNNL", "").strip().lower() in ("0", "false", "no", "off"):
        return
    path = library_path()
    if path is None:
        return
    try:
        lib = ctypes.CDLL(path)
        _gomp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime oneDNN was linked against (already loaded)
    except OSError:
        return
    P, I, F, C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_char
    lib.dnnl_sgemm.argtypes = [C, C, I, I, I, F, P, I, P, I, F, P, I]
    lib.dnnl_sgemm.restype = ctypes.c_int
    lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
    lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
    import llvmlite.binding as llb  # Numba's own LLVM binding: compiled walks link to oneDNN by name

    try:
        llb.load_library_permanently(path)
    except RuntimeError:
        return
    from unrolled.threads import openblas_controls

    getter = openblas_controls()[1]
    _lib = lib
    set_threads(int(getter()) if getter is not None else 1)


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
_PLANS_KEPT = 32


class _Lifetime:
    """What ``close`` reads, held by every plan and registry itself: at interpreter teardown the module's
    globals become None in an order of CPython's choosing, and a flag read from them would lie."""

    exiting = False
    thread = staticmethod(threading.get_ident)  # the calling thread's id, without a module global


_lifetime = _Lifetime()
_engine = None  # the one CPU engine (thread-safe in oneDNN), built once under _engine_lock, never freed
_engine_lock = threading.Lock()
_local = threading.local()  # .plans: this thread's _ThreadPlans


@atexit.register
def _at_exit() -> None:
    """From here on nothing is freed: atexit runs before module teardown, and daemon threads may still be
    inside a walk (the OS reclaims the memory)."""
    _lifetime.exiting = True


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN: {what} failed with status {status}")


def _the_engine() -> ctypes.c_void_p:
    global _engine
    with _engine_lock:  # two threads' first plans must not both build one, nor see a half-built one
        if _engine is None:
            engine = ctypes.c_void_p()
            _check(_lib.dnnl_engine_create(ctypes.byref(engine), _CPU, 0), "engine")
            _engine = engine
    return _engine


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


class _ThreadPlans:
    """One thread's oneDNN state: its stream, its cached plans (the last 32 shapes) and every plan it
    built. It lives only in the thread-local ``_local.plans``, so CPython drops it when the thread ends,
    in that thread (its thread state's dict is cleared before the thread is gone), which closes the
    thread's plans and then its stream. Dropped in another thread (a fork child drops the threads that did
    not survive the fork) or at exit, it frees nothing."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.lib, self.lifetime = _lib, _lifetime
        self.cache: dict[tuple[int, int, int, bool], ProductPlan] = {}
        self.built: weakref.WeakSet[ProductPlan] = weakref.WeakSet()  # every live plan of the thread
        self.stream = ctypes.c_void_p()
        self.engine = _the_engine()
        _check(_lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine, 1), "stream")  # in order

    def close(self) -> None:
        """Close this thread's plans, then free the stream they run on (in the owning thread only)."""
        for p in list(self.built):
            p.close()
        self.built.clear()
        self.cache.clear()
        stream, self.stream = self.stream, None
        if stream and not self.lifetime.exiting and self.thread == self.lifetime.thread():
            self.lib.dnnl_stream_destroy(stream)

    def __del__(self) -> None:
        self.close()


def _here() -> _ThreadPlans:
    """The calling thread's registry, built at its first plan."""
    reg = getattr(_local, "plans", None)
    if reg is None:
        reg = _local.plans = _ThreadPlans()
    return reg


class ProductPlan:
    """out (M, N) = a (M, K) @ w (K, N) by a oneDNN matmul primitive whose weights were packed by
    :meth:`pack`. ``handles`` (int64: primitive, stream, argument list, source memory, destination
    memory) is what the compiled walks take; they point the source and destination at each step's rows.

    ``w_rows_are_n``: the weights come as a row-major (N, K) array (W_hh itself, for the forward product
    h W_hhᵀ) rather than (K, N). A plan belongs to the thread that built it: only that thread may
    :meth:`pack` and run it (its packed weights are overwritten by the next pack, and oneDNN's scratchpad
    is per thread), and only there does :meth:`close` free it (see the module docstring)."""

    def __init__(self, M: int, K: int, N: int, w_rows_are_n: bool) -> None:
        self.closed = False
        self._thread, self._lib, self._lifetime = threading.get_ident(), _lib, _lifetime
        self._objects: list[tuple[str, ctypes.c_void_p]] = []  # (destroy function, handle): freed by close
        self.handles = np.zeros(5, dtype=np.int64)
        self._w_strides = (1, K) if w_rows_are_n else (N, 1)
        self._pieces: dict[int, list | None] = {}  # k -> the reorders of the k column pieces (pack_piece)
        self._shared: tuple | None = None  # (memory over a shared buffer, its arguments, its handles)
        home = _here()
        home.built.add(self)
        self.shape = (M, K, N)
        engine, stream = home.engine, home.stream
        mds = []
        try:  # a failure (or a KeyboardInterrupt) part way leaves only what is listed, for close to free
            src, dst = _desc((M, K), (K, 1)), _desc((M, N), (N, 1))
            mds += [src, dst]
            plain, chosen = _desc((K, N), (1, K) if w_rows_are_n else (N, 1)), _desc((K, N))
            mds += [plain, chosen]
            pd = self._make("dnnl_primitive_desc_destroy")
            _check(
                _lib.dnnl_matmul_primitive_desc_create(
                    ctypes.byref(pd), engine, src, chosen, None, dst, None
                ),
                "matmul primitive descriptor",
            )
            packed = ctypes.c_void_p(
                _lib.dnnl_primitive_desc_query_md(pd, _QUERY_WEIGHTS_MD, 0)
            )  # pd owns it
            rpd = self._make("dnnl_primitive_desc_destroy")
            _check(
                _lib.dnnl_reorder_primitive_desc_create(
                    ctypes.byref(rpd), plain, engine, packed, engine, None
                ),
                "reorder primitive descriptor",
            )
            prim = self._make("dnnl_primitive_destroy")
            _check(_lib.dnnl_primitive_create(ctypes.byref(prim), pd), "matmul primitive")
            reorder = self._make("dnnl_primitive_destroy")
            _check(_lib.dnnl_primitive_create(ctypes.byref(reorder), rpd), "reorder primitive")
            mem = {}
            for name, md, handle in (
                ("plain", plain, None),
                ("packed", packed, _ALLOCATE),
                ("src", src, None),
                ("dst", dst, None),
            ):
                mem[name] = self._make("dnnl_memory_destroy")
                _check(_lib.dnnl_memory_create(ctypes.byref(mem[name]), md, engine, handle), "memory")
        finally:
            for md in mds:  # the primitive descriptors and memories hold their own copies
                _lib.dnnl_memory_desc_destroy(md)
        self._plain, self._reorder, self._stream = mem["plain"], reorder, stream
        self._engine, self._packed_md = engine, packed
        self.packed_bytes = int(_lib.dnnl_memory_desc_get_size(packed))
        self._pack_args = np.array(
            [_ARG_SRC, mem["plain"].value, _ARG_DST, mem["packed"].value], dtype=np.int64
        )
        # dnnl_exec_arg_t {int arg; dnnl_memory_t memory;}: 16 bytes each, the int in the low half
        self._args = np.array(
            [_ARG_SRC, mem["src"].value, _ARG_WEIGHTS, mem["packed"].value, _ARG_DST, mem["dst"].value],
            dtype=np.int64,
        )
        self.handles[:] = [
            prim.value,
            stream.value,
            self._args.ctypes.data,
            mem["src"].value,
            mem["dst"].value,
        ]

    def _make(self, destroy: str) -> ctypes.c_void_p:
        """A null handle, listed with its destroy function before oneDNN fills it in."""
        handle = ctypes.c_void_p()
        self._objects.append((destroy, handle))
        return handle

    def pack(self, w: np.ndarray) -> np.ndarray:
        """Reorder ``w`` (float32, in the layout the plan was built for) into the packed weights; returns
        :attr:`handles`."""
        self._own("pack")
        lib = self._lib
        _check(lib.dnnl_memory_set_data_handle(self._plain, ctypes.c_void_p(w.ctypes.data)), "weights handle")
        _check(
            lib.dnnl_primitive_execute(
                self._reorder, self._stream, 2, ctypes.c_void_p(self._pack_args.ctypes.data)
            ),
            "reorder",
        )
        _check(lib.dnnl_stream_wait(self._stream), "stream wait")
        return self.handles

    # ---- one packed copy for the k workers of a batch split (:class:`SharedPack`)
    def same_packing(self, other: ProductPlan) -> bool:
        """Whether ``other`` (another thread's plan, perhaps for another row count) packs the same weights
        into the same layout: then the two can share one packed copy."""
        return (
            not self.closed
            and not other.closed
            and self.shape[1:] == other.shape[1:]
            and self._w_strides == other._w_strides
            and bool(self._lib.dnnl_memory_desc_equal(self._packed_md, other._packed_md))
        )

    def piece_columns(self, k: int) -> list[int] | None:
        """The k + 1 column bounds of the pieces :meth:`pack_piece` packs (multiples of 64, oneDNN's
        widest column block), or None where the columns do not split so (then nothing is shared)."""
        N = self.shape[2]
        if N % (64 * k):
            return None
        return [N * j // k for j in range(k + 1)]

    def pack_piece(self, w: np.ndarray, j: int, k: int, buffer: np.ndarray) -> bool:
        """Reorder columns ``piece_columns(k)[j:j + 2]`` of ``w`` into their place in ``buffer`` (a packed
        copy of :attr:`packed_bytes`). False where oneDNN cannot reorder such a piece (pack privately)."""
        self._own("pack_piece")
        pieces = self._pieces.get(k, False)
        if pieces is False:
            pieces = self._pieces[k] = self._piece_reorders(k)
        if pieces is None:
            return False
        reorder, src, dst, args = pieces[j]
        lib = self._lib
        _check(lib.dnnl_memory_set_data_handle(src, ctypes.c_void_p(w.ctypes.data)), "piece handle")
        _check(lib.dnnl_memory_set_data_handle(dst, ctypes.c_void_p(buffer.ctypes.data)), "piece handle")
        _check(
            lib.dnnl_primitive_execute(reorder, self._stream, 2, ctypes.c_void_p(args.ctypes.data)),
            "piece reorder",
        )
        _check(lib.dnnl_stream_wait(self._stream), "stream wait")
        return True

    def shared_handles(self, buffer: np.ndarray) -> np.ndarray:
        """:attr:`handles`, but with the packed weights read from ``buffer`` (filled by the pieces)."""
        self._own("shared_handles")
        if self._shared is None:
            mem = self._make("dnnl_memory_destroy")
            lib = self._lib
            _check(lib.dnnl_memory_create(ctypes.byref(mem), self._packed_md, self._engine, None), "memory")
            args = self._args.copy()
            args[3] = mem.value
            handles = self.handles.copy()
            handles[2] = args.ctypes.data
            self._shared = (mem, args, handles)
        mem, _, handles = self._shared
        at = ctypes.c_void_p(buffer.ctypes.data)
        _check(self._lib.dnnl_memory_set_data_handle(mem, at), "shared handle")
        return handles

    def _piece_reorders(self, k: int) -> list | None:
        bounds = self.piece_columns(k)
        if bounds is None:
            return None
        lib, (_, K, N) = self._lib, self.shape
        pieces, mds = [], []
        try:
            plain = _desc((K, N), self._w_strides)
            mds.append(plain)
            for j in range(k):
                dims = (ctypes.c_int64 * 2)(K, bounds[j + 1] - bounds[j])
                offsets = (ctypes.c_int64 * 2)(0, bounds[j])
                sub = []
                for parent in (plain, self._packed_md):
                    md = ctypes.c_void_p()
                    if lib.dnnl_memory_desc_create_submemory(ctypes.byref(md), parent, dims, offsets) != 0:
                        return None
                    mds.append(md)
                    sub.append(md)
                rpd = self._make("dnnl_primitive_desc_destroy")
                if lib.dnnl_reorder_primitive_desc_create(
                    ctypes.byref(rpd), sub[0], self._engine, sub[1], self._engine, None
                ):
                    return None
                reorder = self._make("dnnl_primitive_destroy")
                _check(lib.dnnl_primitive_create(ctypes.byref(reorder), rpd), "piece reorder primitive")
                mem = []
                for md in sub:
                    m = self._make("dnnl_memory_destroy")
                    _check(lib.dnnl_memory_create(ctypes.byref(m), md, self._engine, None), "memory")
                    mem.append(m)
                args = np.array([_ARG_SRC, mem[0].value, _ARG_DST, mem[1].value], dtype=np.int64)
                pieces.append((reorder, mem[0], mem[1], args))
        finally:
            for md in mds:
                lib.dnnl_memory_desc_destroy(md)
        return pieces

    def _own(self, what: str) -> None:
        """Refuse a closed plan, or a call from another thread than the one that built it."""
        if self.closed:
            raise RuntimeError(f"ProductPlan{self.shape}: closed (its thread ended, or close() was called)")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                f"ProductPlan{self.shape}: {what}: built in another thread; use plan() in this one"
            )

    def close(self) -> None:
        """Free the native objects, in the thread that built the plan and before interpreter exit; anywhere
        else, abandon them (the OS reclaims them). Either way the plan is closed: :meth:`pack` refuses it.
        Closing twice does nothing."""
        if self.closed:
            return
        self.closed = True
        self.handles[:] = 0  # a walk handed stale handles fails on null objects, not on freed memory
        objects, self._objects = self._objects, []
        if self._lifetime.exiting or self._lifetime.thread() != self._thread:
            return
        for destroy, handle in reversed(objects):  # memories and primitives before their descriptors
            if handle.value is not None:
                getattr(self._lib, destroy)(handle)

    def __del__(self) -> None:
        if hasattr(self, "closed"):  # not when __init__ failed before anything was made
            self.close()


class SharedPack:
    """One packed copy of the weights for the k workers of a batch split, each worker packing a piece.

    Without it each worker packs all of W_hh into its own copy before its walk: at LSTM H = 512 a 4 MiB
    reorder per worker, forward and backward, read cold from memory (~1 ms each in a training step, both
    workers at once). Shared, each packs 1/k of the columns into ``buffer`` (:meth:`ProductPlan.pack_piece`)
    and the walks read the one copy. The packed bytes are oneDNN's own reorder's, piece by piece, so the
    walks' results are the same bit for bit.

    Pieces are claimed, not assigned: a worker packs its own piece first, then every piece no one has
    claimed, and waits only for pieces that another (running) worker is packing. So no worker ever waits
    for a thread that has not started (a task the thread budget left to the caller runs after the caller's
    own, and finds every piece packed). Where the plans differ (another row count, another layout), the
    weights are not the same array, or a piece cannot be reordered alone, a worker packs privately; a
    failure in one worker sends the others to their private packs too."""

    def __init__(self, k: int, buffer: np.ndarray) -> None:
        self.k, self.buffer = k, buffer  # buffer: float32, at least K·N entries, 64-byte aligned
        self._lock = threading.Lock()
        self._claimed = [False] * k
        self._done = [threading.Event() for _ in range(k)]
        self._failed = False
        self._first: tuple[ProductPlan, int] | None = None  # the first member's plan and weights' address
        self.shared = 0  # members that got the shared copy (for tests)

    def pack(self, plan: ProductPlan, w: np.ndarray, me: int) -> np.ndarray:
        """``plan``'s handles with the weights ``w`` packed: the shared copy's, or ``plan``'s own."""
        K, N = plan.shape[1], plan.shape[2]
        with self._lock:
            if self._first is None:
                self._first = (plan, w.ctypes.data)
            first, address = self._first
            ok = (
                not self._failed
                and w.ctypes.data == address
                and self.buffer.size >= K * N
                and plan.piece_columns(self.k) is not None
                and (plan is first or plan.same_packing(first))
                and plan.packed_bytes == 4 * K * N  # no padding
            )
        if not ok:
            return plan.pack(w)
        try:
            for j in [(me + i) % self.k for i in range(self.k)]:  # its own piece first
                with self._lock:
                    mine = not (self._claimed[j] or self._failed)
                    self._claimed[j] = True
                if mine:
                    if not plan.pack_piece(w, j, self.k, self.buffer):
                        raise _NoPieces
                    self._done[j].set()
            for done in self._done:
                done.wait()
        except BaseException as e:
            self._fail()
            if isinstance(e, _NoPieces):
                return plan.pack(w)
            raise
        if self._failed:  # another member failed before its piece was packed
            return plan.pack(w)
        with self._lock:
            self.shared += 1
        return plan.shared_handles(self.buffer)

    def _fail(self) -> None:
        self._failed = True
        for done in self._done:
            done.set()


class _NoPieces(Exception):
    """oneDNN cannot reorder a piece of these weights on its own."""


def walk_weights(plan: ProductPlan, w: np.ndarray) -> np.ndarray:
    """The handles a walk takes, ``w`` packed for ``plan``: into the shared copy where this thread works
    :func:`sharing` one (its first walk there; a second packs its own), else into the plan's own."""
    member = getattr(_local, "member", None)
    if member is None:
        return plan.pack(w)
    _local.member = None
    return member[0].pack(plan, w, member[1])


@contextlib.contextmanager
def sharing(share: SharedPack | None, me: int):
    """Within: this thread's next :func:`walk_weights` packs into ``share`` as its member ``me``."""
    if share is None:
        yield
        return
    _local.member = (share, me)
    try:
        yield
    finally:
        _local.member = None


def plan(M: int, K: int, N: int, w_rows_are_n: bool) -> ProductPlan:
    """The cached plan for this thread and shape (the primitives are built once; the last 32 kept).

    The walks get only a plan's ``handles``: the cache is what keeps the plan alive while a walk runs.
    It is per thread (freed when the thread ends, in that thread), so a plan is only ever evicted and
    closed by its own thread, between two of its walks, never under another thread's running walk (the
    walks release the GIL).
    """
    home = _here()
    key = (M, K, N, w_rows_are_n)
    p = home.cache.get(key)
    if p is None:
        if len(home.cache) >= _PLANS_KEPT:
            home.cache.pop(next(iter(home.cache))).close()
        p = home.cache[key] = ProductPlan(M, K, N, w_rows_are_n)
    return p


def release_plans() -> None:
    """Close the calling thread's plans and stream now, rather than when the thread ends (a long-lived
    thread done with oneDNN). The next :func:`plan` builds afresh."""
    reg = getattr(_local, "plans", None)
    if reg is not None:
        del _local.plans
        reg.close()
