"""ONNX export (and re-import) of recurrent layers and whole sequence models, with ONNX's native
RNN, LSTM and GRU operators.

``onnx`` (and ``onnxruntime`` to run the result) are optional and imported only here:
``pip install -e ".[onnx]"`` in the clone. The conversions, one function each below:

- Weights: ONNX keeps one ``W [D, G·H, I]``, ``R [D, G·H, H]`` and ``B [D, 2·G·H]`` (``Wb`` then ``Rb``)
  per layer, directions stacked forward then reverse — the same rows as unrolled's ``W_xh``, ``W_hh``,
  ``b_h`` per direction, with the gates reordered:
- LSTM: unrolled's gate order is i, f, g, o; ONNX's is i, o, f, c (c = g).
- GRU: ONNX's order is z, r, h and, like PyTorch, its update gate weights h_{t−1}:
  H_t = (1 − z')⊙h̃ + z'⊙H_{t−1}. unrolled's z weights the candidate, so z' = 1 − z = sigmoid(−a_z): the
  z rows of W, R and the biases are the *negated* unrolled rows. ``reset_after=True`` is
  ``linear_before_reset=1`` with b_hn as ``Rbh`` (inside the reset product); the classic
  ``reset_after=False`` is ``linear_before_reset=0``.
- RNN: ``activations`` Tanh or Relu; W, R, B as they are.
- LSTM peepholes (``peephole=True``): ONNX's native input ``P [D, 3·H]``, blocks p_i, p_o, p_f (its i, o, f
  order); ONNX's o gate sees the new cell C_t and i, f the old, as unrolled's. Layer norm, a projection
  (``proj_size``) and zoneout have no ONNX operator form: :func:`to_onnx` refuses them, naming the option.
- Biases: unrolled has one bias per gate, exported as ``Wb`` with ``Rb`` = 0 (GRU reset_after:
  ``Rbh`` = b_hn).
  On import the two are added (``b_h = Wb + Rb``), except the GRU's ``Rbh`` under linear_before_reset.

ONNX Runtime's recurrent kernels are float32 only, so graphs are float32 (a float64 model is cast).
Variable lengths map to ``sequence_lens``: the padded steps of the output are zeroed by an explicit mask,
so the graph does not rely on a runtime's undocumented padding behaviour.

Graph of a layer: inputs ``x`` (T, B, I) (``(B, T, I)`` when batch_first), optionally ``lengths`` (B,) int32
and ``h0`` (and ``c0``) (L·D, B, H); outputs ``out`` and ``h_n`` (and ``c_n``), shaped as the layer's own.
Graph of a :class:`unrolled.models.SequenceModel`: ``x`` token ids (T, B) int64 (an embedding ``Gather``) or
features (T, B, I), the recurrent stack, the output reduction ("sequence" / "last" / "mean") and the
``MatMul`` + ``Add`` head; outputs ``y`` and the final states.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unrolled._optional import install_hint
from unrolled.interop import _onnx_graph
from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer

OPSET = 17  # recurrent ops unchanged since 14, widely supported
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes load the file
_META_KIND = "unrolled.kind"
_META_CONFIG = "unrolled.config"


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised only without onnx
        raise ImportError(
            f"unrolled.interop.onnx needs the onnx package: {install_hint('onnx', 'onnx')}"
        ) from e
    return onnx


# --------------------------------------------------------------------------- gate conversions
_LSTM_TO_ONNX = (0, 3, 1, 2)  # ONNX block k (i, o, f, c) is unrolled block _LSTM_TO_ONNX[k] (i, f, g, o)
_LSTM_FROM_ONNX = (0, 2, 3, 1)  # unrolled block k is ONNX block _LSTM_FROM_ONNX[k]


def _blocks(a: np.ndarray, G: int) -> list[np.ndarray]:
    return np.split(a, G, axis=0)


def _kind(layer: RecurrentLayer) -> str:
    return "lstm" if isinstance(layer, LSTM) else "gru" if isinstance(layer, GRU) else "rnn"


def gates_to_onnx(kind: str, a: np.ndarray) -> np.ndarray:
    """Reorder (and for the GRU, negate z) the gate blocks of a weight or bias, unrolled -> ONNX.

    ``a`` is (G·H, ...) with gates stacked by rows as in unrolled (LSTM i, f, g, o; GRU z, r, n).
    Linear in ``a``, so it applies to pre-activation terms: weights and biases alike.
    """
    if kind == "lstm":
        b = _blocks(a, 4)
        return np.concatenate([b[k] for k in _LSTM_TO_ONNX])
    if kind == "gru":
        z, r, n = _blocks(a, 3)
        return np.concatenate([-z, r, n])
    return a.copy()


def gates_from_onnx(kind: str, a: np.ndarray) -> np.ndarray:
    """The inverse of :func:`gates_to_onnx`: ONNX gate blocks -> unrolled's."""
    if kind == "lstm":
        b = _blocks(a, 4)
        return np.concatenate([b[k] for k in _LSTM_FROM_ONNX])
    if kind == "gru":
        z, r, n = _blocks(a, 3)
        return np.concatenate([-z, r, n])
    return a.copy()


def layer_weights_to_onnx(layer: RecurrentLayer, l: int) -> dict[str, np.ndarray | None]:
    """ONNX's W [D, G·H, I], R [D, G·H, H], B [D, 2·G·H] (None without bias) and P [D, 3·H] (None without
    peepholes) for stacked layer ``l``."""
    kind, H, G = _kind(layer), layer.hidden_size, layer.cell.gates
    W, R, B, P = [], [], [], []
    for d in range(layer.num_directions):
        p = layer.direction_params(l, d)
        W.append(gates_to_onnx(kind, p["W_xh"]))
        R.append(gates_to_onnx(kind, p["W_hh"]))
        if "p_i" in p:
            P.append(np.concatenate([p["p_i"], p["p_o"], p["p_f"]]))  # ONNX's P[iof]
        if layer.bias:
            Rb = np.zeros(G * H, dtype=p["b_h"].dtype)
            if kind == "gru" and layer.reset_after:
                Rb[2 * H :] = p["b_hn"]  # inside the reset product: ONNX's Rbh with linear_before_reset
            B.append(np.concatenate([gates_to_onnx(kind, p["b_h"]), Rb]))
    f32 = np.float32
    return {
        "W": np.stack(W).astype(f32),
        "R": np.stack(R).astype(f32),
        "B": np.stack(B).astype(f32) if B else None,
        "P": np.stack(P).astype(f32) if P else None,
    }


def layer_weights_from_onnx(
    kind: str,
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None,
    reset_after: bool,
    P: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """Per direction, unrolled's ``W_xh``, ``W_hh``, ``b_h`` (and ``b_hn``; ``p_i``, ``p_f``, ``p_o`` from an
    LSTM's peepholes P) from ONNX's W, R, B (and P)."""
    out = []
    H = R.shape[2]
    G = R.shape[1] // H
    for d in range(W.shape[0]):
        p = {"W_xh": gates_from_onnx(kind, W[d]), "W_hh": gates_from_onnx(kind, R[d])}
        if P is not None:
            p["p_i"], p["p_o"], p["p_f"] = (P[d, k * H : (k + 1) * H].copy() for k in range(3))
        if B is not None:
            Wb, Rb = B[d, : G * H], B[d, G * H :]
            if kind == "gru" and reset_after:
                both = Wb.copy()
                both[: 2 * H] += Rb[: 2 * H]
                p["b_h"] = gates_from_onnx(kind, both)
                p["b_hn"] = Rb[2 * H :].copy()
            else:
                p["b_h"] = gates_from_onnx(kind, Wb + Rb)
        out.append(p)
    return out


# --------------------------------------------------------------------------- a small graph builder
class _Graph:
    """Nodes, initializers and value infos of one ONNX graph, with generated unique names."""

    def __init__(self) -> None:
        self.onnx = _onnx()
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._n = 0

    def const(self, name: str, a: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs
    ) -> list[str]:
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        outs = [f"{base}:{i}" if n_out > 1 else base for i in range(n_out)]
        self.nodes.append(
            self.onnx.helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", **attrs)
        )
        return outs

    def input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, src: str, name: str, elem: int, shape: list) -> None:
        self.op("Identity", [src], name=name)
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))

    def model(self, graph_name: str, meta: dict[str, str], doc: str):
        h = self.onnx.helper
        graph = h.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.inits, doc_string=doc)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="unrolled")
        model.ir_version = IR_VERSION
        from unrolled import __version__

        model.producer_version = __version__
        h.set_model_props(model, meta)
        return model


def _recurrent_stack(
    g: _Graph, layer: RecurrentLayer, x: str, lengths: str | None, states0: list[str] | None, prefix: str
) -> tuple[str, list[str], str]:
    """Add the stack's nodes: x (T, B, I) -> out (T, B, D·H), the final states [(L·D, B, H), ...] and
    the last layer's final h (D, B, H)."""
    kind, H, D = _kind(layer), layer.hidden_size, layer.num_directions
    op_type = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    attrs: dict = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if kind == "rnn":
        attrs["activations"] = ["Tanh" if layer.nonlinearity == "tanh" else "Relu"] * D
    if kind == "gru":
        attrs["linear_before_reset"] = int(layer.reset_after)
    n_states = layer.num_states
    finals: list[list[str]] = [[] for _ in range(n_states)]
    shape3 = g.const(f"{prefix}shape_TB_", np.array([0, 0, -1], np.int64))  # Reshape: keep T, B; merge D·H
    inp = x
    for l in range(layer.num_layers):
        w = layer_weights_to_onnx(layer, l)
        names = [inp, g.const(f"{prefix}W_l{l}", w["W"]), g.const(f"{prefix}R_l{l}", w["R"])]
        names.append(g.const(f"{prefix}B_l{l}", w["B"]) if w["B"] is not None else "")
        names.append(lengths or "")
        if states0 is not None:
            lo = g.const(f"{prefix}slice_lo_l{l}", np.array([l * D], np.int64))
            hi = g.const(f"{prefix}slice_hi_l{l}", np.array([(l + 1) * D], np.int64))
            ax = g.const(f"{prefix}slice_ax_l{l}", np.array([0], np.int64))
            names += [g.op("Slice", [s, lo, hi, ax])[0] for s in states0]
        else:
            names += [""] * n_states
        if w["P"] is not None:  # LSTM input 7: the peepholes
            names.append(g.const(f"{prefix}P_l{l}", w["P"]))
        while names and names[-1] == "":
            names.pop()
        outs = g.op(op_type, names, n_out=1 + n_states, name=f"{prefix}{op_type.lower()}_l{l}", **attrs)
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D·H): out[t] = [→h_t ; ←h_t] as in unrolled.
        y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])[0]
        inp = g.op("Reshape", [y, shape3])[0]
        for i in range(n_states):
            finals[i].append(outs[1 + i])
    states = [f[0] if len(f) == 1 else g.op("Concat", f, axis=0)[0] for f in finals]
    return inp, states, finals[0][-1]


def _length_mask(g: _Graph, seq: str, lengths: str) -> str:
    """(T, B, 1) float mask, 1 where t < lengths[b], from a (T, B, ...) sequence."""
    shape = g.op("Shape", [seq])[0]
    T = g.op("Gather", [shape, g.const("mask_t_index", np.array(0, np.int64))], axis=0)[0]
    zero, one = g.const("mask_zero", np.array(0, np.int64)), g.const("mask_one", np.array(1, np.int64))
    t = g.op("Range", [zero, T, one])[0]  # (T,)
    t = g.op("Unsqueeze", [t, g.const("mask_axis_1", np.array([1], np.int64))])[0]  # (T, 1)
    L = g.op("Cast", [lengths], to=g.onnx.TensorProto.INT64)[0]
    m = g.op("Less", [t, L])[0]  # (T, B)
    m = g.op("Cast", [m], to=g.onnx.TensorProto.FLOAT)[0]
    return g.op("Unsqueeze", [m, g.const("mask_axis_2", np.array([2], np.int64))])[0]


def _state_names(layer: RecurrentLayer) -> list[str]:
    return ["h", "c"] if layer.num_states == 2 else ["h"]


def check_exportable(layer: RecurrentLayer) -> None:
    """Refuse, naming the option, what ONNX's RNN / LSTM / GRU operators cannot say: layer norm, an LSTM
    projection and zoneout (its evaluation form mixes h_{t−1} into h_t). Peepholes are ONNX's input P."""
    for option, what in (
        ("layer_norm", "layer normalisation"),
        ("proj_size", "an LSTM projection"),
        ("zoneout", "zoneout"),
    ):
        if getattr(layer, option, 0):
            raise ValueError(
                f"{option}: ONNX's recurrent operators cannot express {what}; export a layer without it"
            )


def _layer_graph(layer: RecurrentLayer, lengths: bool, initial_state: bool):
    check_exportable(layer)
    g = _Graph()
    F = g.onnx.TensorProto.FLOAT
    LD, H = layer.num_layers * layer.num_directions, layer.hidden_size
    xshape = ["B", "T", layer.input_size] if layer.batch_first else ["T", "B", layer.input_size]
    x = g.input("x", F, xshape)
    if layer.batch_first:
        x = g.op("Transpose", [x], perm=[1, 0, 2])[0]
    ln = g.input("lengths", g.onnx.TensorProto.INT32, ["B"]) if lengths else None
    s0 = [g.input(f"{s}0", F, [LD, "B", H]) for s in _state_names(layer)] if initial_state else None
    out, states, _ = _recurrent_stack(g, layer, x, ln, s0, "")
    if ln is not None:
        out = g.op("Mul", [out, _length_mask(g, out, ln)])[0]
    if layer.batch_first:
        out = g.op("Transpose", [out], perm=[1, 0, 2])[0]
    DH = layer.num_directions * H
    g.output(out, "out", F, ["B", "T", DH] if layer.batch_first else ["T", "B", DH])
    for s, v in zip(_state_names(layer), states, strict=True):
        g.output(v, f"{s}_n", F, [LD, "B", H])
    meta = {_META_KIND: type(layer).__name__, _META_CONFIG: json.dumps(_layer_config(layer))}
    return g.model("unrolled_" + type(layer).__name__.lower(), meta, repr(layer))


def _layer_config(layer: RecurrentLayer) -> dict:
    """The layer's architecture: its config less dropout (training only) and dtype (the graph is float32)."""
    return {k: v for k, v in layer.config.items() if k not in ("dropout", "recurrent_dropout", "dtype")}


def _model_graph(model, lengths: bool, initial_state: bool):
    """A SequenceModel: [Gather embedding] -> recurrent stack -> [last / mean] -> MatMul + Add head."""
    g = _Graph()
    tp = g.onnx.TensorProto
    F = tp.FLOAT
    cfg = model.config
    rnn: RecurrentLayer = model.rnn
    check_exportable(rnn)
    LD, H = rnn.num_layers * rnn.num_directions, rnn.hidden_size
    if rnn.batch_first:
        raise ValueError("model: a batch_first recurrent stack inside a SequenceModel is not supported")
    if model.embed is not None:
        ids = g.input("x", tp.INT64, ["T", "B"])
        x = g.op("Gather", [g.const("embed.W", model.embed.params["W"].astype(np.float32)), ids], axis=0)[0]
    else:
        x = g.input("x", F, ["T", "B", rnn.input_size])
    ln = g.input("lengths", tp.INT32, ["B"]) if lengths else None
    s0 = [g.input(f"{s}0", F, [LD, "B", H]) for s in _state_names(rnn)] if initial_state else None
    out, states, last_h = _recurrent_stack(g, rnn, x, ln, s0, "rnn.")
    if ln is not None:
        out = g.op("Mul", [out, _length_mask(g, out, ln)])[0]
    output = getattr(cfg, "output", "sequence")
    if output == "last":
        # Each direction's final state: [→h at n_b − 1 ; ←h at 0], i.e. the last layer's Y_h (D, B, H)
        # -> (B, D, H) -> (B, D·H). It respects sequence_lens without any gathering.
        bdh = g.op("Transpose", [last_h], perm=[1, 0, 2])[0]
        out = g.op("Reshape", [bdh, g.const("last_shape", np.array([0, -1], np.int64))])[0]
    elif output == "mean":
        axis0 = g.const("mean_axis", np.array([0], np.int64))
        total = g.op("ReduceSum", [out, axis0], keepdims=0)[0]  # (B, F)
        if ln is None:
            T = g.op("Gather", [g.op("Shape", [out])[0], g.const("mean_t", np.array(0, np.int64))], axis=0)[0]
            count = g.op("Cast", [T], to=F)[0]
        else:
            count = g.op("Cast", [ln], to=F)[0]
            count = g.op("Unsqueeze", [count, g.const("mean_axis_1", np.array([1], np.int64))])[0]  # (B, 1)
        out = g.op("Div", [total, count])[0]
    elif output != "sequence":
        raise ValueError(f"model: output {output!r} has no ONNX export (expected sequence, last or mean)")
    hp = model.head.params
    y = g.op("MatMul", [out, g.const("head.W_T", np.ascontiguousarray(hp["W"].T).astype(np.float32))])[0]
    if "b" in hp:
        y = g.op("Add", [y, g.const("head.b", hp["b"].astype(np.float32))])[0]
    K = model.head.out_features
    g.output(y, "y", F, ["T", "B", K] if output == "sequence" else ["B", K])
    for s, v in zip(_state_names(rnn), states, strict=True):
        g.output(v, f"{s}_n", F, [LD, "B", H])
    meta = {_META_KIND: "SequenceModel", _META_CONFIG: json.dumps(cfg.to_dict())}
    return g.model("unrolled_sequence_model", meta, f"unrolled SequenceModel {cfg.cell} x{rnn.num_layers}")


# --------------------------------------------------------------------------- public API
def to_onnx(
    obj, *, lengths: bool = True, initial_state: bool = False, metadata: dict[str, str] | None = None
):
    """Build the ONNX graph (an ``onnx.ModelProto``, checked by ``onnx.checker``) of a layer or model.

    Parameters
    ----------
    obj : :class:`unrolled.RNN` / :class:`unrolled.LSTM` / :class:`unrolled.GRU` (any depth, either
        direction) or a :class:`unrolled.models.SequenceModel`. Exported as in eval mode (no dropout).
    lengths : add a ``lengths`` input (B,) int32: sequence b ends after lengths[b] steps (ONNX
        ``sequence_lens``); the graph's outputs then equal ``forward(x, lengths=lengths)``.
    initial_state : add inputs ``h0`` (and ``c0``) (L·D, B, H); otherwise the initial state is zero.
    metadata : more metadata properties, string to string (e.g. an application's vocabulary as JSON, see
        ``unrolled export``); the keys unrolled itself writes (``unrolled.kind``, ``unrolled.config``)
        are refused.

    Returns
    -------
    onnx.ModelProto, float32, opset 17. Its metadata keeps the unrolled configuration, so that
    :func:`from_onnx` can rebuild the same object.
    """
    onnx = _onnx()
    extra = check_metadata(metadata)
    if isinstance(obj, RecurrentLayer):
        model = _layer_graph(obj, lengths, initial_state)
    elif all(hasattr(obj, a) for a in ("config", "rnn", "head", "embed")):
        model = _model_graph(obj, lengths, initial_state)
    else:
        raise TypeError(
            f"obj: expected an unrolled recurrent layer or SequenceModel, got {type(obj).__name__}"
        )
    add_metadata(model, extra)
    onnx.checker.check_model(model, full_check=True)
    return model


RESERVED_METADATA = (_META_KIND, _META_CONFIG)


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """``metadata`` checked: string keys and values, none of :data:`RESERVED_METADATA`; {} for None."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict of str to str, got {type(metadata).__name__}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata: expected str keys and values, got {k!r}: {type(v).__name__}")
        if k in RESERVED_METADATA:
            raise ValueError(f"metadata: {k!r} is written by unrolled itself; expected another key")
    return dict(metadata)


def add_metadata(model, metadata: dict[str, str]) -> None:
    """Append metadata properties to an ``onnx.ModelProto`` (after the ones the graph builder set)."""
    for k, v in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = k, v


def export(
    obj,
    path: str | Path,
    *,
    lengths: bool = True,
    initial_state: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write :func:`to_onnx` of a layer or SequenceModel to ``path`` (a ``.onnx`` file); returns the path.

    See :func:`to_onnx` for the graph's inputs and outputs and ``metadata``. The file is written whole or
    not at all.
    """
    model = to_onnx(obj, lengths=lengths, initial_state=initial_state, metadata=metadata)
    return save(model, path)


def save(model, path: str | Path) -> Path:
    """Write an ``onnx.ModelProto`` to ``path`` atomically (a temporary file renamed): whole or not at all."""
    onnx = _onnx()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return path


def _load_proto(src):
    onnx = _onnx()
    if isinstance(src, onnx.ModelProto):
        return src, "model"
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise ValueError(f"{path}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ValueError(f"{path}: not a valid ONNX model (empty or no graph)")
    return model, str(path)


def _constants(model, where: str) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes as arrays, each checked (self-contained, no larger than what it
    stores, at most ``_limits.MAX_ELEMENTS``) before it is converted."""
    onnx = _onnx()
    tensors = [(t.name, t) for t in model.graph.initializer]
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            tensors += [(n.output[0], a.t) for a in n.attribute if a.name == "value"]
    arrays = {}
    for name, t in tensors:
        _onnx_graph.check_tensor(onnx, t, where)
        try:
            arrays[name] = onnx.numpy_helper.to_array(t)
        except Exception as e:  # onnx's ValidationError and friends: a malformed tensor
            raise ValueError(f"{where}: tensor {name!r} cannot be read ({type(e).__name__}: {e})") from None
    return arrays


def _check_recurrent_node(node, where: str) -> dict:
    onnx = _onnx()
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if "activations" in attrs:
        attrs["activations"] = [a.decode() if isinstance(a, bytes) else a for a in attrs["activations"]]
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "bidirectional"):
        raise ValueError(
            f"{where}: direction {direction!r} is not supported (expected forward or bidirectional)"
        )
    for bad in ("clip", "activation_alpha", "activation_beta"):
        if bad in attrs:
            raise ValueError(f"{where}: attribute {bad!r} is not supported")
    if attrs.get("layout", 0) != 0:
        raise ValueError(f"{where}: layout=1 (batch-major) is not supported; expected layout=0")
    acts = [a.lower() for a in attrs.get("activations", [])]
    defaults = {"RNN": ["tanh"], "LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}[
        node.op_type
    ]
    if node.op_type == "RNN":
        if acts and (len(set(acts)) != 1 or acts[0] not in ("tanh", "relu")):
            raise ValueError(f"{where}: RNN activations {acts} are not supported (expected Tanh or Relu)")
        attrs["nonlinearity"] = acts[0] if acts else "tanh"
    elif acts and acts != defaults * (len(acts) // len(defaults)):
        raise ValueError(f"{where}: activations {acts} are not supported (expected the defaults {defaults})")
    if node.op_type == "LSTM" and attrs.get("input_forget", 0):
        raise ValueError(f"{where}: input_forget=1 (coupled gates) is not supported")
    return attrs


def from_onnx(src):
    """Rebuild an unrolled layer or SequenceModel from an ONNX file (or ``onnx.ModelProto``); a translation
    model's ``X.encoder.onnx`` or ``X.decoder.onnx`` file gives the :class:`~unrolled.seq2seq.Seq2Seq` of
    the pair (see :func:`unrolled.interop.onnx_seq2seq.from_onnx_seq2seq`).

    A graph written by :func:`export` comes back as the same kind of object (its configuration is
    kept in the metadata); such a graph must be exactly what :func:`export` writes for the loaded object
    (same nodes, wiring and integer constants; only the weights differ). Any other graph must be one chain
    graph input -> RNN / LSTM / GRU nodes -> outputs with constant weights (forward or bidirectional,
    default activations, no peepholes or clipping) and only layout operations (Transpose, Reshape,
    Squeeze, Unsqueeze, Identity, inference Dropout) around and between the nodes; it comes back as the
    equal stacked :class:`unrolled.RNN` / ``LSTM`` / ``GRU`` in float32 (``batch_first`` when the graph
    transposes a (B, T, I) input). Initial states must be empty, all-zero constants or graph inputs.
    No array larger than ``unrolled.interop._limits.MAX_ELEMENTS`` elements, or than the data the file
    stores, is allocated.

    Raises
    ------
    ValueError : the file is not a self-contained ONNX model, or the graph is not such a chain, or its
        recurrent nodes have no unrolled equivalent; one line naming the node (name and op type) and why.
    """
    onnx = _onnx()
    model, where = _load_proto(src)
    props = {p.key: p.value for p in model.metadata_props}
    from unrolled.interop import onnx_seq2seq  # it builds on this module: imported when needed

    if onnx_seq2seq.is_seq2seq_graph(props):  # one half of a translation model: both halves rebuild it
        return onnx_seq2seq.from_onnx_half(src, props)
    consts = _constants(model, where)
    nodes = [n for n in model.graph.node if n.op_type in _onnx_graph.RECURRENT_OPS]
    if not nodes:
        raise ValueError(f"{where}: no RNN, LSTM or GRU node in the graph; nothing to load")
    read = [_read_recurrent_node(n, consts, f"{where}: {_onnx_graph.node_name(n)}") for n in nodes]
    own = _META_KIND in props
    if own:
        _onnx_graph.check_side_inputs(onnx, model.graph, nodes, consts, where)
        cfg = _meta_config(props, where)
        batch_first = cfg.get("batch_first", False) if props[_META_KIND] != "SequenceModel" else False
        if not isinstance(batch_first, bool):
            raise ValueError(f"{where}: metadata batch_first: expected a bool, got {batch_first!r}")
    else:
        sizes = [(r["W"].shape[2], r["D"], r["H"]) for r in read]
        batch_first = _onnx_graph.verify_chain(onnx, model.graph, nodes, sizes, consts, where)
    kinds = {n.op_type for n in nodes}
    if len(kinds) > 1:
        raise ValueError(
            f"{where}: mixed recurrent node types {sorted(kinds)}; expected one stack of one type"
        )
    kind = nodes[0].op_type.lower()
    first = read[0]
    for n, r in zip(nodes[1:], read[1:], strict=True):
        at = f"{where}: {_onnx_graph.node_name(n)}"
        if r["variant"] != first["variant"]:
            raise ValueError(f"{at}: differs from the first layer (hidden size, directions, bias or variant)")
        DH = first["D"] * first["H"]
        if r["W"].shape[2] != DH:
            raise ValueError(f"{at}: input size {r['W'].shape[2]} is not the previous layer's output {DH}")
    attrs0 = first["attrs"]
    kw = dict(
        input_size=first["W"].shape[2],
        hidden_size=first["H"],
        num_layers=len(nodes),
        bias=first["B"] is not None,
        bidirectional=first["D"] == 2,
        batch_first=batch_first,
    )
    if kind == "rnn":
        layer = RNN(nonlinearity=attrs0["nonlinearity"], **kw)
    elif kind == "lstm":
        layer = LSTM(peephole=first["P"] is not None, **kw)
    else:
        layer = GRU(reset_after=bool(attrs0.get("linear_before_reset", 0)), **kw)
    reset_after = bool(attrs0.get("linear_before_reset", 0))
    for l, r in enumerate(read):
        for d, p in enumerate(layer_weights_from_onnx(kind, r["W"], r["R"], r["B"], reset_after, r["P"])):
            live = layer.direction_params(l, d)
            for name, v in p.items():
                live[name][...] = v
    layer.eval()
    if not own:
        return layer
    lengths, initial_state = _graph_flags(model)
    if props[_META_KIND] == "SequenceModel":
        obj = _model_from_onnx(where, cfg, layer, consts)
        want = _model_graph(obj, lengths, initial_state)
    else:
        obj, want = layer, _layer_graph(layer, lengths, initial_state)
    _onnx_graph.same_structure(model, want, where)
    return obj


def _read_recurrent_node(n, consts: dict, at: str) -> dict:
    """One recurrent node's checked attributes and float32 W, R, B, with its sizes."""
    attrs = _check_recurrent_node(n, at)
    ins = list(n.input) + [""] * (8 - len(n.input))
    P = None
    if ins[7]:
        P = consts.get(ins[7])
        if P is None:
            raise ValueError(f"{at}: peephole weights P are not a constant initializer")
        P = P.astype(np.float32) if np.any(P != 0) else None  # all-zero peepholes: the plain LSTM
    missing = [nm for nm in ins[1:3] if nm not in consts]
    if missing or (ins[3] and ins[3] not in consts):
        raise ValueError(f"{at}: weights {missing or [ins[3]]} are not constant initializers")
    W, R = consts[ins[1]].astype(np.float32), consts[ins[2]].astype(np.float32)
    B = consts[ins[3]].astype(np.float32) if ins[3] else None
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[n.op_type]
    H = attrs.get("hidden_size", R.shape[-1] if R.ndim == 3 else -1)
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    if W.ndim != 3 or R.shape != (D, G * H, H) or W.shape[:2] != (D, G * H):
        raise ValueError(
            f"{at}: weight shapes W {W.shape}, R {R.shape} do not match hidden_size={H}, "
            f"{D} direction(s), {G} gate(s)"
        )
    if B is not None and B.shape != (D, 2 * G * H):
        raise ValueError(f"{at}: bias shape {B.shape}, expected {(D, 2 * G * H)}")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"{at}: peephole shape {P.shape}, expected {(D, 3 * H)}")
    lbr, act = attrs.get("linear_before_reset", 0), attrs.get("nonlinearity")
    variant = (H, D, B is not None, lbr, act, P is not None)
    return dict(attrs=attrs, W=W, R=R, B=B, P=P, H=H, D=D, variant=variant)


def _meta_config(props: dict, where: str) -> dict:
    """The unrolled configuration kept in the metadata, a dict (empty when absent)."""
    if _META_CONFIG not in props:
        return {}
    try:
        cfg = json.loads(props[_META_CONFIG])
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: metadata {_META_CONFIG} is not JSON ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(
            f"{where}: metadata {_META_CONFIG}: expected a JSON object, got {type(cfg).__name__}"
        )
    return cfg


def _graph_flags(model) -> tuple[bool, bool]:
    """Whether an unrolled graph takes ``lengths`` and initial states (what :func:`to_onnx` was asked)."""
    names = {i.name for i in model.graph.input}
    return "lengths" in names, "h0" in names


def _model_from_onnx(where: str, cfg: dict, layer: RecurrentLayer, consts: dict):
    from unrolled.models import ModelConfig, SequenceModel

    try:
        config = ModelConfig.from_dict(dict(cfg, dtype="float32"))
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: its unrolled model configuration is invalid ({e})") from None
    _check_model_sizes(where, config, layer, consts)  # before SequenceModel allocates what it declares
    model = SequenceModel(config)
    arrays = {"head.W": consts.get("head.W_T")}
    if arrays["head.W"] is not None:
        arrays["head.W"] = arrays["head.W"].T
    if "head.b" in model.params:
        arrays["head.b"] = consts.get("head.b")
    if model.embed is not None:
        arrays["embed.W"] = consts.get("embed.W")
    for k, v in layer.params.items():
        arrays["rnn." + k] = v
    for k, v in arrays.items():
        if v is None or k not in model.params or model.params[k].shape != v.shape:
            got = None if v is None else v.shape
            raise ValueError(
                f"{where}: weight {k!r} is missing or has shape {got}, expected "
                f"{model.params[k].shape if k in model.params else 'none'}"
            )
        model.params[k][...] = v
    model.eval()
    return model


def _check_model_sizes(where: str, config, layer: RecurrentLayer, consts: dict) -> None:
    """Every size the metadata's ModelConfig declares equals the stored arrays' (the recurrent stack read
    from the nodes, the embedding and head constants), so building the model allocates only what the
    file holds."""
    D, H = layer.num_directions, layer.hidden_size
    want = {
        "cell": _kind(layer),
        "hidden_size": H,
        "num_layers": layer.num_layers,
        "bidirectional": D == 2,
        "input_size" if config.input == "dense" else "embed_dim": layer.input_size,
    }
    if config.cell == "rnn":
        want["nonlinearity"] = layer.nonlinearity
    if config.cell == "gru":
        want["reset_after"] = layer.reset_after
    stored = {"head.W_T": (D * H, config.output_size)}
    if config.input == "tokens":
        stored["embed.W"] = (config.vocab_size, layer.input_size)
    for name, shape in stored.items():
        a = consts.get(name)
        if a is None or a.shape != shape:
            got = None if a is None else a.shape
            raise ValueError(f"{where}: weight {name!r} has shape {got}, the metadata declares {shape}")
    for name, v in want.items():
        if getattr(config, name) != v:
            raise ValueError(
                f"{where}: metadata says {name}={getattr(config, name)!r}, the stored weights say {v!r}"
            )
