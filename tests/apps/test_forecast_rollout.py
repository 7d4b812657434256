"""A direct forecaster beyond its trained horizon: refused by default with the maximum and the way out;
with rollout, its own forecasts fed back, block by block — exactly what feeding them back by hand gives."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.apps.forecast import ForecastConfig, Forecaster, build
from unrolled.apps.forecast.timeseries import Scaler
from unrolled.commands import main


def direct_forecaster(n_features: int = 1, lookback: int = 5, horizon: int = 3) -> Forecaster:
    cfg = ForecastConfig(csv="x.csv", column="y", lookback=lookback, horizon=horizon, hidden=8, seed=3)
    scaler = Scaler(np.zeros(n_features), np.ones(n_features))
    return Forecaster(build(cfg, n_features), scaler, "direct", lookback, horizon)


def test_direct_rollout_feeds_each_block_of_forecasts_back_as_the_next_inputs():
    fc = direct_forecaster(lookback=5, horizon=3)
    values = np.random.default_rng(0).standard_normal((40, 1))
    origins = np.array([10, 25, 40])
    got = fc.predict(values, origins, 8, rollout=True)  # blocks of 3, 3 and 2 steps
    # By hand: forecast 3 steps, append them to the history, forecast again from the new end.
    for i, t in enumerate(origins):
        history = values[:t]
        expected = []
        while len(expected) < 8:
            block = fc.predict(history, np.array([len(history)]), 3)[0]
            expected.extend(block)
            history = np.concatenate([history, block[:, None]])
        np.testing.assert_allclose(got[i], expected[:8], rtol=1e-6, atol=1e-6)
    # Within the trained horizon, rollout changes nothing.
    np.testing.assert_array_equal(
        fc.predict(values, origins, 2, rollout=True), fc.predict(values, origins, 2)
    )


def test_direct_model_beyond_its_horizon_is_refused_with_the_maximum_and_how_to_train_for_more():
    fc = direct_forecaster(horizon=3)
    values = np.zeros((20, 1))
    with pytest.raises(ValueError, match=r"at most 3 steps, asked for 7: train it with --horizon 7"):
        fc.predict(values, np.array([20]), 7)


def test_rollout_of_a_direct_model_that_reads_feature_columns_is_refused():
    fc = direct_forecaster(n_features=2, horizon=3)
    with pytest.raises(ValueError, match=r"--rollout: this direct model reads 2 columns"):
        fc.predict(np.zeros((20, 2)), np.array([20]), 5, rollout=True)


def test_forecast_command_rolls_out_on_request_and_labels_the_rolled_out_steps(tmp_path, capsys):
    data = tmp_path / "s.csv"
    data.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(100)) + "\n")
    argv = ["train", "forecast", "--csv", str(data), "--column", "y", "--lookback", "6", "--horizon", "3"]
    assert main([*argv, "--epochs", "2", "--no-arima", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    out = tmp_path / "f.csv"
    assert main(["forecast", str(tmp_path / "m"), "--horizon", "5", "--rollout", "--output", str(out)]) == 0
    assert "steps 4-5 are a rollout" in capsys.readouterr().err
    rows = out.read_text().splitlines()
    assert rows[0] == "step,time,forecast" and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
