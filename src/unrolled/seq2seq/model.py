"""The encoder–decoder: an RNN encoder over the source, a decoder that attends to it step by step.

With x the source ids, y the target ids (y_0 = <bos>), and symbols as in the code::

    encoder:   h_s = Encoder(E_src[x_s])          (unrolled.layers; stacked, optionally bidirectional;
                                                   packed lengths, so h_s = 0 past a source's end)
    bridge:    s_0 = [→h_S ; ←h_1] per layer       when the decoder has the encoder's layers and width,
               s_0 = tanh(W_br [→h_S ; ←h_1]_top + b_br)
                                                   otherwise (one bridge per state: h, and c for an LSTM)
    decoder, for t = 1..T:
      x_t  = [E_tgt[y_{t-1}] ; h̃_{t-1}]                   (input feeding, Luong et al. 2015; h̃_0 = 0)
      s_t  = Cell(x_t, s_{t-1})                           (the cells' own equations, per layer)
      c_t, α_t = Attention(q = h_t^top, memory h_s)       (see attention.py; none: c_t absent)
      h̃_t  = tanh(W_c [c_t ; h_t^top] + b_c)
      z_t  = W_o (h̃_t ⊙ m_t) + b_o,  p(y_t | y_<t, x) = softmax(z_t)    (m_t: inverted dropout, training)

Backward runs the decoder steps in reverse (BPTT through s_t *and* through the fed-back h̃_t)::

    δh̃_t  = W_oᵀ δz_t ⊙ m_t + δx_{t+1}[feed part]
    δ[c;h] = W_cᵀ (δh̃_t ⊙ (1 − h̃_t²));   δh_t^top += δh from the attention's query (attention.py)
    per layer, top to bottom: the cell's BPTT over the one-step slice t (cell.backward with T = 1),
    which adds the gradient from above to the one carried from step t + 1 and returns δx_t, δs_{t-1}
    then the bridge, the encoder's BPTT (δh_s from every step's attention, summed) and both embeddings.

Each step of the decoder uses the cell's ``forward`` over a one-step slice (training: it keeps the
cell's cache) or its ``step`` (decoding); no cell equation is restated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from unrolled._checks import one_of, positive_int, probability
from unrolled.config import from_dict as config_from_dict
from unrolled.config import to_dict as config_to_dict
from unrolled.init import lecun_uniform
from unrolled.layers import GRU, LSTM, RNN
from unrolled.nn import Embedding, Linear, cross_entropy
from unrolled.seq2seq.attention import KINDS, Attention, AttentionCache, Memory
from unrolled.seq2seq.text import BOS

ATTENTION = (*KINDS, "none")
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class Seq2SeqConfig:
    """The architecture of a :class:`Seq2Seq` (and, with ``seed``, its initial weights)."""

    src_vocab_size: int  # source vocabulary size (specials included)
    tgt_vocab_size: int  # target vocabulary size
    embed_dim: int = 64  # width of both embeddings
    cell: str = "lstm"  # "lstm" | "gru" | "rnn", encoder and decoder
    hidden_size: int = 128  # encoder width per direction
    enc_layers: int = 1  # stacked encoder layers
    bidirectional: bool = True  # encoder reads the source both ways
    dec_hidden_size: int | None = None  # decoder width; None: hidden_size × directions (no bridge needed)
    dec_layers: int = 1  # stacked decoder layers
    attention: str = "general"  # "additive" (Bahdanau) | "general" | "dot" (Luong) | "none"
    attn_size: int | None = None  # additive attention's hidden width A; None: the decoder width
    input_feeding: bool = True  # feed h̃_{t-1} into the decoder's input (Luong et al. 2015)
    dropout: float = 0.0  # inverted dropout on both embeddings and on h̃_t before the output layer
    dtype: str = "float32"  # "float32" | "float64"
    seed: int | None = 0  # initial weights and dropout masks

    def __post_init__(self) -> None:
        if isinstance(self.dtype, type | np.dtype):
            self.dtype = np.dtype(self.dtype).name
        for name in (
            "src_vocab_size",
            "tgt_vocab_size",
            "embed_dim",
            "hidden_size",
            "enc_layers",
            "dec_layers",
        ):
            positive_int(name, getattr(self, name))
        for name in ("dec_hidden_size", "attn_size"):
            positive_int(name, getattr(self, name), allow_none=True)
        if self.dec_hidden_size is None:
            self.dec_hidden_size = self.hidden_size * (2 if self.bidirectional else 1)
        if self.attn_size is None:
            self.attn_size = self.dec_hidden_size
        one_of("cell", self.cell, tuple(CELLS))
        one_of("attention", self.attention, ATTENTION)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        probability("dropout", self.dropout)
        if self.attention == "dot" and self.dec_hidden_size != self.memory_size:
            raise ValueError(
                f"attention 'dot' needs the decoder width ({self.dec_hidden_size}) to equal the encoder "
                f"output width ({self.memory_size}); use 'general' or 'additive'"
            )

    @property
    def memory_size(self) -> int:
        """M, the width of an encoder output h_s."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seq2SeqConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config of something else)."""
        return config_from_dict(cls, d, what="a translation model")


class DecoderState(NamedTuple):
    """What one decoder step hands to the next: explicit, so beam search can reorder its rows."""

    rnn: tuple  # per state kind (h, and c for an LSTM): (L_dec, B, H_dec)
    feed: np.ndarray  # (B, H_dec) h̃_{t-1}, the attentional vector fed back (zeros at t = 1)


class StepCache(NamedTuple):
    """What one decoder step keeps for BPTT."""

    cells: list  # per decoder layer: the cell's cache of its one-step slice
    attn: AttentionCache | None
    cat: np.ndarray  # (B, M + H_dec) [c_t ; h_t^top] (or h_t^top without attention)
    h_tilde: np.ndarray  # (B, H_dec)
    drop: np.ndarray | None  # (B, H_dec) inverted-dropout mask on h̃_t before W_o


class StepOutput(NamedTuple):
    logits: np.ndarray  # (B, V_tgt)
    state: DecoderState
    alpha: np.ndarray | None  # (B, S) attention weights (None without attention)
    cache: StepCache | None  # only with keep_cache=True


class Encoded(NamedTuple):
    """The encoder's result: the attention memory and the decoder's initial state."""

    memory: Memory  # keys/values (B, S, ·) and source mask (B, S)
    state0: DecoderState


class _ForwardCache(NamedTuple):
    encoded: Encoded
    bridge_in: list | None  # per state kind, the encoder's final (L_enc, B, M), when a Linear bridge is used
    src_drop: np.ndarray | None  # (S, B, E)
    tgt_drop: np.ndarray | None  # (T, B, E)
    steps: list  # StepCache per target step
    tokens_in: np.ndarray  # (T, B) the decoder's actual inputs (gold, or sampled predictions)


class Seq2Seq:
    """Encoder–decoder with attention; see the module docstring for the equations.

    ``params`` / ``grads``: flat dicts of the live arrays, keys ``src_embed.W``, ``tgt_embed.W``,
    ``encoder.W_xh_l0`` …, ``decoder.W_xh_l0`` …, ``bridge.W_h`` / ``bridge.b_h`` (and ``_c`` for an LSTM,
    when bridged), ``attn.W_a`` / ``attn.W_q`` …, ``combine.W``, ``combine.b``, ``out.W``, ``out.b``.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config: expected a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        self.dtype = dt = np.dtype(c.dtype)
        seeds = np.random.SeedSequence(c.seed).spawn(8)
        rngs = [np.random.default_rng(s) for s in seeds]
        self.rng = rngs[7]  # dropout masks and scheduled sampling
        self.training = True
        self.src_embed = Embedding(c.src_vocab_size, c.embed_dim, dt, rngs[0])
        self.tgt_embed = Embedding(c.tgt_vocab_size, c.embed_dim, dt, rngs[1])
        for emb in (self.src_embed, self.tgt_embed):  # N(0, 1/E): unit-size vectors, not size √E
            emb.params["W"] *= dt.type(1 / np.sqrt(c.embed_dim))
        extra = {"reset_after": True} if c.cell == "gru" else {}
        Layer = CELLS[c.cell]
        self.encoder = Layer(
            c.embed_dim,
            c.hidden_size,
            c.enc_layers,
            bidirectional=c.bidirectional,
            dtype=dt,
            seed=rngs[2],
            **extra,
        )
        H, M = c.dec_hidden_size, c.memory_size
        dec_in = c.embed_dim + (H if c.input_feeding else 0)
        self.decoder = Layer(dec_in, H, c.dec_layers, dtype=dt, seed=rngs[3], **extra)
        self.cell = self.decoder.cell
        self.num_states = self.decoder.num_states
        self.bridged = not (c.enc_layers == c.dec_layers and M == H)
        self.bridge: dict[str, np.ndarray] = {}
        if self.bridged:  # one tanh(W_br · + b_br) per state kind, from the top encoder layer's final state
            for kind in ("h", "c")[: self.num_states]:
                br = Linear(M, c.dec_layers * H, dtype=dt, seed=rngs[4], init=lecun_uniform)
                self.bridge[f"W_{kind}"], self.bridge[f"b_{kind}"] = br.params["W"], br.params["b"]
        self.attention = Attention(c.attention) if c.attention != "none" else None
        self.attn_params = (
            self.attention.init_params(rngs[5], H, M, c.attn_size, dt) if self.attention is not None else {}
        )
        cat = H + (M if self.attention is not None else 0)
        # h̃_t = tanh(W_c [c_t ; h_t] + b_c) and z_t = W_o h̃_t + b_o: their parameters, under the names
        # checkpoints use. The affine maps themselves run inline (per step forward, over all steps backward).
        combine = Linear(cat, H, dtype=dt, seed=rngs[6])
        out = Linear(H, c.tgt_vocab_size, dtype=dt, seed=rngs[6], init=lecun_uniform)
        self.head = {
            f"{name}.{k}": v
            for name, lin in (("combine", combine), ("out", out))
            for k, v in lin.params.items()
        }
        self.params: dict[str, np.ndarray] = {"src_embed.W": self.src_embed.params["W"]}
        self.params["tgt_embed.W"] = self.tgt_embed.params["W"]
        self.params.update({f"encoder.{k}": v for k, v in self.encoder.params.items()})
        self.params.update({f"decoder.{k}": v for k, v in self.decoder.params.items()})
        self.params.update({f"bridge.{k}": v for k, v in self.bridge.items()})
        self.params.update({f"attn.{k}": v for k, v in self.attn_params.items()})
        self.params.update(self.head)
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: _ForwardCache | None = None

    # ------------------------------------------------------------------ modes and sizes
    def train(self, mode: bool = True) -> Seq2Seq:
        """Training mode: dropout is active."""
        self.training = bool(mode)
        return self

    def eval(self) -> Seq2Seq:
        """Evaluation mode: no dropout (decoding always runs without it)."""
        return self.train(False)

    def rng_state(self) -> dict[str, Any]:
        """JSON-able states of the Generators the model draws from (dropout, scheduled sampling)."""
        return {"model": self.rng.bit_generator.state, "encoder": self.encoder.rng.bit_generator.state}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["model"]
        self.encoder.rng.bit_generator.state = state["encoder"]

    def num_parameters(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def load_params(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy ``arrays`` into the live parameters; the keys and shapes must be exactly this model's."""
        missing, unknown = set(self.params) - set(arrays), set(arrays) - set(self.params)
        if missing or unknown:
            raise ValueError(
                f"weights: do not fit this model "
                f"(missing {sorted(missing)[:3]}, unknown {sorted(unknown)[:3]})"
            )
        for k, v in arrays.items():
            if v.shape != self.params[k].shape:
                raise ValueError(
                    f"weights: {k} has shape {v.shape}, the model expects {self.params[k].shape}"
                )
            self.params[k][...] = v

    def _drop(self, shape: tuple) -> np.ndarray | None:
        p = self.config.dropout
        if not self.training or p == 0:
            return None
        return (self.rng.random(shape) >= p).astype(self.dtype) / self.dtype.type(1 - p)

    # ------------------------------------------------------------------ encoder
    def encode(self, src: np.ndarray, src_lengths: np.ndarray) -> Encoded:
        """Run the encoder and bridge. src (S, B) ids, src_lengths (B,) in 1..S -> :class:`Encoded`."""
        encoded, _, _ = self._encode(src, src_lengths, keep=False)
        return encoded

    def _encode(self, src: np.ndarray, src_lengths: np.ndarray, keep: bool):
        c = self.config
        src = np.asarray(src)
        if src.ndim != 2:
            raise ValueError(f"src: expected (S, B) token ids, got shape {src.shape}")
        S, B = src.shape
        e = self.src_embed.forward(src)  # (S, B, E)
        drop = self._drop(e.shape) if keep else None
        if drop is not None:
            e = e * drop
        out, final = self.encoder.forward(e, lengths=np.asarray(src_lengths))  # out (S, B, M)
        finals = final if self.num_states == 2 else (final,)
        mask = (np.arange(S)[None, :] < np.asarray(src_lengths)[:, None]).astype(self.dtype)  # (B, S)
        memory = np.ascontiguousarray(out.transpose(1, 0, 2))  # (B, S, M)
        mem = (
            self.attention.prepare(memory, mask, self.attn_params)
            if self.attention is not None
            else Memory(memory, memory, mask)
        )
        D, L = self.encoder.num_directions, c.enc_layers
        # [→h ; ←h] per layer: (L, B, D·H_enc)
        per_layer = [
            np.stack([np.concatenate(list(f[l * D : (l + 1) * D]), axis=1) for l in range(L)]) for f in finals
        ]
        if self.bridged:
            states = []
            for kind, top in zip(("h", "c"), [p[-1] for p in per_layer], strict=False):
                s = np.tanh(top @ self.bridge[f"W_{kind}"].T + self.bridge[f"b_{kind}"])  # (B, L_dec·H)
                states.append(s.reshape(B, c.dec_layers, c.dec_hidden_size).transpose(1, 0, 2).copy())
            rnn0 = tuple(states)
        else:
            rnn0 = tuple(per_layer)
        feed0 = np.zeros((B, c.dec_hidden_size), dtype=self.dtype)
        return Encoded(mem, DecoderState(rnn0, feed0)), drop, (per_layer if self.bridged else None)

    # ------------------------------------------------------------------ one decoder step
    def decode_step(self, y_prev: np.ndarray, state: DecoderState, memory: Memory) -> StepOutput:
        """One decoder step (no dropout, no cache): y_prev (B,) ids -> logits (B, V), new state, α (B, S)."""
        return self._step(self.tgt_embed.params["W"][np.asarray(y_prev)], state, memory, keep=False)

    def _step(self, e_t: np.ndarray, state: DecoderState, memory: Memory, keep: bool) -> StepOutput:
        c = self.config
        x = np.concatenate([e_t, state.feed], axis=1) if c.input_feeding else e_t  # (B, E [+ H])
        caches, new = [], [[] for _ in range(self.num_states)]
        inp = x
        for layer in range(c.dec_layers):
            p = self.decoder.direction_params(layer)
            s_prev = tuple(s[layer] for s in state.rnn)
            if keep:
                _, s_new, cell_cache = self.cell.forward(inp[None], s_prev, p, None)
                caches.append(cell_cache)
            else:
                s_new = self.cell.step(inp, s_prev, p)
            for i, s in enumerate(s_new):
                new[i].append(s)
            inp = s_new[0]
        q = inp  # (B, H) the top layer's h_t
        alpha = attn_cache = None
        if self.attention is not None:
            ctx, alpha, attn_cache = self.attention.step(q, memory, self.attn_params)
            cat = np.concatenate([ctx, q], axis=1)  # (B, M + H)
        else:
            cat = q
        h_tilde = np.tanh(cat @ self.head["combine.W"].T + self.head["combine.b"])  # (B, H)
        drop = self._drop(h_tilde.shape) if keep else None
        z_in = h_tilde * drop if drop is not None else h_tilde
        logits = z_in @ self.head["out.W"].T + self.head["out.b"]  # (B, V)
        state = DecoderState(tuple(np.stack(s) for s in new), h_tilde)
        cache = StepCache(caches, attn_cache, cat, h_tilde, drop) if keep else None
        return StepOutput(logits, state, alpha, cache)

    # ------------------------------------------------------------------ training forward / backward
    def forward(
        self,
        src: np.ndarray,
        src_lengths: np.ndarray,
        tgt_in: np.ndarray,
        sample_prob: float = 0.0,
    ) -> np.ndarray:
        """Teacher-forced forward over a batch, kept for :meth:`backward`.

        Parameters
        ----------
        src : (S, B) source ids.  src_lengths : (B,) in 1..S.
        tgt_in : (T, B) decoder inputs, <bos> y_1 … y_{T-1} (padding past a target's end is harmless:
            mask it in the loss).
        sample_prob : scheduled sampling (Bengio et al. 2015): at each step t > 1 each sequence feeds
            the model's own previous argmax instead of the gold token with this probability.

        Returns
        -------
        logits : (T, B, V_tgt).
        """
        tgt_in = np.asarray(tgt_in)
        if tgt_in.ndim != 2 or tgt_in.shape[1] != np.asarray(src).shape[1]:
            raise ValueError(
                f"tgt_in: expected (T, B) ids with B = {np.asarray(src).shape[1]}, got {tgt_in.shape}"
            )
        probability("sample_prob", sample_prob, closed=True)
        encoded, src_drop, bridge_in = self._encode(src, src_lengths, keep=True)
        T, B = tgt_in.shape
        sampling = sample_prob > 0 and self.training
        W_emb = self.tgt_embed.params["W"]
        emb = None if sampling else self.tgt_embed.forward(tgt_in)  # (T, B, E)
        tgt_drop = self._drop((T, B, self.config.embed_dim))
        tokens = tgt_in.copy()
        logits = np.empty((T, B, self.config.tgt_vocab_size), dtype=self.dtype)
        steps, state = [], encoded.state0
        for t in range(T):
            if sampling:
                if t > 0:
                    use = self.rng.random(B) < sample_prob
                    tokens[t] = np.where(use, logits[t - 1].argmax(axis=1), tgt_in[t])
                e_t = W_emb[tokens[t]]
            else:
                e_t = emb[t]
            if tgt_drop is not None:
                e_t = e_t * tgt_drop[t]
            out = self._step(e_t, state, encoded.memory, keep=True)
            logits[t], state = out.logits, out.state
            steps.append(out.cache)
        if sampling:
            self.tgt_embed.forward(tokens)  # the ids actually fed, for the embedding's scatter-add backward
        self._cache = _ForwardCache(encoded, bridge_in, src_drop, tgt_drop, steps, tokens)
        return logits

    def backward(self, d_logits: np.ndarray) -> None:
        """BPTT of the last :meth:`forward` (module docstring): d_logits (T, B, V) -> fills ``grads``."""
        if self._cache is None:
            raise RuntimeError("backward: called before forward (no forward pass to differentiate)")
        c, fc = self.config, self._cache
        T, B, V = d_logits.shape
        H, E, L = c.dec_hidden_size, c.embed_dim, c.dec_layers
        mem = fc.encoded.memory
        g: dict[str, np.ndarray] = {}
        # Output layer in bulk over all steps: z_t = W_o (h̃_t ⊙ m_t) + b_o.
        z_in = np.stack([s.h_tilde if s.drop is None else s.h_tilde * s.drop for s in fc.steps])  # (T, B, H)
        g["out.W"] = d_logits.reshape(T * B, V).T @ z_in.reshape(T * B, H)
        g["out.b"] = d_logits.sum(axis=(0, 1))
        d_h_tilde_out = d_logits @ self.head["out.W"]  # (T, B, H)
        d_pre_all = np.empty((T, B, H), dtype=self.dtype)
        d_emb = np.empty((T, B, E), dtype=self.dtype)
        attn_g: dict[str, np.ndarray] = {}
        acc = self.attention.zero_memory_grad(mem) if self.attention is not None else None
        dec_g: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.decoder.params.items()}
        d_feed = np.zeros((B, H), dtype=self.dtype)
        d_state = tuple(np.zeros((L, B, H), dtype=self.dtype) for _ in range(self.num_states))
        M = c.memory_size
        for t in range(T - 1, -1, -1):
            sc = fc.steps[t]
            d_ht = d_h_tilde_out[t] if sc.drop is None else d_h_tilde_out[t] * sc.drop
            d_ht = d_ht + d_feed
            d_pre = d_pre_all[t] = d_ht * (1.0 - sc.h_tilde * sc.h_tilde)
            d_cat = d_pre @ self.head["combine.W"]  # (B, M + H) or (B, H)
            if self.attention is not None:
                d_q = d_cat[:, M:] + self.attention.step_backward(
                    d_cat[:, :M], sc.attn, mem, self.attn_params, attn_g, acc
                )
            else:
                d_q = d_cat
            d_out = d_q  # gradient reaching the current layer's output h_t from above
            new_d_state = [[None] * L for _ in range(self.num_states)]
            for layer in range(L - 1, -1, -1):
                p = self.decoder.direction_params(layer)
                dx, d_s0, gr = self.cell.backward(
                    d_out[None], tuple(s[layer] for s in d_state), sc.cells[layer], p
                )
                for name, v in gr.items():
                    dec_g[self.decoder.key(name, layer)] += v
                for i, s in enumerate(d_s0):
                    new_d_state[i][layer] = s
                d_out = dx[0]
            d_state = tuple(np.stack(s) for s in new_d_state)
            d_emb[t] = d_out[:, :E]
            d_feed = d_out[:, E:] if c.input_feeding else d_feed
        cat_all = np.stack([s.cat for s in fc.steps])  # (T, B, cat)
        g["combine.W"] = d_pre_all.reshape(T * B, H).T @ cat_all.reshape(T * B, -1)
        g["combine.b"] = d_pre_all.sum(axis=(0, 1))
        if fc.tgt_drop is not None:
            d_emb *= fc.tgt_drop
        self.tgt_embed.backward(d_emb)
        # Bridge, then the encoder: its final state gets δs_0, its outputs get δh_s from every step.
        d_finals = self._bridge_backward(d_state, fc, g, B)
        if self.attention is not None:
            d_memory = self.attention.backward_memory(acc, mem, self.attn_params, attn_g)  # (B, S, M)
            d_enc_out = np.ascontiguousarray(d_memory.transpose(1, 0, 2))
        else:
            d_enc_out = np.zeros((mem.values.shape[1], B, M), dtype=self.dtype)
        dx, _ = self.encoder.backward(d_enc_out, d_finals if self.num_states == 2 else d_finals[0])
        if fc.src_drop is not None:
            dx = dx * fc.src_drop
        self.src_embed.backward(dx)
        g["src_embed.W"] = self.src_embed.grads["W"]
        g["tgt_embed.W"] = self.tgt_embed.grads["W"]
        g.update({f"encoder.{k}": v for k, v in self.encoder.grads.items()})
        g.update({f"decoder.{k}": v for k, v in dec_g.items()})
        g.update({f"attn.{k}": v for k, v in attn_g.items()})
        for k in self.params:
            self.grads[k] = g[k].astype(self.dtype, copy=False)

    def _bridge_backward(self, d_state: tuple, fc: _ForwardCache, g: dict, B: int) -> tuple:
        """δs_0 (per state kind, (L_dec, B, H)) -> δ of the encoder's final states (L_enc·D, B, H_enc)."""
        c = self.config
        D, He, L = self.encoder.num_directions, c.hidden_size, c.enc_layers
        d_finals = [np.zeros((L * D, B, He), dtype=self.dtype) for _ in range(self.num_states)]
        for i, kind in enumerate(("h", "c")[: self.num_states]):
            if self.bridged:
                top = fc.bridge_in[i][-1]  # (B, M)
                s = fc.encoded.state0.rnn[i].transpose(1, 0, 2).reshape(B, -1)  # (B, L_dec·H)
                d_pre = d_state[i].transpose(1, 0, 2).reshape(B, -1) * (1.0 - s * s)
                g[f"bridge.W_{kind}"] = d_pre.T @ top
                g[f"bridge.b_{kind}"] = d_pre.sum(axis=0)
                d_top = d_pre @ self.bridge[f"W_{kind}"]  # (B, M)
                for d in range(D):
                    d_finals[i][(L - 1) * D + d] = d_top[:, d * He : (d + 1) * He]
            else:
                for layer in range(L):
                    for d in range(D):
                        d_finals[i][layer * D + d] = d_state[i][layer][:, d * He : (d + 1) * He]
        return tuple(d_finals)

    def loss(
        self,
        src: np.ndarray,
        src_lengths: np.ndarray,
        tgt_in: np.ndarray,
        tgt_out: np.ndarray,
        tgt_mask: np.ndarray,
        sample_prob: float = 0.0,
    ) -> float:
        """Mean cross-entropy per target token (padding masked); runs forward *and* backward (fills grads).

        tgt_out (T, B) the gold next tokens y_1 … y_T (<eos> last), tgt_mask (T, B) 1 at real tokens.
        """
        logits = self.forward(src, src_lengths, tgt_in, sample_prob)
        value, d_logits = cross_entropy(logits, np.asarray(tgt_out), mask=tgt_mask)
        self.backward(d_logits)
        return value


def start_tokens(B: int) -> np.ndarray:
    """The first decoder input of every sequence: <bos> (B,)."""
    return np.full(B, BOS, dtype=np.int64)
