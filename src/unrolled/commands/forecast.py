"""``unrolled forecast DIR``: the next steps of a series with a model from ``unrolled train forecast``
(:mod:`unrolled.apps.forecast`), as CSV; ``--holdout`` forecasts the last rows and scores them."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from unrolled._checks import positive_int
from unrolled.apps.forecast import load, network_label, plot_forecast
from unrolled.apps.forecast.timeseries import Split, TimeSeries, fill_missing
from unrolled.commands._common import (
    add_checkpoint_option,
    add_quantized_option,
    model_choice,
    quantized,
    say_model,
)
from unrolled.metrics import forecast_errors


def register(subparsers) -> None:
    q = subparsers.add_parser("forecast", help="forecast the next steps with a model from 'train forecast'")
    q.add_argument("directory", metavar="DIR", help="a directory written by 'unrolled train forecast'")
    q.add_argument(
        "--csv", metavar="FILE", help="forecast this series (same columns) instead of the training one"
    )
    q.add_argument("--time-column", metavar="NAME", help="with --csv: a column of time labels")
    add_checkpoint_option(q)
    add_quantized_option(q)
    q.add_argument("--horizon", type=int, help="steps ahead (default: the trained horizon)")
    q.add_argument(
        "--rollout",
        action="store_true",
        help="a direct model beyond its trained horizon: feed its own forecasts back as inputs "
        "(univariate models; less accurate than a model trained for the horizon)",
    )
    q.add_argument("--holdout", action="store_true", help="hold out the last horizon rows and forecast them")
    q.add_argument("--plot", metavar="PNG", help="save a plot of history, holdout and forecast")
    q.add_argument("--output", metavar="CSV", help="write the forecast here (default: stdout)")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    choice = model_choice(args, args.directory)
    fc, cfg, meta = load(choice.path)
    fc.model = quantized(args, fc.model)
    if args.csv is not None:
        cols = meta["columns"]
        cfg = dataclasses.replace(
            cfg, csv=args.csv, dataset=None, column=cols[0], features=tuple(cols[1:]), period=meta["period"]
        )
        if args.time_column:
            cfg.time_column = args.time_column
    ts = cfg.load_series()
    if ts.columns != meta["columns"]:
        raise ValueError(f"columns: the model was trained on {meta['columns']}, this series has {ts.columns}")
    h = args.horizon if args.horizon is not None else cfg.horizon
    positive_int("--horizon", h)
    holdout = None
    if args.holdout:
        if len(ts.values) < cfg.lookback + h:
            raise ValueError(
                f"too few rows for --holdout: {len(ts.values)} < lookback + horizon = {cfg.lookback + h}"
            )
        cut = len(ts.values) - h
        holdout, held_time = ts.values[cut:, 0], ts.time[cut:]
        ts = TimeSeries(ts.values[:cut], ts.columns, ts.time[:cut], ts.period, ts.name)
    n = len(ts.values)
    if n < cfg.lookback:
        raise ValueError(f"too few rows: {n}, the model reads lookback = {cfg.lookback} rows")
    raw, _ = fill_missing(ts, cfg.missing, Split(n, n, n))
    pred = fc.forecast(raw, np.array([n]), h, rollout=args.rollout)[0]
    if cfg.strategy == "direct" and h > cfg.horizon:  # only reached with --rollout
        print(
            f"unrolled: note: steps {cfg.horizon + 1}-{h} are a rollout: this direct model was trained for "
            f"{cfg.horizon} steps, and its own forecasts were fed back as inputs to go further",
            file=sys.stderr,
        )
    say_model(choice)
    rows = ["step,time,forecast" + (",actual" if holdout is not None else "")]
    for k in range(h):
        extra = f",{holdout[k]:.6g}" if holdout is not None else ""
        when = held_time[k] if holdout is not None else f"+{k + 1} after {ts.time[-1]}"
        rows.append(f"{k + 1},{when},{pred[k]:.6g}{extra}")
    text = "\n".join(rows) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if holdout is not None:
        ok = np.isfinite(holdout)
        errs = forecast_errors(holdout[ok], pred[ok], raw[:, 0])
        print("holdout: " + "  ".join(f"{k} {v:.4g}" for k, v in errs.items()), file=sys.stderr)
    if args.plot:
        title = f"{ts.name}: {network_label(cfg)}, lookback {cfg.lookback}"
        plot_forecast(args.plot, ts, pred, holdout, title)
    return 0
