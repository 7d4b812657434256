"""minGRU and minLSTM layers (Feng et al. 2024): stacked, bidirectional, packed lengths, trained by a scan.

The layers are :class:`~unrolled.layers.RecurrentLayer` s (stacking, directions, lengths, dropout between
layers, params/grads, ``step``) whose cells have no recurrent weights: the parameters of one layer and
direction are only ``W_xh_l{l}`` (G·H, I) and ``b_h_l{l}`` (G·H,) (``_reverse`` for the reverse direction),
stacked by gate (minGRU: z, h̃; minLSTM: f, i, h̃). The equations and their BPTT are in
:mod:`unrolled.cells.minrnn`; :func:`unrolled.kernels.pick` runs them by the parallel scans of
:mod:`unrolled.kernels.scan` (the sequential reference with ``kernels.using(reference=True)``).
``step`` runs the same recurrence one step at a time, for streaming.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.cells.minrnn import MinGRUCell, MinLSTMCell
from unrolled.init import glorot_uniform
from unrolled.layers import RecurrentLayer


class _MinLayer(RecurrentLayer):
    """What :class:`MinGRU` and :class:`MinLSTM` share (no W_hh or recurrent dropout; h0 ≥ 0 in log space)."""

    cell_options = ("log_space",)

    def _init_params(self) -> None:
        """W_xh Glorot-uniform per gate block, biases zero."""
        H, G = self.hidden_size, self.cell.gates
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else H * self.num_directions
            for d in range(self.num_directions):
                s = self._suffix(layer, d)
                W_xh = np.concatenate([glorot_uniform(self.rng, H, I) for _ in range(G)])
                self.params["W_xh" + s] = W_xh.astype(self.dtype)
                if self.bias:
                    self.params["b_h" + s] = np.zeros(G * H, dtype=self.dtype)

    @property
    def config(self) -> dict[str, Any]:
        cfg = super().config
        del cfg["recurrent_dropout"]  # no recurrent weights for it to act on
        del cfg["zoneout"]  # an option of the RNN / LSTM / GRU layers only
        return cfg

    def _check_state(self, name: str, state, B: int):
        states = super()._check_state(name, state, B)
        if self.log_space and name != "d_hn" and state is not None and (states[0] < 0).any():
            raise ValueError(
                f"{name}: expected a state ≥ 0 (log_space=True keeps h positive; use log_space=False "
                "for states of either sign)"
            )
        return states


def _min_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in ("self", "__class__", "log_space")}


class MinGRU(_MinLayer):
    """minGRU layer: z_t = σ(W_xz x_t + b_z), h̃_t = act(W_xh̃ x_t + b_h̃), h_t = (1 − z_t)⊙h_{t−1} + z_t⊙h̃_t.

    ``log_space=True`` (the paper's default): act = g, g(k) = k + 0.5 (k ≥ 0) or σ(k) (k < 0), h stays
    positive and the NumPy scan runs on logarithms; ``False``: act = identity, scans in linear space.
    Arguments otherwise as :class:`unrolled.LSTM` (no ``recurrent_dropout``: there is no W_hh).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
        log_space: bool = True,
    ) -> None:
        self.log_space = bool(log_space)
        super().__init__(MinGRUCell(self.log_space), **_min_args(locals()))


class MinLSTM(_MinLayer):
    """minLSTM layer: f_t = σ(k_f), i_t = σ(k_i), f' = f/(f + i), i' = i/(f + i),
    h_t = f'_t⊙h_{t−1} + i'_t⊙act(k_h), all k = W_x x_t + b (no h_{t−1}, no cell state).

    ``log_space`` and the other arguments as :class:`MinGRU`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
        log_space: bool = True,
    ) -> None:
        self.log_space = bool(log_space)
        super().__init__(MinLSTMCell(self.log_space), **_min_args(locals()))
