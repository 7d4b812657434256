"""The importers never load a different model: a graph or Keras model that is not one recurrent stack
(a Linear/Tanh between the recurrent layers, parallel branches, a head on the chain, a transposition that
swaps time and batch, a nonzero constant initial state) is refused in one line naming the node, and what is
a recurrent stack still loads and equals the original. Every hostile case is built for real (onnx.helper
graphs that onnxruntime runs, real Keras models) and checked to be refused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import assert_close

TOL = 1e-5  # relative to the values' scale (conftest.assert_close)
# keras's own NumPy-2 deprecation noise (its variables' __array__), not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
T, B, I, H = 4, 2, 3, 5  # fixed sizes: the hostile graphs use Gemm, which needs static shapes


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def uo():
    pytest.importorskip("onnx")
    import unrolled.interop.onnx as uo

    return uo


def _run(ort, proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


class _G:
    """A foreign graph under construction: onnx.helper nodes, random float32 initializers."""

    def __init__(self, seed=0):
        self.nodes, self.inits, self.rng = [], [], np.random.default_rng(seed)

    def const(self, name, a):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def rand(self, name, shape):
        return self.const(name, (0.5 * self.rng.standard_normal(shape)).astype(np.float32))

    def node(self, op, inputs, outputs, name, **attrs):
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def lstm(self, x, name, input_size, initial_h=""):
        ins = [x, self.rand(f"{name}.W", (1, 4 * H, input_size)), self.rand(f"{name}.R", (1, 4 * H, H))]
        ins += [self.rand(f"{name}.B", (1, 8 * H)), "", initial_h] if initial_h else []
        return self.node("LSTM", ins, [f"{name}.Y"], name, hidden_size=H)

    def to_tbh(self, y, name):
        """Y (T, 1, B, H) -> (T, B, H): the layout ONNX's own examples use between stacked layers."""
        return self.node("Squeeze", [y, self.const(f"{name}.axes", np.array([1]))], [f"{name}.out"], name)

    def model(self, x_shape, outputs):
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _two_lstms_with(middle):
    """x -> LSTM -> Squeeze -> ``middle`` -> LSTM; ``middle(g, t) -> t'`` adds the nodes in between."""
    g = _G()
    h = g.to_tbh(g.lstm("x", "lstm_a", I), "squeeze_a")
    h = middle(g, h)
    y = g.lstm(h, "lstm_b", H)
    return g.model([T, B, I], [y])


def _linear_tanh(g, h):
    """Gemm + Tanh: (T, B, H) -> (T·B, H) -> Gemm -> Tanh -> (T, B, H)."""
    flat = g.node("Reshape", [h, g.const("flat", np.array([T * B, H]))], ["h2"], "to_2d")
    lin = g.node("Gemm", [flat, g.rand("lin.W", (H, H)), g.rand("lin.b", (H,))], ["lin"], "linear_mid")
    act = g.node("Tanh", [lin], ["act"], "tanh_mid")
    return g.node("Reshape", [act, g.const("back", np.array([T, B, H]))], ["h3"], "to_3d")


def _add_input(g, h):
    """A residual-like Add of a constant: not a layout operation."""
    return g.node("Add", [h, g.rand("shift", (H,))], ["shifted"], "add_mid")


def _swap_time_batch(g, h):
    """A layout operation, but one that feeds (B, T, H) where the next layer reads (T, B, H)."""
    return g.node("Transpose", [h], ["swapped"], "swap_tb", perm=[1, 0, 2])


def test_linear_tanh_between_two_lstms_is_refused_naming_the_node(ort, uo):
    proto = _two_lstms_with(_linear_tanh)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    assert np.isfinite(_run(ort, proto, {"x": x})[0]).all()  # a real graph that onnxruntime runs
    with pytest.raises(ValueError, match=r"node 'tanh_mid' \(Tanh\) stands between recurrent nodes") as e:
        uo.from_onnx(proto)
    assert "\n" not in str(e.value)


def test_add_between_two_lstms_is_refused_naming_the_node(uo):
    with pytest.raises(ValueError, match=r"node 'add_mid' \(Add\) stands between"):
        uo.from_onnx(_two_lstms_with(_add_input))


def test_transpose_that_swaps_time_and_batch_between_layers_is_refused(ort, uo):
    proto = _two_lstms_with(_swap_time_batch)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    _run(ort, proto, {"x": x})
    with pytest.raises(ValueError, match=r"'lstm_b' \(LSTM\): the layout operations before it"):
        uo.from_onnx(proto)


def test_layout_only_chain_loads_and_equals_onnxruntime(ort, uo):
    proto = _two_lstms_with(lambda g, h: g.node("Identity", [h], ["same"], "identity_mid"))
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    want = _run(ort, proto, {"x": x})[0][:, 0]
    layer = uo.from_onnx(proto)
    assert layer.num_layers == 2 and not layer.batch_first
    assert_close(layer(x)[0], want, TOL)


def test_batch_major_input_transposed_by_the_graph_loads_batch_first(ort, uo):
    g = _G(2)
    xt = g.node("Transpose", ["x"], ["x_tbi"], "to_time_major", perm=[1, 0, 2])
    y = g.lstm(xt, "lstm", I)
    proto = g.model([B, T, I], [y])
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    want = _run(ort, proto, {"x": x})[0][:, 0]  # (T, B, H)
    layer = uo.from_onnx(proto)
    assert layer.batch_first
    assert_close(layer(x)[0], want.transpose(1, 0, 2), TOL)


def test_operation_before_the_first_recurrent_node_is_refused(uo):
    g = _G()
    g.lstm(g.node("Tanh", ["x"], ["squashed"], "tanh_in"), "lstm", I)
    with pytest.raises(ValueError, match=r"node 'tanh_in' \(Tanh\) stands before the first recurrent node"):
        uo.from_onnx(g.model([T, B, I], ["lstm.Y"]))


def test_head_after_the_last_recurrent_node_is_refused(uo):
    g = _G()
    h = g.to_tbh(g.lstm("x", "lstm", I), "squeeze")
    g.node("MatMul", [h, g.rand("head", (H, 2))], ["y"], "head_matmul")
    with pytest.raises(ValueError, match=r"node 'head_matmul' \(MatMul\) computes on the last recurrent"):
        uo.from_onnx(g.model([T, B, I], ["y"]))


def test_two_gru_branches_joined_by_concat_are_refused(ort, uo):
    g = _G()
    ys = []
    for name in ("gru_a", "gru_b"):
        W, R = g.rand(f"{name}.W", (1, 3 * H, I)), g.rand(f"{name}.R", (1, 3 * H, H))
        ys.append(g.node("GRU", ["x", W, R], [f"{name}.Y"], name, hidden_size=H))
    g.node("Concat", ys, ["both"], "join", axis=3)
    proto = g.model([T, B, I], ["both"])
    _run(ort, proto, {"x": np.zeros((T, B, I), np.float32)})
    with pytest.raises(ValueError, match=r"'gru_b' \(GRU\): its input does not come from the previous"):
        uo.from_onnx(proto)


def test_intermediate_output_read_by_a_branch_is_refused(uo):
    g = _G()
    h = g.to_tbh(g.lstm("x", "lstm_a", I), "squeeze_a")
    g.node("Relu", [h], ["side"], "side_branch")
    y = g.lstm(h, "lstm_b", H)
    with pytest.raises(ValueError, match=r"node 'side_branch' \(Relu\) also reads 'squeeze_a.out'"):
        uo.from_onnx(g.model([T, B, I], [y, "side"]))


def test_nonzero_constant_initial_state_is_refused_naming_node_and_input(ort, uo):
    g = _G(3)
    g.lstm("x", "lstm", I, initial_h=g.rand("h_init", (1, B, H)))
    proto = g.model([T, B, I], ["lstm.Y"])
    _run(ort, proto, {"x": np.zeros((T, B, I), np.float32)})
    with pytest.raises(ValueError, match=r"'lstm' \(LSTM\): initial_h 'h_init' is a nonzero constant"):
        uo.from_onnx(proto)


def test_zero_constant_initial_state_loads_and_equals_onnxruntime(ort, uo):
    g = _G(4)
    g.lstm("x", "lstm", I, initial_h=g.const("h_zero", np.zeros((1, B, H), np.float32)))
    proto = g.model([T, B, I], ["lstm.Y"])
    x = np.random.default_rng(4).standard_normal((T, B, I)).astype(np.float32)
    assert_close(uo.from_onnx(proto)(x)[0], _run(ort, proto, {"x": x})[0][:, 0], TOL)


def test_unrolled_graph_with_a_node_inserted_between_layers_is_refused(uo):
    """A graph that carries unrolled's metadata must be exactly what unrolled's export writes."""
    from onnx import helper

    from unrolled import LSTM

    proto = uo.to_onnx(LSTM(I, H, num_layers=2, seed=0), lengths=False)
    second = next(n for n in proto.graph.node if n.op_type == "LSTM" and n.name != "LSTM_1")
    fed = second.input[0]
    second.input[0] = "squashed"
    k = list(proto.graph.node).index(second)
    proto.graph.node.insert(k, helper.make_node("Tanh", [fed], ["squashed"], name="tanh_evil"))
    with pytest.raises(ValueError, match=r"node 'tanh_evil' \(Tanh\) is not what unrolled's export writes"):
        uo.from_onnx(proto)


def test_unrolled_graph_with_a_nonzero_constant_initial_state_is_refused(uo):
    from onnx import numpy_helper

    from unrolled import GRU

    proto = uo.to_onnx(GRU(I, H, seed=0), lengths=False)
    gru = next(n for n in proto.graph.node if n.op_type == "GRU")
    proto.graph.initializer.append(numpy_helper.from_array(np.ones((1, 1, H), np.float32), "h_const"))
    while len(gru.input) < 6:
        gru.input.append("")
    gru.input[5] = "h_const"
    with pytest.raises(ValueError, match=r"initial_h 'h_const' is a nonzero constant"):
        uo.from_onnx(proto)


# --------------------------------------------------------------------------- Keras
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        pytest.skip("keras not installed (pip install keras; KERAS_BACKEND=torch): real Keras not checked")
    return keras


def _randomize(model, rng):
    for la in model.layers:
        w = la.get_weights()
        if w:
            la.set_weights([(0.5 * rng.standard_normal(a.shape)).astype(np.float32) for a in w])


def _keras_dense_between(keras):
    return keras.Sequential(
        [
            keras.Input((None, I)),
            keras.layers.GRU(H, return_sequences=True, name="gru_a"),
            keras.layers.Dense(H, activation="tanh", name="dense_mid"),
            keras.layers.GRU(H, return_sequences=True, name="gru_b"),
        ]
    )


def _keras_branches(keras):
    x = keras.Input((None, I))
    a = keras.layers.GRU(H, return_sequences=True, name="gru_a")(x)
    b = keras.layers.GRU(H, return_sequences=True, name="gru_b")(x)
    return keras.Model(x, keras.layers.Concatenate(name="join")([a, b]))


@pytest.mark.parametrize(
    "build,match",
    [
        (_keras_dense_between, r"layer 'dense_mid' \(Dense\) stands between recurrent layers"),
        (_keras_branches, r"layer 'gru_b' \(GRU\): its input is not the output of layer 'gru_a'"),
    ],
    ids=["dense_between_grus", "concatenated_branches"],
)
def test_keras_model_that_is_not_one_stack_is_refused(keras, tmp_path, build, match):
    from unrolled.interop.keras import from_keras, load_keras

    model = build(keras)
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    model(x)  # a real, runnable model
    with pytest.raises(ValueError, match=match) as e:
        from_keras(model)
    assert "\n" not in str(e.value)
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(ValueError, match=match):
        load_keras(path)


def test_keras_stack_with_dropout_between_and_a_head_after_loads(keras, tmp_path):
    from unrolled.interop.keras import from_keras, load_keras

    x_in = keras.Input((None, I))
    a = keras.layers.LSTM(H, return_sequences=True, name="lstm_a")(x_in)
    a = keras.layers.Dropout(0.3, name="drop")(a)
    b = keras.layers.LSTM(H, return_sequences=True, name="lstm_b")(a)
    model = keras.Model(x_in, keras.layers.Dense(2, name="head")(b))
    _randomize(model, np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((B, T, I)).astype(np.float32)
    stack = keras.Model(x_in, b)
    want = keras.ops.convert_to_numpy(stack(x))
    assert_close(from_keras(model)(x)[0], want, TOL)
    path = tmp_path / "m.keras"
    model.save(path)
    assert_close(load_keras(path)(x)[0], want, TOL)


def test_keras_recurrent_layer_with_an_initial_state_tensor_is_refused(keras):
    from unrolled.interop.keras import from_keras

    x = keras.Input((None, I))
    h0 = keras.Input((H,))
    y = keras.layers.GRU(H, return_sequences=True, name="gru")(x, initial_state=h0)
    with pytest.raises(ValueError, match=r"layer 'gru' \(GRU\): takes tensors besides its input"):
        from_keras(keras.Model([x, h0], y))
