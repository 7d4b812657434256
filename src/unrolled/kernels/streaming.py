"""``RecurrentLayer.step``'s lean path: one compiled call per time step for a whole unidirectional stack.

Why: at B = 1 the cell path spends most of a step in Python/NumPy call overhead (an LSTM H=32 step took
14.7 µs for ~1 µs of arithmetic); this path keeps only a few attribute lookups and type checks, three
``np.empty`` and the one call of a ``*_stack`` kernel of :mod:`unrolled.kernels._jit` (~2 µs in all), which
checks finiteness, runs both mat-vecs and the gates of every layer. Anything it declines (wrong type, dtype
or shape, a NaN or inf) returns None, and the layer runs its cells, whose checks word the error.

Whether the path applies is :func:`unrolled.kernels.pick`'s decision: only its compiled cells name a stack
kernel. A layer keeps a :class:`StreamPlan` (the kernel and its parameter tuples) and builds it again when
a switch changed or an entry of ``layer.params`` was replaced.
"""

from __future__ import annotations

import operator

import numpy as np

from unrolled import kernels

_F32 = np.dtype(np.float32)


def lean_step(layer, x_t, state):
    """``layer.step(x_t, state)`` in one compiled call: (y_t (B, H), state_t), or None where the lean path
    does not apply now or declines this input. Builds ``layer._stream`` (a :class:`StreamPlan`) as needed.

    The parameters are passed as cached tuples of the live arrays (optimizers update those in place);
    replacing an entry of ``layer.params`` is noticed by identity and the tuples rebuilt."""
    plan = layer._stream
    if plan is None or plan.switches != kernels._switches or not plan.current(layer.params):
        plan = layer._stream = StreamPlan.build(layer)
    if plan.kernel is None:
        return None
    if type(x_t) is not np.ndarray or x_t.dtype is not _F32 or x_t.ndim != 2:
        return None
    L, B, H = layer.num_layers, x_t.shape[0], layer.hidden_size
    if plan.lstm:
        if (type(state) is tuple or type(state) is list) and len(state) == 2:
            h, c = state
            if type(c) is not np.ndarray or c.dtype is not _F32 or c.ndim != 3:
                return None
        elif state is None:
            h = c = np.zeros((L, B, H), _F32)
        else:
            return None
    else:
        h = np.zeros((L, B, H), _F32) if state is None else state
    if type(h) is not np.ndarray or h.dtype is not _F32 or h.ndim != 3:
        return None
    y, h_out = np.empty((B, H), _F32), np.empty((L, B, H), _F32)
    if plan.lstm:
        c_out = np.empty((L, B, H), _F32)
        if plan.kernel(x_t, h, c, plan.W, plan.b, y, h_out, c_out):
            return None
        return y, (h_out, c_out)
    if plan.kernel(x_t, h, plan.W, plan.b, *plan.extra, y, h_out):
        return None
    return y, h_out


def is_valid(a, d0, d1, dtype, d2=None) -> bool:
    """Cheap test that `a` is a finite ndarray of the given dtype and shape (d0 None = any), for the
    cell path of ``step``: the full ``check_array`` runs only to word an error."""
    if type(a) is not np.ndarray or a.dtype != dtype:
        return False
    shape = (d1,) if d2 is None else (d1, d2)
    if (
        a.shape[a.ndim - len(shape) :] != shape
        or a.ndim != len(shape) + 1
        or (d0 is not None and a.shape[0] != d0)
    ):
        return False
    return bool(np.isfinite(a.sum()))  # a NaN or inf anywhere makes the sum non-finite


def _no_plan() -> None:
    return None


def _no_keys(params: dict) -> tuple:
    return ()


class StreamPlan:
    """What the lean path keeps between calls for one layer: the compiled kernel and the parameter arrays
    as the tuples it takes, W = (W_xh_l0, W_hh_l0, W_xh_l1, ...) and b (the cell's ``bias_names`` per layer;
    an empty vector for an absent bias), under the switches it was built for. ``current`` tells whether
    ``params`` still holds these very arrays (in-place updates need nothing; a replaced array means a
    rebuild). ``kernel`` is None where the lean path does not serve the layer."""

    __slots__ = ("kernel", "lstm", "W", "b", "extra", "switches", "_keys", "_arrays")

    def __init__(self, kernel=None, lstm: bool = False, keys: tuple = (), params=None, biases=(), extra=()):
        self.kernel, self.lstm, self.extra, self.switches = kernel, lstm, extra, kernels._switches
        if not keys:
            self._keys = _no_keys
        elif len(keys) == 1:  # itemgetter of one key returns the item, not a tuple
            self._keys = lambda p, k=keys[0]: (p[k],)
        else:
            self._keys = operator.itemgetter(*keys)
        self._arrays = self._keys(params) if keys else ()
        self.W = tuple(params[k] for k in keys if k.startswith("W_")) if kernel is not None else ()
        self.b = tuple(biases)

    def __reduce__(self):
        """A cache: a copied or unpickled layer builds its own on its first step."""
        return _no_plan, ()

    def current(self, params: dict) -> bool:
        try:
            got = self._keys(params)
        except KeyError:
            return False
        return all(map(operator.is_, got, self._arrays))

    @staticmethod
    def build(layer) -> StreamPlan:
        """The plan for ``layer`` under the current switches: without a kernel where :func:`kernels.pick`
        gives no compiled cell (float64, reference or NumPy mode, GRU reset_after=False) or the layer is
        bidirectional, or while some parameter is not a C-contiguous float32 array (then it keeps the keys,
        to notice when the array is replaced)."""
        cell = kernels.pick(layer.cell, layer.dtype)
        if layer.bidirectional or not hasattr(cell, "stack_kernel"):
            return StreamPlan()
        kernel, extra = cell.stack_kernel()
        keys, biases, usable = [], [], True
        for i in range(layer.num_layers):
            for n in ("W_xh", "W_hh", *cell.bias_names):
                k = layer.key(n, i, 0)
                v = layer.params.get(k)
                if v is None:
                    if n.startswith("b_"):
                        biases.append(np.empty(0, _F32))  # an absent bias: the kernels take an empty one
                    else:
                        usable = False  # a weight was removed: the cells will say so
                    continue
                keys.append(k)
                if type(v) is not np.ndarray or v.dtype != _F32 or not v.flags.c_contiguous:
                    usable = False  # the cells serve it, until the array is replaced
                elif n.startswith("b_"):
                    biases.append(v)
        kernel = kernel if usable else None
        return StreamPlan(kernel, len(cell.state_names) == 2, tuple(keys), layer.params, biases, extra)
