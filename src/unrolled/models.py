"""Model composition: token embedding or dense features → recurrent stack → Linear head.

The model's forward, for input x (time-major) and valid lengths n_b::

    e_t = E[x_t]                    (tokens: a row of the embedding matrix E (V, E_dim) per id)
    e_t ← e_t ⊙ m_in / (1 − p_in)   input dropout (training only)
    h_t = RNN stack(e_t, h_{t-1})   see unrolled.layers (dropout p between stacked layers,
                                    recurrent dropout on h_{t-1} inside the cells)
    u   = h_t  ("sequence")  |  h_{n_b}  ("last")  |  (1/n_b) Σ_{t<n_b} h_t  ("mean")
    u   ← u ⊙ m_out / (1 − p_out)   output dropout (training only)
    y   = W u + b                    the Linear head

and the backward runs the same chain in reverse. For a bidirectional stack, "last" takes each
direction's final state: [→h at n_b − 1 ; ←h at 0] (the reverse direction ends at t = 0).

Parameters and gradients are one flat dict each, namespaced ``"embed.W"``, ``"rnn.W_xh_l0"``, …,
``"head.W"``, ``"head.b"``; ``params`` holds the live arrays (an optimizer updating them in place
updates the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from unrolled import grad_mode
from unrolled._checks import positive_int, probability
from unrolled.config import from_dict as config_from_dict
from unrolled.config import to_dict as config_to_dict
from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer
from unrolled.nn import Embedding, Linear

__all__ = ["ModelConfig", "SequenceModel"]


def _inverted_dropout(rng: np.random.Generator, shape: tuple, p: float, dtype) -> np.ndarray:
    """A mask m / (1 − p) with m ~ Bernoulli(1 − p): the expected activation is unchanged."""
    keep = 1.0 - p
    return (rng.random(shape) < keep).astype(dtype) / np.dtype(dtype).type(keep)


_CHOICES = {
    "input": ("tokens", "dense"),
    "cell": ("lstm", "gru", "rnn", "mingru", "minlstm"),
    "nonlinearity": ("tanh", "relu"),
    "output": ("sequence", "last", "mean"),
    "dtype": ("float32", "float64"),
}


@dataclass
class ModelConfig:
    """Everything that defines a :class:`SequenceModel`'s architecture (and its initial weights)."""

    input: str = "tokens"  # "tokens": integer ids through an Embedding; "dense": float features
    vocab_size: int | None = None  # V, for input="tokens"
    input_size: int | None = None  # I, for input="dense"
    embed_dim: int = 32  # embedding width E (tokens only)
    cell: str = "lstm"  # "lstm" | "gru" | "rnn" | "mingru" | "minlstm" (parallel scan, unrolled.minlayers)
    hidden_size: int = 128  # H per direction
    num_layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False
    nonlinearity: str = "tanh"  # vanilla RNN only: "tanh" | "relu"
    reset_after: bool = True  # GRU only: cuDNN/PyTorch variant (True) or Cho et al. 2014 (False)
    dropout: float = 0.0  # inverted dropout between stacked layers (training only)
    input_dropout: float = 0.0  # on the embedded / dense input
    output_dropout: float = 0.0  # on the head's input
    recurrent_dropout: float = 0.0  # variational: one mask per sequence on h_{t-1} where it meets W_hh
    zoneout: float = 0.0  # each unit keeps its previous state with this probability (training)
    layer_norm: bool = False  # LSTM / GRU: layer-normalised pre-activations (and LSTM cell state)
    peephole: bool = False  # LSTM only: peephole connections from c to the gates
    proj_size: int = 0  # LSTM only: h projected to this width (0: none)
    output_size: int | None = None  # K; defaults to vocab_size for tokens (a language model)
    output: str = (
        "sequence"  # "sequence" (many-to-many) | "last" (last valid step) | "mean" (over valid steps)
    )
    dtype: str = "float32"  # "float32" | "float64"
    seed: int | None = None  # initial weights and dropout masks

    def __post_init__(self) -> None:
        if isinstance(self.dtype, type | np.dtype):
            self.dtype = np.dtype(self.dtype).name
        for name, options in _CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"{name}: expected one of {options}, got {getattr(self, name)!r}")
        if self.input == "tokens":
            positive_int("vocab_size", self.vocab_size)
            positive_int("embed_dim", self.embed_dim)
            if self.output_size is None:
                self.output_size = self.vocab_size
        else:
            positive_int("input_size", self.input_size)
        for name in ("hidden_size", "num_layers", "output_size"):
            positive_int(name, getattr(self, name))
        for name in ("dropout", "input_dropout", "output_dropout", "recurrent_dropout", "zoneout"):
            probability(name, getattr(self, name))
        for name in ("layer_norm", "peephole"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.proj_size != 0:
            positive_int("proj_size", self.proj_size)
        lstm_only = [n for n in ("peephole", "proj_size") if getattr(self, n)]
        if self.cell != "lstm" and lstm_only:
            raise ValueError(f"{lstm_only[0]}: an LSTM option, but cell is {self.cell!r}")
        if self.cell not in ("lstm", "gru") and self.layer_norm:
            raise ValueError(f"layer_norm: an LSTM / GRU option, but cell is {self.cell!r}")
        if self.cell in ("mingru", "minlstm") and self.zoneout:
            raise ValueError(f"zoneout: an RNN / LSTM / GRU option, but cell is {self.cell!r}")
        if self.cell in ("mingru", "minlstm") and self.recurrent_dropout:
            raise ValueError(f"recurrent_dropout: {self.cell} has no recurrent weights for it; expected 0")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed: expected an integer or None, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config of something else)."""
        return config_from_dict(cls, d, what="a sequence model")


class _ModelCache(NamedTuple):
    in_mask: np.ndarray | None  # (T, B, E) input dropout mask
    out_mask: np.ndarray | None  # head-input dropout mask
    lengths: np.ndarray  # (B,) valid steps per sequence
    T: int
    tokens: bool


class SequenceModel:
    """Embedding or dense input → recurrent stack → Linear head, with forward/backward through all of it.

    Attributes: ``embed`` (:class:`Embedding` or None), ``rnn`` (:class:`~unrolled.layers.RecurrentLayer`),
    ``head`` (:class:`~unrolled.nn.Linear`), ``params`` / ``grads`` (flat namespaced dicts),
    ``rng`` (the Generator of the input/output dropout masks; ``rnn.rng`` draws the layers' masks).
    """

    def __init__(self, config: ModelConfig) -> None:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config: expected a ModelConfig, got {type(config).__name__}")
        self.config = c = config
        self.dtype = np.dtype(c.dtype)
        # Independent streams per part: adding dropout never changes the initial weights.
        s_embed, s_rnn, s_head, s_drop = np.random.SeedSequence(c.seed).spawn(4)
        self.embed = (
            Embedding(c.vocab_size, c.embed_dim, self.dtype, np.random.default_rng(s_embed))
            if c.input == "tokens"
            else None
        )
        in_size = c.embed_dim if self.embed is not None else c.input_size
        common = dict(
            num_layers=c.num_layers,
            dropout=c.dropout,
            bidirectional=c.bidirectional,
            dtype=self.dtype,
            seed=np.random.default_rng(s_rnn),
        )
        if c.recurrent_dropout:
            common["recurrent_dropout"] = c.recurrent_dropout
        if c.zoneout:
            common["zoneout"] = c.zoneout
        if c.cell == "lstm":
            variants = dict(proj_size=c.proj_size, peephole=c.peephole, layer_norm=c.layer_norm)
            self.rnn: RecurrentLayer = LSTM(in_size, c.hidden_size, **variants, **common)
        elif c.cell == "gru":
            self.rnn = GRU(
                in_size, c.hidden_size, reset_after=c.reset_after, layer_norm=c.layer_norm, **common
            )
        elif c.cell == "rnn":
            self.rnn = RNN(in_size, c.hidden_size, nonlinearity=c.nonlinearity, **common)
        else:
            from unrolled.minlayers import MinGRU, MinLSTM

            self.rnn = (MinGRU if c.cell == "mingru" else MinLSTM)(in_size, c.hidden_size, **common)
        D = 2 if c.bidirectional else 1
        self.head = Linear(
            D * self.rnn.output_size, c.output_size, dtype=self.dtype, seed=np.random.default_rng(s_head)
        )
        self.rng = np.random.default_rng(s_drop)
        self.training = True
        self._parts = {"embed": self.embed, "rnn": self.rnn, "head": self.head}
        self.params: dict[str, np.ndarray] = {
            f"{name}.{k}": v
            for name, part in self._parts.items()
            if part is not None
            for k, v in part.params.items()
        }
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: _ModelCache | None = None

    # ----------------------------------------------------------------- modes and state
    def train(self, mode: bool = True) -> SequenceModel:
        """Training mode: every dropout active."""
        self.training = bool(mode)
        self.rnn.train(mode)
        return self

    def eval(self) -> SequenceModel:
        """Evaluation mode: no dropout anywhere."""
        return self.train(False)

    def zero_grad(self) -> None:
        for v in self.grads.values():
            v[...] = 0

    def rng_state(self) -> dict[str, Any]:
        """JSON-able states of every Generator the model draws from (for exact resume)."""
        return {"model": self.rng.bit_generator.state, "rnn": self.rnn.rng.bit_generator.state}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["model"]
        self.rnn.rng.bit_generator.state = state["rnn"]

    # ----------------------------------------------------------------- forward / backward
    def __call__(self, x: np.ndarray, state=None, lengths=None, *, need_grad: bool | None = None):
        return self.forward(x, state, lengths, need_grad=need_grad)

    def _embed_input(self, x: np.ndarray, lead: str) -> np.ndarray:
        """Token ids (lead) through the embedding, or dense features (lead + (I,)) checked and passed on."""
        c = self.config
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        if self.embed is not None:
            if not isinstance(x, np.ndarray) or x.ndim != lead.count(",") + 1:
                raise ValueError(f"x: expected token ids ({lead}), got {got}")
            return self.embed.forward(x)
        if not isinstance(x, np.ndarray) or x.ndim != lead.count(",") + 2 or x.shape[-1] != c.input_size:
            raise ValueError(f"x: expected features ({lead}, {c.input_size}), got {got}")
        if x.dtype != self.dtype:
            raise ValueError(f"x: expected dtype {self.dtype.name}, got {x.dtype.name}")
        return x

    def forward(self, x: np.ndarray, state=None, lengths=None, *, need_grad: bool | None = None):
        """Run the model over a batch of sequences.

        Parameters
        ----------
        x : token ids (T, B) (integers) for input="tokens", or features (T, B, I) for input="dense".
        state : the recurrent stack's initial state, (L·D, B, H) or (h0, c0) for an LSTM; zeros if None.
        lengths : (B,) valid steps per sequence (1..T), or None for all T.
        need_grad : False: the recurrent stack's inference path (no backward cache, see
            :mod:`unrolled.grad_mode`); None: True except inside ``with unrolled.inference():``.

        Returns
        -------
        y : (T, B, K) for output="sequence", (B, K) for "last" / "mean".
        state_n : the stack's final state (each sequence's last valid one), to carry on (truncated BPTT).
        """
        c = self.config
        e = self._embed_input(x, "T, B")
        T, B = e.shape[:2]
        in_mask = out_mask = None
        if self.training and c.input_dropout > 0:
            in_mask = _inverted_dropout(self.rng, e.shape, c.input_dropout, self.dtype)
            e = e * in_mask
        keep = grad_mode.wants_grad(need_grad)
        out, state_n = self.rnn.forward(e, state, lengths, need_grad=keep)  # out (T, B, D·H)
        lens = np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        u = self._pool(out, lens)
        if self.training and c.output_dropout > 0:
            out_mask = _inverted_dropout(self.rng, u.shape, c.output_dropout, self.dtype)
            u = u * out_mask
        self._cache = _ModelCache(in_mask, out_mask, lens, T, self.embed is not None) if keep else None
        return self.head.forward(u), state_n

    def _pool(self, out: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """out (T, B, D·H) -> the head's input u: itself, the last valid step or the mean over valid steps."""
        mode = self.config.output
        if mode == "sequence":
            return out
        B = out.shape[1]
        if mode == "last":
            u = out[lens - 1, np.arange(B)]  # (B, D·H)
            if self.rnn.num_directions == 2:
                H = self.rnn.output_size
                u[:, H:] = out[0, :, H:]  # the reverse direction's final state sits at t = 0
            return u
        return out.sum(axis=0) / lens[:, None].astype(self.dtype)  # padding is zero in out

    def backward(self, dy: np.ndarray, d_state=None):
        """Backpropagate ∂L/∂y (shaped like y) through head, stack and input; fills ``grads``.

        d_state : ∂L/∂state_n (same structure as state_n), e.g. from a decoder; zeros if None.
        Returns ∂L/∂state (the initial state), same structure as ``state``.
        """
        if self._cache is None:
            if self.rnn._cache is None and self.rnn._no_cache:
                raise RuntimeError("backward: " + self.rnn._why_no_cache())
            raise RuntimeError("backward: called before forward (no forward pass to differentiate)")
        in_mask, out_mask, lens, T, tokens = self._cache
        du = self.head.backward(dy)
        if out_mask is not None:
            du = du * out_mask
        mode, B = self.config.output, lens.shape[0]
        if mode == "sequence":
            d_out = du
        else:
            d_out = np.zeros((T, B, du.shape[-1]), dtype=self.dtype)
            if mode == "last":
                d_out[lens - 1, np.arange(B)] = du
                if self.rnn.num_directions == 2:
                    H = self.rnn.output_size
                    d_out[lens - 1, np.arange(B), H:] = 0
                    d_out[0, :, H:] += du[:, H:]
            else:
                t = np.arange(T)[:, None]
                d_out[...] = (t < lens[None, :])[..., None] * (du / lens[:, None].astype(self.dtype))[None]
        de, d_state0 = self.rnn.backward(d_out, d_state)
        if in_mask is not None:
            de = de * in_mask
        if tokens:
            self.embed.backward(de)
        else:
            self.dx = de  # ∂L/∂x for dense input (e.g. to check the model as a whole)
        for name, part in self._parts.items():
            if part is not None:
                for k, v in part.grads.items():
                    self.grads[f"{name}.{k}"] = v
        return d_state0

    # ----------------------------------------------------------------- streaming
    def step(self, x_t: np.ndarray, state=None):
        """One time step without dropout: x_t token ids (B,) or features (B, I) -> (y_t (B, K), state).

        Equal to forward over the whole sequence one step at a time ("sequence" and "last" outputs;
        a unidirectional stack only).
        """
        if self.config.output == "mean":
            raise RuntimeError("step: output='mean' needs the whole sequence; use forward")
        e = self._embed_input(x_t, "B")
        h, state = self.rnn.step(e, state)
        return h @ self.head.params["W"].T + self.head.params.get("b", 0), state

    def __repr__(self) -> str:
        n = sum(v.size for v in self.params.values())
        return f"SequenceModel({self.config}, parameters={n})"
