"""The Trainer: a small model learns a memory task below a stated loss; metrics, validation and early
stopping; non-finite steps are refused (which step, which tensor) under both policies; resume is exact
in-process, and after a real SIGKILL of a real training process; Ctrl-C stops cleanly with a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from unrolled.checkpoint import CheckpointError, load_checkpoint, load_model
from unrolled.data.batching import SequenceBatches
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy
from unrolled.optim import SGD, Adam, AdamW, CosineLR, WarmupLR
from unrolled.train import NonFiniteError, Trainer


def _recall_data(n, T=8, V=4, seed=0):
    """Many-to-one memory task: the label is the first token of a random sequence (chance loss ln 4)."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, V, size=int(rng.integers(3, T + 1))) for _ in range(n)]
    return seqs, np.array([s[0] for s in seqs])


def classify_loss(model, batch):
    logits, _ = model.forward(batch.x, lengths=batch.lengths)
    loss, dy = cross_entropy(logits, batch.y)
    model.backward(dy)
    return loss, int(batch.lengths.sum())


def _mean_loss(model, data):
    losses = [cross_entropy(model.forward(b.x, lengths=b.lengths)[0], b.y)[0] for b in data.epoch(0)]
    return float(np.mean(losses))


def test_small_lstm_learns_first_token_recall_below_0_1_nats():
    seqs, labels = _recall_data(512)
    data = SequenceBatches(seqs, labels, batch_size=32, bucket=True, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=8, hidden_size=24, output="last", seed=0))
    val_seqs, val_labels = _recall_data(128, seed=1)
    val = SequenceBatches(val_seqs, val_labels, batch_size=64, shuffle=False)
    trainer = Trainer(
        model,
        Adam(model.params, lr=0.02),
        data,
        classify_loss,
        epochs=25,
        clip_norm=5.0,
        progress=False,
        val_fn=lambda m: _mean_loss(m, val),
        eval_every=100,
    )
    result = trainer.fit()
    assert result.reason == "epochs" and result.step == 25 * 16
    assert _mean_loss(model.eval(), val) < 0.1  # chance is ln 4 ≈ 1.386


def test_metrics_jsonl_validation_and_early_stopping(tmp_path):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    vals = iter([1.0, 0.5, 0.6, 0.55, 0.7, 0.4])
    trainer = Trainer(
        model,
        SGD(model.params, lr=0.1),
        data,
        classify_loss,
        max_steps=100,
        eval_every=2,
        val_fn=lambda m: next(vals),
        patience=3,
        checkpoint_dir=tmp_path / "ck",
        metrics_path=tmp_path / "m.jsonl",
        progress=False,
    )
    result = trainer.fit()
    assert result.reason == "early_stopping" and result.step == 10 and result.best_val_loss == 0.5
    lines = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 11))
    for r in lines:
        assert {"step", "epoch", "loss", "grad_norm", "lr", "tokens", "tokens_per_s", "wall_time"} <= r.keys()
        assert r["grad_norm"] > 0 and r["lr"] == 0.1
    assert [r.get("val_loss") for r in lines if "val_loss" in r] == [1.0, 0.5, 0.6, 0.55, 0.7]
    assert load_checkpoint(tmp_path / "ck" / "best")[1]["trainer"]["step"] == 4
    assert load_checkpoint(tmp_path / "ck" / "last")[1]["trainer"]["step"] == 10
    assert load_model(tmp_path / "ck" / "last")[0].config == model.config


def _poisoned(at_step, where):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss, n = classify_loss(model, batch)
        if calls["n"] == at_step:
            if where == "loss":
                loss = float("nan")
            else:
                model.grads["rnn.W_hh_l0"][0, 0] = np.inf
        return loss, n

    return loss_fn


@pytest.mark.parametrize(
    "where, what",
    [("loss", "the loss is nan"), ("grad", "the gradient of 'rnn.W_hh_l0' has 1 non-finite values")],
)
def test_nonfinite_step_stops_names_step_and_tensor_and_keeps_last_good_checkpoint(tmp_path, where, what):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    trainer = Trainer(
        model,
        Adam(model.params, lr=0.01),
        data,
        _poisoned(3, where),
        max_steps=10,
        checkpoint_dir=tmp_path,
        checkpoint_every=1,
        metrics_path=tmp_path / "m.jsonl",
        progress=False,
    )
    with pytest.raises(NonFiniteError, match=f"step 3: {what}.*not applied.*last good checkpoint.*step 2"):
        trainer.fit()
    strict = [
        json.loads(s, parse_constant=pytest.fail) for s in (tmp_path / "m.jsonl").read_text().splitlines()
    ]
    assert strict[-1]["step"] == 3 and what.startswith(strict[-1]["nonfinite"][:15])
    arrays, meta = load_checkpoint(tmp_path / "last")
    assert meta["trainer"]["step"] == 2
    for k, v in model.params.items():  # the bad step changed nothing
        np.testing.assert_array_equal(v, arrays[f"model/{k}"])


def test_nonfinite_step_skipped_lowers_the_lr_and_goes_on(tmp_path):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    trainer = Trainer(
        model,
        SGD(model.params, lr=0.2),
        data,
        _poisoned(3, "grad"),
        max_steps=6,
        on_nonfinite="skip",
        progress=False,
    )
    result = trainer.fit()
    assert result.step == 6
    assert [r["lr"] for r in trainer.history] == [0.2, 0.2, 0.2, 0.1, 0.1, 0.1]
    assert trainer.history[2]["skipped"] and "rnn.W_hh_l0" in trainer.history[2]["nonfinite"]
    assert all(np.isfinite(v).all() for v in model.params.values())


def _setup(tmp_path, max_steps, name="ck"):
    seqs, labels = _recall_data(96)
    data = SequenceBatches(seqs, labels, batch_size=16, bucket=True, seed=3)
    cfg = ModelConfig(
        vocab_size=4,
        embed_dim=4,
        hidden_size=8,
        output="last",
        cell="gru",
        dropout=0.3,
        num_layers=2,
        input_dropout=0.2,
        recurrent_dropout=0.2,
        output_dropout=0.1,
        seed=5,
    )
    model = SequenceModel(cfg)
    opt = AdamW(model.params, lr=0.02)
    return Trainer(
        model,
        opt,
        data,
        classify_loss,
        max_steps=max_steps,
        clip_norm=1.0,
        progress=False,
        schedule=WarmupLR(CosineLR(0.02, 20), 3),
        checkpoint_dir=tmp_path / name,
        val_fn=lambda m: 1.0,
        eval_every=4,
        metrics_path=tmp_path / f"{name}.jsonl",
    )


def test_resume_in_process_is_bit_exact(tmp_path):
    full = _setup(tmp_path, 20, "full")
    full.fit()
    first = _setup(tmp_path, 9, "part")  # stops mid-epoch (6 batches per epoch)
    first.fit()
    second = _setup(tmp_path, 20, "part")
    second.fit(resume=True)
    for k, v in full.model.params.items():
        np.testing.assert_array_equal(second.model.params[k], v, err_msg=k)
    lines = [json.loads(s) for s in (tmp_path / "part.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if not r.get("final")] == list(range(1, 21))


def test_resume_refuses_another_architecture(tmp_path):
    _setup(tmp_path, 2).fit()
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", cell="lstm"))
    t = Trainer(
        model,
        AdamW(model.params),
        [],
        classify_loss,
        max_steps=5,
        checkpoint_dir=tmp_path / "ck",
        progress=False,
    )
    with pytest.raises(CheckpointError, match=r"another architecture: cell 'gru' \(this model: 'lstm'\)"):
        t.fit(resume=True)


SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import time

    import numpy as np
    from unrolled.models import ModelConfig, SequenceModel
    from unrolled.optim import AdamW, CosineLR, WarmupLR
    from unrolled.tbptt import TokenStreams, lm_loss
    from unrolled.train import Trainer

    out, max_steps = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    ids = (np.cumsum(rng.integers(1, 3, size=2000)) % 7).astype(np.uint8)  # a learnable stream
    model = SequenceModel(ModelConfig(vocab_size=7, embed_dim=6, hidden_size=16, num_layers=2, dropout=0.2,
                                      recurrent_dropout=0.1, input_dropout=0.1, seed=1))
    stall = int(os.environ.get("STALL_AT", "0"))  # a safety net: the killed run cannot finish first


    def loss_fn(model, batch, state):
        if trainer.step + 1 == stall:
            time.sleep(120)
        return lm_loss(model, batch, state)


    trainer = Trainer(model, AdamW(model.params, lr=0.01), TokenStreams(ids[:1600], 4, 8), loss_fn,
                      carry_state=True, max_steps=max_steps, clip_norm=1.0, eval_every=10,
                      val_fn=lambda m: 1.0, schedule=WarmupLR(CosineLR(0.01, max_steps), 10),
                      checkpoint_dir=out, checkpoint_every=1, metrics_path=out + "/metrics.jsonl",
                      progress=False)
    r = trainer.fit(resume=True)
    print(r.reason, r.step)
    """
)


def _run(script, out, steps, **kw):
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _last_step(metrics):
    try:
        lines = metrics.read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkill_at_random_step_then_resume_gives_bitwise_identical_weights(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    steps = 120  # TokenStreams: (1599 // 4) // 8 = 50 chunks per epoch, so the run crosses epochs
    ref = _run(script, tmp_path / "ref", steps)
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    kill_at = int(np.random.default_rng().integers(3, steps - 30))
    env = {**os.environ, "STALL_AT": str(kill_at + 20)}
    proc = _run(script, tmp_path / "run", steps, env=env)
    deadline = time.monotonic() + 120
    while _last_step(tmp_path / "run" / "metrics.jsonl") < kill_at and proc.poll() is None:
        assert time.monotonic() < deadline, "training did not progress"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, f"the run ended before the kill at step {kill_at}"
    resumed = _run(script, tmp_path / "run", steps)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert out.split() == ["max_steps", str(steps)]
    a, meta_a = load_checkpoint(tmp_path / "ref" / "last")
    b, meta_b = load_checkpoint(tmp_path / "run" / "last")
    assert meta_a["trainer"]["step"] == meta_b["trainer"]["step"] == steps
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after kill at step ~{kill_at} and resume"
    steps_logged = [
        json.loads(s)["step"] for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps_logged[:steps] == list(range(1, steps + 1))


def test_ctrl_c_stops_cleanly_and_writes_a_checkpoint(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    proc = _run(script, tmp_path / "run", 100000)
    deadline = time.monotonic() + 120
    while _last_step(tmp_path / "run" / "metrics.jsonl") < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    reason, step = out.split()
    assert reason == "interrupted" and "interrupted" in err
    assert load_checkpoint(tmp_path / "run" / "last")[1]["trainer"]["step"] == int(step) >= 5
    if os.name == "posix":
        assert "Traceback" not in err


def test_bad_trainer_arguments_are_named():
    model = SequenceModel(ModelConfig(vocab_size=4, hidden_size=4, output="last", seed=0))
    opt = SGD(model.params, lr=0.1)
    with pytest.raises(ValueError, match="max_steps / epochs.*: expected at least one"):
        Trainer(model, opt, [], classify_loss)
    with pytest.raises(ValueError, match="on_nonfinite: expected 'stop' or 'skip', got 'ignore'"):
        Trainer(model, opt, [], classify_loss, max_steps=1, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="checkpoint_every: needs checkpoint_dir"):
        Trainer(model, opt, [], classify_loss, max_steps=1, checkpoint_every=5)
    with pytest.raises(ValueError, match="patience: early stopping needs val_fn and eval_every"):
        Trainer(model, opt, [], classify_loss, max_steps=1, patience=2)
    with pytest.raises(ValueError, match="batches: epoch 0 has no batches"):
        Trainer(model, opt, [], classify_loss, max_steps=3, progress=False).fit()
