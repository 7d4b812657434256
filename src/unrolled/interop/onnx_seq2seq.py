"""ONNX export (and re-import) of a translation model, :class:`unrolled.seq2seq.Seq2Seq`, as two graphs:
an encoder run once per batch of sources and a decoder step run once per output token.

A decoder step is one graph call, so any runtime can drive greedy decoding or beam search with its own
loop; the graphs hold no loop themselves. The equations are those of :mod:`unrolled.seq2seq.model`
and :mod:`unrolled.seq2seq.attention`, with the recurrent layers as ONNX's native RNN / LSTM / GRU ops
(converted by :mod:`unrolled.interop.onnx`).

Encoder graph (``X.encoder.onnx``)::

    inputs   src (S, B) int64 source ids, each sentence ending in <eos>, padded with <pad>
             src_lengths (B,) int32, 1..S (the <eos> counted)
    outputs  memory (B, S, M) encoder outputs h_s, zero past each source's end
             keys (B, S, K) attention keys k_s (additive U_k h_s, general W_a h_s, dot h_s)
             mask (B, S) float 1 at real source positions, 0 at padding
             h (L_dec, B, H_dec) [and c] the decoder's initial state (after the bridge, if any)
             feed (B, H_dec) zeros: h̃_0 (only with input feeding)
    (no memory, keys, mask without attention)

Decoder-step graph (``X.decoder.onnx``)::

    inputs   y_prev (B,) int64 the previous output token (<bos> first)
             h [, c], feed: the state, first from the encoder's outputs of the same names
             memory, keys, mask: the encoder's outputs, unchanged at every step
    outputs  logits (B, V_tgt)  next-token scores; softmax gives p(y_t | y_<t, x)
             h_n [, c_n], feed_n: the state to feed back as h [, c], feed
             alpha (B, S) the attention weights of this step

Both files carry the model configuration (``unrolled.config``) and which half they are
(``unrolled.kind``: ``Seq2SeqEncoder`` / ``Seq2SeqDecoder``), so :func:`from_onnx_seq2seq` rebuilds the
:class:`Seq2Seq` from the pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unrolled.interop import _onnx_graph
from unrolled.interop.onnx import (
    _constants,
    _Graph,
    _length_mask,
    _load_proto,
    _meta_config,
    _onnx,
    _read_recurrent_node,
    _recurrent_stack,
    add_metadata,
    check_metadata,
    layer_weights_from_onnx,
    save,
)
from unrolled.seq2seq.model import Seq2Seq, Seq2SeqConfig

KIND_ENCODER, KIND_DECODER = "Seq2SeqEncoder", "Seq2SeqDecoder"
_META_KIND, _META_CONFIG = "unrolled.kind", "unrolled.config"


def seq2seq_paths(path: str | Path) -> tuple[Path, Path]:
    """The two files of a translation model exported to ``path``: ``X.encoder.onnx`` and ``X.decoder.onnx``
    for ``path`` = ``X.onnx`` (or ``X``)."""
    path = Path(path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.encoder.onnx"), path.with_name(f"{stem}.decoder.onnx")


def state_layout(model: Seq2Seq) -> list[dict]:
    """The decoder's carried state: for each tensor, the step graph's input, its output and its shape."""
    c = model.config
    kinds = ["h", "c"][: model.num_states]
    layout = [
        {"input": k, "output": f"{k}_n", "shape": [c.dec_layers, "B", c.dec_hidden_size]} for k in kinds
    ]
    if c.input_feeding:
        layout.append({"input": "feed", "output": "feed_n", "shape": ["B", c.dec_hidden_size]})
    return layout


# --------------------------------------------------------------------------- graphs
def _const_axes(g: _Graph, name: str, axes: list[int]) -> str:
    return g.const(name, np.array(axes, np.int64))


def _encoder_graph(model: Seq2Seq):
    g = _Graph()
    tp = g.onnx.TensorProto
    F = tp.FLOAT
    c = model.config
    f32 = np.float32
    src = g.input("src", tp.INT64, ["S", "B"])
    ln = g.input("src_lengths", tp.INT32, ["B"])
    x = g.op("Gather", [g.const("src_embed.W", model.params["src_embed.W"].astype(f32)), src], axis=0)[0]
    out, states, _ = _recurrent_stack(g, model.encoder, x, ln, None, "encoder.")
    L, D, He, Ld, H = (
        c.enc_layers,
        model.encoder.num_directions,
        c.hidden_size,
        c.dec_layers,
        c.dec_hidden_size,
    )
    outputs = []
    if model.attention is not None:
        mask3 = _length_mask(g, out, ln)  # (S, B, 1)
        out = g.op("Mul", [out, mask3])[0]  # zero past each source's end, as unrolled's packed encoder
        memory = g.op("Transpose", [out], perm=[1, 0, 2])[0]  # (B, S, M)
        sq = g.op("Squeeze", [mask3, _const_axes(g, "mask_squeeze", [2])])[0]
        mask = g.op("Transpose", [sq], perm=[1, 0])[0]  # (B, S)
        kind, p = model.attention.kind, model.attn_params
        if kind == "dot":
            keys = memory
        else:
            name = "U_k" if kind == "additive" else "W_a"
            W_T = g.const(f"attn.{name}_T", np.ascontiguousarray(p[name].T).astype(f32))
            keys = g.op("MatMul", [memory, W_T])[0]
        K = c.attn_size if kind == "additive" else (c.memory_size if kind == "dot" else H)
        outputs += [(memory, "memory", ["B", "S", c.memory_size]), (keys, "keys", ["B", "S", K])]
        outputs.append((mask, "mask", ["B", "S"]))
    # Final states (L·D, B, He) -> per layer [→h ; ←h]: (L, D, B, He) -> (L, B, D, He) -> (L, B, D·He).
    split = g.const("state_split", np.array([L, D, -1, He], np.int64))
    merge = g.const("state_merge", np.array([0, 0, -1], np.int64))
    for kind, s in zip(("h", "c"), states, strict=False):
        per_layer = g.op(
            "Reshape", [g.op("Transpose", [g.op("Reshape", [s, split])[0]], perm=[0, 2, 1, 3])[0], merge]
        )[0]
        if model.bridged:  # s_0 = tanh(W_br [→h ; ←h]_top + b_br), reshaped to the decoder's layers
            # the top layer (1, B, M) -> (B, M): a one-element index keeps its axis (constants are ≥ 1-d)
            top = g.op(
                "Gather", [per_layer, g.const(f"bridge_top_{kind}", np.array([L - 1], np.int64))], axis=0
            )
            top = g.op("Squeeze", [top[0], _const_axes(g, f"bridge_squeeze_{kind}", [0])])[0]
            W = g.const(f"bridge.W_{kind}", model.bridge[f"W_{kind}"].astype(f32))
            b = g.const(f"bridge.b_{kind}", model.bridge[f"b_{kind}"].astype(f32))
            s0 = g.op("Tanh", [g.op("Gemm", [top, W, b], transB=1)[0]])[0]  # (B, Ld·H)
            s0 = g.op("Reshape", [s0, g.const(f"bridge_shape_{kind}", np.array([0, Ld, H], np.int64))])[0]
            per_layer = g.op("Transpose", [s0], perm=[1, 0, 2])[0]
        outputs.append((per_layer, kind, [Ld, "B", H]))
    if c.input_feeding:  # h̃_0 = 0, shaped (B, H) from the batch
        B = g.op(
            "Gather", [g.op("Shape", [src])[0], g.const("batch_index", np.array([1], np.int64))], axis=0
        )[0]
        shape = g.op("Concat", [B, g.const("feed_width", np.array([H], np.int64))], axis=0)[0]
        zero = g.onnx.helper.make_tensor("zero", F, [1], [0.0])
        outputs.append((g.op("ConstantOfShape", [shape], value=zero)[0], "feed", ["B", H]))
    for v, name, shape in outputs:
        g.output(v, name, F, shape)
    meta = {_META_KIND: KIND_ENCODER, _META_CONFIG: json.dumps(_config(model))}
    return g.model("unrolled_seq2seq_encoder", meta, f"unrolled Seq2Seq encoder {c.cell} x{c.enc_layers}")


def _decoder_graph(model: Seq2Seq):
    g = _Graph()
    tp = g.onnx.TensorProto
    F = tp.FLOAT
    c = model.config
    f32 = np.float32
    Ld, H = c.dec_layers, c.dec_hidden_size
    y_prev = g.input("y_prev", tp.INT64, ["B"])
    s0 = [g.input(k, F, [Ld, "B", H]) for k in ("h", "c")[: model.num_states]]
    feed = g.input("feed", F, ["B", H]) if c.input_feeding else None
    attn = model.attention
    if attn is not None:
        K = c.attn_size if attn.kind == "additive" else (c.memory_size if attn.kind == "dot" else H)
        memory = g.input("memory", F, ["B", "S", c.memory_size])
        keys = g.input("keys", F, ["B", "S", K])
        mask = g.input("mask", F, ["B", "S"])
    x = g.op("Gather", [g.const("tgt_embed.W", model.params["tgt_embed.W"].astype(f32)), y_prev], axis=0)[0]
    if feed is not None:  # input feeding: x_t = [E_tgt[y_{t-1}] ; h̃_{t-1}]
        x = g.op("Concat", [x, feed], axis=1)[0]
    x = g.op("Unsqueeze", [x, _const_axes(g, "step_axis", [0])])[0]  # one time step: (1, B, I)
    out, states, _ = _recurrent_stack(g, model.decoder, x, None, s0, "decoder.")
    q = g.op("Squeeze", [out, _const_axes(g, "step_axis_out", [0])])[0]  # (B, H) top layer's h_t
    alpha = None
    if attn is not None:
        p = model.attn_params
        if attn.kind == "additive":  # e_s = v_aᵀ tanh(W_q q + k_s + b_a)
            W_q = g.const("attn.W_q_T", np.ascontiguousarray(p["W_q"].T).astype(f32))
            qa = g.op("Add", [g.op("MatMul", [q, W_q])[0], g.const("attn.b_a", p["b_a"].astype(f32))])[0]
            qa = g.op("Unsqueeze", [qa, _const_axes(g, "query_axis", [1])])[0]  # (B, 1, A)
            u = g.op("Tanh", [g.op("Add", [keys, qa])[0]])[0]
            e = g.op("MatMul", [u, g.const("attn.v_a", p["v_a"].astype(f32))])[0]  # (B, S)
        else:  # e_s = qᵀ k_s
            q3 = g.op("Unsqueeze", [q, _const_axes(g, "query_axis", [2])])[0]  # (B, K, 1)
            e = g.op("Squeeze", [g.op("MatMul", [keys, q3])[0], _const_axes(g, "score_axis", [2])])[0]
        # α = softmax over the real positions only: padding gets exactly 0, as in masked_softmax.
        real = g.op("Greater", [mask, g.const("mask_zero_f", np.array(0, f32))])[0]
        e = g.op("Where", [real, e, g.const("minus_inf", np.array(-np.inf, f32))])[0]
        alpha = g.op("Softmax", [e], axis=-1)[0]  # (B, S)
        a3 = g.op("Unsqueeze", [alpha, _const_axes(g, "alpha_axis", [1])])[0]  # (B, 1, S)
        ctx = g.op("Squeeze", [g.op("MatMul", [a3, memory])[0], _const_axes(g, "context_axis", [1])])[0]
        cat = g.op("Concat", [ctx, q], axis=1)[0]  # [c_t ; h_t]
    else:
        cat = q
    hd = model.head
    h_tilde = g.op(
        "Gemm",
        [
            cat,
            g.const("combine.W", hd["combine.W"].astype(f32)),
            g.const("combine.b", hd["combine.b"].astype(f32)),
        ],
        transB=1,
    )[0]
    h_tilde = g.op("Tanh", [h_tilde])[0]
    logits = g.op(
        "Gemm",
        [h_tilde, g.const("out.W", hd["out.W"].astype(f32)), g.const("out.b", hd["out.b"].astype(f32))],
        transB=1,
    )[0]
    g.output(logits, "logits", F, ["B", c.tgt_vocab_size])
    for k, v in zip(("h", "c"), states, strict=False):
        g.output(v, f"{k}_n", F, [Ld, "B", H])
    if c.input_feeding:
        g.output(h_tilde, "feed_n", F, ["B", H])
    if alpha is not None:
        g.output(alpha, "alpha", F, ["B", "S"])
    meta = {_META_KIND: KIND_DECODER, _META_CONFIG: json.dumps(_config(model))}
    return g.model("unrolled_seq2seq_decoder", meta, f"unrolled Seq2Seq decoder step {c.cell} x{Ld}")


def _config(model: Seq2Seq) -> dict:
    """The architecture: the config less dropout (training only) and dtype (the graphs are float32)."""
    return {k: v for k, v in model.config.to_dict().items() if k not in ("dropout", "dtype")}


# --------------------------------------------------------------------------- public API
def to_onnx_seq2seq(model: Seq2Seq, metadata: dict[str, str] | None = None) -> tuple:
    """The encoder and decoder-step graphs of a translation model (see the module docstring).

    Parameters
    ----------
    model : a :class:`unrolled.seq2seq.Seq2Seq` (any cell, attention, bridge; exported as in eval mode).
    metadata : more metadata properties (str -> str), written into both graphs.

    Returns
    -------
    (encoder, decoder) ``onnx.ModelProto`` pair, float32, opset 17, each checked by ``onnx.checker``.
    """
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model: expected an unrolled Seq2Seq, got {type(model).__name__}")
    onnx = _onnx()
    extra = check_metadata(metadata)
    graphs = (_encoder_graph(model), _decoder_graph(model))
    for proto in graphs:
        add_metadata(proto, extra)
        onnx.checker.check_model(proto, full_check=True)
    return graphs


def export_seq2seq(
    model: Seq2Seq, path: str | Path, metadata: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """Write :func:`to_onnx_seq2seq` to the two files of :func:`seq2seq_paths` ``(path)``; returns them."""
    enc, dec = to_onnx_seq2seq(model, metadata)
    enc_path, dec_path = seq2seq_paths(path)
    return save(enc, enc_path), save(dec, dec_path)


def from_onnx_seq2seq(encoder, decoder) -> Seq2Seq:
    """Rebuild the :class:`Seq2Seq` (float32, eval mode) from its two exported graphs (paths or protos).

    Both must be exactly what :func:`to_onnx_seq2seq` writes for the model their metadata describes (same
    nodes, wiring and integer constants; only the weights differ), and every size the configuration
    declares must be that of the stored weights before the model is built.

    Raises
    ------
    ValueError : one line naming the file and what is wrong.
    """
    enc, enc_where = _load_proto(encoder)
    dec, dec_where = _load_proto(decoder)
    for proto, where, want in ((enc, enc_where, KIND_ENCODER), (dec, dec_where, KIND_DECODER)):
        props = {p.key: p.value for p in proto.metadata_props}
        if props.get(_META_KIND) != want:
            raise ValueError(f"{where}: expected unrolled's {want} graph, got kind {props.get(_META_KIND)!r}")
    cfgs = [
        _meta_config({p.key: p.value for p in m.metadata_props}, w)
        for m, w in ((enc, enc_where), (dec, dec_where))
    ]
    if cfgs[0] != cfgs[1]:
        raise ValueError(f"{dec_where}: its configuration differs from the encoder's {enc_where}")
    try:
        config = Seq2SeqConfig.from_dict(dict(cfgs[0], dtype="float32"))
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{enc_where}: its unrolled model configuration is invalid ({e})") from None
    consts = {**_constants(enc, enc_where), **_constants(dec, dec_where)}
    enc_w, enc_sizes = _recurrent_weights(enc, consts, enc_where, "encoder")
    dec_w, dec_sizes = _recurrent_weights(dec, consts, dec_where, "decoder")
    _check_sizes(config, consts, enc_sizes, dec_sizes, enc_where)  # before Seq2Seq allocates the config's
    model = Seq2Seq(config)
    arrays = {**enc_w, **dec_w}
    for k in model.params:
        if k in arrays:
            continue
        stored = _TRANSPOSED.get(k, k)
        if stored not in consts:
            raise ValueError(f"{enc_where}: weight {k!r} is missing")
        arrays[k] = consts[stored].T if stored != k else consts[k]
    try:
        model.load_params(arrays)
    except ValueError as e:
        raise ValueError(f"{enc_where}: {e}") from None
    model.eval()
    _onnx_graph.same_structure(enc, _encoder_graph(model), enc_where)
    _onnx_graph.same_structure(dec, _decoder_graph(model), dec_where)
    return model


# the weights a graph stores transposed (the right operand of a MatMul), by their names in Seq2Seq.params
_TRANSPOSED = {"attn.U_k": "attn.U_k_T", "attn.W_a": "attn.W_a_T", "attn.W_q": "attn.W_q_T"}


def _recurrent_weights(proto, consts: dict, where: str, prefix: str) -> tuple[dict, list[tuple[int, int]]]:
    """``{prefix}.W_xh_l0`` ... of the layer a graph's recurrent nodes hold (unrolled's names), and each
    node's (hidden size, directions)."""
    nodes = [n for n in proto.graph.node if n.op_type in _onnx_graph.RECURRENT_OPS]
    if not nodes:
        raise ValueError(f"{where}: no RNN, LSTM or GRU node in the graph; nothing to load")
    out: dict[str, np.ndarray] = {}
    sizes = []
    for l, n in enumerate(nodes):
        r = _read_recurrent_node(n, consts, f"{where}: {_onnx_graph.node_name(n)}")
        kind = n.op_type.lower()
        reset_after = bool(r["attrs"].get("linear_before_reset", 0))
        for d, p in enumerate(layer_weights_from_onnx(kind, r["W"], r["R"], r["B"], reset_after)):
            suffix = "_reverse" if d == 1 else ""
            for name, v in p.items():
                out[f"{prefix}.{name}_l{l}{suffix}"] = v
        sizes.append((r["H"], r["D"]))
    return out, sizes


def _check_sizes(config: Seq2SeqConfig, consts: dict, enc_sizes: list, dec_sizes: list, where: str) -> None:
    """Every size the configuration declares is that of a stored array (so building allocates only what the
    files hold); the recurrent layers' counts and widths are those of the nodes."""
    stored = {
        "src_embed.W": (config.src_vocab_size, config.embed_dim),
        "tgt_embed.W": (config.tgt_vocab_size, config.embed_dim),
        "out.W": (config.tgt_vocab_size, config.dec_hidden_size),
    }
    if config.attention == "additive":
        stored["attn.v_a"] = (config.attn_size,)
    for name, shape in stored.items():
        a = consts.get(name)
        if a is None or a.shape != shape:
            got = None if a is None else a.shape
            raise ValueError(f"{where}: weight {name!r} has shape {got}, the metadata declares {shape}")
    D = 2 if config.bidirectional else 1
    for prefix, sizes, layers, H, Dw in (
        ("encoder", enc_sizes, config.enc_layers, config.hidden_size, D),
        ("decoder", dec_sizes, config.dec_layers, config.dec_hidden_size, 1),
    ):
        if sizes != [(H, Dw)] * layers:
            raise ValueError(
                f"{where}: the {prefix}'s recurrent nodes do not match the metadata "
                f"({layers} layer(s) of {H} units, {Dw} direction(s))"
            )


def is_seq2seq_graph(props: dict) -> bool:
    """Whether metadata properties say the graph is one half of an exported translation model."""
    return props.get(_META_KIND) in (KIND_ENCODER, KIND_DECODER)


def from_onnx_half(src, props: dict):
    """:func:`from_onnx_seq2seq` for one half given alone: a file's sibling (``X.encoder.onnx`` beside
    ``X.decoder.onnx``) is the other half; a bare proto cannot name its sibling and is refused."""
    onnx = _onnx()
    if isinstance(src, onnx.ModelProto):
        raise ValueError(
            f"model: a translation model's {props.get(_META_KIND)} graph alone; load both halves with "
            "unrolled.interop.onnx_seq2seq.from_onnx_seq2seq(encoder, decoder)"
        )
    path = Path(src)
    name = path.name
    for a, b in ((".encoder.onnx", ".decoder.onnx"), (".decoder.onnx", ".encoder.onnx")):
        if name.endswith(a):
            other = path.with_name(name[: -len(a)] + b)
            break
    else:
        raise ValueError(
            f"{path}: a translation model's graph; expected it named X.encoder.onnx or X.decoder.onnx beside "
            "its other half"
        )
    enc, dec = (path, other) if props.get(_META_KIND) == KIND_ENCODER else (other, path)
    if not other.is_file():
        raise FileNotFoundError(
            f"{other}: no such ONNX file (the other half of the translation model {path})"
        )
    return from_onnx_seq2seq(enc, dec)
