"""Metrics: hand-computed values, and scikit-learn's definitions where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import metrics


def test_forecast_errors_match_hand_computed_values():
    a, f = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0])
    assert metrics.mae(a, f) == pytest.approx(4 / 3)
    assert metrics.rmse(a, f) == pytest.approx(np.sqrt(10 / 3))
    # sMAPE terms: 2·1/3, 0, 2·3/5
    assert metrics.smape(a, f) == pytest.approx(100 / 3 * (2 / 3 + 6 / 5))


def test_smape_counts_a_zero_forecast_of_a_zero_value_as_exact():
    assert metrics.smape([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert metrics.smape([0.0], [5.0]) == pytest.approx(200.0)


def test_mase_is_one_for_the_naive_forecast_on_its_own_training_data():
    y = np.cumsum(np.random.default_rng(0).standard_normal(50))
    assert metrics.mase(y[1:], y[:-1], y) == pytest.approx(1.0)
    # seasonal scale: mean |y_t − y_{t−m}|
    assert metrics.mase_scale(y, season=4) == pytest.approx(np.mean(np.abs(y[4:] - y[:-4])))


def test_mase_refuses_a_constant_training_series():
    with pytest.raises(ValueError, match="constant training series"):
        metrics.mase([1.0], [2.0], np.ones(10))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        metrics.mae([1.0, 2.0], [1.0])


def test_confusion_matrix_rows_are_true_classes():
    cm = metrics.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_macro_f1_weights_every_class_the_same():
    y, p = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0])
    # class 0: P = 4/5, R = 1 → F1 = 8/9; class 1: F1 = 0
    assert metrics.macro_f1(y, p) == pytest.approx((8 / 9 + 0) / 2)
    assert metrics.accuracy(y, p) == pytest.approx(0.8)


def test_classification_scores_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed (unrolled[data])")
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 6, 200)
    assert metrics.macro_f1(y, p) == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert metrics.accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p))
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p), sk.confusion_matrix(y, p))


def test_majority_baseline_predicts_the_most_frequent_training_class():
    assert metrics.majority_baseline([2, 2, 1], [2, 1, 2, 2]) == pytest.approx(0.75)
