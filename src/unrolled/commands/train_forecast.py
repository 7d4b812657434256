"""``unrolled train forecast``: train a forecaster on a CSV column or a built-in series, then score it
beside the naive, seasonal naive and ARIMA forecasts on the held-out tail (:mod:`unrolled.apps.forecast`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from unrolled._optional import install_hint, is_installed
from unrolled.apps.forecast import (
    APP,
    ForecastConfig,
    evaluate,
    fit,
    format_table,
    network_label,
    prepare_for,
    save,
)
from unrolled.commands._common import add_run_options, open_out
from unrolled.commands._options import add_config_arguments, config_from_args


def register(kinds) -> None:
    """``forecast`` among the kinds of ``unrolled train``."""
    p = kinds.add_parser(
        "forecast",
        help="forecast a time series (CSV column or built-in dataset), beside naive/seasonal/ARIMA",
        description="Forecasting a time series with a recurrent network, side by side with the forecasts it "
        "must beat.",
    )
    add_config_arguments(p, ForecastConfig)
    p.add_argument("--out", required=True, metavar="DIR", help="where to save the trained forecaster")
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ForecastConfig, args)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    if cfg.arima and not is_installed("statsmodels"):  # said now, not after the training
        log(f"unrolled: note: the ARIMA baseline needs statsmodels ({install_hint('data', 'statsmodels')}); "
            "it is left out of the table (--no-arima says so)")  # fmt: skip
        cfg = dataclasses.replace(cfg, arima=False)
    ts = cfg.load_series()
    prep = prepare_for(cfg, ts)
    with open_out(args, APP) as run_dir:  # the Trainer writes in DIR/training, the model in DIR
        return _train(args, cfg, ts, prep, run_dir, log)


def _train(args: argparse.Namespace, cfg: ForecastConfig, ts, prep, run_dir, log) -> int:
    sp = prep.split
    log(
        f"{ts.name}: {sp.n} rows, {len(ts.columns)} column(s); train {sp.train_end}, "
        f"validation {sp.val_end - sp.train_end}, test {sp.n - sp.val_end}; "
        f"{prep.X_train.shape[0]} training windows"
    )
    fc, summary = fit(cfg, prep, log, workdir=run_dir, resume=args.resume)
    label = network_label(cfg)
    table = evaluate(fc, prep, cfg, ts.period, label)
    save(run_dir, fc, cfg, ts, {"test": table, "training": summary})
    print(f"test: {sp.n - sp.val_end} held-out rows of {ts.name}, horizon {cfg.horizon}, rolling origin")
    print(format_table(table))
    print(
        f"saved to {args.out} ({summary['epochs']} epochs, best {summary['best_epoch']}, "
        f"{summary['seconds']} s)"
    )
    return 130 if summary["stopped"] == "interrupted" else 0  # as Ctrl-C: continue with --resume
