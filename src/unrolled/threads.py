"""How many threads NumPy's BLAS uses in this process.

The recurrent products here are small (B × H by H × G·H per step): on 2 cores, and by far on a busy
machine, one BLAS thread is faster than several (measured 4–12× per training step under load; see the
issue notes of the char-LM and seq2seq applications). The command line therefore runs BLAS on one
thread unless ``UNROLLED_BLAS_THREADS`` says otherwise.
"""

from __future__ import annotations

import ctypes

from unrolled._checks import positive_int


def openblas_controls():
    """The OpenBLAS that NumPy loaded, found in this process's memory map (no threadpoolctl needed).

    Returns (set_num_threads, get_num_threads) or (None, None) where it cannot be found.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln and ".so" in ln.split()[-1]})
    except OSError:
        return None, None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None, None


def set_blas_threads(n: int) -> int | None:
    """Run NumPy's BLAS on ``n`` threads where it can be set; returns the count it reports, or None.

    oneDNN's product (the extra ``onednn``), where loaded, is set to the same count; loaded later, it takes
    the count OpenBLAS reports then."""
    n = positive_int("threads", n)
    import sys

    dnnl = sys.modules.get("unrolled.kernels._dnnl")  # never import it here: that would load the library
    if dnnl is not None:
        dnnl.set_threads(int(n))
    setter, getter = openblas_controls()
    if setter is None:
        return None
    setter(int(n))
    return int(getter())
