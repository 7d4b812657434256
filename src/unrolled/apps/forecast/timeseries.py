"""Time series for forecasting: loading (CSV, statsmodels' bundled datasets), missing values,
chronological splits, scaling fitted on the training split only, and lookback/horizon windows.

The one rule everything here keeps: **no value at or after the end of a split ever reaches what is
fitted on that split.** Training windows end inside the training split, the scaler sees only training
rows, and interpolation of a gap in one split uses no value of a later split.

Layout: ``TimeSeries.values`` is (N, F) float64 with NaN where a value is missing; column 0 is the
target, columns 1… are extra input features (multivariate inputs).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unrolled._files import read_text_file
from unrolled._optional import install_hint

MISSING_POLICIES = ("refuse", "interpolate")
_MISSING_TOKENS = {"", "na", "nan", "null", "none", "?", "n/a"}


@dataclass
class TimeSeries:
    """A series of N rows: ``values`` (N, F) float64 (NaN = missing), column 0 the target."""

    values: np.ndarray  # (N, F)
    columns: list[str]  # F column names; columns[0] is forecast, the others are inputs only
    time: list[str]  # N time labels (the time column, or the row number)
    period: int = 1  # seasonal period in rows (1 = no seasonality): seasonal-naive baseline
    name: str = ""

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(f"values: expected (N, {len(self.columns)}), got {self.values.shape}")
        if len(self.time) != len(self.values):
            raise ValueError(f"time: expected {len(self.values)} labels, got {len(self.time)}")

    @property
    def target(self) -> np.ndarray:
        """(N,) the forecast column."""
        return self.values[:, 0]


# --------------------------------------------------------------------------- loading
def _parse_float(s: str, column: str, line: int, path) -> float:
    s = s.strip()
    if s.lower() in _MISSING_TOKENS:
        return float("nan")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(
            f"{path}: column {column!r}, line {line}: {s[:30]!r} is not a number (a non-numeric column?)"
        ) from None
    if not np.isfinite(v):
        return float("nan")
    return v


def load_csv(
    path: str | Path, column: str, time_column: str | None = None, features: list[str] | tuple = ()
) -> TimeSeries:
    """Read one target column (and optional extra feature columns) of a CSV with a header row.

    Rows are taken in file order, which must be time order. Empty cells and NA/NaN/null/? are missing
    values (NaN here; see :func:`fill_missing`), and so is a blank line between data rows of a one-column
    file (trailing blank lines are not rows). Anything else that is not a number is an error that
    names the file, column and line.
    """
    path = Path(path)
    # A regular file only (/dev/zero or a FIFO is refused at once); a bad byte is named with its offset.
    with io.StringIO(read_text_file(path, "--csv"), newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header row and data rows)")
        header = [h.strip() for h in header]
        if not any(header):
            raise ValueError(f"{path}: blank first line (expected a header row naming the columns)")
        wanted = [column, *features]
        for c in [*wanted, *([time_column] if time_column else [])]:
            if c not in header:
                raise ValueError(f"{path}: no column {c!r} (columns: {', '.join(header)})")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"features: the target {column!r} or a feature is named twice")
        idx = [header.index(c) for c in wanted]
        t_idx = header.index(time_column) if time_column else None
        rows, times, blanks = [], [], []
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                if len(header) == 1:  # in a one-column file a blank line inside the data is a missing value
                    blanks.append(line)
                continue
            for _ in blanks:
                rows.append([float("nan")])
                times.append(str(len(times)))
            blanks = []
            if len(rec) < len(header):
                raise ValueError(f"{path}: line {line} has {len(rec)} fields, the header has {len(header)}")
            rows.append([_parse_float(rec[i], header[i], line, path) for i in idx])
            times.append(rec[t_idx].strip() if t_idx is not None else str(len(times)))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return TimeSeries(np.asarray(rows, dtype=np.float64), wanted, times, name=path.stem)


# name -> (statsmodels dataset, value column, time column or None = index, period in rows, description)
BUILTIN_DATASETS: dict[str, tuple[str, str, str | None, int, str]] = {
    "sunspots": ("sunspots", "SUNACTIVITY", "YEAR", 11, "yearly sunspot numbers 1700-2008 (309 rows)"),
    "co2": ("co2", "co2", None, 52, "weekly Mauna Loa CO2 1958-2001 (2284 rows, 59 missing)"),
    "nile": ("nile", "volume", "year", 1, "yearly Nile flow at Aswan 1871-1970 (100 rows)"),
    "elnino": ("elnino", "", "YEAR", 12, "monthly Pacific sea-surface temperature 1950-2010 (732 rows)"),
}


# name -> (value column, time column, period in rows, description): CSVs of the dataset registry
# (unrolled.datasets), downloaded once into its cache on first use.
REGISTRY_SERIES: dict[str, tuple[str, str, int, str]] = {
    "monthly-sunspots": ("Sunspots", "Month", 132, "monthly sunspot numbers 1749-1983 (2820 rows; download)"),
    "airline-passengers": (
        "Passengers",
        "Month",
        12,
        "monthly airline passengers 1949-1960 (144 rows; download)",
    ),
}
DATASET_NAMES = (*BUILTIN_DATASETS, *REGISTRY_SERIES)


def load_builtin(name: str) -> TimeSeries:
    """A named series: one of statsmodels' bundled datasets (no download: sunspots, co2, nile, elnino), or
    a CSV of the dataset registry (monthly-sunspots, airline-passengers), fetched once into its cache by
    :func:`unrolled.datasets.ensure` (saying so on stderr).

    statsmodels is the optional extra ``data``; without it this raises ImportError with the
    install command. elnino (a year × month table) is read row by row into one monthly series.
    """
    if name in REGISTRY_SERIES:
        from unrolled import datasets

        column, time_column, period, _ = REGISTRY_SERIES[name]
        ts = load_csv(datasets.ensure(name), column, time_column)
        ts.period, ts.name = period, name
        return ts
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown dataset {name!r} (choose from: {', '.join(sorted(DATASET_NAMES))})")
    try:
        import statsmodels.api as sm
    except ImportError:
        raise ImportError(
            f"dataset {name!r} needs statsmodels: {install_hint('data', 'statsmodels')}"
        ) from None
    ds, col, tcol, period, _ = BUILTIN_DATASETS[name]
    df = getattr(sm.datasets, ds).load_pandas().data
    if name == "elnino":
        months = [c for c in df.columns if c != "YEAR"]
        values = df[months].to_numpy(dtype=np.float64).reshape(-1, 1)
        time = [f"{int(y)}-{m + 1:02d}" for y in df["YEAR"] for m in range(len(months))]
        return TimeSeries(values, ["sst"], time, period, name)
    values = df[[col]].to_numpy(dtype=np.float64)
    if tcol is None:
        time = [str(t.date()) if hasattr(t, "date") else str(t) for t in df.index]
    else:
        time = [str(int(t)) for t in df[tcol]]
    return TimeSeries(values, [col], time, period, name)


# --------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """Chronological split of N rows: train [0, train_end), validation [train_end, val_end),
    test [val_end, n). Never shuffled across time."""

    train_end: int
    val_end: int
    n: int

    @property
    def boundaries(self) -> tuple[int, int, int]:
        return (self.train_end, self.val_end, self.n)


def chronological_split(n: int, lookback: int, horizon: int, test_size: int, val_size: int) -> Split:
    """Cut N rows into train | validation | test, in that order in time.

    The training split must hold at least one whole window (lookback + horizon rows), and the
    validation and test splits at least ``horizon`` rows each (one forecast to score).
    """
    for nm, v in (("lookback", lookback), ("horizon", horizon)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{nm}: expected a positive integer, got {v!r}")
    for nm, v in (("test_size", test_size), ("val_size", val_size)):
        if not isinstance(v, int | np.integer) or v < horizon:
            raise ValueError(f"{nm}: expected at least horizon = {horizon} rows, got {v!r}")
    need = lookback + horizon + val_size + test_size
    if n < need:
        raise ValueError(
            f"too few rows: {n} rows, need at least lookback + horizon + validation + test = "
            f"{lookback} + {horizon} + {val_size} + {test_size} = {need}"
        )
    return Split(n - val_size - test_size, n - test_size, n)


# --------------------------------------------------------------------------- missing values
def fill_missing(ts: TimeSeries, policy: str, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Apply the missing-value policy; returns (values (N, F) without NaN, observed (N,) bool of the target).

    ``"refuse"``: any missing value is an error naming the column, the count and the first row.
    ``"interpolate"``: linear in time, causally per split — a gap inside split s is filled from the
    values of splits ≤ s only (a gap at the end of the training split is carried forward from its last
    value, never pulled towards a validation or test value). Missing target values stay unscored
    (``observed`` is False there): a forecast is never graded against an invented number.
    """
    if policy not in MISSING_POLICIES:
        raise ValueError(f"missing: expected one of {', '.join(MISSING_POLICIES)}, got {policy!r}")
    values = ts.values
    nan = np.isnan(values)
    observed = ~nan[:, 0]
    if not nan.any():
        return values.copy(), observed
    if policy == "refuse":
        j = int(np.argmax(nan.any(axis=0)))
        i = int(np.argmax(nan[:, j]))
        raise ValueError(
            f"column {ts.columns[j]!r} has {int(nan[:, j].sum())} missing values (first at row {i}, "
            f"time {ts.time[i]}); use --missing interpolate to fill them"
        )
    out = values.copy()
    t = np.arange(len(values))
    start = 0
    for end in split.boundaries:
        for j in range(values.shape[1]):
            seen = ~nan[:end, j]
            if not seen.any():
                raise ValueError(f"column {ts.columns[j]!r}: no observed value before row {end}")
            gap = np.flatnonzero(nan[start:end, j]) + start
            # np.interp holds the end values constant outside the observed range: a causal forward fill
            out[gap, j] = np.interp(gap, t[:end][seen], values[:end, j][seen])
        start = end
    return out, observed


# --------------------------------------------------------------------------- scaling
@dataclass
class Scaler:
    """Per-column standardisation z = (x − mean) / std, fitted on the training rows only."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (F,)
    std: np.ndarray = field(default_factory=lambda: np.ones(0))  # (F,)

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Scaler:
        """Fit on (n_train, F) training rows. A constant column gets std 1 (it is only centred)."""
        x = np.asarray(train_values, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"train_values: expected (n ≥ 2, F) training rows, got shape {x.shape}")
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., F) -> scaled (..., F)."""
        return (x - self.mean) / self.std

    def inverse_target(self, z: np.ndarray) -> np.ndarray:
        """Scaled target values (any shape) back to the units of column 0."""
        return z * self.std[0] + self.mean[0]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


# --------------------------------------------------------------------------- windows
def make_windows(
    values: np.ndarray, lookback: int, horizon: int, target_start: int, target_end: int, targets=(0,)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows whose ``horizon`` target rows lie inside [target_start, target_end).

    A window at origin t has inputs rows t − lookback … t − 1 (all F columns) and targets rows
    t … t + horizon − 1 (the ``targets`` columns); so for training, ``target_end = split.train_end``
    keeps every input and every target strictly inside the training split.

    Returns
    -------
    X : (n, lookback, F), Y : (n, horizon, len(targets)), origins : (n,) the t of each window.
    """
    N = len(values)
    first = max(target_start, lookback)
    origins = np.arange(first, min(target_end, N) - horizon + 1)
    if origins.size == 0:
        return (
            np.zeros((0, lookback, values.shape[1])),
            np.zeros((0, horizon, len(targets))),
            origins,
        )
    X = np.stack([values[t - lookback : t] for t in origins])  # (n, L, F)
    Y = np.stack([values[t : t + horizon][:, list(targets)] for t in origins])  # (n, h, |targets|)
    return X, Y, origins


# --------------------------------------------------------------------------- the whole preparation
@dataclass
class Prepared:
    """A series made ready for training: filled, split, scaled on the training rows, cut into windows."""

    values: np.ndarray  # (N, F) filled and scaled with ``scaler``
    raw: np.ndarray  # (N, F) filled, original units
    observed: np.ndarray  # (N,) bool: the target was observed (not filled) at that row
    split: Split
    scaler: Scaler
    X_train: np.ndarray  # (n, lookback, F) scaled
    Y_train: np.ndarray  # (n, horizon, |targets|) scaled


def prepare(
    ts: TimeSeries,
    lookback: int,
    horizon: int,
    test_size: int,
    val_size: int,
    missing: str = "refuse",
    targets=(0,),
    train_horizon: int | None = None,
    difference: bool = False,
) -> Prepared:
    """Fill missing values, split chronologically, fit the scaler on the training rows and cut the
    training windows — in that order, so nothing after ``split.train_end`` reaches the scaler or a
    training window.

    ``horizon`` is the forecast horizon the splits must allow for; ``train_horizon`` (default: horizon)
    the number of target rows per training window (1 for a one-step recursive model). With
    ``difference`` the model space is the first difference Δy_t = y_t − y_{t−1} (:func:`differences`),
    for series with a trend that a scaler fitted on the past cannot bound.
    """
    split = chronological_split(len(ts.values), lookback, horizon, test_size, val_size)
    raw, observed = fill_missing(ts, missing, split)
    space = differences(raw) if difference else raw
    scaler = Scaler.fit(space[1 if difference else 0 : split.train_end])
    values = scaler.transform(space)
    X, Y, _ = make_windows(values, lookback, train_horizon or horizon, 0, split.train_end, targets)
    return Prepared(values, raw, observed, split, scaler, X, Y)


def differences(raw: np.ndarray) -> np.ndarray:
    """(N, F) first differences Δy_t = y_t − y_{t−1}, with Δy_0 = 0 (row 0 has no past; never a target)."""
    d = np.zeros_like(raw)
    d[1:] = raw[1:] - raw[:-1]
    return d
