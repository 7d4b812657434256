"""The PyTorch bridge for single recurrent layers: torch.nn.RNN / LSTM / GRU <-> unrolled layers.

torch is optional and imported only here. The conversions:

- torch has two biases (bias_ih, bias_hh) that are simply added for RNN and LSTM: b_h = bias_ih + bias_hh.
  Exported back, bias_ih = b_h and bias_hh = 0 (same function); their gradients are equal.
- LSTM gate order is i, f, g, o in both libraries.
- GRU: torch's gate order is r, z, n and its update gate weights h_{t-1}: h = (1 − z') ⊙ n + z' ⊙ h.
  unrolled's z weights the candidate, so z = 1 − z' = sigmoid(−a_z'): the z rows of W_xh, W_hh and
  b_h are the *negated* torch rows. torch's n bias inside the reset product is b_hn. torch's GRU is
  the reset_after=True variant; a reset_after=False GRU has no torch equivalent.
- LSTM ``proj_size`` (Sak et al. 2014): torch's ``weight_hr_l{k}`` is unrolled's ``W_hr_l{k}`` (P, H), and
  weight_hh is (4H, P) in both. Peepholes, layer norm and zoneout have no torch.nn equivalent: refused.
"""

from __future__ import annotations

import numpy as np

from unrolled._optional import install_hint
from unrolled.layers import GRU, LSTM, PARAM_NAMES, RNN, RecurrentLayer


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            f"unrolled.interop.torch needs PyTorch: {install_hint('torch', 'torch==2.13.0')}"
        ) from e
    return torch


# torch.nn's constructor arguments; unrolled's layers take the same names (see RecurrentLayer.config).
_TORCH_ARGS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "nonlinearity",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "proj_size",
)
_CLASSES = (("RNN", RNN), ("LSTM", LSTM), ("GRU", GRU))  # torch.nn's class name, unrolled's class


def _directions(layer: RecurrentLayer):
    """(layer, direction, torch's key suffix) in torch's order: torch names ``weight_ih_l1_reverse``."""
    for l in range(layer.num_layers):
        for d in range(layer.num_directions):
            yield l, d, f"_l{l}" + ("_reverse" if d else "")


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
    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    dtype = sd["weight_ih_l0"].dtype
    cls = next(c for name, c in _CLASSES if isinstance(module, getattr(nn, name)))
    kw = {k: getattr(module, k) for k in _TORCH_ARGS if hasattr(module, k)}  # nonlinearity: nn.RNN only
    if not kw.get("proj_size"):
        kw.pop("proj_size", None)  # torch's RNN and GRU carry proj_size=0 too
    layer = cls(**kw, dtype=dtype)  # a GRU resets after, as torch's does
    H = module.hidden_size
    gru = isinstance(layer, GRU)
    for l, d, s in _directions(layer):
        p = layer.direction_params(l, d)
        w_ih, w_hh = sd["weight_ih" + s], sd["weight_hh" + s]
        p["W_xh"][...] = _gru_from_torch(w_ih, H) if gru else w_ih
        p["W_hh"][...] = _gru_from_torch(w_hh, H) if gru else w_hh
        if "weight_hr" + s in sd:
            p["W_hr"][...] = sd["weight_hr" + s]
        if module.bias:
            b_ih, b_hh = sd["bias_ih" + s], sd["bias_hh" + s]
            if gru:
                both = b_ih.copy()
                both[: 2 * H] += b_hh[: 2 * H]
                p["b_h"][...] = _gru_from_torch(both, H)
                p["b_hn"][...] = b_hh[2 * H :]
            else:
                p["b_h"][...] = b_ih + b_hh
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
    for option in ("peephole", "layer_norm", "zoneout"):
        if getattr(layer, option, False):
            raise ValueError(f"layer: {option} has no torch.nn equivalent (torch.nn.LSTM/GRU have none)")
    src = layer.grads if grads else layer.params
    H = layer.hidden_size
    out: dict[str, np.ndarray] = {}
    for l, d, s in _directions(layer):
        # This direction's arrays of `src` under the cells' names (the keys of layer.direction_params).
        p = {n: src[layer.key(n, l, d)] for n in PARAM_NAMES if layer.key(n, l, d) in src}
        out["weight_ih" + s] = _gru_to_torch(p["W_xh"], H) if gru else p["W_xh"].copy()
        out["weight_hh" + s] = _gru_to_torch(p["W_hh"], H) if gru else p["W_hh"].copy()
        if "W_hr" in p:
            out["weight_hr" + s] = p["W_hr"].copy()
        if layer.bias:
            b = p["b_h"]
            out["bias_ih" + s] = _gru_to_torch(b, H) if gru else b.copy()
            if gru:
                b_hh = out["bias_ih" + s].copy() if grads else np.zeros_like(b)
                b_hh[2 * H :] = p["b_hn"]
                out["bias_hh" + s] = b_hh
            else:
                out["bias_hh" + s] = b.copy() if grads else np.zeros_like(b)
    return out


def to_torch(layer: RecurrentLayer):
    """Build the equal torch.nn.RNN / LSTM / GRU module (same dtype, training mode and options)."""
    torch = _torch()
    name = next(name for name, c in _CLASSES if isinstance(layer, c))
    kw = {k: v for k, v in layer.config.items() if k in _TORCH_ARGS}
    module = getattr(torch.nn, name)(**kw)
    sd = to_torch_state_dict(layer)  # raises for reset_after=False
    module = module.to(getattr(torch, layer.dtype.name))
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    module.train(layer.training)
    return module


# --------------------------------------------------------------------------- whole sequence models
# unrolled.models.SequenceModel <-> a torch nn.Module made of nn.Embedding (or dense input), one
# nn.RNN / LSTM / GRU, the same pooling ("sequence" / "last" / "mean") and nn.Linear. The recurrent
# stack converts with the single-layer functions above; the embedding matrix and the head's W, b are
# the same arrays in both libraries (torch's Linear weight is (out, in) like unrolled's W).

_TORCH_MODEL_CLASS = None


def torch_sequence_model_class():
    """The torch ``nn.Module`` class equal to :class:`unrolled.models.SequenceModel` (created on first use,
    so that importing this module never imports torch).

    ``TorchSequenceModel(embed, rnn, head, output="sequence", input_dropout=0.0, output_dropout=0.0)``;
    ``forward(x, lengths=None, state=None) -> (y, state_n)`` with x time-major token ids (T, B) (int64) or
    features (T, B, I); variable lengths run as packed sequences; y (T, B, K) or (B, K) as in unrolled.
    """
    global _TORCH_MODEL_CLASS
    if _TORCH_MODEL_CLASS is not None:
        return _TORCH_MODEL_CLASS
    torch = _torch()
    nn = torch.nn

    class TorchSequenceModel(nn.Module):
        """Embedding or dense input -> nn.RNN / LSTM / GRU -> pooling -> nn.Linear (a SequenceModel)."""

        def __init__(self, embed, rnn, head, output="sequence", input_dropout=0.0, output_dropout=0.0):
            super().__init__()
            if output not in ("sequence", "last", "mean"):
                raise ValueError(f"output: expected 'sequence', 'last' or 'mean', got {output!r}")
            self.embed, self.rnn, self.head, self.output = embed, rnn, head, output
            self.input_dropout = nn.Dropout(input_dropout)
            self.output_dropout = nn.Dropout(output_dropout)

        def forward(self, x, lengths=None, state=None):
            e = self.embed(x) if self.embed is not None else x
            e = self.input_dropout(e)
            T, B = e.shape[0], e.shape[1]
            if lengths is not None:
                lengths = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
                packed = nn.utils.rnn.pack_padded_sequence(e, lengths, enforce_sorted=False)
                out, state_n = self.rnn(packed, state)
                out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)
            else:
                out, state_n = self.rnn(e, state)
                lengths = torch.full((B,), T, dtype=torch.int64)
            if self.output == "last":
                H = self.rnn.proj_size or self.rnn.hidden_size
                u = out[lengths - 1, torch.arange(B)]  # (B, D·H)
                if self.rnn.bidirectional:  # the reverse direction ends at t = 0
                    u = torch.cat([u[:, :H], out[0, :, H:]], dim=1)
            elif self.output == "mean":
                u = out.sum(dim=0) / lengths[:, None].to(out.dtype)  # padding is zero
            else:
                u = out
            return self.head(self.output_dropout(u)), state_n

    _TORCH_MODEL_CLASS = TorchSequenceModel
    return TorchSequenceModel


def to_torch_model(model):
    """Build the torch module equal to an :class:`unrolled.models.SequenceModel` (same dtype and mode).

    The recurrent stack converts as in :func:`to_torch` (a GRU with reset_after=False has no torch
    equivalent and is refused). Input and output dropout become ``nn.Dropout``; the stack's dropout
    between layers is torch's ``dropout``. Recurrent (variational) dropout has no torch.nn equivalent:
    such a model converts with a warning, and equals the torch module in eval mode.
    """
    import warnings

    torch = _torch()
    nn = torch.nn
    c = model.config
    if getattr(c, "recurrent_dropout", 0):
        warnings.warn(
            "recurrent_dropout has no torch.nn equivalent: the torch module equals the model in eval mode",
            stacklevel=2,
        )
    tdtype = getattr(torch, model.dtype.name)
    rnn = to_torch(model.rnn)
    embed = None
    if model.embed is not None:
        embed = nn.Embedding(model.embed.num_embeddings, model.embed.embedding_dim).to(tdtype)
        with torch.no_grad():
            embed.weight.copy_(torch.from_numpy(model.params["embed.W"]))
    has_b = "head.b" in model.params
    head = nn.Linear(model.head.in_features, model.head.out_features, bias=has_b).to(tdtype)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(model.params["head.W"]))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(model.params["head.b"]))
    cls = torch_sequence_model_class()
    module = cls(embed, rnn, head, c.output, c.input_dropout, c.output_dropout)
    return module.train(model.training)


def from_torch_model(module, output: str | None = None):
    """Build the :class:`unrolled.models.SequenceModel` equal to a torch module.

    Parameters
    ----------
    module : a module from :func:`to_torch_model`, or any ``nn.Module`` whose submodules are an optional
        ``nn.Embedding``, exactly one ``nn.RNN`` / ``LSTM`` / ``GRU`` (time-major, with biases) and exactly
        one ``nn.Linear`` head (with bias), used in that order.
    output : "sequence", "last" or "mean"; default: the module's ``output`` attribute, else "sequence".

    Raises
    ------
    TypeError / ValueError : the module is not of that shape (the message says what is missing or extra).
    """
    torch = _torch()
    nn = torch.nn
    from unrolled.models import ModelConfig, SequenceModel

    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    found: dict[str, list] = {"embed": [], "rnn": [], "head": [], "dropout": []}
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            found["embed"].append(m)
        elif isinstance(m, nn.RNN | nn.LSTM | nn.GRU):
            found["rnn"].append(m)
        elif isinstance(m, nn.Linear):
            found["head"].append(m)
    for part, want in (("rnn", "one nn.RNN, nn.LSTM or nn.GRU"), ("head", "one nn.Linear head")):
        if len(found[part]) != 1:
            raise ValueError(f"module: expected exactly {want}, found {len(found[part])}")
    if len(found["embed"]) > 1:
        raise ValueError(f"module: expected at most one nn.Embedding, found {len(found['embed'])}")
    rnn, head = found["rnn"][0], found["head"][0]
    embed = found["embed"][0] if found["embed"] else None
    if not rnn.bias:
        raise ValueError("module: a recurrent stack without biases has no SequenceModel equivalent")
    if head.bias is None:
        raise ValueError("module: a Linear head without bias has no SequenceModel equivalent (bias=True)")
    if embed is not None and (embed.max_norm is not None or embed.scale_grad_by_freq or embed.sparse):
        raise ValueError("module: nn.Embedding with max_norm / scale_grad_by_freq / sparse is not supported")
    if rnn.batch_first:
        raise ValueError("module: a batch_first recurrent stack is not supported (unrolled is time-major)")
    D = 2 if rnn.bidirectional else 1
    width = D * (getattr(rnn, "proj_size", 0) or rnn.hidden_size)
    if head.in_features != width:
        raise ValueError(f"module: head takes {head.in_features} features, stack gives {width}")
    if embed is not None and rnn.input_size != embed.embedding_dim:
        raise ValueError(
            f"module: stack takes {rnn.input_size} inputs, embedding gives {embed.embedding_dim}"
        )
    output = output if output is not None else getattr(module, "output", "sequence")
    dtype = rnn.weight_ih_l0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"module: dtype {dtype} is not supported (expected float32 or float64)")
    cell = "lstm" if isinstance(rnn, nn.LSTM) else "gru" if isinstance(rnn, nn.GRU) else "rnn"
    drop = {
        k: float(getattr(getattr(module, k, None), "p", 0.0)) for k in ("input_dropout", "output_dropout")
    }
    config = ModelConfig(
        input="tokens" if embed is not None else "dense",
        vocab_size=embed.num_embeddings if embed is not None else None,
        input_size=None if embed is not None else rnn.input_size,
        embed_dim=embed.embedding_dim if embed is not None else ModelConfig.embed_dim,
        cell=cell,
        hidden_size=rnn.hidden_size,
        num_layers=rnn.num_layers,
        bidirectional=rnn.bidirectional,
        nonlinearity=getattr(rnn, "nonlinearity", "tanh"),
        reset_after=True,
        proj_size=getattr(rnn, "proj_size", 0) if cell == "lstm" else 0,
        dropout=float(rnn.dropout),
        output_size=head.out_features,
        output=output,
        dtype=str(dtype).removeprefix("torch."),
        **drop,
    )
    model = SequenceModel(config)
    layer = from_torch(rnn)
    for k, v in layer.params.items():
        model.params["rnn." + k][...] = v
    if embed is not None:
        model.params["embed.W"][...] = embed.weight.detach().cpu().numpy()
    model.params["head.W"][...] = head.weight.detach().cpu().numpy()
    model.params["head.b"][...] = head.bias.detach().cpu().numpy()
    return model.train(module.training)
