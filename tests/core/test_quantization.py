"""``unrolled.quantize``: a quantised copy for inference, its errors, and its checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

import unrolled
from unrolled.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint, save_model
from unrolled.models import ModelConfig, SequenceModel
from unrolled.quantization import quantized_kind


def lm(**kw) -> SequenceModel:
    return SequenceModel(ModelConfig(vocab_size=11, embed_dim=6, hidden_size=16, num_layers=2, seed=0, **kw))


TOKENS = (np.arange(18).reshape(6, 3) * 7) % 11


def test_quantize_returns_an_eval_copy_and_leaves_the_model_alone():
    m = lm().train()
    before = {k: v.copy() for k, v in m.params.items()}
    q = unrolled.quantize(m, "int8")
    assert q is not m and not q.training and quantized_kind(q) == "int8" and quantized_kind(m) is None
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k])
    changed = [k for k in m.params if not np.array_equal(q.params[k], m.params[k])]
    assert sorted(changed) == sorted(f"rnn.{k}" for k in q.rnn.quantized.stored)  # only W_xh / W_hh
    assert q.params["rnn.W_hh_l1"] is q.rnn.params["W_hh_l1"]  # the model still shares the layer's arrays


def test_a_quantised_model_is_inference_only():
    q = unrolled.quantize(lm(), "bf16")
    y, _ = q(TOKENS)
    with pytest.raises(RuntimeError, match=r"quantised \(bf16\), for inference only"):
        q.backward(np.ones_like(y))
    layer = unrolled.quantize(unrolled.GRU(3, 8, seed=0), "int8")
    out, _ = layer.forward(np.ones((2, 1, 3), np.float32))
    with pytest.raises(RuntimeError, match="backward: this layer's weights are quantised"):
        layer.backward(np.ones_like(out))
    from unrolled.diagnostics.flow import gradient_flow

    with pytest.raises(RuntimeError, match="diagnose the float model"):
        gradient_flow(layer, np.ones_like(out))


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match=r"to: expected one of \['int8', 'bf16'\], got 'int4'"):
        unrolled.quantize(lm(), "int4")
    with pytest.raises(TypeError, match="model: expected a SequenceModel or a recurrent layer"):
        unrolled.quantize(np.zeros(3), "int8")
    with pytest.raises(ValueError, match="model: expected float32 weights to quantise, got float64"):
        unrolled.quantize(unrolled.LSTM(3, 4, dtype=np.float64), "int8")
    with pytest.raises(ValueError, match=r"already quantised \(int8\)"):
        unrolled.quantize(unrolled.quantize(lm(), "int8"), "bf16")


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_checkpoint_round_trip_stores_the_small_weights(tmp_path, kind):
    q = unrolled.quantize(lm(), kind)
    save_model(tmp_path / "q", q, {"app": "test"})
    arrays, meta = load_checkpoint(tmp_path / "q")
    assert meta["quantized"] == kind and meta["app"] == "test"
    small = {"int8": np.int8, "bf16": np.uint16}[kind]
    for k in ("W_xh_l0", "W_hh_l0", "W_xh_l1", "W_hh_l1"):
        assert arrays[f"model/rnn.{k}"].dtype == small
        assert (f"scale/rnn.{k}" in arrays) == (kind == "int8")
        if kind == "int8":
            np.testing.assert_array_equal(arrays[f"scale/rnn.{k}"], q.rnn.quantized.scales[k])
    assert arrays["model/head.W"].dtype == np.float32
    r, _ = load_model(tmp_path / "q")
    assert quantized_kind(r) == kind
    for k, v in q.params.items():
        np.testing.assert_array_equal(r.params[k], v)
    np.testing.assert_array_equal(r(TOKENS)[0], q(TOKENS)[0])
    state, x = None, TOKENS[0]
    ya, state_a = r.step(x, state)
    yb, _ = q.step(x, state)
    np.testing.assert_array_equal(ya, yb)


def test_float_checkpoints_load_unchanged(tmp_path):
    m = lm()
    save_model(tmp_path / "f", m)
    arrays, meta = load_checkpoint(tmp_path / "f")
    assert "quantized" not in meta and not any(k.startswith("scale/") for k in arrays)
    r, _ = load_model(tmp_path / "f")
    assert quantized_kind(r) is None
    np.testing.assert_array_equal(r(TOKENS)[0], m.eval()(TOKENS)[0])


def _rewrite(src, dst, change_arrays=None, change_meta=None):
    arrays, meta = load_checkpoint(src)
    if change_arrays:
        change_arrays(arrays)
    if change_meta:
        change_meta(meta)
    save_checkpoint(dst, arrays, meta)  # sealed afresh: only the schema check can refuse it
    return dst


@pytest.mark.parametrize(
    "arrays_change, meta_change, message",
    [
        (lambda a: a.pop("scale/rnn.W_hh_l1"), None, "row scales"),
        (lambda a: a.update({"scale/rnn.W_hh_l1": -a["scale/rnn.W_hh_l1"]}), None, "positive float32"),
        (lambda a: a.update({"model/rnn.W_xh_l0": a["model/rnn.W_xh_l0"].astype(np.int16)}), None, "int8"),
        (
            lambda a: a.update({"model/rnn.W_hh_l0": a["model/rnn.W_hh_l0"][:, :3].copy()}),
            None,
            "int8(64, 16)",
        ),
        (None, lambda m: m.update({"quantized": "int4"}), "quantized: expected 'int8' or 'bf16'"),
        (None, lambda m: m.pop("quantized"), "no row scales in a float checkpoint"),
    ],
)
def test_a_quantised_checkpoint_is_schema_checked(tmp_path, arrays_change, meta_change, message):
    save_model(tmp_path / "q", unrolled.quantize(lm(), "int8"))
    bad = _rewrite(tmp_path / "q", tmp_path / "bad", arrays_change, meta_change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(bad)


def test_saving_a_float_model_drops_a_stale_quantized_mark(tmp_path):
    save_model(tmp_path / "f", lm(), {"quantized": "int8"})  # meta copied from a quantised checkpoint
    assert "quantized" not in json.loads((tmp_path / "f" / "meta.json").read_text())["meta"]
    assert quantized_kind(load_model(tmp_path / "f")[0]) is None


def test_a_model_that_has_run_is_quantised_too():
    m = lm()
    y, _ = m(TOKENS)  # its layers now hold forward caches
    m.backward(np.ones_like(y))
    q = unrolled.quantize(m, "int8")
    assert np.abs(q(TOKENS)[0] - m.eval()(TOKENS)[0]).max() < 0.05


def test_a_variant_layer_is_refused_rather_than_quantised_as_a_plain_cell():
    """The int8/bf16 kernels compute the plain equations: a layer-norm, peephole, projected or zoneout layer
    would silently lose its option."""
    import unrolled

    for layer in (
        unrolled.LSTM(4, 8, layer_norm=True, seed=0),
        unrolled.LSTM(4, 8, peephole=True, seed=0),
        unrolled.LSTM(4, 8, proj_size=3, seed=0),
        unrolled.GRU(4, 8, zoneout=0.1, seed=0),
    ):
        with pytest.raises(ValueError, match="quantisation covers plain RNN, LSTM and GRU"):
            unrolled.quantize(layer, "int8")
