"""Keras weights load into the equal unrolled layer: checked against a NumPy transcription of Keras's
documented equations (no keras needed), and against real keras layers (torch backend) where installed:
SimpleRNN (tanh/relu), LSTM, GRU (both reset_after), Bidirectional, stacks, masks = lengths, ``.keras``
files, the way back (set_weights), and clear refusals of what has no equivalent."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from unrolled.interop.keras import from_keras, from_keras_weights, load_keras, to_keras_weights

from conftest import assert_close

TOL = 1e-5  # relative to the values' scale (conftest.assert_close)
# keras's own NumPy-2 deprecation noise (its variables' __array__), not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# --------------------------------------------------------------------------- Keras's equations, in NumPy
def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _keras_direction(cell, arrays, x, act="tanh"):
    """One Keras layer, batch-major x (B, T, I) -> (B, T, u), written from the Keras docs/source equations:
    x @ kernel, h @ recurrent_kernel; GRU: h = z⊙h_prev + (1 − z)⊙hh, bias (2, 3u) when reset_after."""
    kernel, rec = arrays[0].astype(np.float64), arrays[1].astype(np.float64)
    bias = arrays[2].astype(np.float64) if len(arrays) == 3 else None
    u = rec.shape[0]
    B, T, _ = x.shape
    h, c = np.zeros((B, u)), np.zeros((B, u))
    f_act = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    out = []
    for t in range(T):
        xt = x[:, t].astype(np.float64)
        if cell == "rnn":
            h = f_act(xt @ kernel + h @ rec + (bias if bias is not None else 0))
        elif cell == "lstm":
            a = xt @ kernel + h @ rec + (bias if bias is not None else 0)
            i, f, g, o = np.split(a, 4, axis=1)  # Keras: i, f, c, o
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        elif bias is not None and bias.ndim == 2 or bias is None:  # reset_after=True
            mx = xt @ kernel + (bias[0] if bias is not None else 0)
            mi = h @ rec + (bias[1] if bias is not None else 0)
            z = _sig(mx[:, :u] + mi[:, :u])
            r = _sig(mx[:, u : 2 * u] + mi[:, u : 2 * u])
            hh = np.tanh(mx[:, 2 * u :] + r * mi[:, 2 * u :])
            h = z * h + (1 - z) * hh
        else:  # reset_after=False
            mx = xt @ kernel + bias
            z = _sig(mx[:, :u] + h @ rec[:, :u])
            r = _sig(mx[:, u : 2 * u] + h @ rec[:, u : 2 * u])
            hh = np.tanh(mx[:, 2 * u :] + (r * h) @ rec[:, 2 * u :])
            h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, axis=1)


def _keras_stack(cell, weights, x, bidirectional, act="tanh"):
    for arrays in weights:
        if bidirectional:
            n = len(arrays) // 2
            fwd = _keras_direction(cell, arrays[:n], x, act)
            bwd = _keras_direction(cell, arrays[n:], x[:, ::-1], act)[:, ::-1]  # go_backwards, re-reversed
            x = np.concatenate([fwd, bwd], axis=2)
        else:
            x = _keras_direction(cell, arrays, x, act)
    return x


def _random_keras_weights(rng, cell, I, u, layers, bidirectional, bias=True, reset_after=True):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    D = 2 if bidirectional else 1
    weights = []
    for l in range(layers):
        arrays = []
        for _ in range(D):
            arrays += [rng.standard_normal((I if l == 0 else D * u, G * u)), rng.standard_normal((u, G * u))]
            if bias:
                shape = (2, 3 * u) if cell == "gru" and reset_after else (G * u,)
                arrays.append(rng.standard_normal(shape))
        weights.append([(0.5 * a).astype(np.float32) for a in arrays])
    return weights


VARIANTS = [
    ("rnn", {}, "tanh"),
    ("rnn", {}, "relu"),
    ("lstm", {}, "tanh"),
    ("gru", {"reset_after": True}, "tanh"),
    ("gru", {"reset_after": False}, "tanh"),
    ("lstm", {"bias": False}, "tanh"),
    ("gru", {"bias": False}, "tanh"),
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,kw,act", VARIANTS)
def test_keras_weights_match_keras_documented_equations(cell, kw, act, layers, bidirectional):
    rng = np.random.default_rng([layers, bidirectional, len(cell), len(kw), len(act)])
    weights = _random_keras_weights(rng, cell, 5, 4, layers, bidirectional, **kw)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)  # (B, T, I) like Keras
    ref = _keras_stack(cell, weights, x, bidirectional, act)
    layer = from_keras_weights(cell, weights, bidirectional=bidirectional, nonlinearity=act)
    if cell == "gru":
        assert layer.reset_after == kw.get("reset_after", True)
    out, _ = layer(x)
    assert_close(out, ref, TOL)
    # float64 and time-major on request
    layer64 = from_keras_weights(
        cell, weights, bidirectional=bidirectional, nonlinearity=act, batch_first=False, dtype=np.float64
    )
    out64, _ = layer64(x.transpose(1, 0, 2).astype(np.float64))
    np.testing.assert_allclose(out64.transpose(1, 0, 2), ref, rtol=0, atol=1e-9)
    # ... and the way back: to_keras_weights gives arrays with which Keras's equations give the same output
    np.testing.assert_allclose(
        _keras_stack(cell, to_keras_weights(layer64), x, bidirectional, act), ref, rtol=0, atol=1e-9
    )


def test_gru_update_gate_sign_is_converted():
    """Loading a GRU without negating z would be wrong: the equation check has teeth."""
    rng = np.random.default_rng(1)
    weights = _random_keras_weights(rng, "gru", 3, 4, 1, False)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    layer = from_keras_weights("gru", weights)
    for k in ("W_xh_l0", "W_hh_l0", "b_h_l0"):
        layer.params[k][:4] *= -1
    assert np.abs(layer(x)[0] - _keras_stack("gru", weights, x, False)).max() > 1e-2


def test_malformed_keras_weights_are_refused_clearly():
    rng = np.random.default_rng(2)
    good = _random_keras_weights(rng, "lstm", 3, 4, 1, False)[0]
    with pytest.raises(ValueError, match="recurrent_kernel shape"):
        from_keras_weights("gru", [good])  # LSTM arrays read as a GRU
    with pytest.raises(ValueError, match="bias shape"):
        from_keras_weights("lstm", [[good[0], good[1], good[2][:5]]])
    with pytest.raises(ValueError, match="expected 2 or 3 arrays"):
        from_keras_weights("lstm", [good[:1]])
    with pytest.raises(ValueError, match="input size"):
        from_keras_weights("lstm", [good, good])  # second layer's kernel takes 3 inputs, not 4
    with pytest.raises(ValueError, match="cell"):
        from_keras_weights("transformer", [good])


# --------------------------------------------------------------------------- .keras files (h5py, no keras)
def _write_keras_file(path, layers_cfg, groups):
    """A minimal Keras 3 archive: config.json with the layer list, model.weights.h5 with cell/vars groups."""
    h5py = pytest.importorskip("h5py", reason="h5py not installed: .keras files not checked")
    import io

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for g, arrays in groups.items():
            grp = f.create_group(f"{g}/cell/vars")
            for i, a in enumerate(arrays):
                grp.create_dataset(str(i), data=a)
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers_cfg}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", buf.getvalue())
    return path


def test_load_keras_file_without_keras(tmp_path):
    rng = np.random.default_rng(3)
    w = _random_keras_weights(rng, "gru", 3, 4, 2, True)
    cfg = {"units": 4, "activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True}
    bidi = lambda name: {  # noqa: E731
        "class_name": "Bidirectional",
        "config": {"name": name, "merge_mode": "concat", "layer": {"class_name": "GRU", "config": cfg}},
    }
    layers_cfg = [{"class_name": "InputLayer", "config": {"name": "in"}}, bidi("b0"), bidi("b1")]
    layers_cfg.append({"class_name": "Dense", "config": {"name": "head"}})
    groups = {}
    for k, arrays in zip(["bidirectional", "bidirectional_1"], w, strict=True):
        groups[f"layers/{k}/forward_layer"] = arrays[:3]
        groups[f"layers/{k}/backward_layer"] = arrays[3:]
    path = _write_keras_file(tmp_path / "m.keras", layers_cfg, groups)
    layer = load_keras(path)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    assert_close(layer(x)[0], _keras_stack("gru", w, x, True), TOL)
    only_first = load_keras(path, names=["b0"])
    assert only_first.num_layers == 1
    with pytest.raises(ValueError, match="no recurrent layer named"):
        load_keras(path, names=["nope"])


def test_malformed_keras_file_is_refused_clearly(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="not a Keras 3 .keras file"):
        load_keras(garbage)
    no_weights = tmp_path / "no_weights.keras"
    with zipfile.ZipFile(no_weights, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="not a Keras 3 .keras file"):
        load_keras(no_weights)
    bad_h5 = tmp_path / "bad_h5.keras"
    layers_cfg = [{"class_name": "LSTM", "config": {"name": "l", "units": 4}}]
    with zipfile.ZipFile(bad_h5, "w") as z:
        z.writestr("config.json", json.dumps({"config": {"layers": layers_cfg}}))
        z.writestr("model.weights.h5", b"not hdf5")
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_keras(bad_h5)
    missing = _write_keras_file(tmp_path / "missing.keras", layers_cfg, {"layers/other": [np.zeros(1)]})
    with pytest.raises(ValueError, match="no weights for layer 'l'"):
        load_keras(missing)
    with pytest.raises(FileNotFoundError):
        load_keras(tmp_path / "absent.keras")


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"class_name": "LSTM", "config": {"recurrent_activation": "hard_sigmoid"}}, "recurrent_activation"),
        ({"class_name": "GRU", "config": {"go_backwards": True}}, "go_backwards"),
        ({"class_name": "SimpleRNN", "config": {"activation": "sigmoid"}}, "activation 'sigmoid'"),
        ({"class_name": "LSTM", "config": {"stateful": True}}, "stateful"),
        (
            {"class_name": "Bidirectional", "config": {"merge_mode": "sum", "layer": {}}},
            "merge_mode 'sum'",
        ),
        ({"class_name": "Conv1D", "config": {}}, "not a recurrent layer"),
    ],
)
def test_keras_options_without_equivalent_are_refused(tmp_path, cfg, match):
    cfg["config"].setdefault("name", "x")
    path = _write_keras_file(tmp_path / "m.keras", [cfg], {})
    with pytest.raises(ValueError, match=match):
        load_keras(path, names=["x"]) if cfg["class_name"] != "Conv1D" else from_keras(_FakeLayer(cfg))


class _FakeLayer:
    """Stands in for a keras layer object of an unsupported class (duck-typed like from_keras expects)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg["config"]["name"]

    def get_config(self):
        return self.cfg["config"]

    def get_weights(self):
        return [np.zeros((1, 1))]


# --------------------------------------------------------------------------- real keras (torch backend)
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("keras is not installed but CI is set: pip install -e '.[test]'")
        pytest.skip("keras not installed (pip install keras; KERAS_BACKEND=torch): real Keras not checked")
    return keras


def _set_random(layer, rng):
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in layer.get_weights()])


KERAS_LAYERS = [
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu"}),
    ("LSTM", {}),
    ("GRU", {"reset_after": True}),
    ("GRU", {"reset_after": False}),
    ("LSTM", {"use_bias": False}),
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls,kw", KERAS_LAYERS, ids=[f"{c}{k}" for c, k in KERAS_LAYERS])
def test_real_keras_stack_equals_unrolled(keras, cls, kw, bidirectional):
    rng = np.random.default_rng([len(cls), len(kw), bidirectional])

    def make():
        inner = getattr(keras.layers, cls)(4, return_sequences=True, **kw)
        return keras.layers.Bidirectional(inner) if bidirectional else inner

    stack = [make(), make()]
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    stack[1](stack[0](x))  # build
    for la in stack:
        _set_random(la, rng)
    y = keras.ops.convert_to_numpy(stack[1](stack[0](x)))
    layer = from_keras(stack)
    assert_close(layer(x)[0], y, TOL)
    # A Keras mask is unrolled's lengths (at the valid steps; Keras may carry the state into padding).
    lengths = np.array([6, 2, 4])
    mask = np.arange(6)[None, :] < lengths[:, None]
    ym = keras.ops.convert_to_numpy(stack[1](stack[0](x, mask=mask), mask=mask))
    out, _ = layer(x, lengths=lengths)
    assert_close(out * mask[..., None], ym * mask[..., None], TOL)
    # The way back: set_weights with to_keras_weights reproduces the outputs in Keras.
    fresh = [make(), make()]
    fresh[1](fresh[0](x))
    for la, arrays in zip(fresh, to_keras_weights(layer), strict=True):
        la.set_weights(arrays)
    assert_close(keras.ops.convert_to_numpy(fresh[1](fresh[0](x))), y, TOL)


def test_real_keras_saved_model_loads(keras, tmp_path):
    rng = np.random.default_rng(11)
    model = keras.Sequential(
        [
            keras.Input((None, 5)),
            keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
            keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
            keras.layers.Dense(2),
        ]
    )
    for la in model.layers[:2]:
        _set_random(la, rng)
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    rec = keras.Sequential(model.layers[:2])
    y = keras.ops.convert_to_numpy(rec(x))
    path = tmp_path / "model.keras"
    model.save(path)
    assert_close(load_keras(path)(x)[0], y, TOL)
    assert_close(from_keras(model)(x)[0], y, TOL)


def test_real_keras_unsupported_layer_is_refused(keras):
    la = keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")
    la(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="recurrent_activation 'hard_sigmoid'"):
        from_keras(la)
    unbuilt = keras.layers.GRU(3)
    with pytest.raises(ValueError, match="not built"):
        from_keras(unbuilt)
