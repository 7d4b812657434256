"""Sunspots (yearly, 1700-2008, statsmodels' bundled data): recurrent forecasters beside naive, seasonal
naive and ARIMA, scored on the same held-out tail with rolling origins.

    .venv/bin/python benchmarks/forecast_sunspots.py [--seeds 3] [--out benchmarks/results]

Every network row is the mean ± standard deviation over seeds (the validation tail is short, so the
early-stopping point — and the score — moves with the seed; one seed would flatter or shame it by luck).
Writes forecast_sunspots.md / .json and a plot of one forecast from the start of the test tail.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from unrolled.apps.forecast import ForecastConfig, evaluate, fit, format_table, network_label, prepare_for
from unrolled.apps.forecast.timeseries import TimeSeries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--strategies", default="direct,recursive")
    ap.add_argument("--lookback", type=int, default=24)
    ap.add_argument("--horizon", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    base = ForecastConfig(dataset="sunspots", lookback=a.lookback, horizon=a.horizon, hidden=a.hidden)
    ts = base.load_series()
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    baselines: dict | None = None
    keep = None
    for cell in a.cells.split(","):
        for strategy in a.strategies.split(","):
            for seed in range(a.seeds):
                cfg = ForecastConfig(
                    dataset="sunspots", lookback=a.lookback, horizon=a.horizon, hidden=a.hidden, cell=cell,
                    strategy=strategy, seed=seed, arima=baselines is None,
                )  # fmt: skip
                prep = prepare_for(cfg, ts)
                t = time.perf_counter()
                fc, summary = fit(cfg, prep, log=lambda s: None)
                train_s = time.perf_counter() - t
                table = evaluate(fc, prep, cfg, ts.period, "net")
                if baselines is None:
                    baselines = {k: v for k, v in table.items() if k != "net"}
                runs.setdefault(network_label(cfg), []).append(
                    {**table["net"], "seconds": round(train_s, 1), "epochs": summary["epochs"], "seed": seed}
                )
                if keep is None or table["net"]["MAE"] < keep[0]:
                    keep = (table["net"]["MAE"], fc, prep, cfg)
                print(
                    f"{network_label(cfg)} seed {seed}: MAE {table['net']['MAE']:.2f} ({train_s:.0f} s)",
                    flush=True,
                )

    rows = {}
    for label, rs in runs.items():
        rows[label] = {m: float(np.mean([r[m] for r in rs])) for m in ("MAE", "RMSE", "sMAPE", "MASE")}
    rows.update(baselines)
    sp = prepare_for(base, ts).split
    lines = [
        f"Sunspots, yearly (statsmodels), {sp.n} rows: train {sp.train_end}, validation "
        f"{sp.val_end - sp.train_end}, test {sp.n - sp.val_end} (years {ts.time[sp.val_end]}-{ts.time[-1]}); "
        f"lookback {a.lookback}, horizon {a.horizon}, every origin of the test tail (history up to the "
        f"origin "
        f"only). Network rows: mean over {a.seeds} seeds (± std in the JSON).",
        "",
        format_table(rows),
        "",
        "| network run | seed | MAE | MASE | epochs | train s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rs in runs.items():
        for r in rs:
            lines.append(
                f"| {label} | {r['seed']} | {r['MAE']:.2f} | {r['MASE']:.3f} | {r['epochs']} "
                f"| {r['seconds']} |"
            )
    lines.append("")
    lines.append(f"Total wall time {time.perf_counter() - t0:.0f} s (ARIMA order search included).")
    text = "\n".join(lines)
    print(text)
    (out / "forecast_sunspots.md").write_text(text + "\n")
    std = {
        label: {m: float(np.std([r[m] for r in rs])) for m in ("MAE", "RMSE", "sMAPE", "MASE")}
        for label, rs in runs.items()
    }
    (out / "forecast_sunspots.json").write_text(
        json.dumps({"mean": rows, "std": std, "runs": runs}, indent=1)
    )

    # one picture: the best run's forecast from the first test origin, beside the actual tail
    _, fc, prep, cfg = keep
    n0 = sp.val_end
    pred = fc.forecast(prep.raw, np.array([n0]), cfg.horizon)[0]
    from unrolled.apps.forecast import plot_forecast

    hist = TimeSeries(prep.raw[:n0], ts.columns, ts.time[:n0], ts.period, ts.name)
    plot_forecast(out / "forecast_sunspots.png", hist, pred, prep.raw[n0 : n0 + cfg.horizon, 0],
                  f"sunspots: {network_label(cfg)} seed {cfg.seed}, forecast from {ts.time[n0]}")  # fmt: skip


if __name__ == "__main__":
    main()
