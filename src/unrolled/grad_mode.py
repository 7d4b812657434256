"""The inference path's switch: whether a forward keeps what its backward needs.

A recurrent layer's forward normally keeps a backward cache (every step's gates and states) so that
``backward`` can walk the same graph back. Inference needs none of it. Two ways to say so:

- per call: ``layer.forward(x, need_grad=False)`` (also ``SequenceModel.forward``);
- for a block: ``with unrolled.inference(): ...`` — every forward inside that does not pass ``need_grad``
  runs without a cache (per thread; blocks nest).

Then the compiled walks keep no per-step gates or cell states (only the outputs asked for), reuse their
work buffers across calls, and skip σ' and the other training-only work; the outputs are equal bit for bit
to a training forward's. ``backward`` after such a forward raises a RuntimeError that says so.
``eval()`` alone does not switch it: evaluation mode means "no dropout", and a backward may still follow
(gradient diagnostics run one in eval mode).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.local()


def grad_enabled() -> bool:
    """False inside ``with inference():`` (in this thread), else True."""
    return getattr(_state, "depth", 0) == 0


@contextmanager
def inference() -> Iterator[None]:
    """Forwards in the block keep no backward cache unless they pass ``need_grad=True``."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def wants_grad(need_grad: bool | None) -> bool:
    """A forward's ``need_grad`` argument resolved: None follows :func:`inference` blocks."""
    if need_grad is None:
        return getattr(_state, "depth", 0) == 0
    if not isinstance(need_grad, bool):
        raise TypeError(f"need_grad: expected True, False or None, got {need_grad!r}")
    return need_grad
