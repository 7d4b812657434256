"""ONNX export: onnxruntime running the exported graph equals unrolled (float32, ≤ 1e-5) for every cell
type and variant, 1–2 layers, both directions, variable lengths and initial states; whole SequenceModels
(embedding Gather, last/mean pooling, MatMul head); round trips; malformed files refused clearly."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN

from conftest import assert_close

TOL = 1e-5  # relative to the values' scale (conftest.assert_close)


def _require(name: str):
    """Import an optional package or skip; in CI a missing one fails (the ONNX tests must run there)."""
    try:
        return __import__(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed but CI is set: pip install -e '.[test]'")
        pytest.skip(f"{name} not installed (pip install 'unrolled[onnx]'): ONNX export not checked")


@pytest.fixture(scope="module")
def ort():
    _require("onnx")
    return _require("onnxruntime")


@pytest.fixture(scope="module")
def uo():
    _require("onnx")
    import unrolled.interop.onnx as uo

    return uo


def _randomize(obj, rng, scale=0.6):
    """Random weights everywhere (zero biases and orthogonal inits would hide gate-order errors)."""
    for v in obj.params.values():
        v[...] = rng.standard_normal(v.shape) * scale


def _run(ort, proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


LAYERS = [
    ("rnn_tanh", lambda **k: RNN(nonlinearity="tanh", **k)),
    ("rnn_relu", lambda **k: RNN(nonlinearity="relu", **k)),
    ("lstm", lambda **k: LSTM(**k)),
    ("gru_reset_after", lambda **k: GRU(reset_after=True, **k)),
    ("gru_reset_before", lambda **k: GRU(reset_after=False, **k)),
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_onnxruntime_equals_unrolled_with_variable_lengths(ort, uo, name, make, num_layers, bidirectional):
    rng = np.random.default_rng([zlib.crc32(name.encode()), num_layers, bidirectional])
    I, H, T, B = 5, 4, 7, 4
    layer = make(input_size=I, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional, seed=0)
    layer.eval()
    _randomize(layer, rng)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([T, 2, 5, 1])
    LD = num_layers * layer.num_directions
    h0 = [rng.standard_normal((LD, B, H)).astype(np.float32) for _ in range(layer.num_states)]
    state0 = tuple(h0) if layer.num_states == 2 else h0[0]
    out, state = layer(x, state0, lengths=lengths)
    states = state if layer.num_states == 2 else (state,)

    proto = uo.to_onnx(layer, lengths=True, initial_state=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count({"rnn": "RNN", "lst": "LSTM", "gru": "GRU"}[name[:3]]) == num_layers  # native ops
    feeds = {"x": x, "lengths": lengths.astype(np.int32), "h0": h0[0]}
    if layer.num_states == 2:
        feeds["c0"] = h0[1]
    got = _run(ort, proto, feeds)
    assert got["out"].shape == out.shape
    assert_close(got["out"], out, TOL)
    assert np.all(got["out"][lengths[1] :, 1] == 0)  # padding is zero, as in unrolled
    assert_close(got["h_n"], states[0], TOL)
    if layer.num_states == 2:
        assert_close(got["c_n"], states[1], TOL)

    # The default graph: no lengths input, zero initial state.
    out_full, _ = layer(x)
    got = _run(ort, uo.to_onnx(layer, lengths=False), {"x": x})
    assert_close(got["out"], out_full, TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layer_without_bias_and_batch_first_exports(ort, uo, kind):
    rng = np.random.default_rng(3)
    cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind]
    layer = cls(3, 5, num_layers=2, bias=False, batch_first=True, bidirectional=True, seed=1).eval()
    _randomize(layer, rng)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)  # (B, T, I)
    lengths = np.array([6, 3, 1, 4])
    out, _ = layer(x, lengths=lengths)
    got = _run(ort, uo.to_onnx(layer), {"x": x, "lengths": lengths.astype(np.int32)})
    assert_close(got["out"], out, TOL)


def test_float64_layer_exports_as_float32(ort, uo):
    rng = np.random.default_rng(4)
    layer = LSTM(3, 4, dtype=np.float64, seed=0).eval()
    _randomize(layer, rng)
    x = rng.standard_normal((5, 2, 3))
    out, _ = layer(x)
    got = _run(ort, uo.to_onnx(layer, lengths=False), {"x": x.astype(np.float32)})
    assert_close(got["out"], out, TOL)


def test_unconverted_gate_order_would_be_caught(ort, uo, monkeypatch):
    """The parity check has teeth: exporting unrolled's rows unconverted gives visibly wrong outputs."""
    rng = np.random.default_rng(5)
    for layer in (LSTM(3, 4, seed=0).eval(), GRU(3, 4, seed=0).eval()):
        _randomize(layer, rng)
        x = rng.standard_normal((6, 2, 3)).astype(np.float32)
        out, _ = layer(x)
        with monkeypatch.context() as m:
            m.setattr(uo, "gates_to_onnx", lambda kind, a: a.copy())
            got = _run(ort, uo.to_onnx(layer, lengths=False), {"x": x})
        assert np.abs(got["out"] - out).max() > 1e-2


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gate_conversion_round_trips(uo, kind):
    a = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
    np.testing.assert_array_equal(uo.gates_from_onnx(kind, uo.gates_to_onnx(kind, a)), a)
    if kind == "lstm":  # i, f, g, o -> i, o, f, c
        b = uo.gates_to_onnx(kind, a)
        np.testing.assert_array_equal(b[3:6], a[9:12])
        np.testing.assert_array_equal(b[6:9], a[3:6])


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_export_then_from_onnx_round_trip(uo, tmp_path, name, make):
    rng = np.random.default_rng(6)
    layer = make(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, seed=0).eval()
    _randomize(layer, rng)
    path = uo.export(layer, tmp_path / "layer.onnx")
    back = uo.from_onnx(path)
    assert type(back) is type(layer)
    assert set(back.params) == set(layer.params)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    lengths = np.array([5, 3])
    np.testing.assert_allclose(back(x, lengths=lengths)[0], layer(x, lengths=lengths)[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- whole models
def _model(cell, output, inp="tokens", bidirectional=True, num_layers=2, **kw):
    from unrolled.models import ModelConfig, SequenceModel

    cfg = ModelConfig(
        input=inp,
        vocab_size=13,
        input_size=5,
        embed_dim=6,
        cell=cell,
        hidden_size=4,
        num_layers=num_layers,
        bidirectional=bidirectional,
        output=output,
        output_size=3,
        seed=2,
        **kw,
    )
    model = SequenceModel(cfg).eval()
    _randomize(model, np.random.default_rng(7))
    return model


MODELS = [
    ("lstm", "sequence", "tokens"),
    ("gru", "last", "tokens"),
    ("rnn", "mean", "tokens"),
    ("lstm", "last", "dense"),
    ("gru", "mean", "dense"),
    ("rnn", "sequence", "dense"),
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,output,inp", MODELS)
def test_sequence_model_onnx_equals_unrolled(ort, uo, tmp_path, cell, output, inp, bidirectional):
    pytest.importorskip("unrolled.models")
    model = _model(cell, output, inp, bidirectional)
    rng = np.random.default_rng(8)
    T, B = 6, 3
    x = rng.integers(0, 13, (T, B)) if inp == "tokens" else rng.standard_normal((T, B, 5)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    y, state = model(x, lengths=lengths)
    path = uo.export(model, tmp_path / "model.onnx")
    import onnx

    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    embeds = [n for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == "embed.W"]
    assert len(embeds) == (inp == "tokens") and "MatMul" in ops
    got = _run(ort, proto, {"x": x, "lengths": lengths.astype(np.int32)})
    assert_close(got["y"], y, TOL)
    assert_close(got["h_n"], state[0] if cell == "lstm" else state, TOL)
    y_full, _ = model(x)
    got = _run(ort, uo.to_onnx(model, lengths=False), {"x": x})
    assert_close(got["y"], y_full, TOL)
    # ... and back: the same model, same outputs.
    back = uo.from_onnx(path)
    assert back.config.to_dict() == dict(model.config.to_dict())
    np.testing.assert_allclose(back(x, lengths=lengths)[0], y, rtol=0, atol=1e-6)


def test_sequence_model_with_initial_state_and_classic_gru(ort, uo):
    pytest.importorskip("unrolled.models")
    model = _model("gru", "sequence", "dense", bidirectional=False, reset_after=False)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 2, 5)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 4)).astype(np.float32)
    y, _ = model(x, h0, lengths=np.array([5, 3]))
    proto = uo.to_onnx(model, initial_state=True)
    got = _run(ort, proto, {"x": x, "lengths": np.array([5, 3], np.int32), "h0": h0})
    assert_close(got["y"], y, TOL)


# --------------------------------------------------------------------------- refusals
def test_malformed_onnx_file_is_refused_clearly(uo, tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        uo.from_onnx(bad)
    good = uo.export(LSTM(2, 3, seed=0), tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.onnx"):
        uo.from_onnx(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        uo.from_onnx(empty)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        uo.from_onnx(tmp_path / "missing.onnx")


def _single_node_model(op_type, G, H=3, I=2, P=False, bias=False, **attrs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, G * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, G * H, H)).astype(np.float32), "R"),
    ]
    inputs = ["x", "W", "R"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((1, 2 * G * H)).astype(np.float32), "B"))
        inputs.append("B")
    if P:
        inits.append(numpy_helper.from_array(np.ones((1, 3 * H), np.float32), "P"))
        inputs += ["", "", "", "", "P"][len(inputs) - 3 :]
    node = helper.make_node(op_type, inputs, ["Y"], hidden_size=H, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H])],
        inits,
    )
    return onnx.helper.make_model(graph)


def test_foreign_single_node_graph_loads(ort, uo):
    """A graph from another tool (ONNX's gate order, both biases Wb and Rb, no unrolled metadata) loads
    as the equal layer."""
    cases = [("RNN", 1, {}), ("LSTM", 4, {}), ("GRU", 3, {"linear_before_reset": 1}), ("GRU", 3, {})]
    for op_type, G, extra in cases:
        proto = _single_node_model(op_type, G, bias=True, **extra)
        layer = uo.from_onnx(proto)
        x = np.random.default_rng(1).standard_normal((4, 2, 2)).astype(np.float32)
        y = _run(ort, proto, {"x": x})["Y"][:, 0]
        assert_close(layer(x)[0], y, TOL)


@pytest.mark.parametrize(
    "op_type,G,kw,match",
    [
        ("LSTM", 4, {"direction": "reverse"}, "direction 'reverse'"),
        ("GRU", 3, {"clip": 1.0}, "clip"),
        ("RNN", 1, {"activations": ["Sigmoid"]}, "activations"),
        ("LSTM", 4, {"input_forget": 1}, "input_forget"),
    ],
)
def test_unsupported_onnx_recurrent_nodes_are_refused(uo, op_type, G, kw, match):
    with pytest.raises(ValueError, match=match):
        uo.from_onnx(_single_node_model(op_type, G, **kw))


def test_graph_without_recurrent_nodes_is_refused(uo):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ValueError, match="no RNN, LSTM or GRU node"):
        uo.from_onnx(onnx.helper.make_model(graph))


def test_parallel_recurrent_nodes_are_not_stacked(uo):
    """Two LSTMs fed by the same input (not a chain) are refused rather than silently stacked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("W", (1, 8, 2)), ("R", (1, 8, 2)))
    ]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], [f"Y{i}"], hidden_size=2) for i in range(2)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 2])],
        [helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, ["T", 1, "B", 2]) for i in range(2)],
        inits,
    )
    with pytest.raises(ValueError, match="one chain of stacked layers"):
        uo.from_onnx(onnx.helper.make_model(graph))


def test_export_refuses_other_objects(uo):
    with pytest.raises(TypeError, match="expected an unrolled recurrent layer"):
        uo.to_onnx(object())


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_graph_exported_by_torch_loads_as_the_equal_layer(uo, kind):
    """A foreign graph: torch.onnx's own export of a stacked bidirectional torch layer."""
    import io
    import warnings

    from conftest import require_torch

    torch = require_torch()
    import onnx

    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True).eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(5, 2, 3),), buf, dynamo=False)
    except Exception as e:  # the TorchScript-based exporter may be absent in other torch versions
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable: {type(e).__name__}")
    layer = uo.from_onnx(onnx.load_from_string(buf.getvalue()))
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    assert_close(layer(x)[0], want, TOL)
