"""ONNX and the LSTM/GRU variants: peepholes export to ONNX LSTM's native input P and onnxruntime equals
unrolled (float32, ≤ 1e-5 of scale) with lengths, initial states, both directions and stacks, as a layer and
inside a SequenceModel; a foreign graph with peepholes loads as the equal layer; what ONNX cannot say (layer
norm, a projection, zoneout) is refused, naming the option."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import GRU, LSTM, RNN

from conftest import assert_close

TOL = 1e-5


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="onnx not installed: ONNX export not checked")
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed: ONNX export not checked")


@pytest.fixture(scope="module")
def uo():
    pytest.importorskip("onnx", reason="onnx not installed: ONNX export not checked")
    import unrolled.interop.onnx as uo

    return uo


def _run(ort, proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2bi"])
def test_peephole_lstm_equals_onnxruntime(ort, uo, num_layers, bidirectional):
    rng = np.random.default_rng(num_layers)
    I, H, T, B = 3, 4, 6, 3
    layer = LSTM(I, H, num_layers, bidirectional=bidirectional, peephole=True, seed=0).eval()
    for v in layer.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.6  # peepholes far from zero, distinct per gate
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    LD = num_layers * layer.num_directions
    h0, c0 = (rng.standard_normal((LD, B, H)).astype(np.float32) for _ in range(2))
    out, (h_n, c_n) = layer(x, (h0, c0), lengths)
    proto = uo.to_onnx(layer, lengths=True, initial_state=True)
    lstm_nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == num_layers and all(len(n.input) == 8 and n.input[7] for n in lstm_nodes)
    got = _run(ort, proto, {"x": x, "lengths": lengths.astype(np.int32), "h0": h0, "c0": c0})
    assert_close(got["out"], out, TOL)
    assert_close(got["h_n"], h_n, TOL)
    assert_close(got["c_n"], c_n, TOL)
    got = _run(ort, uo.to_onnx(layer, lengths=False), {"x": x})  # no lengths, no initial state: P at 7
    assert_close(got["out"], layer(x)[0], TOL)
    back = uo.from_onnx(proto)  # and back: the same layer
    assert back.peephole and set(back.params) == set(layer.params)
    for k, v in layer.params.items():
        np.testing.assert_allclose(back.params[k], v, atol=1e-7, err_msg=k)


def test_peephole_sequence_model_equals_onnxruntime(ort, uo):
    from unrolled.models import ModelConfig, SequenceModel

    cfg = ModelConfig(
        vocab_size=11, embed_dim=5, hidden_size=4, num_layers=2, peephole=True, output_size=3, seed=1
    )
    model = SequenceModel(cfg).eval()
    rng = np.random.default_rng(2)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5
    ids = rng.integers(0, 11, size=(5, 2))
    y, _ = model(ids, lengths=[5, 3])
    got = _run(ort, uo.to_onnx(model), {"x": ids.astype(np.int64), "lengths": np.array([5, 3], np.int32)})
    assert_close(got["y"][:3], y[:3], TOL)
    assert_close(got["y"][:, 0], y[:, 0], TOL)


def test_a_foreign_graph_with_peepholes_loads_as_the_equal_layer(ort, uo):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    H, I = 3, 2
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.standard_normal((1, 8 * H)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((1, 3 * H)).astype(np.float32), "P"),
    ]
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "", "", "P"], ["Y"], hidden_size=H)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H])],
        inits,
    )
    proto = onnx.helper.make_model(graph)
    layer = uo.from_onnx(proto)
    assert layer.peephole
    x = rng.standard_normal((5, 2, I)).astype(np.float32)
    assert_close(layer(x)[0], _run(ort, proto, {"x": x})["Y"][:, 0], TOL)


@pytest.mark.parametrize(
    "make,option",
    [
        (lambda: LSTM(2, 4, layer_norm=True), "layer_norm"),
        (lambda: GRU(2, 4, layer_norm=True), "layer_norm"),
        (lambda: LSTM(2, 4, proj_size=2), "proj_size"),
        (lambda: RNN(2, 4, zoneout=0.1), "zoneout"),
        (lambda: LSTM(2, 4, peephole=True, zoneout=0.1), "zoneout"),
    ],
)
def test_what_onnx_cannot_express_is_refused_by_name(uo, make, option):
    with pytest.raises(ValueError, match=rf"^{option}: ONNX's recurrent operators cannot express"):
        uo.to_onnx(make())


def test_keras_weights_refuse_the_variants():
    from unrolled.interop.keras import to_keras_weights

    for layer, option in ((LSTM(2, 3, peephole=True), "peephole"), (GRU(2, 3, zoneout=0.1), "zoneout")):
        with pytest.raises(ValueError, match=f"{option} has no keras"):
            to_keras_weights(layer)
