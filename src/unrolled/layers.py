"""Recurrent layers: stacking (deep RNNs), directions (bidirectional), variable lengths, params/grads.

A layer owns its parameters and their gradients (same keys) and nothing else that persists:
the caches of the last forward are kept only so that ``backward`` can walk the same graph back.
The equations themselves live in :mod:`unrolled.cells`.

Shapes follow torch.nn: x (T, B, I) or (B, T, I) with ``batch_first``; out (T, B, D·H) with D = 2
when bidirectional, out[t] = [→h_t ; ←h_t]; h_n (L·D, B, H), ordered layer by layer, forward
direction before reverse. Layer l > 0 takes layer l − 1's outputs as its input sequence.

Parameter names: ``{W_xh, W_hh, b_h, b_hn}_l{layer}`` plus ``_reverse`` for the reverse direction,
stacked by gate in the row dimension (LSTM: i, f, g, o; GRU: z, r, n). See the cell modules.

What other packages (interop, checkpoints, diagnostics) use is public: :meth:`RecurrentLayer.key` (a
parameter's key), :meth:`~RecurrentLayer.direction_params` (one layer and direction under the cell's plain
names), :attr:`~RecurrentLayer.config` (the constructor's arguments), :meth:`~RecurrentLayer.last_caches`
(the forward's cell caches) and ``backward(..., on_direction=...)`` (an observer of the one BPTT walk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from unrolled import grad_mode, kernels
from unrolled._checks import check_array, check_lengths, one_of, positive_int, probability
from unrolled.cells import GRUCell, GRUVariantCell, LSTMCell, LSTMVariantCell, RNNCell
from unrolled.init import glorot_uniform, orthogonal
from unrolled.kernels import streaming
from unrolled.kernels._pool import counts_caller
from unrolled.kernels.quantized import QuantizedWeights

# The cells' plain parameter names (b_hn: GRU reset_after; the rest: the variants of cells/lstm_variant.py
# and cells/gru_variant.py — W_hr the projection, p_* the peepholes, ln_* the layer norms' gains and biases).
PARAM_NAMES = (
    "W_xh", "W_hh", "b_h", "b_hn", "W_hr", "p_i", "p_f", "p_o",
    "ln_x_g", "ln_x_b", "ln_h_g", "ln_h_b", "ln_c_g", "ln_c_b",
)  # fmt: skip


class _DirCache(NamedTuple):
    cell_cache: tuple  # the cell's own cache (RNNCache / LSTMCache / GRUCache)
    rev_index: np.ndarray | None  # (T, B) time index that reverses each sequence within its length


class _ForwardCache(NamedTuple):
    dirs: list  # [layer][direction] -> _DirCache
    drop_masks: list  # [layer] -> inverted-dropout mask on that layer's output, or None
    mask: np.ndarray | None  # (T, B, 1)
    T: int
    B: int
    batch_first: bool


class RecurrentLayer:
    """Base of :class:`RNN`, :class:`LSTM` and :class:`GRU`; use those.

    Built directly it takes any cell object with the cells' interface (``gates``, ``state_names``,
    ``forward``, ``backward``, ``step``), e.g. :mod:`unrolled.diagnostics.linear`'s linear cell.
    """

    # The subclass's own constructor arguments that configure its cell (RNN: nonlinearity; GRU:
    # reset_after), kept as attributes of the same name; :attr:`config` reports them.
    cell_options: tuple[str, ...] = ()

    def __init__(
        self,
        cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.dropout = probability("dropout", dropout)
        # Variational dropout on h_{t-1} where it meets W_hh: one mask per sequence, layer and direction.
        self.recurrent_dropout = probability("recurrent_dropout", recurrent_dropout)
        # Zoneout (Krueger et al. 2017): each unit of each state keeps its previous value with probability p.
        self.zoneout = probability("zoneout", zoneout)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {dtype.name}")
        self.cell = cell
        # Width of h (and of each direction's output): the projection's P for an LSTM with proj_size, else H.
        self.output_size = getattr(cell, "proj_size", 0) or self.hidden_size
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dtype = dtype
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self._param_keys: dict[tuple[int, int], tuple] = {}  # (layer, direction) -> its (name, key) pairs
        self._init_params()
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: _ForwardCache | None = None

    # ----------------------------------------------------------------- parameters
    def key(self, name: str, layer: int, direction: int = 0) -> str:
        """The key in ``params`` / ``grads`` of parameter ``name`` of one layer and direction.

        Parameters
        ----------
        name : one of :data:`PARAM_NAMES` (the cells' names: ``W_xh``, ``W_hh``, ``b_h``, ``b_hn``, and the
            variants' ``W_hr``, ``p_i``, ``p_f``, ``p_o``, ``ln_*``).
        layer : 0..num_layers − 1.  direction : 0 (forward) or 1 (reverse, bidirectional layers only).

        Returns
        -------
        e.g. ``key("W_hh", 1, 1) == "W_hh_l1_reverse"`` (torch's ``weight_hh_l1_reverse``). The key
        names a parameter the layer may not have (``b_h`` without bias, ``b_hn`` outside a GRU).
        """
        one_of("name", name, PARAM_NAMES)
        self._check_index(layer, direction)
        return name + self._suffix(layer, direction)

    def direction_params(self, layer: int, direction: int = 0) -> dict[str, np.ndarray]:
        """The live arrays of one layer and direction under the cell's plain names (``W_xh``, ``W_hh``
        and, where the layer has them, ``b_h``, ``b_hn``): the ``p`` the cells take. Writing into an
        array changes the layer's parameter."""
        self._check_index(layer, direction)
        return self._dir_params(layer, direction)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments as JSON values: ``type(layer)(**layer.config)`` builds a layer of
        the same shape and options (RNN, LSTM, GRU; the base class also needs its ``cell``).

        ``seed`` is left out: the new layer draws its own initial weights and dropout masks. For an equal
        layer copy the parameters across (``new.params[k][...] = layer.params[k]``). ``dtype`` is its name.
        """
        cfg = {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "dtype": self.dtype.name,
            "recurrent_dropout": self.recurrent_dropout,
            "zoneout": self.zoneout,
        }
        cfg.update({name: getattr(self, name) for name in self.cell_options})
        return cfg

    def _check_index(self, layer: int, direction: int) -> None:
        if (
            isinstance(layer, bool)
            or not isinstance(layer, int | np.integer)
            or not 0 <= layer < self.num_layers
        ):
            raise ValueError(f"layer: expected an index in 0..{self.num_layers - 1}, got {layer!r}")
        if isinstance(direction, bool) or direction not in range(self.num_directions):
            got = direction
            raise ValueError(
                f"direction: expected 0 (forward) or 1 (reverse, bidirectional only), got {got!r}"
            )

    # The unchecked forms, for the per-step paths (step() and the streaming plan call them per token).
    def _suffix(self, layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def _init_params(self) -> None:
        """W_hh orthogonal per gate block (its first P columns with a projection), W_xh and W_hr
        Glorot-uniform (per gate block), biases zero (LSTM forget-gate bias 1); the variants' peepholes
        zero, layer-norm gains one and biases zero."""
        H, G, P = self.hidden_size, self.cell.gates, self.output_size
        extra = self.cell.extra_params(H) if hasattr(self.cell, "extra_params") else {}
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else P * self.num_directions
            for d in range(self.num_directions):
                s = self._suffix(layer, d)
                W_xh = np.concatenate([glorot_uniform(self.rng, H, I) for _ in range(G)])
                W_hh = np.concatenate([orthogonal(self.rng, H)[:, :P] for _ in range(G)])
                self.params["W_xh" + s] = W_xh.astype(self.dtype)
                self.params["W_hh" + s] = W_hh.astype(self.dtype)
                if self.bias:
                    b = np.zeros(G * H, dtype=self.dtype)
                    if isinstance(self.cell, LSTMCell | LSTMVariantCell):
                        b[H : 2 * H] = 1.0  # forget gate open at the start: gradients flow along c
                    self.params["b_h" + s] = b
                    if isinstance(self.cell, GRUCell | GRUVariantCell) and self.cell.reset_after:
                        self.params["b_hn" + s] = np.zeros(H, dtype=self.dtype)
                for name, shape in extra.items():
                    if name == "W_hr":
                        v = glorot_uniform(self.rng, P, H)
                    else:
                        v = np.ones(shape) if name.endswith("_g") else np.zeros(shape)
                    self.params[name + s] = v.astype(self.dtype)

    def _dir_params(self, layer: int, direction: int) -> dict[str, np.ndarray]:
        # Which parameters a layer and direction has is fixed at construction (their arrays may change):
        # looked up once, not on every forward (~1 µs of 14 key tests).
        pairs = self._param_keys.get((layer, direction))
        if pairs is None:
            s = self._suffix(layer, direction)
            pairs = tuple((n, n + s) for n in PARAM_NAMES if n + s in self.params)
            self._param_keys[(layer, direction)] = pairs
        return {n: self.params[k] for n, k in pairs}

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> RecurrentLayer:
        """Training mode: dropout between layers (PyTorch semantics) and recurrent dropout are active."""
        self.training = bool(mode)
        return self

    def eval(self) -> RecurrentLayer:
        """Evaluation mode: no dropout."""
        return self.train(False)

    @property
    def num_states(self) -> int:
        return len(self.cell.state_names)

    # ----------------------------------------------------------------- checks
    @property
    def state_sizes(self) -> tuple[int, ...]:
        """The width of each state: (H,), or (P, H) for an LSTM's (h, c) (P = H without a projection)."""
        return (self.output_size, self.hidden_size)[: self.num_states]

    def _check_state(self, name: str, state, B: int):
        """Return the initial state as a tuple of (L·D, B, width) arrays (zeros when None)."""
        LD, W = self.num_layers * self.num_directions, self.state_sizes
        if state is None:
            return tuple(np.zeros((LD, B, w), dtype=self.dtype) for w in W)
        if self.num_states == 2:
            if not isinstance(state, tuple | list) or len(state) != 2:
                raise ValueError(f"{name}: expected a tuple (h, c) for an LSTM, got {type(state).__name__}")
            return tuple(
                check_array(f"{name}[{i}]", s, (LD, B, W[i]), self.dtype) for i, s in enumerate(state)
            )
        return (check_array(name, state, (LD, B, W[0]), self.dtype),)

    def _zoneout_masks(self, mask: np.ndarray | None, T: int, B: int):
        """The update masks m (T, B, width) of each state for one layer and direction, or None without
        zoneout (then the cell takes the lengths mask alone).

        Zoneout (Krueger et al. 2017) keeps each unit's previous value with probability p:
        h_t = d_t ⊙ h_{t−1} + (1 − d_t) ⊙ h̃_t, d_t ~ Bernoulli(p) drawn per step, unit and state from the
        layer's rng in training; in evaluation the expectation h_t = p·h_{t−1} + (1 − p)·h̃_t. Both are the
        cells' masked update h_t = h_{t−1} + m_t ⊙ (h̃_t − h_{t−1}) with m = 1 − d (training) or 1 − p
        (evaluation), times the lengths mask: BPTT needs nothing new (δh_{t−1} gets (1 − m) ⊙ δh_t).
        """
        if self.zoneout == 0:
            return None
        p, dt = self.zoneout, self.dtype
        if self.training:
            ms = tuple((self.rng.random((T, B, w)) >= p).astype(dt) for w in self.state_sizes)
        else:
            ms = tuple(np.full((T, B, w), 1.0 - p, dtype=dt) for w in self.state_sizes)
        if mask is not None:
            ms = tuple(m * mask for m in ms)
        return ms if self.num_states == 2 else ms[0]

    def _pack_state(self, states: tuple):
        return states if self.num_states == 2 else states[0]

    # ----------------------------------------------------------------- forward / backward
    def __call__(self, x: np.ndarray, h0=None, lengths=None, *, need_grad: bool | None = None):
        return self.forward(x, h0, lengths, need_grad=need_grad)

    @counts_caller
    def forward(self, x: np.ndarray, h0=None, lengths=None, *, need_grad: bool | None = None):
        """Run the whole stack over a batch of sequences.

        Parameters
        ----------
        x : (T, B, input_size), or (B, T, input_size) when batch_first; the layer's dtype.
        h0 : (L·D, B, H) initial hidden state, or (h0, c0) for an LSTM; zeros when None.
        lengths : B integers in 1..T; sequence b ends after lengths[b] steps (packed-sequence
            semantics: out is zero past it, h_n holds its last valid state, and the reverse
            direction starts at its last valid step).
        need_grad : False runs the inference path: no backward cache is kept (the compiled walks store
            no per-step gates or cell states and reuse their buffers), the outputs are equal bit for bit,
            and ``backward`` raises until a forward with the cache runs. None (default): True, except
            inside ``with unrolled.inference():`` (:mod:`unrolled.grad_mode`).

        Returns
        -------
        out : (T, B, D·H) (batch-first if the layer is), h_n : (L·D, B, H) or (h_n, c_n).
        """
        cached = grad_mode.wants_grad(need_grad)  # keep the backward cache
        check_array("x", x, (None, None, self.input_size), self.dtype)
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B, _ = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x: expected at least one time step and one sequence, got shape {x.shape}")
        x = np.ascontiguousarray(x)
        states0 = self._check_state("h0", h0, B)
        mask = rev_index = None
        if lengths is not None:
            lengths = check_lengths(lengths, B, T)
            if (lengths < T).any():
                t = np.arange(T)[:, None]
                mask = (t < lengths[None, :]).astype(self.dtype)[:, :, None]  # (T, B, 1)
                rev_index = np.where(t < lengths, lengths - 1 - t, t)  # an involution per column
        training_only = self.training and (self.dropout > 0 or self.recurrent_dropout > 0)
        if (
            self.quantized is not None
            and mask is None
            and not training_only
            and self.quantized.pays(B, self.hidden_size, stepping=False)
        ):
            got = self.quantized.forward(self, x, states0)  # the small weights, or None: the cells on Ŵ
            if got is not None:
                self._cache, self._no_cache = None, True  # inference only: nothing to walk back
                out, states = got
                return (out.transpose(1, 0, 2) if self.batch_first else out), self._pack_state(states)
        LD = self.num_layers * self.num_directions
        h_n = tuple(np.empty((LD, B, w), dtype=self.dtype) for w in self.state_sizes)
        dirs, drop_masks = [], []
        inp = x
        plain = kernels.pick(self.cell, self.dtype)  # the cell of a direction without per-unit masks
        for layer in range(self.num_layers):
            outs, layer_caches, calls = [], [], []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                xd = inp if d == 0 else _reverse(inp, rev_index)
                rec = {}
                if self.training and self.recurrent_dropout > 0:
                    keep = 1.0 - self.recurrent_dropout
                    rm = (self.rng.random((B, self.output_size)) < keep).astype(self.dtype)
                    rec = {"rec_mask": rm / self.dtype.type(keep)}  # (B, P), inverted: scaled by 1/keep
                zone = self._zoneout_masks(mask, T, B)
                cell = plain
                if rec or zone is not None:  # per-unit masks: the reference (a variant cell always)
                    cell = kernels.pick(self.cell, self.dtype, zoneout=zone is not None, **rec)
                calls.append((cell, xd, tuple(s[k] for s in states0), self._dir_params(layer, d), rec, zone))
            if cached:  # both directions at once where it pays (kernels.forward_directions)
                results = _forward_directions(calls, mask)
            elif all(hasattr(c[0], "infer") and not c[4] and c[5] is None for c in calls):
                # the compiled cells' forward-only walks, over the slices the training forward would use
                cells, xs, s0s, ps, _, _ = zip(*calls, strict=True)
                results = [(*r, None) for r in kernels.infer_directions(cells, xs, s0s, ps, mask)]
            else:
                results = [_infer_direction(call, mask) for call in calls]
            for d, (hs, state_T, cache) in enumerate(results):
                k = layer * self.num_directions + d
                if cached:
                    layer_caches.append(_DirCache(cache, rev_index))
                outs.append(hs if d == 0 else _reverse(hs, rev_index))
                for i, s in enumerate(state_T):
                    h_n[i][k] = s
            # A new array, never a view of a cache: the caller may change it in place (an inference
            # forward's outputs and a batch split's belong to no cache).
            own = not cached or kernels.output_is_own(results[0][2])
            out = outs[0] * mask if mask is not None else outs[0] if own else outs[0].copy()
            if self.num_directions == 2:
                out = np.concatenate([out, outs[1] * mask if mask is not None else outs[1]], axis=2)
            dirs.append(layer_caches)
            drop = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = 1.0 - self.dropout
                drop = (self.rng.random(out.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                out = out * drop
            drop_masks.append(drop)
            inp = out
        self._cache = _ForwardCache(dirs, drop_masks, mask, T, B, self.batch_first) if cached else None
        self._no_cache = not cached
        out = inp.transpose(1, 0, 2) if self.batch_first else inp
        return out, self._pack_state(h_n)

    @counts_caller
    def backward(
        self,
        d_out: np.ndarray,
        d_hn=None,
        *,
        on_direction: Callable[[int, int, np.ndarray, tuple], None] | None = None,
    ):
        """Full BPTT of the most recent forward.

        Parameters
        ----------
        d_out : ∂L/∂out, shaped like out; entries past a sequence's length are ignored.
        d_hn : ∂L/∂h_n (or (∂L/∂h_n, ∂L/∂c_n) for an LSTM); zeros when None.
        on_direction : called as ``on_direction(layer, direction, d_hs, d_state_T)`` for every layer and
            direction, top layer first, before that direction's BPTT runs (both directions of a layer are
            observed before either runs: they may run at once), with exactly what the cell's backward
            receives: d_hs (T, B, H) the gradient arriving at the direction's outputs from above
            (the loss, or the next layer's ∂L/∂x through the dropout mask), in the direction's own time
            order (the reverse direction's is reversed within each length) and zero past a length;
            d_state_T the tuple of (B, H) gradients at its final state (h, and c for an LSTM). The arrays
            belong to the walk: read them, copy what you keep. Diagnostics observe BPTT through it.

        Returns
        -------
        dx : ∂L/∂x shaped like x, d_h0 : ∂L/∂h0 (a tuple for an LSTM). Fills ``self.grads``.
        """
        if self.quantized is not None:
            raise RuntimeError(
                f"backward: this layer's weights are quantised ({self.quantized.kind}), for inference "
                "only; train the float model and quantise it afterwards"
            )
        if self._cache is None:
            raise RuntimeError("backward: " + self._why_no_cache())
        dirs, drop_masks, mask, T, B, batch_first = self._cache
        H, D = self.output_size, self.num_directions
        shape = (B, T, D * H) if batch_first else (T, B, D * H)
        check_array("d_out", d_out, shape, self.dtype)
        d_states_T = self._check_state("d_hn", d_hn, B)
        g = d_out.transpose(1, 0, 2) if batch_first else d_out
        g = g * mask if mask is not None else g.copy()
        d_states0 = [[None] * (self.num_layers * D) for _ in range(self.num_states)]
        grads: dict[str, np.ndarray] = {}
        for layer in range(self.num_layers - 1, -1, -1):
            if drop_masks[layer] is not None:
                g = g * drop_masks[layer]
            dx, calls = None, []
            for d in range(D):
                k = layer * D + d
                cache, rev_index = dirs[layer][d]
                gd = g[:, :, d * H : (d + 1) * H]
                gd = np.ascontiguousarray(gd) if d == 0 else _reverse(gd, rev_index)
                end = tuple(s[k] for s in d_states_T)
                if on_direction is not None:
                    on_direction(layer, d, gd, end)
                cell = kernels.owner(self.cell, cache)  # the path that ran the forward
                calls.append((cell, gd, end, cache, self._dir_params(layer, d)))
            for d, (dxd, dstate0, gr) in enumerate(kernels.backward_directions(*zip(*calls, strict=True))):
                k = layer * D + d
                if d == 1:
                    dxd = _reverse(dxd, dirs[layer][d].rev_index)
                dx = dxd if dx is None else dx + dxd
                for i, s in enumerate(dstate0):
                    d_states0[i][k] = s
                s = self._suffix(layer, d)
                grads.update({name + s: v for name, v in gr.items()})
            g = dx
        for k in self.params:
            self.grads[k] = grads[k].astype(self.dtype, copy=False)
        dx = g.transpose(1, 0, 2) if batch_first else g
        return dx, self._pack_state(tuple(np.stack(s) for s in d_states0))

    _no_cache = False  # the last forward ran the inference path (kept no backward cache)

    def _why_no_cache(self) -> str:
        if self._no_cache:
            return (
                "the last forward kept no backward cache (need_grad=False or inside unrolled.inference()); "
                "run forward with need_grad=True first"
            )
        return "called before forward (no forward pass to differentiate)"

    def last_caches(self) -> dict[tuple[int, int], tuple]:
        """The cell caches of the most recent forward, ``{(layer, direction): cache}``.

        Each is the cache its cell's forward returned (e.g. :class:`~unrolled.cells.lstm.LSTMCache`), in the
        direction's own time order, for the parameters of :meth:`direction_params`: what the per-step
        Jacobians of :mod:`unrolled.diagnostics` read. Read them; the next backward walks these very arrays.
        """
        if self._cache is None:
            raise RuntimeError("last_caches: " + self._why_no_cache())
        return {
            (layer, d): dc.cell_cache
            for layer, dirs in enumerate(self._cache.dirs)
            for d, dc in enumerate(dirs)
        }

    # ----------------------------------------------------------------- streaming
    _stream = None  # step()'s cached kernels.streaming.StreamPlan (None until the first step)
    # The small weights of a quantised layer (unrolled.quantization.quantize), or None: forward and step
    # read them where the compiled path applies; params hold their dequantised values; no backward.
    quantized: QuantizedWeights | None = None

    def step(self, x_t: np.ndarray, state=None):
        """One time step for streaming / online use (unidirectional layers only).

        x_t (B, input_size); state as h0 of forward (None = zeros). Returns (y_t (B, H), state_t),
        equal to forward over the whole sequence, one step at a time. No dropout is applied; zoneout takes
        its evaluation form h_t = p·h_{t−1} + (1 − p)·h̃_t, so step equals forward in eval mode.

        float32 with the Numba kernels on runs the lean path (:func:`unrolled.kernels.streaming.lean_step`,
        one compiled call for the whole stack); everything else, and any input the lean path declines,
        runs the cells. A quantised layer (:func:`unrolled.quantize`) first tries its own compiled step,
        which reads the int8 / bf16 weights, where that pays (``QuantizedWeights.pays``).
        """
        B = x_t.shape[0] if type(x_t) is np.ndarray and x_t.ndim == 2 else 0
        if self.quantized is not None and self.quantized.pays(B, self.hidden_size, stepping=True):
            out = self.quantized.step(self, x_t, state)  # the small weights in one compiled call
            if out is not None:
                return out
        out = streaming.lean_step(self, x_t, state) if self.zoneout == 0 else None
        if out is not None:
            return out
        if self.bidirectional:
            raise RuntimeError("step: a bidirectional layer needs the whole sequence; use forward")
        # Streaming calls this once per token, so the checks take a cheap path when all is well
        # (the same checks as forward; the full check_array runs only to word the error).
        if not streaming.is_valid(x_t, None, self.input_size, self.dtype):
            check_array("x_t", x_t, (None, self.input_size), self.dtype)
        B, LD = x_t.shape[0], self.num_layers
        parts = (state,) if self.num_states == 1 else state if type(state) in (tuple, list) else ()
        if len(parts) != self.num_states or not all(
            streaming.is_valid(s, LD, B, self.dtype, w) for s, w in zip(parts, self.state_sizes, strict=False)
        ):
            states = self._check_state("state", state, B)
        else:
            states = state if self.num_states == 2 else (state,)
        cell = kernels.pick(self.cell, self.dtype)
        inp, new = x_t, [[] for _ in range(self.num_states)]
        for layer in range(self.num_layers):
            prev = tuple(st[layer] for st in states)
            s = cell.step(inp, prev, self._dir_params(layer, 0))
            if self.zoneout:
                keep = self.dtype.type(self.zoneout)
                s = tuple(new + keep * (old - new) for new, old in zip(s, prev, strict=True))
            for i, v in enumerate(s):
                new[i].append(v)
            inp = s[0]
        stack = (lambda a: a[0][None]) if LD == 1 else np.stack
        return inp, self._pack_state(tuple(stack(s) for s in new))

    def zero_grad(self) -> None:
        for v in self.grads.values():
            v[...] = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, dtype={self.dtype.name})"
        )


def _forward_directions(calls: list, mask: np.ndarray | None) -> list:
    """Each direction's ``cell.forward`` of one layer, calls[d] = (cell, x, state0, params, rec, zone): both
    at once where :func:`unrolled.kernels.forward_directions` finds it pays; one after the other with a
    recurrent-dropout mask or zoneout's per-unit masks `zone` (the reference cells take them)."""
    if any(rec or zone is not None for *_, rec, zone in calls):
        return [
            cell.forward(x, s, p, mask if zone is None else zone, **rec) for cell, x, s, p, rec, zone in calls
        ]
    cells, xs, states0, params, _, _ = zip(*calls, strict=True)
    return kernels.forward_directions(list(cells), list(xs), list(states0), list(params), mask)


def _infer_direction(call: tuple, mask: np.ndarray | None) -> tuple:
    """One direction's forward without a backward cache, call = (cell, x, state0, params, rec, zone): the
    compiled cells' forward-only walk (``cell.infer``); the NumPy and reference cells (and any masks of
    recurrent dropout or zoneout) run their forward and drop its cache at once.

    Returns (hs, state_T, None)."""
    cell, x, s0, p, rec, zone = call
    if hasattr(cell, "infer") and not rec and zone is None:
        hs, state_T = cell.infer(x, s0, p, mask)
    else:
        hs, state_T, _ = cell.forward(x, s0, p, mask if zone is None else zone, **rec)
    return hs, state_T, None


def _reverse(a: np.ndarray, rev_index: np.ndarray | None) -> np.ndarray:
    """Reverse each sequence in time within its own length (padding stays in place)."""
    if rev_index is None:
        return np.ascontiguousarray(a[::-1])
    return a[rev_index, np.arange(a.shape[1])[None, :]]


def _arguments(args: dict[str, Any], *cell_options: str) -> dict[str, Any]:
    """A subclass constructor's ``locals()`` as :class:`RecurrentLayer`'s keyword arguments.

    Why: RNN, LSTM and GRU keep torch.nn's explicit signatures (IDEs and ``inspect.signature`` show them)
    without restating every argument a second time to forward it; ``self``, the ``__class__`` cell that
    ``super()`` adds, and the options the subclass gave its cell are dropped.
    """
    return {k: v for k, v in args.items() if k not in ("self", "__class__", *cell_options)}


class RNN(RecurrentLayer):
    """Vanilla RNN layer: h_t = σ(W_xh x_t + W_hh h_{t-1} + b_h), σ = tanh or relu."""

    cell_options = ("nonlinearity",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(RNNCell(nonlinearity), **_arguments(locals(), "nonlinearity"))


class LSTM(RecurrentLayer):
    """LSTM layer: gates i, f, g, o; c_t = f⊙c_{t-1} + i⊙g; h_t = o⊙tanh(c_t). State is (h, c).

    Variants (any combination; equations in :mod:`unrolled.cells.lstm_variant`): ``proj_size=P`` (> 0, < H)
    h_t = W_hr (o_t ⊙ tanh(c_t)), h and the output P wide, c H wide (torch.nn.LSTM's ``proj_size``);
    ``peephole=True`` i, f see c_{t−1} and o sees c_t through diagonal weights p_i, p_f, p_o;
    ``layer_norm=True`` LN on W_xh x_t, on W_hh h_{t−1} (each over all 4H) and on c_t before its tanh;
    ``zoneout=p`` (every layer type) each unit of h and of c keeps its previous value with probability p.
    ``layer_norm`` alone runs a compiled cell in float32 with Numba (:mod:`unrolled.kernels.layernorm`);
    peepholes, a projection and zoneout run the reference cell.
    """

    cell_options = ("proj_size", "peephole", "layer_norm")

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
        recurrent_dropout: float = 0.0,
        proj_size: int = 0,
        peephole: bool = False,
        layer_norm: bool = False,
        zoneout: float = 0.0,
    ) -> None:
        if proj_size != 0:
            positive_int("proj_size", proj_size)
            if proj_size >= hidden_size:
                raise ValueError(
                    f"proj_size: expected 0 or a size below hidden_size={hidden_size}, got {proj_size}"
                )
        self.proj_size, self.peephole, self.layer_norm = int(proj_size), bool(peephole), bool(layer_norm)
        variant = self.proj_size or self.peephole or self.layer_norm or zoneout
        cell = LSTMVariantCell(self.layer_norm, self.peephole, self.proj_size) if variant else LSTMCell()
        super().__init__(cell, **_arguments(locals(), *self.cell_options, "variant", "cell"))


class GRU(RecurrentLayer):
    """GRU layer: h_t = (1 − z_t)⊙h_{t-1} + z_t⊙h̃_t; ``reset_after`` picks the candidate's form.

    ``layer_norm=True`` (reset_after only): LN on W_xh x_t and on W_hh h_{t−1}, each over all 3H
    (:mod:`unrolled.cells.gru_variant`; compiled in float32 with Numba: :mod:`unrolled.kernels.layernorm`);
    ``zoneout=p``: each unit keeps h_{t−1} with probability p (the reference cell).
    """

    cell_options = ("reset_after", "layer_norm")

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
        reset_after: bool = True,
        recurrent_dropout: float = 0.0,
        layer_norm: bool = False,
        zoneout: float = 0.0,
    ) -> None:
        self.reset_after, self.layer_norm = bool(reset_after), bool(layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError(
                "layer_norm: the layer-normalised GRU has the reset_after form only; got reset_after=False"
            )
        cell = GRUVariantCell() if self.layer_norm else GRUCell(self.reset_after)
        super().__init__(cell, **_arguments(locals(), *self.cell_options, "cell"))
