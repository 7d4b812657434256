"""Feedback during long work: progress on stderr for every step that can take more than a few seconds, and
optional dependencies checked before the work starts, with a hint that installs them from a clone."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import _optional
from unrolled.apps.forecast import baselines


def _ar1(n: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.7 * y[t - 1] + rng.standard_normal()
    return y


def test_arima_order_search_reports_progress_on_stderr_before_returning(capsys):
    pytest.importorskip("statsmodels")
    y = _ar1()
    f, order = baselines.arima(y, 60, np.array([65, 70]), 2)
    err = capsys.readouterr().err
    assert "ARIMA order search" in err and "30/30" in err  # every order of the default grid, counted
    assert "ARIMA({},{},{}): fitted and forecast from 2 origins in".format(*order) in err
    assert f.shape == (2, 2)


def test_arima_progress_can_be_switched_off(capsys):
    pytest.importorskip("statsmodels")
    baselines.arima(_ar1(), 60, np.array([65]), 2, order=(1, 0, 0), progress=False)
    assert capsys.readouterr().err == ""


def test_a_missing_optional_package_is_named_with_the_clone_install_before_any_work(monkeypatch):
    monkeypatch.setattr(_optional, "is_installed", lambda module: module != "statsmodels")
    with pytest.raises(ImportError) as e:
        baselines.arima(_ar1(), 60, np.array([65]), 2)
    msg = str(e.value)
    assert msg.startswith("the ARIMA baseline needs statsmodels: ")
    assert 'pip install -e ".[data]"' in msg and "pip install statsmodels" in msg
    assert "unrolled[" not in msg  # never the registry name, which is not published


def test_is_installed_finds_a_module_without_importing_it():
    assert _optional.is_installed("json") and not _optional.is_installed("no_such_module_xyz")


def _tiny_trainer(**limits):
    from unrolled.data.batching import SequenceBatches
    from unrolled.models import ModelConfig, SequenceModel
    from unrolled.nn import cross_entropy
    from unrolled.optim import Adam
    from unrolled.train import Trainer

    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 4, size=5) for _ in range(32)]
    data = SequenceBatches(seqs, np.array([s[0] for s in seqs]), batch_size=8, seed=0)
    model = SequenceModel(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=8, output="last", seed=0))

    def loss_fn(m, b):
        loss, dy = cross_entropy(m.forward(b.x, lengths=b.lengths)[0], b.y)
        m.backward(dy)
        return loss, int(b.lengths.sum())

    return Trainer(model, Adam(model.params, lr=0.01), data, loss_fn, progress=True, **limits)


def _bar_states(err: str) -> list[str]:
    return [s.strip() for s in err.replace("\r", "\n").splitlines() if s.strip()]


def test_a_time_limited_run_shows_a_bar_with_a_total_and_an_eta(capsys):
    result = _tiny_trainer(max_time=0.4).fit()
    assert result.reason == "max_time"
    states = _bar_states(capsys.readouterr().err)
    assert states[-1].startswith("100%|"), states[-1]  # a total: the bar fills up as the time runs out
    assert any("%|" in s and "<00:0" in s and "step=" in s for s in states[1:]), states  # an ETA, the step


def test_with_steps_and_time_the_bar_follows_the_limit_that_comes_first(capsys):
    trainer = _tiny_trainer(max_steps=8, max_time=3600.0)
    assert trainer.fit().reason == "max_steps"
    states = _bar_states(capsys.readouterr().err)
    assert states[-1].startswith("100%|") and "step=8/8" in states[-1], states[-1]


def test_a_step_limited_run_keeps_its_step_bar(capsys):
    _tiny_trainer(max_steps=6).fit()
    assert "6/6" in _bar_states(capsys.readouterr().err)[-1]
