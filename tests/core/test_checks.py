"""The shared argument checks and the config helper: each accepts what it names and refuses the rest in one
message that names the argument, what was expected and what came."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unrolled import config
from unrolled._checks import non_negative_int, one_of, positive_float, positive_int, probability


@pytest.mark.parametrize("v", [1, 7, np.int64(3)])
def test_positive_int_accepts_integers_from_one_and_returns_int(v):
    got = positive_int("n", v)
    assert got == int(v) and type(got) is int


@pytest.mark.parametrize("v", [0, -2, 1.0, True, "3", None])
def test_positive_int_refuses_zero_floats_bools_strings(v):
    with pytest.raises(ValueError, match=r"^n: expected a positive integer, got "):
        positive_int("n", v)


def test_positive_int_allows_none_only_when_asked():
    assert positive_int("n", None, allow_none=True) is None
    with pytest.raises(ValueError, match="positive integer or None"):
        positive_int("n", 0, allow_none=True)


def test_non_negative_int_accepts_zero_refuses_negative():
    assert non_negative_int("k", 0) == 0
    with pytest.raises(ValueError, match="k: expected a non-negative integer, got -1"):
        non_negative_int("k", -1)


@pytest.mark.parametrize("v,closed", [(0, False), (0.99, False), (1.0, True)])
def test_probability_accepts_the_interval(v, closed):
    assert probability("p", v, closed=closed) == float(v)


@pytest.mark.parametrize("v", [1.0, -0.1, float("nan"), True, "0.5"])
def test_probability_refuses_outside_half_open_interval(v):
    with pytest.raises(ValueError, match=r"^p: expected a probability in \[0, 1\)"):
        probability("p", v)


def test_positive_float_refuses_zero_inf_and_nan_unless_zero_allowed():
    assert positive_float("lr", 3e-3) == 3e-3
    assert positive_float("wd", 0, allow_zero=True) == 0.0
    for v in (0.0, float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="lr: expected a positive number"):
            positive_float("lr", v)


def test_one_of_names_the_choices():
    assert one_of("cell", "gru", ("lstm", "gru")) == "gru"
    with pytest.raises(ValueError, match="cell: expected one of 'lstm', 'gru', got 'tcn'"):
        one_of("cell", "tcn", ("lstm", "gru"))


@dataclasses.dataclass
class _Cfg:
    hidden: int = 8
    cell: str = "lstm"


def test_config_round_trip_and_unknown_fields():
    c = _Cfg(hidden=3, cell="gru")
    assert config.from_dict(_Cfg, config.to_dict(c)) == c
    with pytest.raises(ValueError, match=r"unknown fields \['x'\] \(not a test model's config\)"):
        config.from_dict(_Cfg, {"hidden": 3, "x": 1}, what="a test model")
    assert config.from_dict(_Cfg, {"hidden": 3, "x": 1}, ignore_unknown=True) == _Cfg(hidden=3)
    with pytest.raises(ValueError, match="config: expected a dict, got list"):
        config.from_dict(_Cfg, [1])
