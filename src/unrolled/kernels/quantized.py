"""Quantised weights of one recurrent layer, and the compiled paths that read them (inference only).

The formats, per weight matrix W (G, K) of W_xh / W_hh (biases stay float32)::

    int8:  s_j = max_k |W[j, k]| / 127  (1 where the row is all zero),  Q[j, k] = round(W[j, k] / s_j)
           in −127..127 (round half to even),  Ŵ[j, k] = s_j · Q[j, k]
    bf16:  Q[j, k] = the upper 16 bits of float32 W[j, k] rounded to nearest, ties to even (NaN/inf never
           occur: parameters are finite),  Ŵ[j, k] = the float32 with those upper bits, s_j = 1

The layer's ``params`` hold Ŵ (the dequantised float32 values), so every path that reads ``params``
(the reference cells, a bidirectional layer, packed lengths, float64 checks) computes with the very
weights the compiled kernels read in their small form; :class:`QuantizedWeights` holds the small form and
runs ``step`` (B any, one compiled call for the stack) and ``forward`` (a whole sequence, unidirectional,
without lengths) through :mod:`unrolled.kernels._quant`. Anything else, or the compiled path switched off
(:func:`unrolled.kernels.using`), runs the cells on Ŵ: the same numbers up to float32 summation order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled import kernels

KINDS = ("int8", "bf16")
# Where the small-weight kernels are faster than float32 on Ŵ (QuantizedWeights.pays), measured on
# Zen 4 at one thread: a step from H = 256 at up to 4 rows (int8) or 1 (bf16); a whole sequence at one
# row (its input product over all T·B rows is a matrix product, where float32 BLAS wins).
MIN_STEP_H = 256
MAX_STEP_B = {"int8": 4, "bf16": 1}
MAX_WALK_B = 1
_F32 = np.dtype(np.float32)
_NO_BIAS = np.empty(0, _F32)
STORED_DTYPES = {"int8": np.dtype(np.int8), "bf16": np.dtype(np.uint16)}


def quantize_rows_int8(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: (Q int8 (G, K), s float32 (G,)) with W ≈ s[:, None] · Q (module docstring).

    Rounding is NumPy's (half to even) of W / s computed in float64, so |W − s·Q| ≤ s/2 per entry."""
    W = np.asarray(W)
    if W.ndim != 2 or W.dtype.kind != "f":
        raise ValueError(f"W: expected a 2-D float matrix, got {W.dtype.name}{W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("W: expected finite weights, got NaN or inf")
    amax = np.abs(W).max(axis=1).astype(np.float32) if W.shape[1] else np.zeros(W.shape[0], np.float32)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.rint(W.astype(np.float64) / s[:, None].astype(np.float64))
    return np.clip(q, -127, 127).astype(np.int8), s


def to_bf16(W: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), rounded to nearest, ties to even (finite inputs)."""
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.isfinite(W).all():
        raise ValueError("W: expected finite weights, got NaN or inf")
    u = W.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # add half an ulp (less one on an even ulp), truncate
    return rounded.astype(np.uint16)


def from_bf16(q: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32 (exact)."""
    return (np.asarray(q, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def quantize_matrix(W: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored Q, row scales s float32) of `W` in `kind` ('int8' or 'bf16'; bf16's scales are ones)."""
    if kind == "int8":
        return quantize_rows_int8(W)
    if kind == "bf16":
        return to_bf16(W), np.ones(np.shape(W)[0], np.float32)
    raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")


def dequantize(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Ŵ = s[:, None] · Q as float32 (bf16: the exact float32 values of the bits)."""
    if q.dtype == np.uint16:
        return from_bf16(q) * s[:, None]
    return (q.astype(np.float32) * s[:, None]).astype(np.float32)


class QuantizedWeights:
    """The small weights of one :class:`~unrolled.layers.RecurrentLayer`: ``kind`` ('int8' or 'bf16'),
    ``stored`` {param key: Q}, ``scales`` {param key: s (G,) float32} for every W_xh / W_hh key.

    Built by :func:`unrolled.quantization.quantize` (which also writes Ŵ into the layer's ``params``) or
    from a checkpoint. The arrays are read-only: a quantised layer is not trained."""

    def __init__(self, kind: str, stored: dict[str, np.ndarray], scales: dict[str, np.ndarray]) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
        if set(stored) != set(scales):
            raise ValueError("scales: expected one row-scale vector per stored weight matrix")
        want = STORED_DTYPES[kind]
        for k, q in stored.items():
            s = scales[k]
            if not isinstance(q, np.ndarray) or q.dtype != want or q.ndim != 2:
                got = f"{q.dtype.name}{q.shape}" if isinstance(q, np.ndarray) else type(q).__name__
                raise ValueError(f"{k}: expected a 2-D {want.name} matrix for {kind}, got {got}")
            if not isinstance(s, np.ndarray) or s.dtype != _F32 or s.shape != q.shape[:1]:
                got = f"{s.dtype.name}{s.shape}" if isinstance(s, np.ndarray) else type(s).__name__
                raise ValueError(f"{k}: expected row scales float32{q.shape[:1]}, got {got}")
            if not (np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(f"{k}: expected finite positive row scales")
        self.kind = kind
        self.stored = {k: np.ascontiguousarray(v) for k, v in stored.items()}
        self.scales = {k: np.ascontiguousarray(v) for k, v in scales.items()}
        for a in (*self.stored.values(), *self.scales.values()):
            a.flags.writeable = False
        self._tuples: tuple | None = None

    @classmethod
    def of(cls, params: dict[str, np.ndarray], kind: str) -> QuantizedWeights:
        """Quantise every ``W_xh*`` / ``W_hh*`` entry of a layer's ``params``."""
        stored, scales = {}, {}
        for k, W in params.items():
            if k.startswith(("W_xh", "W_hh")):
                stored[k], scales[k] = quantize_matrix(W, kind)
        return cls(kind, stored, scales)

    def dequantized(self) -> dict[str, np.ndarray]:
        """{key: Ŵ float32}: what the layer's ``params`` hold for these keys."""
        return {k: dequantize(q, self.scales[k]) for k, q in self.stored.items()}

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.stored.values(), *self.scales.values()))

    def __repr__(self) -> str:
        return f"QuantizedWeights({self.kind}, {len(self.stored)} matrices, {self.nbytes()} bytes)"

    # ------------------------------------------------------------------------------- compiled paths
    def pays(self, B: int, H: int, stepping: bool) -> bool:
        """Whether reading the small weights beats the float32 path on Ŵ for B rows of H units: a step
        (``stepping``) or a whole sequence. The small weights save memory traffic, which is what a step
        at B = 1 and large H is bound by; with more rows or small matrices the float32 products (BLAS,
        oneDNN, the compiled walks) win. The limits below are measured (docs/performance.md, "Where the
        small weights pay"); where they say no, the layer runs the float32 path on the same Ŵ."""
        if stepping:
            return H >= MIN_STEP_H and B <= MAX_STEP_B[self.kind]
        return B <= MAX_WALK_B

    def _plan(self, layer) -> tuple[Any, bool, tuple, tuple, tuple] | None:
        """(kernels module, lstm?, W tuple, S tuple, bias tuple) for a unidirectional float32 layer with
        the compiled path on, else None."""
        if layer.bidirectional or layer.dtype != _F32 or kernels._compiled() is None:
            return None
        cell = layer.cell
        names = type(cell).__name__
        if names not in ("LSTMCell", "GRUCell", "RNNCell") or (names == "GRUCell" and not cell.reset_after):
            return None
        from unrolled.kernels import _quant

        if self._tuples is None:
            keys = [layer.key(n, i, 0) for i in range(layer.num_layers) for n in ("W_xh", "W_hh")]
            if any(k not in self.stored for k in keys):
                return None
            bias_names = ("b_h", "b_hn") if names == "GRUCell" else ("b_h",)
            bias_keys = tuple(layer.key(n, i, 0) for i in range(layer.num_layers) for n in bias_names)
            self._tuples = (
                tuple(self.stored[k] for k in keys),
                tuple(self.scales[k] for k in keys),
                bias_keys,
            )
        W, S, bias_keys = self._tuples
        biases = []
        for k in bias_keys:
            v = layer.params.get(k)
            if v is None:
                v = _NO_BIAS  # an absent bias: the kernels take an empty one
            elif type(v) is not np.ndarray or v.dtype != _F32 or not v.flags.c_contiguous:
                return None
            biases.append(v)
        return _quant, names, W, S, tuple(biases)

    def step(self, layer, x_t, state):
        """``layer.step`` through ``*_qstack``: (y_t, state_t), or None where the compiled path does not
        apply or declines the input (the layer's cells then run on Ŵ and word any error)."""
        plan = self._plan(layer)
        if plan is None or type(x_t) is not np.ndarray or x_t.dtype != _F32 or x_t.ndim != 2:
            return None
        q, name, W, S, b = plan
        L, B, H = layer.num_layers, x_t.shape[0], layer.hidden_size
        if not x_t.flags.c_contiguous:  # the kernels read rows as vectors: C order (also h, c below)
            x_t = np.ascontiguousarray(x_t)
        if name == "LSTMCell":
            if state is None:
                h = c = np.zeros((L, B, H), _F32)
            elif type(state) in (tuple, list) and len(state) == 2:
                h, c = state
            else:
                return None
            if not all(type(a) is np.ndarray and a.dtype == _F32 and a.ndim == 3 for a in (h, c)):
                return None
            if not (h.flags.c_contiguous and c.flags.c_contiguous):
                h, c = np.ascontiguousarray(h), np.ascontiguousarray(c)
            y, h_out, c_out = np.empty((B, H), _F32), np.empty((L, B, H), _F32), np.empty((L, B, H), _F32)
            if q.lstm_qstack(x_t, h, c, W, S, b, y, h_out, c_out):
                return None
            return y, (h_out, c_out)
        h = np.zeros((L, B, H), _F32) if state is None else state
        if type(h) is not np.ndarray or h.dtype != _F32 or h.ndim != 3:
            return None
        if not h.flags.c_contiguous:
            h = np.ascontiguousarray(h)
        y, h_out = np.empty((B, H), _F32), np.empty((L, B, H), _F32)
        if name == "GRUCell":
            status = q.gru_qstack(x_t, h, W, S, b, y, h_out)
        else:
            status = q.rnn_qstack(x_t, h, W, S, b, layer.nonlinearity == "relu", y, h_out)
        return None if status else (y, h_out)

    def forward(self, layer, x: np.ndarray, states0: tuple):
        """The whole stack over x (T, B, I) (time-major, checked by the layer) from the checked initial
        states through ``*_qwalk``: (out (T, B, H), (h_n, [c_n])), or None where it does not apply."""
        plan = self._plan(layer)
        if plan is None:
            return None
        q, name, W, S, b = plan
        T, B, _ = x.shape
        L, H = layer.num_layers, layer.hidden_size
        x = np.ascontiguousarray(x)
        out, h_n = np.empty((T, B, H), _F32), np.empty((L, B, H), _F32)
        if name == "LSTMCell":
            c_n = np.empty((L, B, H), _F32)
            h0, c0 = (np.ascontiguousarray(s) for s in states0)
            if q.lstm_qwalk(x, h0, c0, W, S, b, out, h_n, c_n):
                return None
            return out, (h_n, c_n)
        h0 = np.ascontiguousarray(states0[0])
        if name == "GRUCell":
            status = q.gru_qwalk(x, h0, W, S, b, out, h_n)
        else:
            status = q.rnn_qwalk(x, h0, W, S, b, layer.nonlinearity == "relu", out, h_n)
        return None if status else (out, (h_n,))
