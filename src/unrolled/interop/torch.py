"""The PyTorch bridge for single recurrent layers: torch.nn.RNN / LSTM / GRU <-> unrolled layers.

torch is optional and imported only here. The conversions:

- torch has two biases (bias_ih, bias_hh) that are simply added for RNN and LSTM: b_h = bias_ih + bias_hh.
  Exported back, bias_ih = b_h and bias_hh = 0 (same function); their gradients are equal.
- LSTM gate order is i, f, g, o in both libraries.
- GRU: torch's gate order is r, z, n and its update gate weights h_{t-1}: h = (1 − z') ⊙ n + z' ⊙ h.
  unrolled's z weights the candidate, so z = 1 − z' = sigmoid(−a_z'): the z rows of W_xh, W_hh and
  b_h are the *negated* torch rows. torch's n bias inside the reset product is b_hn. torch's GRU is
  the reset_after=True variant; a reset_after=False GRU has no torch equivalent.
"""

from __future__ import annotations

import numpy as np

from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("unrolled.interop.torch needs PyTorch: pip install 'unrolled[torch]'") from e
    return torch


def _suffixes(layer: RecurrentLayer):
    for l in range(layer.num_layers):
        for d in range(layer.num_directions):
            yield f"_l{l}" + ("_reverse" if d else "")


def _gru_to_torch(a: np.ndarray, H: int) -> np.ndarray:
    """Gate blocks (z, r, n) -> torch's (r, z', n) with z' = −z in pre-activation space."""
    return np.concatenate([a[H : 2 * H], -a[:H], a[2 * H :]])


def _gru_from_torch(a: np.ndarray, H: int) -> np.ndarray:
    """torch's gate blocks (r, z', n) -> (z, r, n) with z = −z'."""
    return np.concatenate([-a[H : 2 * H], a[:H], a[2 * H :]])


def from_torch(module) -> RecurrentLayer:
    """Build the unrolled layer equal to a torch.nn.RNN / LSTM / GRU, in the module's dtype."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.RNN | nn.LSTM | nn.GRU):
        raise TypeError(f"module: expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    if isinstance(module, nn.LSTM) and module.proj_size:
        raise ValueError(f"module: LSTM with proj_size={module.proj_size} is not supported (expected 0)")
    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    dtype = sd["weight_ih_l0"].dtype
    kw = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        dtype=dtype,
    )
    if isinstance(module, nn.RNN):
        layer = RNN(nonlinearity=module.nonlinearity, **kw)
    elif isinstance(module, nn.LSTM):
        layer = LSTM(**kw)
    else:
        layer = GRU(reset_after=True, **kw)
    H = module.hidden_size
    gru = isinstance(layer, GRU)
    for s in _suffixes(layer):
        w_ih, w_hh = sd["weight_ih" + s], sd["weight_hh" + s]
        layer.params["W_xh" + s][...] = _gru_from_torch(w_ih, H) if gru else w_ih
        layer.params["W_hh" + s][...] = _gru_from_torch(w_hh, H) if gru else w_hh
        if module.bias:
            b_ih, b_hh = sd["bias_ih" + s], sd["bias_hh" + s]
            if gru:
                both = b_ih.copy()
                both[: 2 * H] += b_hh[: 2 * H]
                layer.params["b_h" + s][...] = _gru_from_torch(both, H)
                layer.params["b_hn" + s][...] = b_hh[2 * H :]
            else:
                layer.params["b_h" + s][...] = b_ih + b_hh
    layer.train(module.training)
    return layer


def to_torch_state_dict(layer: RecurrentLayer, grads: bool = False) -> dict[str, np.ndarray]:
    """NumPy arrays keyed and shaped exactly as the equal torch module's ``state_dict()``.

    With ``grads=True``: the gradients of the last backward, as torch would put them in ``.grad``.
    """
    gru = isinstance(layer, GRU)
    if gru and not layer.reset_after:
        raise ValueError(
            "layer: a GRU with reset_after=False has no torch.nn equivalent (torch resets after)"
        )
    src = layer.grads if grads else layer.params
    H = layer.hidden_size
    out: dict[str, np.ndarray] = {}
    for s in _suffixes(layer):
        out["weight_ih" + s] = _gru_to_torch(src["W_xh" + s], H) if gru else src["W_xh" + s].copy()
        out["weight_hh" + s] = _gru_to_torch(src["W_hh" + s], H) if gru else src["W_hh" + s].copy()
        if layer.bias:
            b = src["b_h" + s]
            out["bias_ih" + s] = _gru_to_torch(b, H) if gru else b.copy()
            if gru:
                b_hh = out["bias_ih" + s].copy() if grads else np.zeros_like(b)
                b_hh[2 * H :] = src["b_hn" + s]
                out["bias_hh" + s] = b_hh
            else:
                out["bias_hh" + s] = b.copy() if grads else np.zeros_like(b)
    return out


def to_torch(layer: RecurrentLayer):
    """Build the equal torch.nn.RNN / LSTM / GRU module (same dtype, training mode and options)."""
    torch = _torch()
    kw = dict(
        input_size=layer.input_size,
        hidden_size=layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.bias,
        batch_first=layer.batch_first,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
    )
    if isinstance(layer, RNN):
        module = torch.nn.RNN(nonlinearity=layer.nonlinearity, **kw)
    elif isinstance(layer, LSTM):
        module = torch.nn.LSTM(**kw)
    else:
        module = torch.nn.GRU(**kw)
    sd = to_torch_state_dict(layer)  # raises for reset_after=False
    module = module.to(getattr(torch, layer.dtype.name))
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    module.train(layer.training)
    return module
