"""The Trainer: a small model learns a memory task below a stated loss; metrics, validation and early
stopping; non-finite steps are refused (which step, which tensor) under both policies, non-finite weights
after an update too; a diverging run (lr=100) stops with DivergenceError; resume is exact in-process,
after a real SIGKILL and after a SIGTERM of a real training process; Ctrl-C stops cleanly with a
checkpoint, a second signal aborts; the metrics rewrite on resume is atomic."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from unrolled.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from unrolled.data.batching import SequenceBatches
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy
from unrolled.optim import SGD, Adam, AdamW, CosineLR, WarmupLR
from unrolled.tbptt import TokenStreams, lm_loss
from unrolled.train import DivergenceError, LossBound, NonFiniteError, Trainer


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


def _stops_between_validations(tmp_path, vals, max_steps=7, resume=False):
    """A run validating every 2 steps that stops at step ``max_steps`` (a final validation follows, the
    last value of ``vals``); best/ and last/ in tmp_path / "ck"."""
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    vals = iter(vals)
    trainer = Trainer(
        model, SGD(model.params, lr=0.1), data, classify_loss, max_steps=max_steps, eval_every=2,
        val_fn=lambda m: next(vals), checkpoint_dir=tmp_path / "ck", metrics_path=tmp_path / "m.jsonl",
        progress=False,
    )  # fmt: skip
    return trainer, trainer.fit(resume=resume)


def test_a_final_validation_below_every_periodic_one_puts_the_final_weights_in_best(tmp_path):
    # Validations at steps 2, 4, 6, then the final one at step 7: the lowest. A run cut by --time ends
    # between validations; best/ must hold the weights it reports as best, which are the final ones.
    trainer, result = _stops_between_validations(tmp_path, [1.0, 0.5, 0.6, 0.3])
    best, best_meta = load_checkpoint(tmp_path / "ck" / "best")
    last, _ = load_checkpoint(tmp_path / "ck" / "last")
    assert best_meta["trainer"]["step"] == 7 and result.best_val_loss == 0.3
    assert all(np.array_equal(best[k], last[k]) for k in last)
    # The course's counters are the periodic validations' alone (where a run stops cannot change its course)
    assert (trainer.best_val, trainer.bad_evals) == (0.5, 1)
    rows = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("best", False)) for r in rows if "val_loss" in r] == [
        (2, True),
        (4, True),
        (6, False),
        (7, True),
    ]


def test_a_final_validation_above_the_best_leaves_best_alone(tmp_path):
    _, result = _stops_between_validations(tmp_path, [1.0, 0.5, 0.6, 0.55])
    assert (
        load_checkpoint(tmp_path / "ck" / "best")[1]["trainer"]["step"] == 4 and result.best_val_loss == 0.5
    )


def test_after_a_resume_best_keeps_the_final_weights_until_a_lower_validation(tmp_path):
    _stops_between_validations(tmp_path, [1.0, 0.5, 0.6, 0.3])
    # Resumed from step 7: step 8's 0.4 improves the course's best (0.5) but not best/'s 0.3; step 10's 0.2
    # improves both
    trainer, result = _stops_between_validations(tmp_path, [0.4, 0.2, 0.25], max_steps=11, resume=True)
    assert (trainer.best_val, trainer.bad_evals) == (0.2, 0)
    assert (
        load_checkpoint(tmp_path / "ck" / "best")[1]["trainer"]["step"] == 10 and result.best_val_loss == 0.2
    )
    rows = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("best", False)) for r in rows if "val_loss" in r and r["step"] > 7] == [
        (8, False),
        (10, True),
        (11, False),
    ]


def test_after_a_resume_a_validation_between_the_two_bests_does_not_overwrite_best(tmp_path):
    _stops_between_validations(tmp_path, [1.0, 0.5, 0.6, 0.3])
    _stops_between_validations(tmp_path, [0.4, 0.45], max_steps=9, resume=True)
    assert load_checkpoint(tmp_path / "ck" / "best")[1]["trainer"]["step"] == 7


def test_a_checkpoint_from_before_best_kept_resumes_with_best_val_as_it(tmp_path):
    _stops_between_validations(tmp_path, [1.0, 0.5, 0.6, 0.55])
    arrays, meta = load_checkpoint(tmp_path / "ck" / "last")
    del meta["trainer"]["best_kept"]
    save_checkpoint(tmp_path / "ck" / "last", arrays, meta)
    trainer, _ = _stops_between_validations(tmp_path, [0.52], max_steps=8, resume=True)
    assert trainer.best_kept == 0.5  # 0.52 is above it: best/ keeps step 4
    assert load_checkpoint(tmp_path / "ck" / "best")[1]["trainer"]["step"] == 4


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


STEPS = 120  # TokenStreams: (1599 // 4) // 8 = 50 chunks per epoch, so the run crosses epochs


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The script run to STEPS uninterrupted: (script path, its checkpoint arrays)."""
    tmp = tmp_path_factory.mktemp("ref")
    script = tmp / "train_script.py"
    script.write_text(SCRIPT)
    ref = _run(script, tmp / "ref", STEPS)
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    return script, load_checkpoint(tmp / "ref" / "last")


def _assert_resumes_to_the_reference(reference_run, out, what):
    script, (a, meta_a) = reference_run
    resumed = _run(script, out, STEPS)
    stdout, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert stdout.split() == ["max_steps", str(STEPS)]
    b, meta_b = load_checkpoint(out / "last")
    assert meta_a["trainer"]["step"] == meta_b["trainer"]["step"] == STEPS
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs after {what} and resume"
    steps_logged = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged[:STEPS] == list(range(1, STEPS + 1))


def test_sigkill_at_random_step_then_resume_gives_bitwise_identical_weights(tmp_path, reference_run):
    script, _ = reference_run
    steps = STEPS
    kill_at = int(np.random.default_rng().integers(3, steps - 30))
    env = {**os.environ, "STALL_AT": str(kill_at + 20)}
    proc = _run(script, tmp_path / "run", steps, env=env)
    deadline = time.monotonic() + 120
    while _last_step(tmp_path / "run" / "metrics.jsonl") < kill_at and proc.poll() is None:
        assert time.monotonic() < deadline, "training did not progress"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, f"the run ended before the kill at step {kill_at}"
    _assert_resumes_to_the_reference(reference_run, tmp_path / "run", f"a kill at step ~{kill_at}")


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_stops_with_a_checkpoint_from_which_resume_equals_the_uninterrupted_run(
    tmp_path, reference_run
):
    script, _ = reference_run
    stop_at = int(np.random.default_rng().integers(3, STEPS - 30))
    env = {**os.environ, "STALL_AT": str(stop_at + 20)}  # the run cannot finish before the signal lands
    proc = _run(script, tmp_path / "run", STEPS, env=env)
    deadline = time.monotonic() + 120
    while _last_step(tmp_path / "run" / "metrics.jsonl") < stop_at and proc.poll() is None:
        assert time.monotonic() < deadline, "training did not progress"
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    reason, step = out.split()
    assert reason == "interrupted" and "SIGTERM" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "last")[1]["trainer"]["step"] == int(step) >= stop_at
    _assert_resumes_to_the_reference(reference_run, tmp_path / "run", f"a SIGTERM at step {step}")


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_a_second_sigterm_aborts_at_once_keeping_the_last_good_checkpoint(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    proc = _run(script, tmp_path / "run", STEPS, env={**os.environ, "STALL_AT": "6"})  # step 6 hangs
    deadline = time.monotonic() + 120
    while _last_step(tmp_path / "run" / "metrics.jsonl") < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.3)  # inside step 6's stall
    proc.send_signal(signal.SIGTERM)  # stop after this step... which does not end
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # so: abort, as SIGTERM does when nobody handles it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "last")[1]["trainer"]["step"] == 5


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


# ----------------------------------------------------------------- divergence
def _lm_trainer(tmp_path, opt_lr, **kw):
    V = 7
    rng = np.random.default_rng(0)
    ids = (np.cumsum(rng.integers(1, 3, size=2000)) % V).astype(np.uint8)
    model = SequenceModel(ModelConfig(vocab_size=V, embed_dim=6, hidden_size=16, seed=1))
    kw = {"max_steps": 200, "checkpoint_dir": tmp_path / "ck", "checkpoint_every": 1, "progress": False, **kw}
    return Trainer(
        model, SGD(model.params, lr=opt_lr), TokenStreams(ids, 4, 8), lm_loss, carry_state=True, **kw
    )


def test_lr_100_diverges_and_stops_with_a_divergence_error_and_the_last_good_checkpoint(tmp_path):
    """With lr=100 the loss leaps from ln 7 ≈ 1.95 to tens of nats while every number stays finite: only
    the bound sees it. The error names the step, the reason and the checkpoint; nothing is saved after."""
    bound = math.log(7) + 1.0
    trainer = _lm_trainer(tmp_path, 100.0, max_loss=bound, metrics_path=tmp_path / "m.jsonl")
    with pytest.raises(
        DivergenceError, match=r"^step (\d+): diverged: loss [\d.]+ is above the bound 2\.94591"
    ) as e:
        trainer.fit()
    assert not isinstance(e.value, NonFiniteError) and "\n" not in str(e.value)
    step = int(re.match(r"step (\d+)", str(e.value)).group(1))
    assert trainer.history[-1]["loss"] > bound and trainer.history[-1]["step"] == trainer.step == step
    assert f"last good checkpoint is {tmp_path / 'ck' / 'last'} (step {step - 1})" in str(e.value)
    arrays, meta = load_checkpoint(tmp_path / "ck" / "last")
    assert meta["trainer"]["step"] == step - 1
    assert all(h["loss"] <= bound for h in trainer.history[:-1])


def test_lr_100_without_a_bound_is_the_old_silent_success(tmp_path):
    """The reason the bound exists: the same run without one ends "successfully" at a loss far above
    uniform guessing."""
    result = _lm_trainer(tmp_path, 100.0, max_steps=20).fit()
    assert result.reason == "max_steps" and result.loss > math.log(7) + 5


def test_loss_bound_counts_consecutive_records_that_carry_its_key():
    bound = LossBound(2.0, "val_loss", times=3)
    records = [{"loss": 9}, {"val_loss": 3.0}, {"loss": 9}, {"val_loss": 1.0}, {"val_loss": 2.5},
               {"val_loss": float("nan")}, {"loss": 9}]  # fmt: skip
    assert [bound(r) for r in records] == [None] * 7
    assert bound({"val_loss": 2.1}) == "val_loss 2.1 is above the bound 2 (3 in a row)"
    with pytest.raises(ValueError, match="times: expected a positive integer, got 0"):
        LossBound(2.0, times=0)
    with pytest.raises(ValueError, match="key: expected 'val_loss' or 'loss', got 'acc'"):
        LossBound(2.0, "acc")
    with pytest.raises(ValueError, match="max_loss: expected a finite number, a callable or None, got nan"):
        model = SequenceModel(ModelConfig(vocab_size=4, hidden_size=4))
        Trainer(model, SGD(model.params, lr=0.1), [], classify_loss, max_steps=1, max_loss=float("nan"))


def _blows_up_weights(at_call):
    """Finite loss and gradients whose update (lr 10 × 3e38 > 3.4e38 in float32) makes W_hh infinite."""
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss, n = classify_loss(model, batch)
        if calls["n"] == at_call:
            model.grads["rnn.W_hh_l0"][0, :3] = 3e38
        return loss, n

    return loss_fn


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_nonfinite_weight_after_an_update_stops_naming_it_and_keeps_the_last_good_checkpoint(tmp_path):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    trainer = Trainer(model, SGD(model.params, lr=10.0), data, _blows_up_weights(4), max_steps=10,
                      checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)  # fmt: skip
    with pytest.raises(
        NonFiniteError,
        match=r"step 4: after the update, parameter 'rnn.W_hh_l0' has 3 non-finite values \(inf\); stopped "
        r"\(the last good checkpoint is .*last \(step 2\)\)",
    ):
        trainer.fit()
    arrays, meta = load_checkpoint(tmp_path / "last")  # loads: the diverged weights were never saved
    assert meta["trainer"]["step"] == 2 and np.isfinite(arrays["model/rnn.W_hh_l0"]).all()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_nonfinite_weight_under_skip_rolls_back_to_the_last_checkpoint_with_a_lower_lr(tmp_path):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    trainer = Trainer(model, SGD(model.params, lr=10.0), data, _blows_up_weights(5), max_steps=8,
                      checkpoint_dir=tmp_path, checkpoint_every=2, on_nonfinite="skip",
                      progress=False)  # fmt: skip
    result = trainer.fit()
    assert result.step == 8 and all(np.isfinite(v).all() for v in model.params.values())
    rolled = [h for h in trainer.history if "rolled_back_to" in h]
    assert len(rolled) == 1 and rolled[0]["step"] == 5 and rolled[0]["rolled_back_to"] == 4
    assert [h["step"] for h in trainer.history] == [1, 2, 3, 4, 5, 5, 6, 7, 8]  # step 5 again, then on
    assert [h["lr"] for h in trainer.history] == [10.0] * 5 + [5.0] * 4
    # Without a checkpoint to roll back to, "skip" cannot undo the update: it stops.
    model2 = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))
    t2 = Trainer(model2, SGD(model2.params, lr=10.0), data, _blows_up_weights(2), max_steps=4,
                 on_nonfinite="skip", progress=False)  # fmt: skip
    with pytest.raises(NonFiniteError, match="no checkpoint to roll back to; stopped"):
        t2.fit()


# ----------------------------------------------------------------- signals and the metrics file
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_handlers_are_restored(tmp_path, sig):
    seqs, labels = _recall_data(64)
    data = SequenceBatches(seqs, labels, batch_size=16, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))

    def loss_fn(model, batch):
        if trainer.step + 1 == 3:
            os.kill(os.getpid(), getattr(signal, sig))  # arrives mid-step
        return classify_loss(model, batch)

    trainer = Trainer(model, SGD(model.params, lr=0.1), data, loss_fn, max_steps=10,
                      checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    mine = lambda signum, frame: None  # noqa: E731
    before = signal.signal(signal.SIGTERM, mine)
    try:
        result = trainer.fit()
        assert result.reason == "interrupted" and result.step == 3
        assert load_checkpoint(tmp_path / "last")[1]["trainer"]["step"] == 3
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        trainer.max_loss = lambda record: "a test bound"  # and after a fit that raises
        with pytest.raises(DivergenceError):
            trainer.fit(resume=True)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_a_signal_during_the_resume_stops_cleanly_before_any_step(tmp_path):
    """The handlers are in place before the checkpoint is read: Ctrl-C at start-up is a clean stop too."""
    _setup(tmp_path, 4).fit()
    trainer = _setup(tmp_path, 20)
    load = trainer.load

    def slow_load(path=None):
        os.kill(os.getpid(), signal.SIGINT)
        load(path)

    trainer.load = slow_load
    result = trainer.fit(resume=True)
    assert result.reason == "interrupted" and result.step == 4
    assert [h["step"] for h in trainer.history] == []  # no step was trained
    assert load_checkpoint(tmp_path / "ck" / "last")[1]["trainer"]["step"] == 4


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    _setup(tmp_path, 9, "part").fit()
    metrics = tmp_path / "part.jsonl"
    with open(metrics, "a") as f:  # rows a killed run logged after its checkpoint at step 9
        f.writelines(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(10, 13))
    old = metrics.read_bytes()
    from unrolled import checkpoint as ck

    real_replace = ck.os.replace

    def dies_before_the_rename(src, dst):
        raise KeyboardInterrupt  # a second Ctrl-C during the rewrite

    monkeypatch.setattr(ck.os, "replace", dies_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        _setup(tmp_path, 20, "part").fit(resume=True)
    assert metrics.read_bytes() == old  # the old file survives whole
    assert not list(tmp_path.glob(".part.jsonl.unrolled-*.tmp"))  # and no temporary is left
    monkeypatch.setattr(ck.os, "replace", real_replace)
    _setup(tmp_path, 20, "part").fit(resume=True)
    rows = [json.loads(s) for s in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows if not r.get("final")] == list(range(1, 21))


def test_metrics_rewrite_keeps_rows_up_to_the_checkpoint_and_stops_at_a_cut_row(tmp_path):
    _setup(tmp_path, 9, "part").fit()
    metrics = tmp_path / "part.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text("\n".join(rows[:5] + ["[1, 2]", '{"step": 7, "lo'] + rows[5:]) + "\n")
    _setup(tmp_path, 9, "part").fit(resume=True)
    assert metrics.read_text().splitlines()[:5] == rows[:5]
    assert "[1, 2]" not in metrics.read_text()
