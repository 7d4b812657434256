"""Evaluation metrics: forecast errors (MAE, RMSE, sMAPE, MASE) and classification scores
(accuracy, macro-F1, confusion matrix).

All take plain arrays and return Python floats (or an integer matrix), so they are equally at home in a
test, a benchmark table or a JSON report. Definitions follow Hyndman & Koehler (2006) for the forecast
errors and scikit-learn for the classification scores.
"""

from __future__ import annotations

import numpy as np

from unrolled._checks import positive_int


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a, f = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if a.shape != f.shape:
        raise ValueError(f"y_pred: expected the shape of y_true {a.shape}, got {f.shape}")
    if a.size == 0:
        raise ValueError("y_true: expected at least one value to score, got none")
    return a, f


# --------------------------------------------------------------------------- forecasting
def mae(y_true, y_pred) -> float:
    """Mean absolute error (1/n) Σ |A − F|."""
    a, f = _pair(y_true, y_pred)
    return float(np.mean(np.abs(a - f)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error √((1/n) Σ (A − F)²)."""
    a, f = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - f) ** 2)))


def smape(y_true, y_pred) -> float:
    """Symmetric mean absolute percentage error, in percent (0 … 200):
    (100/n) Σ 2|F − A| / (|A| + |F|), a term with A = F = 0 counting 0."""
    a, f = _pair(y_true, y_pred)
    den = np.abs(a) + np.abs(f)
    terms = np.divide(2.0 * np.abs(f - a), den, out=np.zeros_like(den), where=den > 0)
    return float(100.0 * np.mean(terms))


def mase_scale(y_train, season: int = 1) -> float:
    """The in-sample MAE of the seasonal-naive forecast on the training series:
    (1/(n − m)) Σ_{t>m} |y_t − y_{t−m}|, the denominator of MASE."""
    y = np.asarray(y_train, dtype=np.float64).ravel()
    season = positive_int("season", season)
    if y.size <= season:
        raise ValueError(f"y_train: expected more than {season} values to scale MASE, got {y.size}")
    scale = float(np.mean(np.abs(y[season:] - y[:-season])))
    if not scale > 0:
        raise ValueError("y_train: constant training series, MASE is undefined (its naive error is 0)")
    return scale


def mase(y_true, y_pred, y_train, season: int = 1) -> float:
    """Mean absolute scaled error: MAE(A, F) / :func:`mase_scale` (y_train, season).

    Below 1: better than the (seasonal) naive forecast's one-step error on the training data.
    """
    return mae(y_true, y_pred) / mase_scale(y_train, season)


def forecast_errors(y_true, y_pred, y_train, season: int = 1) -> dict[str, float]:
    """All four forecast errors in one dict: ``{"MAE", "RMSE", "sMAPE", "MASE"}``."""
    return {
        "MAE": mae(y_true, y_pred),
        "RMSE": rmse(y_true, y_pred),
        "sMAPE": smape(y_true, y_pred),
        "MASE": mase(y_true, y_pred, y_train, season),
    }


# --------------------------------------------------------------------------- classification
def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a, p = np.asarray(y_true), np.asarray(y_pred)
    if a.shape != p.shape or a.ndim != 1:
        raise ValueError(f"y_pred: expected a 1-D array shaped like y_true {a.shape}, got {p.shape}")
    if a.size == 0:
        raise ValueError("y_true: expected at least one label to score, got none")
    for name, v in (("y_true", a), ("y_pred", p)):
        if not np.issubdtype(v.dtype, np.integer) or v.min() < 0:
            raise ValueError(f"{name}: expected non-negative integer class ids, got {v.dtype.name}")
    return a.astype(np.int64), p.astype(np.int64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the label."""
    a, p = _labels(y_true, y_pred)
    return float(np.mean(a == p))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """(K, K) integer counts: row = true class, column = predicted class (scikit-learn's layout)."""
    a, p = _labels(y_true, y_pred)
    K = int(max(a.max(), p.max()) + 1) if num_classes is None else int(num_classes)
    if max(a.max(), p.max()) >= K:
        raise ValueError(f"num_classes: {K} is too small for class id {max(a.max(), p.max())}")
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (a, p), 1)
    return cm


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 = 2·TP / (2·TP + FP + FN) of every class of a confusion matrix (0 where it has no support
    and no prediction)."""
    tp = np.diag(cm).astype(np.float64)
    den = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in y_true or y_pred
    (scikit-learn's ``f1_score(average="macro")``): each class counts the same, however rare."""
    a, p = _labels(y_true, y_pred)
    cm = confusion_matrix(a, p, num_classes)
    present = np.union1d(a, p)
    return float(np.mean(per_class_f1(cm)[present]))


def majority_baseline(y_train, y_test) -> float:
    """Accuracy on y_test of always predicting the most frequent class of y_train."""
    tr = np.asarray(y_train)
    if tr.size == 0:
        raise ValueError("y_train: expected at least one label, got none")
    values, counts = np.unique(tr, return_counts=True)
    return accuracy(np.asarray(y_test), np.full(len(y_test), values[np.argmax(counts)]))
