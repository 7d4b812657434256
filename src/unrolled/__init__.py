"""unrolled: recurrent neural networks with hand-written, verified backpropagation through time."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public names load on first use (PEP 562): `import unrolled` stays cheap, so the `unrolled` command
# can install its interrupt handler before NumPy is imported (a Ctrl-C at start-up is then one line).
_EXPORTS = {
    "GRU": "unrolled.layers",
    "LSTM": "unrolled.layers",
    "MinGRU": "unrolled.minlayers",
    "MinLSTM": "unrolled.minlayers",
    "RNN": "unrolled.layers",
    "RecurrentLayer": "unrolled.layers",
    "Linear": "unrolled.nn",
    "cross_entropy": "unrolled.nn",
    "inference": "unrolled.grad_mode",
    "log_softmax": "unrolled.nn",
    "mse": "unrolled.nn",
    "quantize": "unrolled.quantization",
    "sigmoid": "unrolled.nn",
    "softmax": "unrolled.nn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once: later lookups skip this function
        return value
    # A submodule (`unrolled.kernels` after a bare `import unrolled`), as when the package imported them.
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"unrolled.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"unrolled.{name}":
                raise
    raise AttributeError(f"module 'unrolled' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
