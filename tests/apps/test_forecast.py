"""Forecasting: no leakage from the future, a noiseless sine learned both ways, baselines by definition,
bad input refused in one line, and the two commands end to end."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.apps.forecast import ForecastConfig, baselines, fit, prepare_for
from unrolled.apps.forecast.timeseries import (
    Split,
    TimeSeries,
    chronological_split,
    fill_missing,
    load_csv,
    make_windows,
    prepare,
)
from unrolled.commands import main

from conftest import shared_data


def series(values, columns=("y",)) -> TimeSeries:
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    return TimeSeries(values, list(columns), [str(i) for i in range(len(values))])


# --------------------------------------------------------------------------- leakage
def test_training_windows_only_hold_rows_before_the_end_of_the_training_split():
    values = np.arange(100, dtype=np.float64)[:, None]  # each value is its own row number
    sp = chronological_split(100, lookback=7, horizon=3, test_size=10, val_size=10)
    X, Y, origins = make_windows(values, 7, 3, 0, sp.train_end)
    assert X.max() < sp.train_end and Y.max() < sp.train_end
    assert Y.max() == sp.train_end - 1  # and the last training row is used
    assert len(origins) == sp.train_end - 7 - 3 + 1


@pytest.mark.parametrize("difference", [False, True])
def test_scaler_and_training_windows_do_not_change_when_the_future_changes(difference):
    # A scaler fitted on the whole series, or a window reaching past the training split, would differ here.
    rng = np.random.default_rng(0)
    y = np.sin(np.arange(200) / 5) + 0.1 * rng.standard_normal(200)
    future_changed = y.copy()
    sp = chronological_split(200, 12, 4, 30, 30)
    future_changed[sp.train_end :] = 1e6 * rng.standard_normal(200 - sp.train_end)
    a = prepare(series(y), 12, 4, 30, 30, difference=difference)
    b = prepare(series(future_changed), 12, 4, 30, 30, difference=difference)
    assert a.split == b.split == sp
    np.testing.assert_array_equal(a.scaler.mean, b.scaler.mean)
    np.testing.assert_array_equal(a.scaler.std, b.scaler.std)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_train, b.Y_train)
    # and the scaler really is the training rows' (not, say, a constant)
    fitted_on = np.diff(y[: sp.train_end]) if difference else y[: sp.train_end]
    assert a.scaler.mean[0] == pytest.approx(fitted_on.mean())


def test_interpolating_a_gap_at_the_end_of_the_training_split_uses_no_later_value():
    y = np.arange(60, dtype=np.float64)
    y[37:40] = np.nan  # the last three training rows (train_end = 40 below)
    sp = Split(40, 50, 60)
    filled, observed = fill_missing(series(y), "interpolate", sp)
    np.testing.assert_array_equal(filled[37:40, 0], [36.0, 36.0, 36.0])  # carried forward, not pulled to 40
    assert not observed[37:40].any() and observed[:37].all()
    y2 = y.copy()
    y2[40:] = -500.0
    filled2, _ = fill_missing(series(y2), "interpolate", sp)
    np.testing.assert_array_equal(filled[:40], filled2[:40])


def test_interpolation_inside_a_split_is_linear():
    y = np.array([0.0, np.nan, np.nan, 3.0, 4.0, 5.0])
    filled, _ = fill_missing(series(y), "interpolate", Split(6, 6, 6))
    np.testing.assert_allclose(filled[:, 0], [0, 1, 2, 3, 4, 5])


# --------------------------------------------------------------------------- learning
def _sine_run(strategy: str):
    t = np.arange(300)
    ts = series(np.sin(2 * np.pi * t / 20))
    cfg = ForecastConfig(
        csv="sine.csv", column="y", lookback=20, horizon=5, strategy=strategy, hidden=16, epochs=80,
        patience=80, lr=1e-2, test_size=40, val_size=40, arima=False, seed=0,
    )  # fmt: skip
    prep = prepare_for(cfg, ts)
    fc, _ = fit(cfg, prep, log=lambda s: None)
    origins = np.arange(prep.split.val_end, 300 - 5 + 1)
    pred = fc.forecast(prep.raw, origins, 5)
    truth = prep.raw[origins[:, None] + np.arange(5), 0]
    return pred, truth


def test_recursive_and_direct_forecasters_learn_a_noiseless_sine_and_agree():
    rec, truth = _sine_run("recursive")
    direct, _ = _sine_run("direct")
    # amplitude 1: a forecast off by 0.02 on average over 5 steps ahead is a learned sine
    assert np.abs(rec - truth).mean() < 0.02
    assert np.abs(direct - truth).mean() < 0.02
    assert np.abs(rec - direct).max() < 0.05


def test_differencing_lets_a_forecaster_follow_a_trend_beyond_the_training_range():
    t = np.arange(240)
    ts = series(0.05 * t + np.sin(2 * np.pi * t / 12))  # the test tail lies above every training value
    cfg = ForecastConfig(
        csv="trend.csv", column="y", lookback=24, horizon=3, hidden=16, epochs=60, patience=60, lr=1e-2,
        test_size=24, val_size=24, arima=False, seed=0, difference=True,
    )  # fmt: skip
    prep = prepare_for(cfg, ts)
    fc, _ = fit(cfg, prep, log=lambda s: None)
    origins = np.arange(prep.split.val_end, 240 - 3 + 1)
    err = np.abs(fc.forecast(prep.raw, origins, 3) - prep.raw[origins[:, None] + np.arange(3), 0])
    assert err.mean() < 0.1  # a level model, bounded by its training range, misses by > 1 here


# --------------------------------------------------------------------------- baselines
def test_naive_and_seasonal_naive_follow_their_definitions():
    y = np.arange(30, dtype=np.float64)
    origins = np.array([10, 20])
    np.testing.assert_array_equal(baselines.naive(y, origins, 3), [[9, 9, 9], [19, 19, 19]])
    # m = 4, h = 6: y[t-4], y[t-3], y[t-2], y[t-1], then the same season again: y[t-4], y[t-3]
    np.testing.assert_array_equal(baselines.seasonal_naive(y, origins, 6, 4)[0], [6, 7, 8, 9, 6, 7])


def test_arima_baseline_uses_only_the_history_before_each_origin():
    pytest.importorskip("statsmodels", reason="statsmodels not installed (unrolled[data])")
    rng = np.random.default_rng(0)
    y = np.zeros(120)
    for t in range(1, 120):
        y[t] = 0.8 * y[t - 1] + rng.standard_normal()
    origins = np.array([100, 110])
    f, order = baselines.arima(y, 90, origins, 3, order=(1, 0, 0))
    y2 = y.copy()
    y2[110:] += 100.0  # a change at or after the second origin must not move either forecast
    f2, _ = baselines.arima(y2, 90, origins, 3, order=(1, 0, 0))
    assert order == (1, 0, 0)
    np.testing.assert_allclose(f, f2)


# --------------------------------------------------------------------------- bad input, one line each
def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "\n" not in err
    return err


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    out = str(tmp_path / "m")
    words = tmp_path / "words.csv"
    words.write_text("t,y\n1,1.0\n2,abc\n3,2.0\n")
    assert "'abc' is not a number" in _error(
        capsys, ["train", "forecast", "--csv", str(words), "--column", "y", "--out", out]
    )
    short = tmp_path / "short.csv"
    short.write_text("y\n" + "\n".join(str(i) for i in range(20)) + "\n")
    err = _error(
        capsys, ["train", "forecast", "--csv", str(short), "--column", "y", "--lookback", "12", "--out", out]
    )
    assert "too few rows" in err
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("y\n" + "\n".join("" if i == 50 else str(i) for i in range(200)) + "\n")
    err = _error(capsys, ["train", "forecast", "--csv", str(gaps), "--column", "y", "--out", out])
    assert "1 missing values (first at row 50" in err and "--missing interpolate" in err
    assert "unknown dataset 'moon'" in _error(
        capsys, ["train", "forecast", "--dataset", "moon", "--out", out]
    )
    assert "no column 'z'" in _error(
        capsys, ["train", "forecast", "--csv", str(short), "--column", "z", "--out", out]
    )


def test_real_weekly_co2_with_gaps_is_refused_or_interpolated():
    path = shared_data("timeseries/co2-mauna-loa-weekly-statsmodels.csv")
    ts = load_csv(path, "co2", "date")
    assert len(ts.values) == 2284 and np.isnan(ts.target).sum() == 59
    sp = chronological_split(2284, 52, 8, 104, 104)
    with pytest.raises(ValueError, match="59 missing values"):
        fill_missing(ts, "refuse", sp)
    filled, observed = fill_missing(ts, "interpolate", sp)
    assert np.isfinite(filled).all() and observed.sum() == 2284 - 59


# --------------------------------------------------------------------------- the commands
def test_train_then_forecast_end_to_end(tmp_path, capsys):
    t = np.arange(160)
    rows = [f"{i},{np.sin(i / 4):.5f},{np.cos(i / 4):.5f}" for i in t]
    data = tmp_path / "s.csv"
    data.write_text("step,y,x\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    argv = [
        "train",
        "forecast",
        "--csv",
        str(data),
        "--column",
        "y",
        "--time-column",
        "step",
        "--features",
        "x",
    ]
    argv += ["--lookback", "8", "--horizon", "4", "--strategy", "recursive", "--epochs", "5", "--hidden", "8"]
    argv += ["--period", "25", "--arima-order", "1,0,0", "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for method in ("LSTM 1x8 (recursive)", "naive", "seasonal naive (m=25)"):
        assert f"| {method}" in table
    assert main(["forecast", str(out), "--horizon", "7", "--output", str(tmp_path / "f.csv")]) == 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == "step,time,forecast" and len(lines) == 8 and lines[1].startswith("1,+1 after 159,")
    pytest.importorskip("matplotlib", reason="matplotlib not installed (unrolled[plot])")
    assert main(["forecast", str(out), "--holdout", "--plot", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert capsys.readouterr().out.splitlines()[0] == "step,time,forecast,actual"


def test_a_direct_model_refuses_a_longer_horizon_than_it_was_trained_for(tmp_path, capsys):
    data = tmp_path / "s.csv"
    data.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(100)) + "\n")
    argv = ["train", "forecast", "--csv", str(data), "--column", "y", "--lookback", "6", "--horizon", "3"]
    assert main([*argv, "--epochs", "2", "--no-arima", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert "at most 3 steps" in _error(capsys, ["forecast", str(tmp_path / "m"), "--horizon", "5"])


def test_builtin_datasets_load_through_statsmodels():
    pytest.importorskip("statsmodels", reason="statsmodels not installed (unrolled[data])")
    from unrolled.apps.forecast.timeseries import load_builtin

    sizes = {"sunspots": 309, "co2": 2284, "nile": 100, "elnino": 732}
    for name, n in sizes.items():
        ts = load_builtin(name)
        assert ts.values.shape == (n, 1), name
    assert load_builtin("elnino").time[:2] == ["1950-01", "1950-02"]


def test_resume_continues_the_run_in_the_output_directory(tmp_path, capsys):
    import json

    data = tmp_path / "s.csv"
    data.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(100)) + "\n")
    argv = ["train", "forecast", "--csv", str(data), "--column", "y", "--lookback", "6", "--horizon", "2"]
    argv += ["--no-arima", "--patience", "50", "--out", str(tmp_path / "m")]
    assert main([*argv, "--epochs", "3"]) == 0
    assert main([*argv, "--epochs", "5", "--resume"]) == 0
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())["meta"]
    assert meta["results"]["training"]["epochs"] == 5
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "m" / "training" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[-1] == meta["results"]["training"]["steps"] and len(set(steps)) == steps[-1]
