"""Forecasting a time series with a recurrent network, side by side with the forecasts it must beat.

On the command line (:mod:`unrolled.commands.train_forecast`, :mod:`unrolled.commands.forecast`):

    unrolled train forecast (--csv FILE --column NAME [--time-column NAME] | --dataset NAME) --out DIR
    unrolled forecast DIR [--csv FILE] [--horizon N] [--holdout] [--plot out.png] [--output forecast.csv]

The pipeline, in the order that keeps the future out of the past (see
:mod:`unrolled.apps.forecast.timeseries`):
missing values filled causally → chronological split train | validation | test → scaler fitted on the
training rows → training windows cut inside the training split → the network trained on them, early
stopping on its validation forecasts → every method forecast from each test origin (rolling origin,
history up to the origin only) and scored on the held-out tail with MAE, RMSE, sMAPE and MASE.

Two multi-step strategies: ``direct`` (the model's head outputs all ``horizon`` steps at once) and
``recursive`` (a one-step model predicts the next row — every column, so multivariate inputs can be fed
back — and its prediction is appended to the window ``horizon`` times).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import unrolled.apps.forecast.baselines as baselines
from unrolled._checks import one_of, positive_float, positive_int
from unrolled._optional import install_hint
from unrolled.apps._training import fit_best, model_dir
from unrolled.apps.fields import (
    cell_variants,
    check_cell_variants,
    layer_norm_option,
    option,
    peephole_option,
    proj_size_option,
    zoneout_option,
)
from unrolled.apps.forecast.timeseries import (
    BUILTIN_DATASETS,
    MISSING_POLICIES,
    REGISTRY_SERIES,
    Prepared,
    Scaler,
    TimeSeries,
    differences,
    load_builtin,
    load_csv,
    prepare,
)
from unrolled.metrics import forecast_errors
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import mse
from unrolled.train import LossBound

APP = "forecast"  # the "app" of a saved forecaster's meta
STRATEGIES = ("direct", "recursive")


@dataclass
class ForecastConfig:
    """Everything ``unrolled train forecast`` needs; each field is also its command-line option."""

    # the data: a CSV column or a built-in dataset
    csv: str | None = option(None, "a CSV file with a header row, rows in time order", metavar="FILE")
    column: str | None = option(None, "the column to forecast (with --csv)", metavar="NAME")
    time_column: str | None = option(None, "a column of time labels (with --csv)", metavar="NAME")
    features: tuple = option((), "extra input columns, comma-separated (multivariate inputs)", metavar="A,B")
    dataset: str | None = option(
        None,
        "a named series: "
        + ", ".join(BUILTIN_DATASETS)
        + " (statsmodels, no download), "
        + ", ".join(REGISTRY_SERIES)
        + " (downloaded once, see 'unrolled data list')",
        metavar="NAME",
    )
    missing: str = option(
        "refuse", "missing values: refuse, or interpolate (causally)", choices=MISSING_POLICIES
    )
    period: int | None = option(
        None, "seasonal period in rows for seasonal naive (default: the dataset's; 1 for a CSV)", type=int
    )
    # windows, strategy and the held-out tail
    lookback: int = option(24, "rows of history the model reads before each forecast")
    horizon: int = option(6, "steps ahead to forecast")
    strategy: str = option("direct", "multi-step forecasts: direct or recursive", choices=STRATEGIES)
    difference: bool = option(False, "model the first differences (for a series with a trend)")
    test_size: int | None = option(
        None, "rows held out for the test (default: max(horizon, 10%% of rows))", type=int
    )
    val_size: int | None = option(
        None, "rows before the test for early stopping (default: as test)", type=int
    )
    # the network
    cell: str = option("lstm", "recurrent cell", choices=("lstm", "gru", "rnn", "mingru", "minlstm"))
    layers: int = option(1, "stacked recurrent layers")
    hidden: int = option(32, "hidden units per layer")
    dropout: float = option(0.0, "dropout between stacked layers")
    layer_norm: bool = layer_norm_option()
    peephole: bool = peephole_option()
    proj_size: int = proj_size_option()
    zoneout: float = zoneout_option()
    # training
    epochs: int = option(300, "most passes over the training windows")
    batch: int = option(32, "windows per update")
    lr: float = option(3e-3, "Adam learning rate")
    clip: float = option(1.0, "clip the global gradient norm to this")
    patience: int = option(30, "stop after this many epochs without a better validation error")
    time_limit: float | None = option(None, "stop training after this many minutes", type=float)
    seed: int = option(0, "seed of the weights and the shuffling")
    # baselines
    arima: bool = option(True, "fit the ARIMA baseline (needs statsmodels)")
    arima_order: str | None = option(None, "ARIMA order p,d,q (default: lowest AIC, p≤4 d≤1 q≤2)")

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        if (self.csv is None) == (self.dataset is None):
            raise ValueError("give exactly one source: --csv FILE --column NAME, or --dataset NAME")
        if self.csv is not None and not self.column:
            raise ValueError("--csv needs --column NAME (the column to forecast)")
        one_of("strategy", self.strategy, STRATEGIES)
        one_of("missing", self.missing, MISSING_POLICIES)
        for name in ("lookback", "horizon", "layers", "hidden", "epochs", "batch", "patience"):
            positive_int(name, getattr(self, name))
        positive_float("lr", self.lr)
        positive_float("clip", self.clip)
        check_cell_variants(self)
        if self.arima_order is not None:
            parts = self.arima_order.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(
                    f"arima_order: expected three non-negative integers p,d,q, got {self.arima_order!r}"
                )
        positive_int("period", self.period, allow_none=True)

    def load_series(self) -> TimeSeries:
        """The series this configuration names, with its seasonal period set."""
        if self.dataset is not None:
            ts = load_builtin(self.dataset)
        else:
            ts = load_csv(self.csv, self.column, self.time_column, self.features)
        if self.period is not None:
            ts.period = self.period
        return ts

    def sizes(self, n: int) -> tuple[int, int]:
        """(test_size, val_size) for a series of n rows."""
        test = self.test_size if self.test_size is not None else max(self.horizon, n // 10)
        return test, self.val_size if self.val_size is not None else test


# --------------------------------------------------------------------------- the forecaster
class Forecaster:
    """A trained model plus what it needs to forecast in the units of the data.

    ``predict`` works on a whole scaled series at once: for each origin t it reads rows
    t − lookback … t − 1 and returns the next ``horizon`` values of the target (scaled).
    """

    def __init__(
        self,
        model: SequenceModel,
        scaler: Scaler,
        strategy: str,
        lookback: int,
        horizon: int,
        difference: bool = False,
    ):
        self.model, self.scaler, self.strategy = model, scaler, strategy
        self.lookback, self.horizon, self.difference = lookback, horizon, difference

    def forecast(
        self, raw: np.ndarray, origins: np.ndarray, horizon: int | None = None, rollout: bool = False
    ) -> np.ndarray:
        """raw (N, F) filled series in its own units -> (n, horizon) forecasts of the target, in its units,
        from each origin t (reading rows < t only). ``rollout``: see :meth:`predict`."""
        h = self.horizon if horizon is None else int(horizon)
        origins = np.asarray(origins, dtype=np.int64)
        space = differences(raw) if self.difference else raw
        out = self.scaler.inverse_target(self.predict(self.scaler.transform(space), origins, h, rollout))
        if self.difference:  # integrate the forecast differences from the last known level
            out = raw[origins - 1, 0][:, None] + np.cumsum(out, axis=1)
        return out

    def predict(
        self, values: np.ndarray, origins: np.ndarray, horizon: int | None = None, rollout: bool = False
    ) -> np.ndarray:
        """values (N, F) scaled, origins (n,) with lookback ≤ t ≤ N -> (n, horizon) scaled target.

        A direct model forecasts at most the horizon it was trained for; beyond it, ``rollout=True`` feeds
        its own forecasts back as inputs, a block of ``self.horizon`` steps at a time (a univariate model
        only: a model that also reads feature columns has no forecast of them to feed back). Refused
        otherwise, with the maximum and how to train for more.
        """
        h = self.horizon if horizon is None else int(horizon)
        origins = np.asarray(origins, dtype=np.int64)
        if origins.size and origins.min() < self.lookback:
            raise ValueError(
                f"an origin at row {origins.min()} has fewer than lookback = {self.lookback} rows"
            )
        if self.strategy == "direct" and h > self.horizon:
            if not rollout:
                raise ValueError(
                    f"--horizon: this direct model forecasts at most {self.horizon} steps, asked for {h}: "
                    f"train it with --horizon {h} (or --strategy recursive), or pass --rollout to feed its "
                    "own forecasts back"
                )
            if values.shape[1] != 1:
                raise ValueError(
                    f"--rollout: this direct model reads {values.shape[1]} columns but forecasts only the "
                    f"target, so nothing can be fed back beyond its {self.horizon} steps: train it with "
                    f"--horizon {h} or --strategy recursive"
                )
        dtype = self.model.dtype
        window = np.stack([values[t - self.lookback : t] for t in origins]).astype(dtype)  # (n, L, F)
        self.model.eval()
        out = np.empty((len(origins), h))
        if self.strategy == "direct":
            for k in range(0, h, self.horizon):  # one block when h ≤ the trained horizon
                y, _ = self.model(np.ascontiguousarray(window.transpose(1, 0, 2)))  # (n, horizon_trained)
                out[:, k : k + self.horizon] = y[:, : h - k]
                window = np.concatenate([window, y[:, :, None]], axis=1)[:, -self.lookback :]
            return out
        for k in range(h):
            y, _ = self.model(np.ascontiguousarray(window.transpose(1, 0, 2)))  # (n, F): the next row
            out[:, k] = y[:, 0]
            window = np.concatenate([window[:, 1:], y[:, None, :]], axis=1)  # feed the prediction back
        return out


def build(cfg: ForecastConfig, n_features: int) -> SequenceModel:
    """One-step model (outputs every column of the next row) for recursive, horizon outputs for direct."""
    out = n_features if cfg.strategy == "recursive" else cfg.horizon
    mc = ModelConfig(
        input="dense",
        input_size=n_features,
        cell=cfg.cell,
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        dropout=cfg.dropout,
        output_size=out,
        output="last",
        seed=cfg.seed,
        **cell_variants(cfg),
    )
    return SequenceModel(mc)


def prepare_for(cfg: ForecastConfig, ts: TimeSeries) -> Prepared:
    """The training data of ``cfg``: recursive models learn one step of every column, direct models
    the whole horizon of the target."""
    test, val = cfg.sizes(len(ts.values))
    if cfg.strategy == "recursive":
        targets, train_h = tuple(range(ts.values.shape[1])), 1
    else:
        targets, train_h = (0,), cfg.horizon
    return prepare(ts, cfg.lookback, cfg.horizon, test, val, cfg.missing, targets, train_h, cfg.difference)


def _scaled_error(fc: Forecaster, prep: Prepared, origins: np.ndarray, horizon: int) -> float:
    """Mean absolute error of the forecasts from ``origins`` on observed targets, over the training
    target's standard deviation (scale-free; the ranking of epochs is all early stopping needs)."""
    pred = fc.forecast(prep.raw, origins, horizon)
    idx = origins[:, None] + np.arange(horizon)[None, :]
    ok = prep.observed[idx]
    scale = float(prep.raw[: prep.split.train_end, 0].std()) or 1.0
    return float(np.abs(pred - prep.raw[idx, 0])[ok].mean()) / scale


# A run has diverged when every training loss of an epoch is this many times that of the better of two
# forecasts that need no learning (see :func:`divergence_limit`).
DIVERGENCE_FACTOR = 10.0


def divergence_limit(X: np.ndarray, Y: np.ndarray, recursive: bool) -> float:
    """The loss bound of a forecaster on scaled data: :data:`DIVERGENCE_FACTOR` × the MSE of the better of
    "the last input row again" (the naive forecast) and "zero" (the training mean: the data are scaled).

    Both need no learning, so a network far worse than both for a whole epoch has diverged; the larger of
    the two is used so that a fresh network (whose outputs are near zero) is never above the bound even
    on a smooth series where the naive forecast is nearly perfect.

    X : (L, n, F) scaled input windows.  Y : (n, F) next rows (`recursive`) or (n, horizon) target values.
    """
    last = X[-1].astype(np.float64)  # (n, F)
    naive = last if recursive else last[:, :1]  # the next row / the target value, held
    naive_mse = float(np.mean((Y - naive) ** 2))
    zero_mse = float(np.mean(np.square(Y, dtype=np.float64)))
    return DIVERGENCE_FACTOR * max(naive_mse, zero_mse, 1e-6)


def fit(
    cfg: ForecastConfig, prep: Prepared, log=print, workdir=None, resume: bool = False
) -> tuple[Forecaster, dict]:
    """Train on the training windows of ``prep`` with :class:`unrolled.train.Trainer`; early stopping on
    the validation split's forecasts — the same multi-step forecasts that are scored, so a recursive model
    is selected for its recursion — and the best validation weights kept.

    workdir : the Trainer's folder (a path), or a :class:`~unrolled.rundir.RunDir` whose ``training/`` it
        uses; a temporary folder when None.

    Raises :class:`~unrolled.train.DivergenceError` when every training loss of an epoch (at least 3 steps)
    is above :func:`divergence_limit`, or a weight becomes non-finite.

    Returns the forecaster and a summary of the run.
    """
    F = prep.values.shape[1]
    model = build(cfg, F)
    fc = Forecaster(model, prep.scaler, cfg.strategy, cfg.lookback, cfg.horizon, cfg.difference)
    X = np.ascontiguousarray(prep.X_train.transpose(1, 0, 2)).astype(model.dtype)  # (L, n, F)
    if cfg.strategy == "recursive":
        Y = prep.Y_train[:, 0, :].astype(model.dtype)  # (n, F): the next row
    else:
        Y = prep.Y_train[:, :, 0].astype(model.dtype)  # (n, horizon)
    n = X.shape[1]
    if n == 0:
        raise ValueError("no training window: the training split is shorter than lookback + horizon")
    sp = prep.split
    val_origins = np.arange(max(sp.train_end, cfg.lookback), sp.val_end - cfg.horizon + 1)

    def batches(epoch: int) -> list:
        # the order of an epoch is a function of (seed, epoch) only: a resumed run sees the same batches
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        return [perm[i : i + cfg.batch] for i in range(0, n, cfg.batch)]

    def loss_fn(m, idx):
        y, _ = m(np.ascontiguousarray(X[:, idx]))
        loss, dy = mse(y, Y[idx])
        m.backward(dy)
        return loss, len(idx)

    summary = fit_best(
        model,
        batches,
        loss_fn,
        lambda m: _scaled_error(fc, prep, val_origins, cfg.horizon),
        steps_per_epoch=-(-n // cfg.batch),
        lr=cfg.lr,
        clip=cfg.clip,
        epochs=cfg.epochs,
        patience=cfg.patience,
        max_minutes=cfg.time_limit,
        workdir=workdir,
        resume=resume,
        log=log,
        log_every=25,
        max_loss=LossBound(
            divergence_limit(X, Y, cfg.strategy == "recursive"), "loss", times=max(3, -(-n // cfg.batch))
        ),
    )
    return fc, {**summary, "train_windows": n}


# --------------------------------------------------------------------------- evaluation
def evaluate(
    fc: Forecaster, prep: Prepared, cfg: ForecastConfig, period: int, label: str = "network"
) -> dict[str, dict[str, float]]:
    """Every method forecast from each test origin t (history rows < t), scored on observed test values.

    Returns ``{method: {"MAE", "RMSE", "sMAPE", "MASE"}}``; MASE is scaled by the one-step naive error
    on the training split.
    """
    sp, h = prep.split, cfg.horizon
    y = prep.raw[:, 0]
    origins = np.arange(sp.val_end, sp.n - h + 1)
    idx = origins[:, None] + np.arange(h)[None, :]  # (n, h) rows forecast
    truth, ok = y[idx], prep.observed[idx]
    y_train = y[: sp.train_end]
    forecasts = {label: fc.forecast(prep.raw, origins, h)}
    forecasts["naive"] = baselines.naive(y, origins, h)
    if period > 1:
        forecasts[f"seasonal naive (m={period})"] = baselines.seasonal_naive(y, origins, h, period)
    if cfg.arima:
        try:
            order = tuple(int(v) for v in cfg.arima_order.split(",")) if cfg.arima_order else None
            f, order = baselines.arima(y, sp.train_end, origins, h, order)
            forecasts["ARIMA({},{},{})".format(*order)] = f
        except ImportError as e:
            print(f"unrolled: note: {e}; ARIMA left out of the table", file=sys.stderr)
    return {name: forecast_errors(truth[ok], f[ok], y_train) for name, f in forecasts.items()}


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The results as an aligned text table (also valid Markdown)."""
    w = max(len(k) for k in table)
    lines = [
        f"| {'method':<{w}} |     MAE |    RMSE | sMAPE % |   MASE |",
        f"|{'-' * (w + 2)}|--------:|--------:|--------:|-------:|",
    ]
    for name, m in table.items():
        lines.append(
            f"| {name:<{w}} | {m['MAE']:7.3f} | {m['RMSE']:7.3f} | {m['sMAPE']:7.2f} | {m['MASE']:6.3f} |"
        )
    return "\n".join(lines)


def network_label(cfg: ForecastConfig) -> str:
    return f"{cfg.cell.upper()} {cfg.layers}x{cfg.hidden} ({cfg.strategy})"


# --------------------------------------------------------------------------- save / load
def save(directory, fc: Forecaster, cfg: ForecastConfig, ts: TimeSeries, results: dict) -> None:
    """Save the forecaster as a model checkpoint in `directory` (a folder, or the top of a RunDir)."""
    from unrolled.checkpoint import save_model

    meta = {
        "app": APP,
        "forecast": dataclasses.asdict(cfg),
        "columns": ts.columns,
        "period": ts.period,
        "scaler": fc.scaler.to_dict(),
        "results": results,
    }
    save_model(model_dir(directory), fc.model, meta)


def load(directory: str | Path) -> tuple[Forecaster, ForecastConfig, dict]:
    from unrolled.checkpoint import load_model

    model, meta = load_model(directory)
    if meta.get("app") != APP:
        raise ValueError(
            f"{directory}: not a forecasting model (it was saved by {meta.get('app', 'another tool')!r})"
        )
    cfg = ForecastConfig(**meta["forecast"])
    fc = Forecaster(
        model, Scaler.from_dict(meta["scaler"]), cfg.strategy, cfg.lookback, cfg.horizon, cfg.difference
    )
    return fc, cfg, meta


# --------------------------------------------------------------------------- plot
def plot_forecast(
    path: str | Path, history: TimeSeries, forecast: np.ndarray, holdout: np.ndarray | None, title: str
) -> None:
    """History, the held-out actual values (if any) and the forecast in one PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"--plot needs matplotlib: {install_hint('plot', 'matplotlib')}") from None
    n, h = len(history.values), len(forecast)
    shown = max(0, n - max(100, 10 * h))  # the recent past: the forecast stays readable on long series
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(np.arange(shown, n), history.target[shown:], color="0.3", lw=1, label="history")
    future = np.arange(n, n + h)
    if holdout is not None:
        ax.plot(future, holdout, color="tab:green", lw=1.5, marker=".", label="holdout (actual)")
    ax.plot(future, forecast, color="tab:red", lw=1.5, marker=".", label="forecast")
    ax.axvline(n - 0.5, color="0.6", ls="--", lw=0.8)
    ticks = ax.get_xticks()
    ax.set_xticks(
        [t for t in ticks if shown <= t < n], [history.time[int(t)] for t in ticks if shown <= t < n]
    )
    ax.set_title(title)
    ax.set_ylabel(history.columns[0])
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
