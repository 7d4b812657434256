"""Quantised weights for inference and streaming: ``unrolled.quantize(model, "int8" | "bf16")``.

W_xh and W_hh of every recurrent layer are stored small — int8 per row with a float32 scale
(s_j = max_k |W[j, k]| / 127, Q = round(W / s)) or bf16 (float32 rounded to nearest even in its upper
16 bits) — and the compiled streaming ``step`` and the compiled sequence walk read them: float32
accumulation, the row scale applied after each dot product, float32 gates (see
:mod:`unrolled.kernels.quantized` for the formats and :mod:`unrolled.kernels._quant` for the kernels).
Biases, the embedding and the output layer stay float32. A quantised model is inference-only: its
``backward`` raises. Checkpoints store the small arrays (:func:`unrolled.checkpoint.save_model`), and
every command loads them.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import numpy as np

from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.kernels.quantized import KINDS, QuantizedWeights
from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer
from unrolled.models import SequenceModel

__all__ = ["KINDS", "QuantizedWeights", "attach", "quantize", "quantized_kind"]

M = TypeVar("M", RecurrentLayer, SequenceModel)


def _layer_of(obj) -> RecurrentLayer:
    if isinstance(obj, RecurrentLayer):
        return obj
    if isinstance(obj, SequenceModel):
        return obj.rnn
    raise TypeError(
        f"model: expected a SequenceModel or a recurrent layer (LSTM, GRU, RNN), got {type(obj).__name__}"
    )


def quantized_kind(obj: RecurrentLayer | SequenceModel) -> str | None:
    """'int8' or 'bf16' for a quantised layer or model, None for a float one."""
    q = _layer_of(obj).quantized
    return None if q is None else q.kind


def attach(layer: RecurrentLayer, weights: QuantizedWeights) -> None:
    """Make `layer` quantised with `weights` (one entry per W_xh / W_hh key, of the layer's shapes):
    writes their dequantised values into ``layer.params`` in place (a model's ``params`` share them)."""
    want = {k: v.shape for k, v in layer.params.items() if k.startswith(("W_xh", "W_hh"))}
    got = {k: q.shape for k, q in weights.stored.items()}
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        k = diff[0]
        raise ValueError(f"weights: {k!r} is {got.get(k)}, the layer's is {want.get(k)}")
    for k, W in weights.dequantized().items():
        layer.params[k][...] = W
    layer.quantized = weights
    layer._stream = None  # the float step plan: built again on Ŵ where it is used


def _copy(model: M) -> M:
    """A new model or layer of the same configuration holding copies of the parameters (no forward
    caches, no shared arrays)."""
    if isinstance(model, SequenceModel):
        new = SequenceModel(copy.deepcopy(model.config))
    elif type(model) in (LSTM, GRU, RNN):
        new = type(model)(**model.config)
    else:
        raise TypeError(f"model: expected a SequenceModel, LSTM, GRU or RNN, got {type(model).__name__}")
    for k, v in model.params.items():
        new.params[k][...] = v
    return new


def quantize(model: M, to: str) -> M:
    """A quantised copy of `model` (a :class:`~unrolled.models.SequenceModel` or a recurrent layer) for
    inference: W_xh / W_hh of every layer in ``to`` ('int8' or 'bf16'), in eval mode. `model` is unchanged.

    Parameters
    ----------
    model : a float32 SequenceModel, LSTM, GRU or RNN, not quantised already.
    to : 'int8' (per-row symmetric: s_j = max_k |W[j, k]| / 127, Q = round(W / s)) or 'bf16'
        (float32 rounded to nearest, ties to even, in its upper 16 bits).

    Returns
    -------
    The copy. Its ``params`` hold the dequantised weights Ŵ (so every path computes with the same
    numbers); its compiled ``step`` and unidirectional ``forward`` read the small ones. ``backward``
    raises RuntimeError.
    """
    layer = _layer_of(model)
    if not isinstance(to, str) or to not in KINDS:
        raise ValueError(f"to: expected one of {list(KINDS)}, got {to!r}")
    if layer.dtype != np.float32:
        raise ValueError(f"model: expected float32 weights to quantise, got {layer.dtype.name}")
    if layer.quantized is not None:
        raise ValueError(f"model: already quantised ({layer.quantized.kind}); quantise the float model")
    if type(layer.cell) not in (LSTMCell, GRUCell, RNNCell) or getattr(layer, "zoneout", 0.0) > 0:
        # the compiled int8/bf16 kernels run the plain cells' equations only
        raise ValueError(
            f"model: quantisation covers plain RNN, LSTM and GRU layers; this {type(layer).__name__} has "
            "options the quantised kernels do not compute (layer_norm, peephole, proj_size or zoneout)"
        )
    out = _copy(model)
    q_layer = _layer_of(out)
    attach(q_layer, QuantizedWeights.of(q_layer.params, to))
    out.eval()
    return out
