"""Feedback during long work: progress on stderr for every step that can take more than a few seconds, and
optional dependencies checked before the work starts, with a hint that installs them from a clone."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import _optional
from unrolled.apps.forecast import baselines


def _ar1(n: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.7 * y[t - 1] + rng.standard_normal()
    return y


def test_arima_order_search_reports_progress_on_stderr_before_returning(capsys):
    pytest.importorskip("statsmodels")
    y = _ar1()
    f, order = baselines.arima(y, 60, np.array([65, 70]), 2)
    err = capsys.readouterr().err
    assert "ARIMA order search" in err and "30/30" in err  # every order of the default grid, counted
    assert "ARIMA({},{},{}): fitted and forecast from 2 origins in".format(*order) in err
    assert f.shape == (2, 2)


def test_arima_progress_can_be_switched_off(capsys):
    pytest.importorskip("statsmodels")
    baselines.arima(_ar1(), 60, np.array([65]), 2, order=(1, 0, 0), progress=False)
    assert capsys.readouterr().err == ""


def test_a_missing_optional_package_is_named_with_the_clone_install_before_any_work(monkeypatch):
    monkeypatch.setattr(_optional, "is_installed", lambda module: module != "statsmodels")
    with pytest.raises(ImportError) as e:
        baselines.arima(_ar1(), 60, np.array([65]), 2)
    msg = str(e.value)
    assert msg.startswith("the ARIMA baseline needs statsmodels: ")
    assert 'pip install -e ".[data]"' in msg and "pip install statsmodels" in msg
    assert "unrolled[" not in msg.replace('".[', "")  # never the unpublished registry name


def test_is_installed_finds_a_module_without_importing_it():
    assert _optional.is_installed("json") and not _optional.is_installed("no_such_module_xyz")
