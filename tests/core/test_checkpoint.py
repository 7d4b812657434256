"""Checkpoints round-trip exactly, are written atomically (a crash at any point leaves the old or the new
checkpoint, never a mix), and refuse corrupt, truncated, foreign and other-architecture files with a
clear message without ever executing anything from them."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from unrolled import checkpoint as ck
from unrolled.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_arrays,
    save_checkpoint,
    save_model,
)
from unrolled.models import ModelConfig, SequenceModel


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "model/W": rng.standard_normal((3, 4)).astype(np.float32),
        "model/b": rng.standard_normal(3),
        "ids": rng.integers(0, 9, size=5),
    }


def _meta(step=7):
    rng = np.random.default_rng(1)
    return {"step": step, "rng": rng.bit_generator.state, "val_loss": float("nan"), "name": "ü"}


def _arrays_file(d):
    return d / json.loads((d / "meta.json").read_text())["arrays_file"]


def test_round_trip_is_exact_including_rng_state(tmp_path):
    a, m = _arrays(), _meta()
    save_checkpoint(tmp_path / "ck", a, m)
    b, m2 = load_checkpoint(tmp_path / "ck")
    assert b.keys() == a.keys()
    for k in a:
        assert b[k].dtype == a[k].dtype
        np.testing.assert_array_equal(b[k], a[k])
    rng = np.random.default_rng()
    rng.bit_generator.state = m2["rng"]
    assert rng.random() == np.random.default_rng(1).random()
    assert m2["step"] == 7 and m2["name"] == "ü"


def test_overwrite_keeps_one_arrays_file_and_no_temporaries(tmp_path):
    d = tmp_path / "ck"
    save_checkpoint(d, _arrays(0), _meta(1))
    save_checkpoint(d, _arrays(1), _meta(2))
    assert sorted(p.name for p in d.iterdir() if p.name != "meta.json") == [_arrays_file(d).name]
    np.testing.assert_array_equal(load_checkpoint(d)[0]["model/W"], _arrays(1)["model/W"])


@pytest.mark.parametrize("crash_on", ["arrays", "meta"])
def test_crash_mid_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, crash_on):
    d = tmp_path / "ck"
    save_checkpoint(d, _arrays(0), _meta(1))
    real_replace = os.replace

    def crashing_replace(src, dst):
        name = os.path.basename(dst)
        if (crash_on == "meta") == (name == "meta.json"):
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(d, _arrays(1), _meta(2))
    monkeypatch.setattr(ck.os, "replace", real_replace)
    arrays, meta = load_checkpoint(d)
    assert meta["step"] == 1
    for k, v in _arrays(0).items():
        np.testing.assert_array_equal(arrays[k], v)


def test_truncated_arrays_file_is_refused(tmp_path):
    d = save_checkpoint(tmp_path / "ck", _arrays(), _meta())
    f = _arrays_file(d)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt \(\d+ bytes, expected \d+\)"):
        load_checkpoint(d)


def test_corrupted_byte_is_refused(tmp_path):
    d = save_checkpoint(tmp_path / "ck", _arrays(), _meta())
    f = _arrays_file(d)
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt \\(SHA-256 mismatch\\)"):
        load_checkpoint(d)


def test_truncated_or_garbage_meta_is_refused(tmp_path):
    d = save_checkpoint(tmp_path / "ck", _arrays(), _meta())
    text = (d / "meta.json").read_text()
    (d / "meta.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="meta.json is corrupt or not JSON"):
        load_checkpoint(d)


def test_things_that_are_not_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"not a checkpoint \(no meta.json\)"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"model": "bert"}')
    with pytest.raises(CheckpointError, match="not an unrolled checkpoint"):
        load_checkpoint(tmp_path / "other")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_pickle_is_never_executed(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit())
    d = save_checkpoint(tmp_path / "ck", _arrays(), _meta())
    _arrays_file(d).write_bytes(payload)  # a pickle in place of the arrays
    with pytest.raises(CheckpointError):
        load_checkpoint(d)
    (d / "meta.json").write_bytes(payload)  # and in place of the metadata
    with pytest.raises(CheckpointError):
        load_checkpoint(d)
    assert not _Exploit.marker.exists()


def test_other_architecture_is_refused_with_a_clear_message_and_nothing_copied(tmp_path):
    lstm = SequenceModel(ModelConfig(vocab_size=5, hidden_size=4, seed=0))
    gru = SequenceModel(ModelConfig(vocab_size=5, hidden_size=4, cell="gru", seed=0))
    big = SequenceModel(ModelConfig(vocab_size=5, hidden_size=6, seed=0))
    save_model(tmp_path / "ck", lstm)
    arrays, _ = load_checkpoint(tmp_path / "ck")
    before = {k: v.copy() for k, v in big.params.items()}
    with pytest.raises(
        CheckpointError, match=r"another architecture: 'rnn.W_xh_l0' is float32\(16, 32\), this model"
    ):
        restore_arrays(big.params, arrays, "model/")
    for k in before:
        np.testing.assert_array_equal(big.params[k], before[k])
    with pytest.raises(CheckpointError, match="another architecture"):
        restore_arrays(gru.params, arrays, "model/")
    with pytest.raises(CheckpointError, match="missing"):
        restore_arrays({**lstm.params, "extra": np.zeros(2)}, arrays, "model/")


def test_save_model_and_load_model_rebuild_the_same_function(tmp_path):
    model = SequenceModel(ModelConfig(vocab_size=6, hidden_size=5, num_layers=2, cell="gru", seed=3))
    for v in model.params.values():
        v += 0.1
    save_model(tmp_path / "m", model, {"note": "x"})
    loaded, meta = load_model(tmp_path / "m")
    assert meta["note"] == "x" and loaded.config == model.config
    x = np.array([[1, 2], [3, 4], [5, 0]])
    np.testing.assert_array_equal(loaded.forward(x)[0], model.eval().forward(x)[0])


def test_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="meta: expected a JSON-able dict"):
        save_checkpoint(tmp_path / "ck", _arrays(), {"f": object()})


def _dead_pid():
    """The pid of a process that has exited and been reaped (so it names no running process)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_save_leaves_a_users_tmp_and_arrays_files_alone(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    user = {
        "notes.tmp": b"mine",
        ".notes.tmp": b"hidden, mine",
        "arrays-old.safetensors": b"my arrays",
        "arrays-0123456789abcdef.safetensors": b"other bytes than its name says",
    }
    for name, data in user.items():
        (d / name).write_bytes(data)
    save_checkpoint(d, _arrays(0), _meta(1))
    save_checkpoint(d, _arrays(1), _meta(2))
    for name, data in user.items():
        assert (d / name).read_bytes() == data
    ours = sorted(p.name for p in d.iterdir() if p.name not in user)
    assert ours == sorted(["meta.json", _arrays_file(d).name])


def test_save_removes_dead_writers_temporaries_and_keeps_a_live_ones(tmp_path):
    d = save_checkpoint(tmp_path / "ck", _arrays(0), _meta(1))
    dead = d / f".unrolled-{_dead_pid()}-{'a' * 16}.tmp"
    live = d / f".unrolled-{os.getpid()}-{'b' * 16}.tmp"  # as if another thread were writing it now
    dead.write_bytes(b"half")
    live.write_bytes(b"in flight")
    save_checkpoint(d, _arrays(1), _meta(2))
    assert not dead.exists()
    assert live.read_bytes() == b"in flight"


def test_save_removes_an_old_orphan_of_a_crashed_save_but_not_a_fresh_one(tmp_path):
    d = save_checkpoint(tmp_path / "ck", _arrays(0), _meta(1))
    old_orphan = _arrays_file(d)  # its own content hash names it, as for a save killed before its commit
    fresh_orphan = _arrays_file(save_checkpoint(tmp_path / "other", _arrays(2), _meta(3)))
    fresh_copy = d / fresh_orphan.name
    fresh_copy.write_bytes(fresh_orphan.read_bytes())  # may be another writer's, just before its commit
    (d / "meta.json").unlink()  # no meta names either file now
    os.utime(old_orphan, (0, 0))
    save_checkpoint(d, _arrays(1), _meta(2))
    assert not old_orphan.exists()
    assert fresh_copy.exists()


def test_atomic_files_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        d = save_checkpoint(tmp_path / "ck", _arrays(), _meta())
    finally:
        os.umask(old)
    assert (d / "meta.json").stat().st_mode & 0o777 == 0o644
