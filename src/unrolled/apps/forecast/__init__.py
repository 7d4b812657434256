"""Forecasting a time series with a recurrent network, beside the naive, seasonal naive and ARIMA forecasts.

- :mod:`~unrolled.apps.forecast.timeseries`: CSV and built-in series, causal filling,
  splits, scaling, windows;
- :mod:`~unrolled.apps.forecast.forecaster`: the config, build / fit / evaluate / save / load, the plot;
- :mod:`~unrolled.apps.forecast.baselines`: the forecasts the network must beat.
"""

from unrolled.apps.forecast import baselines
from unrolled.apps.forecast.forecaster import (
    APP,
    STRATEGIES,
    ForecastConfig,
    Forecaster,
    build,
    evaluate,
    fit,
    format_table,
    load,
    network_label,
    plot_forecast,
    prepare_for,
    save,
)

__all__ = [
    "APP", "STRATEGIES", "ForecastConfig", "Forecaster", "baselines", "build", "evaluate", "fit",
    "format_table", "load", "network_label", "plot_forecast", "prepare_for", "save",
]  # fmt: skip
