"""Size caps of the importers: what a file's metadata may make them allocate, checked before allocating.

A few-KB file can declare a (40000, 40000) array or a zip member that inflates to gigabytes; the importers
compare every declared size with the data the file really stores and with these caps first.
"""

from __future__ import annotations

MAX_ELEMENTS = 2**31  # elements of one weight array (8 GiB of float32): beyond any recurrent stack's matrix
MAX_CONFIG_BYTES = 16 * 2**20  # a .keras config.json; a real one is a few KB per layer
MAX_WEIGHTS_BYTES = 2**34  # a .keras model.weights.h5 (16 GiB), read whole into memory


def element_count(dims, where: str) -> int:
    """The product of ``dims`` (Python ints: no overflow), refused when negative or above MAX_ELEMENTS."""
    n = 1
    for d in dims:
        d = int(d)
        if d < 0:
            raise ValueError(f"{where}: expected non-negative dimensions, got {list(dims)}")
        n *= d
    if n > MAX_ELEMENTS:
        raise ValueError(f"{where}: declares {n} elements {list(dims)}, above the cap of {MAX_ELEMENTS}")
    return n
