"""GammaMonitor: γ logged during training, without disturbing the training it watches."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.diagnostics import diagnose_model
from unrolled.diagnostics.callback import GammaMonitor
from unrolled.models import ModelConfig, SequenceModel


def _model(**kw):
    cfg = dict(input="dense", input_size=2, cell="rnn", hidden_size=5, output_size=1, output="last", seed=0)
    return SequenceModel(ModelConfig(**{**cfg, **kw}))


def test_monitor_measures_every_n_steps_and_logs_one_line_each():
    model = _model(num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((12, 3, 2)).astype(np.float32)
    lines = []
    mon = GammaMonitor(x, every=5, log=lines.append)
    for step in range(1, 16):
        mon.maybe_measure(model, step)
    steps, gammas = mon.gammas()
    assert steps.tolist() == [5, 10, 15] and len(lines) == 3 and "γ =" in lines[0]
    assert set(mon.history[0]["gammas"]) == {"l0", "l0r", "l1", "l1r"}
    assert gammas[0] == pytest.approx(diagnose_model(model, x, heatmap=False).gamma)


def test_monitor_leaves_params_grads_rng_and_mode_alone():
    model = _model(cell="lstm", dropout=0.0, recurrent_dropout=0.3, output_dropout=0.2)
    x = np.random.default_rng(1).standard_normal((8, 2, 2)).astype(np.float32)
    y, _ = model.forward(x)
    model.backward(np.ones_like(y))
    before = {k: v.copy() for k, v in model.params.items()}
    grads = {k: v.copy() for k, v in model.grads.items()}
    rng_state = model.rng_state()
    mon = GammaMonitor(x, every=1)
    record = {"step": 3, "loss": 0.5}
    mon(type("T", (), {"model": model, "step": 3})(), record)  # as a Trainer callback: .model, .step
    assert mon.history[0]["step"] == 3 and model.training
    assert record["gamma"] == mon.history[0]["gamma"] and record["gamma_regime"] in (
        "vanishing",
        "stable",
        "exploding",
    )
    assert all(np.array_equal(before[k], model.params[k]) for k in before)
    assert all(np.array_equal(grads[k], model.grads[k]) for k in grads)
    assert model.rng_state() == rng_state


def test_monitor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        GammaMonitor(np.zeros((3, 1, 2)), every=0)
    with pytest.raises(ValueError, match="x_probe"):
        GammaMonitor([1, 2, 3])
    with pytest.raises(TypeError, match="trainer"):
        GammaMonitor(np.zeros((3, 1, 2)))(object())


def test_monitor_follows_gamma_through_a_trainer_run():
    """The Trainer has no callback list; its validation hook runs every eval_every steps in eval mode."""
    from unrolled.apps.experiments import adding_batch
    from unrolled.nn import mse
    from unrolled.optim import Adam
    from unrolled.train import Trainer

    model = _model(cell="gru", hidden_size=8)
    rng = np.random.default_rng(0)
    batches = [adding_batch(12, 16, rng) for _ in range(4)]
    x_val, y_val = adding_batch(12, 32, np.random.default_rng(1))
    mon = GammaMonitor(x_val[:, :4], every=1)

    def loss_fn(m, batch):
        y, _ = m.forward(batch[0])
        loss, dy = mse(y, batch[1])
        m.backward(dy)
        return loss, batch[0].shape[1]

    def val_fn(m):
        mon.measure(m, trainer.step)  # γ beside the validation loss
        return mse(m.forward(x_val)[0], y_val)[0]

    trainer = Trainer(model, Adam(model.params, lr=1e-2), batches, loss_fn, val_fn=val_fn, max_steps=6,
                      eval_every=2, progress=False)  # fmt: skip
    trainer.fit()
    steps, gammas = mon.gammas()
    assert steps.tolist() == [2, 4, 6] and np.isfinite(gammas).all()
