"""Gradient-flow diagnostics: vanishing and exploding gradients, measured on your own layer.

- :mod:`.jacobians` — exact per-step Jacobians ∂s_{t+1}/∂s_t from the forward's stored values
  (vanilla, LSTM joint (h, c) and c-path alone, GRU both variants) and their products ∂s_T/∂s_k.
- :mod:`.flow` — the per-step gradient norms ‖∂L/∂h_t‖ of an actual BPTT pass.
- :mod:`.report` — γ fit, memory horizon, regime and verdict, W_hh spectrum, the vanilla bound;
  :func:`diagnose`.
- :mod:`.linear` — the linear RNN (identity activation) with W_hh = αI that calibrates the verdict.
- :mod:`.plot` — the figure (needs matplotlib); :mod:`.callback` — γ logged during training.
"""

from unrolled.diagnostics.callback import GammaMonitor
from unrolled.diagnostics.flow import GradientFlow, gradient_flow
from unrolled.diagnostics.jacobians import (
    ProductNorms,
    cpath_factors,
    cpath_log10_norms,
    jacobian_products,
    pairwise_log10_norms,
    step_jacobian,
    step_jacobians,
)
from unrolled.diagnostics.linear import LinearRNNCell, linear_rnn
from unrolled.diagnostics.report import (
    Diagnosis,
    DirectionReport,
    Spectrum,
    activation_bound,
    diagnose,
    diagnose_model,
    fit_gamma,
    memory_horizon,
    regime,
    spectrum,
    verdict,
)

__all__ = [
    "Diagnosis",
    "DirectionReport",
    "GammaMonitor",
    "GradientFlow",
    "LinearRNNCell",
    "ProductNorms",
    "Spectrum",
    "activation_bound",
    "cpath_factors",
    "cpath_log10_norms",
    "diagnose",
    "diagnose_model",
    "fit_gamma",
    "gradient_flow",
    "jacobian_products",
    "linear_rnn",
    "memory_horizon",
    "pairwise_log10_norms",
    "regime",
    "spectrum",
    "step_jacobian",
    "step_jacobians",
    "verdict",
]
