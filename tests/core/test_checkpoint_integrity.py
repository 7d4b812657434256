"""Nothing in a checkpoint is trusted: every bit flip in meta.json or the arrays is refused, a field of the
wrong type is refused or changes nothing, sizes are checked before anything is allocated, a symlink or a
FIFO is never followed or read, and NaN/inf weights are refused at save and at load, naming the tensor.

Fuzzing uses seeded NumPy randomness (hypothesis is not installed in the project's environment)."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc

import numpy as np
import pytest

from unrolled import checkpoint as ck
from unrolled.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    model_param_shapes,
    save_checkpoint,
    save_model,
)
from unrolled.models import ModelConfig, SequenceModel
from unrolled.optim import Adam, CosineLR
from unrolled.tbptt import TokenStreams, lm_loss
from unrolled.train import Trainer

V = 5


def _trainer(directory, seed=1):
    """A small LM run whose checkpoint holds every kind of field: config, Adam slots and betas, the
    generators of its dropout masks, a carried LSTM state (a tuple), a schedule."""
    model = SequenceModel(
        ModelConfig(vocab_size=V, embed_dim=3, hidden_size=4, dropout=0.1, recurrent_dropout=0.1, seed=seed)
    )
    ids = (np.arange(400) * 3 % V).astype(np.int64)
    return Trainer(
        model,
        Adam(model.params, lr=0.01),
        TokenStreams(ids, 2, 5),
        lm_loss,
        carry_state=True,
        max_steps=3,
        schedule=CosineLR(0.01, 10),
        checkpoint_dir=directory,
        progress=False,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    _trainer(d).fit()
    return d


def _reseal(directory, record):
    """What the documentation says the seal is, recomputed by hand: a forger can do this, so every field
    must also pass its schema."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    body["sha256"] = hashlib.sha256(json.dumps(body, indent=1).encode()).hexdigest()
    (directory / "meta.json").write_text(json.dumps(body, indent=1))


def _state(trainer):
    """Everything a resume restores, as comparable values."""
    osd = trainer.optimizer.state_dict()
    arrays = {f"model/{k}": v for k, v in trainer.model.params.items()}
    arrays.update({f"optim/{k}": v for k, v in osd.pop("arrays").items()})
    counters = {k: getattr(trainer, k) for k in ("step", "epoch", "pos", "lr_scale", "best_val", "tokens")}
    state = trainer.state if isinstance(trainer.state, tuple) else (trainer.state,)
    return arrays, json.dumps([osd, trainer.model.rng_state(), counters]), state


def _assert_same_state(a, b):
    assert a[0].keys() == b[0].keys() and a[1] == b[1]
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)
    assert len(a[2]) == len(b[2]) and all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True))


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_the_seal_is_the_sha256_of_the_record_as_documented(run_dir):
    record = json.loads((run_dir / "last" / "meta.json").read_text())
    body = {k: v for k, v in record.items() if k != "sha256"}
    assert record["sha256"] == hashlib.sha256(json.dumps(body, indent=1).encode()).hexdigest()
    assert (run_dir / "last" / "meta.json").read_text() == json.dumps(record, indent=1)


def test_every_random_bit_flip_in_meta_json_is_refused(run_dir, tmp_path):
    d = _copy(run_dir / "last", tmp_path / "ck")
    good = (d / "meta.json").read_bytes()
    rng = np.random.default_rng(20261204)
    fresh = _trainer(tmp_path / "unused", seed=9)
    before = _state(fresh)
    refused = 0
    for _ in range(300):
        flipped = bytearray(good)
        i, bit = int(rng.integers(len(good))), int(rng.integers(8))
        flipped[i] ^= 1 << bit
        (d / "meta.json").write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=r"meta\.json|not an unrolled checkpoint|format version"):
            fresh.load(d)
        refused += 1
    _assert_same_state(_state(fresh), before)  # a refused load changes nothing
    assert refused == 300


def test_every_random_bit_flip_in_the_arrays_file_is_refused(run_dir, tmp_path):
    d = _copy(run_dir / "last", tmp_path / "ck")
    f = next(d.glob("arrays-*.safetensors"))
    good = f.read_bytes()
    rng = np.random.default_rng(7)
    for _ in range(100):
        flipped = bytearray(good)
        i = int(rng.integers(len(good)))
        flipped[i] ^= 1 << int(rng.integers(8))
        f.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="arrays file"):
            load_checkpoint(d)


def _paths(value, path=()):
    """Every field of a JSON value: (path, value), containers included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _kind(v):
    if v is None or isinstance(v, bool | str | list | dict):
        return type(v).__name__
    return "number"


_OTHERS = [None, True, 2.5, "x", [], {}]
# Fields whose schema allows two types: the other one is a valid value, not a corruption.
_ALSO_VALID = {(("meta", "trainer", "best_val"), "number"), (("meta", "config", "seed"), "NoneType")}


def _same_state(a, b) -> bool:
    try:
        _assert_same_state(a, b)
    except AssertionError:
        return False
    return True


def test_a_field_of_any_other_type_is_refused_or_changes_nothing(run_dir, tmp_path):
    """For every field of a training checkpoint and every JSON type it does not have: the resume
    (Trainer.load) and load_model either refuse with a CheckpointError (no other exception), or produce
    exactly the state the untouched checkpoint gives (a field neither reads: the schedule's record)."""
    good = json.loads((run_dir / "last" / "meta.json").read_text())
    baseline_trainer = _trainer(tmp_path / "unused", seed=9)
    baseline_trainer.load(run_dir / "last")
    baseline = _state(baseline_trainer)
    base_model = load_model(run_dir / "last")[0]
    fields, tried, refused, silent = set(), 0, 0, []
    for path, value in list(_paths(good)):
        if not path or path == ("sha256",):
            continue
        fields.add(path)
        for other in _OTHERS:
            if _kind(other) == _kind(value) or (path, _kind(other)) in _ALSO_VALID:
                continue
            record = json.loads(json.dumps(good))
            node = record
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = other
            d = tmp_path / f"ck{tried}"
            _copy(run_dir / "last", d)
            _reseal(d, record)
            tried += 1
            t = _trainer(tmp_path / "unused", seed=9)
            try:
                t.load(d)
            except CheckpointError:
                refused += 1
            else:
                if not _same_state(_state(t), baseline):
                    silent.append(("Trainer.load", path, other))
            try:
                model, _ = load_model(d)
            except CheckpointError:
                pass
            else:
                same = model.config == base_model.config and all(
                    np.array_equal(model.params[k], v) for k, v in base_model.params.items()
                )
                if not same:
                    silent.append(("load_model", path, other))
    assert silent == []
    assert len(fields) > 80 and tried >= len(fields)
    assert refused > 0.9 * tried  # the rest: fields no loader reads (the schedule's record)


def test_a_huge_vocabulary_in_a_small_checkpoint_is_refused_before_allocating(tmp_path):
    save_model(tmp_path / "ck", SequenceModel(ModelConfig(vocab_size=V, hidden_size=4, seed=0)))
    record = json.loads((tmp_path / "ck" / "meta.json").read_text())
    record["meta"]["config"]["vocab_size"] = 10**8  # 10^8 × 32 float32 = 12.8 GB if it were built
    _reseal(tmp_path / "ck", record)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"config implies 'embed.W' of shape \(100000000, 32\)"):
            load_model(tmp_path / "ck")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


def test_a_listing_larger_than_the_arrays_file_or_the_cap_is_refused_before_reading(tmp_path):
    d = save_checkpoint(tmp_path / "ck", {"w": np.ones((3, 4), np.float32)}, {})
    record = json.loads((d / "meta.json").read_text())
    big = json.loads(json.dumps(record))
    big["arrays"]["w"] = ["<f4", [10**6, 10**6]]
    _reseal(d, big)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"expected arrays within the arrays file"):
            load_checkpoint(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    _reseal(d, record)
    with pytest.raises(CheckpointError, match=r"arrays_bytes: expected 8\.\.100 \(max_bytes\)"):
        load_checkpoint(d, max_bytes=100)
    assert load_checkpoint(d)[0]["w"].shape == (3, 4)


def test_a_safetensors_header_that_lies_is_refused(tmp_path):
    """A consistent forgery (arrays hashed, meta resealed) whose header claims more data than the file."""
    d = save_checkpoint(tmp_path / "ck", {"w": np.ones(4, np.float32)}, {})
    f = next(d.glob("arrays-*.safetensors"))
    blob = f.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["w"]["shape"], header["w"]["data_offsets"] = [10**9], [0, 4 * 10**9]
    text = json.dumps(header).encode()
    forged = len(text).to_bytes(8, "little") + text + blob[8 + n :]
    digest = hashlib.sha256(forged).hexdigest()
    f.unlink()
    (d / f"arrays-{digest[:16]}.safetensors").write_bytes(forged)
    record = json.loads((d / "meta.json").read_text())
    record.update(arrays_file=f"arrays-{digest[:16]}.safetensors", arrays_bytes=len(forged))
    record.update(arrays_sha256=digest)
    _reseal(d, record)
    with pytest.raises(CheckpointError, match=r"tensor 'w': expected dtype, shape and data_offsets inside"):
        load_checkpoint(d)


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="POSIX")
def test_a_symlinked_arrays_file_is_refused_without_reading_it(tmp_path):
    d = save_checkpoint(tmp_path / "ck", {"w": np.ones(4, np.float32)}, {})
    f = next(d.glob("arrays-*.safetensors"))
    size = f.stat().st_size
    outside = tmp_path / "outside.bin"
    with open(outside, "wb") as g:  # a sparse 1 GiB file: reading it whole would show in the peak
        g.truncate(1 << 30)
    f.unlink()
    f.symlink_to(outside)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"arrays-[0-9a-f]{16}\.safetensors is a symlink"):
            load_checkpoint(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    f.unlink()
    with open(outside, "wb") as g:
        g.truncate(size)
    f.symlink_to(outside)  # even one of the right size: the file must be the directory's own
    with pytest.raises(CheckpointError, match="is a symlink"):
        load_checkpoint(d)
    f.unlink()
    os.mkfifo(f)  # a FIFO would block a plain open() forever
    with pytest.raises(CheckpointError, match="expected a regular file"):
        load_checkpoint(d)


def test_a_symlinked_meta_json_is_refused(tmp_path):
    d = save_checkpoint(tmp_path / "ck", {"w": np.ones(4, np.float32)}, {})
    (tmp_path / "elsewhere.json").write_bytes((d / "meta.json").read_bytes())
    (d / "meta.json").unlink()
    (d / "meta.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(CheckpointError, match=r"meta\.json is a symlink"):
        load_checkpoint(d)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nonfinite_weight_is_refused_at_save_naming_the_tensor(tmp_path, bad):
    model = SequenceModel(ModelConfig(vocab_size=V, hidden_size=4, seed=0))
    model.params["rnn.W_hh_l0"][1, 2] = bad
    kind = "nan" if np.isnan(bad) else "inf"
    with pytest.raises(CheckpointError, match=rf"'model/rnn.W_hh_l0' has 1 non-finite values \({kind}\)"):
        save_model(tmp_path / "ck", model)
    assert not (tmp_path / "ck" / "meta.json").exists()


def test_a_nonfinite_weight_is_refused_at_load_naming_the_tensor(tmp_path, monkeypatch):
    model = SequenceModel(ModelConfig(vocab_size=V, hidden_size=4, seed=0))
    model.params["head.b"][:2] = np.nan
    monkeypatch.setattr(ck, "first_nonfinite", lambda arrays: None)  # a writer without the check
    save_model(tmp_path / "ck", model)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"'model/head.b' has 2 non-finite values \(nan\)"):
        load_model(tmp_path / "ck")


def test_huge_finite_weights_are_not_mistaken_for_nonfinite(tmp_path):
    """The one-sum test overflows on large finite values; the element check must then clear them."""
    w = np.full(1000, 3e38, np.float32)  # sums to inf in float32, and is finite
    save_checkpoint(tmp_path / "ck", {"w": w}, {})
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "ck")[0]["w"], w)


@pytest.mark.parametrize(
    "kw",
    [
        dict(vocab_size=7, embed_dim=3, hidden_size=5),
        dict(vocab_size=7, cell="gru", hidden_size=4, num_layers=2, bidirectional=True, output_size=3),
        dict(vocab_size=7, cell="gru", reset_after=False, hidden_size=4),
        dict(
            input="dense",
            input_size=6,
            cell="rnn",
            hidden_size=3,
            num_layers=3,
            bidirectional=True,
            output_size=2,
        ),
    ],
)
def test_model_param_shapes_are_the_shapes_of_the_built_model(kw):
    config = ModelConfig(**kw)
    assert model_param_shapes(config) == {k: v.shape for k, v in SequenceModel(config).params.items()}


def test_a_version_1_checkpoint_without_a_seal_still_loads(tmp_path):
    model = SequenceModel(ModelConfig(vocab_size=V, hidden_size=4, seed=0))
    d = save_model(tmp_path / "ck", model)
    record = json.loads((d / "meta.json").read_text())
    del record["sha256"]
    record["version"] = 1
    (d / "meta.json").write_text(json.dumps(record, indent=1))
    loaded, _ = load_model(d)
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)
    record["sha256"] = "0" * 64  # a version-1 record has exactly the version-1 entries
    (d / "meta.json").write_text(json.dumps(record, indent=1))
    with pytest.raises(CheckpointError, match="expected the entries"):
        load_model(d)


def test_our_temporaries_are_cleaned_and_a_users_are_not(tmp_path):
    d = save_checkpoint(tmp_path / "ck", {"w": np.ones(2)}, {})
    (d / ".notes.tmp").write_text("mine")
    dead = ".unrolled-999999999-0123456789abcdef.tmp"  # our name shape, a pid that does not run
    (d / dead).write_text("a crashed writer's")
    save_checkpoint(d, {"w": np.zeros(2)}, {})
    assert (d / ".notes.tmp").exists() and not (d / dead).exists()


def test_a_flip_that_keeps_the_values_is_refused_too(run_dir, tmp_path):
    """'1e-08' -> '1E-08' is one bit (0x65 -> 0x45) and parses to the same number, so the seal alone would
    pass it: the file must also be byte-identical to the form unrolled writes."""
    d = _copy(run_dir / "last", tmp_path / "ck")
    text = (d / "meta.json").read_text()
    assert text.count("1e-08") == 1  # Adam's eps
    (d / "meta.json").write_text(text.replace("1e-08", "1E-08"))
    with pytest.raises(CheckpointError, match=r"meta\.json is corrupt \(not byte-identical"):
        load_checkpoint(d)
