"""Gradient clipping: the global norm before clipping is returned, after it is max_norm,
and the direction of the whole gradient is kept; value clipping clamps entries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unrolled.clip import clip_grad_norm, clip_grad_value, global_norm

from conftest import require_torch


def _grads(scale=10.0, dtype=np.float64):
    rng = np.random.default_rng(0)
    return {
        "a": (scale * rng.standard_normal((4, 5))).astype(dtype),
        "b": (scale * rng.standard_normal(7)).astype(dtype),
    }


def test_clip_grad_norm_returns_norm_before_and_scales_to_max_norm_keeping_direction():
    g = _grads()
    before = {k: v.copy() for k, v in g.items()}
    expected = math.sqrt(sum(float((v**2).sum()) for v in before.values()))
    norm = clip_grad_norm(g, 1.0)
    assert math.isclose(norm, expected, rel_tol=1e-12)
    assert math.isclose(global_norm(g), 1.0, rel_tol=1e-5)
    flat_before = np.concatenate([v.ravel() for v in before.values()])
    flat_after = np.concatenate([v.ravel() for v in g.values()])
    cos = flat_before @ flat_after / (np.linalg.norm(flat_before) * np.linalg.norm(flat_after))
    assert math.isclose(cos, 1.0, rel_tol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_unchanged():
    g = _grads(scale=0.01)
    before = {k: v.copy() for k, v in g.items()}
    norm = clip_grad_norm(g, 5.0)
    assert norm < 5.0
    for k in g:
        np.testing.assert_array_equal(g[k], before[k])


def test_clip_grad_norm_does_not_touch_non_finite_gradients_and_reports_them():
    g = _grads()
    g["b"][2] = np.nan
    a_before = g["a"].copy()
    assert math.isnan(clip_grad_norm(g, 1.0))
    np.testing.assert_array_equal(g["a"], a_before)
    g["b"][2] = np.inf
    assert clip_grad_norm(g, 1.0) == math.inf


def test_clip_grad_norm_matches_torch():
    torch = require_torch()
    g = _grads(dtype=np.float32)
    ps = [torch.nn.Parameter(torch.zeros(v.shape)) for v in g.values()]
    for p, v in zip(ps, g.values(), strict=True):
        p.grad = torch.tensor(v)
    tnorm = float(torch.nn.utils.clip_grad_norm_(ps, 2.0))
    norm = clip_grad_norm(g, 2.0)
    assert math.isclose(norm, tnorm, rel_tol=1e-6)
    for p, v in zip(ps, g.values(), strict=True):
        np.testing.assert_allclose(v, p.grad.numpy(), rtol=1e-6)


def test_clip_grad_value_clamps_each_entry():
    g = _grads()
    before = {k: v.copy() for k, v in g.items()}
    clip_grad_value(g, 3.0)
    for k in g:
        assert np.abs(g[k]).max() <= 3.0
        np.testing.assert_array_equal(g[k], np.clip(before[k], -3, 3))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_norm: expected a positive number, got 0"):
        clip_grad_norm(_grads(), 0)
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value(_grads(), -1.0)
    with pytest.raises(TypeError, match=r"grads\['x'\]: expected a float ndarray, got list"):
        clip_grad_norm({"x": [1.0]}, 1.0)
