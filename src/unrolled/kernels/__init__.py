"""Fast paths of the cells: same signatures and results as :mod:`unrolled.cells`, fewer NumPy calls.

The layers pick the fast cell automatically. To force the plain reference cells (the readable
transcription of the equations), set the environment variable ``UNROLLED_REFERENCE=1`` before the
first forward, or call ``unrolled.kernels.set_fast(False)`` at any time.
"""

from __future__ import annotations

import os

_fast = os.environ.get("UNROLLED_REFERENCE", "").strip().lower() not in ("1", "true", "yes", "on")


def set_fast(enabled: bool) -> None:
    """Use the fast kernels (True, the default) or always the reference cells (False)."""
    global _fast
    _fast = bool(enabled)


def fast_enabled() -> bool:
    return _fast


def describe() -> str:
    return "fast" if _fast else "reference"
