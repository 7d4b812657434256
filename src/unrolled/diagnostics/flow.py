"""The per-step gradient norms ‖∂L/∂h_t‖ of an actual BPTT pass through a layer.

For one layer and direction, with δ_t = ∂L/∂s_t the total gradient reaching the state s_t
(from the output at step t and from s_{t+1}) and d_t the gradient arriving at output t::

    δ_T = ∂L/∂s_T (from h_n) + d_T,      δ_t = J[t]ᵀ δ_{t+1} + d_t  (t ≥ 1),      δ_0 = J[0]ᵀ δ_1

where J[t] = ∂s_{t+1}/∂s_t are the exact per-step Jacobians of :mod:`.jacobians` and d_t enters the
h part of s_t (in the arrays, d_t is ``direct[t-1]``: outputs are numbered from 0). The walk over
layers and directions is the layer's own: the gradient arriving at layer l's outputs is layer l+1's
∂L/∂x from the cell's backward (through the dropout mask kept by the forward), and the reverse
direction runs in its own time order. δ_0 is the layer's d_h0, and δ_t − d_t equals the d_h0 of the
layer's backward over the rest of the sequence started from s_t (both checked in the tests).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.diagnostics.jacobians import step_jacobian
from unrolled.layers import RecurrentLayer


class GradientFlow(NamedTuple):
    """Gradient norms of one layer and direction, per sequence, in that direction's own time order."""

    h: np.ndarray  # (T+1, B) ‖∂L/∂h_t‖ for t = 0..T (t = 0: the initial state)
    c: np.ndarray | None  # (T+1, B) ‖∂L/∂c_t‖ (LSTM), else None
    delta: np.ndarray  # (T+1, B, S) the gradients δ_t themselves, float64
    direct: np.ndarray  # (T, B, H) d_t: what arrives at output t from above (the loss or the next layer)


def gradient_flow(layer: RecurrentLayer, d_out: np.ndarray, d_hn=None) -> dict[tuple[int, int], GradientFlow]:
    """BPTT through the layer's most recent forward, recording ‖∂L/∂h_t‖ at every step.

    Parameters
    ----------
    layer : an RNN / LSTM / GRU layer after a forward pass.
    d_out : ∂L/∂out, shaped like that forward's out (cast to the layer's dtype).
    d_hn : ∂L/∂h_n (or (∂L/∂h_n, ∂L/∂c_n)); zeros when None.

    Returns
    -------
    {(layer_index, direction): GradientFlow}, direction 0 forward, 1 reverse. The layer's params,
    grads and cache are left untouched.
    """
    if layer.quantized is not None:
        raise RuntimeError(
            f"gradient_flow: the layer's weights are quantised ({layer.quantized.kind}), for inference "
            "only; diagnose the float model"
        )
    try:
        caches = layer.last_caches()
    except RuntimeError:
        raise RuntimeError(
            "gradient_flow: the layer has no forward pass to differentiate (call forward first)"
        ) from None
    if not isinstance(d_out, np.ndarray):
        raise ValueError(
            f"d_out: expected an array shaped like the forward's out, got {type(d_out).__name__}"
        )
    if not isinstance(layer.cell, LSTMCell | GRUCell | RNNCell):
        raise TypeError(
            f"layer: its cell {type(layer.cell).__name__} has no step Jacobian here (the layer-norm, "
            "peephole, projected and zoneout LSTM and the layer-norm GRU); diagnostics cover the plain cells"
        )
    lstm = isinstance(layer.cell, LSTMCell)
    flows: dict[tuple[int, int], GradientFlow] = {}

    def observe(li: int, d: int, d_hs: np.ndarray, d_state_T: tuple) -> None:
        p = layer.direction_params(li, d)
        flows[(li, d)] = _walk(layer.cell, caches[(li, d)], p, d_hs, d_state_T, layer.hidden_size, lstm)

    # The layer's own backward walks the graph (layers, directions, dropout masks, lengths) and hands each
    # direction's gradients to `observe`. It also fills ``grads``: put back as they were, arrays and values.
    saved = {k: (v, v.copy()) for k, v in layer.grads.items()}
    try:
        layer.backward(d_out.astype(layer.dtype, copy=False), d_hn, on_direction=observe)
    finally:
        for k, (arr, val) in saved.items():
            arr[...] = val
            layer.grads[k] = arr
    return dict(sorted(flows.items()))


def _walk(cell, cache, p: dict, gd: np.ndarray, end: tuple, H: int, lstm: bool) -> GradientFlow:
    """δ_t for t = T..0 of one direction: gd (T, B, H) gradients at the outputs, end the state gradients."""
    T, B, _ = gd.shape
    S = 2 * H if lstm else H
    delta = np.zeros((T + 1, B, S))
    delta[T] = np.concatenate([e.astype(np.float64) for e in end], axis=1)
    delta[T, :, :H] += gd[T - 1]
    for t in range(T - 1, -1, -1):
        J = step_jacobian(cell, cache, p, t)  # (B, S, S)
        delta[t] = np.einsum("bi,bij->bj", delta[t + 1], J)  # J[t]ᵀ δ_{t+1}
        if t >= 1:
            delta[t, :, :H] += gd[t - 1]
    h = np.linalg.norm(delta[:, :, :H], axis=2)
    c = np.linalg.norm(delta[:, :, H:], axis=2) if lstm else None
    return GradientFlow(h, c, delta, gd.astype(np.float64))
