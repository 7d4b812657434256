"""The importers allocate only what a file really stores: sizes declared by metadata (an h5 dataset's
shape, an ONNX tensor's dims, a zip member's uncompressed size, a SequenceModel's configuration) are
checked against the stored data and a stated cap before anything is allocated, and malformed files are
refused with one ValueError naming the file — never KeyError, AttributeError or onnx's ValidationError.
Every hostile file is generated small on disk; memory is measured with tracemalloc (NumPy reports its
allocations to it)."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from unrolled.interop import _limits

MB = 2**20


def _refused_small(fn, match: str) -> None:
    """fn() raises ValueError matching ``match`` in one line, allocating < 100 MB on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as e:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * MB, f"peak {peak / MB:.0f} MB"
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- .keras
LSTM_CFG = [{"class_name": "LSTM", "config": {"name": "l", "units": 4}}]


def _h5(build) -> bytes:
    h5py = pytest.importorskip("h5py")
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def _keras_zip(path, config, weights: bytes, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        z.writestr("model.weights.h5", weights)
    return path


def _valid_vars(f, shapes=((3, 16), (4, 16), (16,))):
    g = f.create_group("layers/lstm/cell/vars")
    for i, s in enumerate(shapes):
        g.create_dataset(str(i), data=np.zeros(s, np.float32))
    return g


def test_keras_dataset_declaring_a_huge_shape_is_refused_before_allocation(tmp_path):
    from unrolled.interop.keras import load_keras

    def build(f):
        g = f.create_group("layers/lstm/cell/vars")
        g.create_dataset("0", shape=(40000, 40000), dtype="f4", chunks=(64, 64))  # nothing written
        g.create_dataset("1", data=np.zeros((4, 16), np.float32))

    weights = _h5(build)
    assert len(weights) < 100_000
    path = _keras_zip(tmp_path / "huge.keras", {"config": {"layers": LSTM_CFG}}, weights)
    _refused_small(
        lambda: load_keras(path), r"huge.keras: layers/lstm/cell/vars/0: declares shape \(40000, 40000\)"
    )


def test_keras_dataset_above_the_element_cap_is_refused(tmp_path):
    from unrolled.interop.keras import load_keras

    def build(f):
        f.create_group("layers/lstm/cell/vars").create_dataset(
            "0", shape=(2**16, 2**16), dtype="f4", chunks=True
        )

    path = _keras_zip(tmp_path / "cap.keras", {"config": {"layers": LSTM_CFG}}, _h5(build))
    _refused_small(lambda: load_keras(path), f"above the cap of {_limits.MAX_ELEMENTS}")


def test_keras_zip_bomb_config_is_refused_by_its_declared_size(tmp_path):
    from unrolled.interop.keras import load_keras

    bomb = "[" + " " * (_limits.MAX_CONFIG_BYTES + MB) + "]"  # inflates past the cap, deflates to ~20 KB
    path = _keras_zip(tmp_path / "bomb.keras", bomb, b"", zipfile.ZIP_DEFLATED)
    del bomb
    assert path.stat().st_size < 200_000
    _refused_small(lambda: load_keras(path), r"bomb.keras: config.json declares \d+ bytes uncompressed")


def test_keras_external_link_in_the_weights_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    from unrolled.interop.keras import load_keras

    def build(f):
        g = f.create_group("layers/lstm/cell/vars")
        g["0"] = h5py.ExternalLink("/etc/passwd", "/x")

    path = _keras_zip(tmp_path / "link.keras", {"config": {"layers": LSTM_CFG}}, _h5(build))
    _refused_small(lambda: load_keras(path), r"vars/0: a ExternalLink; expected a dataset stored in the file")


@pytest.mark.parametrize(
    "config",
    [
        [1, 2],
        {"config": {"layers": ["LSTM"]}},
        {"config": {"layers": [{"class_name": "LSTM"}]}},
        {"config": {"layers": [{"class_name": "LSTM", "config": "units=4"}]}},
        {"config": {"layers": [{"class_name": "Bidirectional", "config": {"name": "b"}}]}},
        {"config": {"layers": [{"class_name": "GRU", "name": "g", "config": {}, "inbound_nodes": "x"}]}},
        {
            "config": {
                "layers": [
                    {
                        "class_name": "GRU",
                        "name": "g",
                        "config": {},
                        "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {}}]}],
                    }
                ]
            }
        },  # noqa: E501
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "list",
        "layer_str",
        "no_config",
        "config_str",
        "bidi_no_layer",
        "nodes_str",
        "tensor_no_history",
        "deep",
    ],
)
def test_malformed_keras_config_is_one_valueerror_naming_the_file(tmp_path, config):
    from unrolled.interop.keras import load_keras

    path = _keras_zip(tmp_path / "bad.keras", config, _h5(_valid_vars))
    _refused_small(lambda: load_keras(path), "bad.keras")


# --------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def uo():
    pytest.importorskip("onnx")
    import unrolled.interop.onnx as uo

    return uo


def _lstm_graph(W_tensor):
    from onnx import TensorProto, helper, numpy_helper

    R = numpy_helper.from_array(np.zeros((1, 8, 2), np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["Y"], hidden_size=2, name="lstm")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [W_tensor, R],
    )
    return helper.make_model(graph)


def test_onnx_initializer_declaring_huge_dims_is_refused_before_allocation(uo, tmp_path):
    from onnx import TensorProto, save_model

    W = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[40000, 40000], raw_data=b"\0" * 16)
    path = tmp_path / "huge.onnx"
    save_model(_lstm_graph(W), str(path))
    assert path.stat().st_size < 10_000
    _refused_small(lambda: uo.from_onnx(path), r"huge.onnx: tensor 'W': declares dims \[40000, 40000\]")
    W = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**16, 2**16], float_data=[0.0])
    _refused_small(lambda: uo.from_onnx(_lstm_graph(W)), f"above the cap of {_limits.MAX_ELEMENTS}")


def test_onnx_external_data_is_refused_with_valueerror(uo, tmp_path):
    import onnx

    from unrolled import LSTM

    path = tmp_path / "ext.onnx"
    onnx.save_model(
        uo.to_onnx(LSTM(3, 4, seed=0)),
        str(path),
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    assert (tmp_path / "w.bin").exists()
    _refused_small(lambda: uo.from_onnx(path), r"ext.onnx: tensor '\S+' keeps its data in an external file")


def test_onnx_sequence_model_metadata_declaring_a_huge_vocabulary_is_refused_before_allocation(uo):
    pytest.importorskip("unrolled.models")
    from unrolled.models import ModelConfig, SequenceModel

    model = SequenceModel(ModelConfig(vocab_size=13, embed_dim=6, hidden_size=4, output_size=3, seed=0))
    proto = uo.to_onnx(model)
    for p in proto.metadata_props:
        if p.key == "unrolled.config":
            cfg = json.loads(p.value)
            cfg.update(vocab_size=10**9, output_size=3)
            p.value = json.dumps(cfg)
    _refused_small(
        lambda: uo.from_onnx(proto), r"weight 'embed.W' has shape \(13, 6\), the metadata declares"
    )


@pytest.mark.parametrize("value", ["{not json", "[1, 2]", '{"batch_first": "yes"}'])
def test_onnx_malformed_metadata_is_one_valueerror(uo, value):
    from unrolled import GRU

    proto = uo.to_onnx(GRU(3, 4, seed=0))
    for p in proto.metadata_props:
        if p.key == "unrolled.config":
            p.value = value
    _refused_small(lambda: uo.from_onnx(proto), "metadata")
