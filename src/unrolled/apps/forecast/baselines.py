"""The forecasts a practitioner would try before a recurrent network: naive, seasonal naive, ARIMA.

Every function forecasts from a list of origins (rolling-origin evaluation): for origin t it sees
rows 0 … t − 1 of the series and returns the next ``horizon`` values, shaped (n_origins, horizon),
exactly like the network's forecaster, so one table compares them all.
"""

from __future__ import annotations

import itertools
import sys
import time
import warnings

import numpy as np

from unrolled._optional import require


def naive(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """ŷ_{t+k} = y_{t−1}: the last value, held flat. Returns (n, horizon)."""
    return np.repeat(y[np.asarray(origins) - 1][:, None], horizon, axis=1)


def seasonal_naive(y: np.ndarray, origins: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """ŷ_{t+k} = y_{t+k−m(⌊k/m⌋+1)}: the value one season (m = period rows) earlier. Returns (n, horizon).

    With period 1 this is :func:`naive`.
    """
    if period < 1:
        raise ValueError(f"period: expected a positive integer, got {period!r}")
    origins = np.asarray(origins)
    if origins.size and origins.min() < period:
        raise ValueError(
            f"seasonal_naive: origin {origins.min()} has less than one season ({period} rows) behind it"
        )
    k = np.arange(horizon)
    idx = origins[:, None] + k[None, :] - period * (k[None, :] // period + 1)  # (n, h), always < t
    return y[idx]


def _fit_arima(y_train: np.ndarray, order: tuple[int, int, int]):
    from statsmodels.tsa.arima.model import ARIMA

    trend = "c" if order[1] == 0 else "t" if order[1] == 1 else "n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the optimiser; the AIC still ranks fits
        return ARIMA(y_train, order=order, trend=trend).fit()


def select_arima_order(
    y_train: np.ndarray, max_p: int = 4, max_d: int = 1, max_q: int = 2, progress: bool = True
) -> tuple:
    """The (p, d, q) with the lowest AIC over a small grid, fitted on the training split only.

    progress : a bar on stderr, one tick per fitted order: the 30 fits of the default grid take from
        seconds to a minute, far longer than the network itself on a short series.
    """
    from tqdm.auto import tqdm

    orders = list(itertools.product(range(max_p + 1), range(max_d + 1), range(max_q + 1)))
    best, best_aic = None, np.inf
    bar = tqdm(orders, desc="ARIMA order search", unit="fit", file=sys.stderr, disable=not progress)
    for order in bar:
        try:
            aic = _fit_arima(y_train, order).aic
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(aic) and aic < best_aic:
            best, best_aic = order, aic
            bar.set_postfix(best="({},{},{})".format(*best), refresh=False)
    if best is None:
        raise RuntimeError("ARIMA: no order in the grid could be fitted to the training split")
    return best


def arima(
    y: np.ndarray,
    train_end: int,
    origins: np.ndarray,
    horizon: int,
    order: tuple | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, tuple]:
    """ARIMA fitted once on rows [0, train_end) (order by AIC unless given), then, with its parameters
    fixed, filtered up to each origin and forecast ``horizon`` steps. Needs statsmodels.

    progress : report on stderr while it works: a bar over the order search, one over the origins, then
        one line with the order and the time it all took.

    Returns (forecasts (n, horizon), the (p, d, q) used).
    """
    from tqdm.auto import tqdm

    require("the ARIMA baseline", "statsmodels", "data")
    t0 = time.perf_counter()
    if order is None:
        order = select_arima_order(y[:train_end], progress=progress)
    order = tuple(order)
    res = _fit_arima(y[:train_end], order)
    out = np.empty((len(origins), horizon))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        each = tqdm(origins, desc="ARIMA forecasts", unit="origin", file=sys.stderr, disable=not progress)
        for i, t in enumerate(each):
            # apply(): the same fitted parameters run over the history up to t (no refit, no look-ahead)
            out[i] = res.apply(y[:t]).forecast(horizon)
    if progress:
        print(
            "ARIMA({},{},{}): fitted and forecast from {} origins in {:.1f} s".format(
                *order, len(origins), time.perf_counter() - t0
            ),
            file=sys.stderr,
            flush=True,
        )
    return out, order
