"""Optimizers follow their published update rules and torch.optim on identical gradients;
their state dicts continue a run bit-exactly; schedules give the documented learning rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unrolled.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    ConstantLR,
    CosineLR,
    RMSprop,
    StepLR,
    WarmupLR,
    schedule_from_dict,
    schedule_to_dict,
)

from conftest import require_torch

STEPS = 6


def _problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


# ----------------------------------------------------------------------------- published rules
def test_sgd_plain_is_theta_minus_lr_g():
    params, grads = _problem()
    start = {k: v.copy() for k, v in params.items()}
    opt = SGD(params, lr=0.1)
    opt.step(grads[0])
    for k in params:
        np.testing.assert_array_equal(params[k], start[k] - 0.1 * grads[0][k])


def test_sgd_momentum_and_nesterov_follow_sutskever_form():
    for nesterov in (False, True):
        params, grads = _problem()
        ref = {k: v.copy() for k, v in params.items()}
        buf = {}
        opt = SGD(params, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
        for g in grads:
            opt.step(g)
            for k in ref:
                gk = g[k] + 0.01 * ref[k]
                buf[k] = gk if k not in buf else 0.9 * buf[k] + gk
                ref[k] = ref[k] - 0.05 * (gk + 0.9 * buf[k] if nesterov else buf[k])
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-13)


def test_adagrad_divides_by_root_of_summed_squares():
    params, grads = _problem()
    ref = {k: v.copy() for k, v in params.items()}
    acc = {k: np.zeros_like(v) for k, v in ref.items()}
    opt = Adagrad(params, lr=0.1)
    for g in grads:
        opt.step(g)
        for k in ref:
            acc[k] += g[k] ** 2
            ref[k] -= 0.1 * g[k] / (np.sqrt(acc[k]) + 1e-10)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-13)


def test_rmsprop_divides_by_running_rms():
    params, grads = _problem()
    ref = {k: v.copy() for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    opt = RMSprop(params, lr=0.01, alpha=0.9)
    for g in grads:
        opt.step(g)
        for k in ref:
            v[k] = 0.9 * v[k] + 0.1 * g[k] ** 2
            ref[k] -= 0.01 * g[k] / (np.sqrt(v[k]) + 1e-8)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-13, atol=1e-13)


def test_adam_matches_kingma_ba_algorithm_1():
    params, grads = _problem()
    ref = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(x) for k, x in ref.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    b1, b2, lr, eps = 0.8, 0.95, 0.01, 1e-8
    opt = Adam(params, lr=lr, betas=(b1, b2), eps=eps)
    for t, g in enumerate(grads, start=1):
        opt.step(g)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            ref[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-13)


def test_adam_first_step_moves_each_weight_by_about_lr():
    params, grads = _problem()
    start = {k: v.copy() for k, v in params.items()}
    Adam(params, lr=0.01).step(grads[0])
    for k in params:
        np.testing.assert_allclose(params[k] - start[k], -0.01 * np.sign(grads[0][k]), rtol=1e-5)


def test_adamw_decays_weights_not_gradients():
    params, grads = _problem()
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    start = {k: v.copy() for k, v in params.items()}
    AdamW(params, lr=0.1, weight_decay=0.5).step(zero)  # zero gradient: only the decoupled decay acts
    for k in params:
        np.testing.assert_allclose(params[k], start[k] * (1 - 0.1 * 0.5), rtol=1e-14)
    params2, _ = _problem()
    Adam(params2, lr=0.1, weight_decay=0.5).step(zero)  # L2 in Adam: normalised, moves by ~lr
    for k in params2:
        np.testing.assert_allclose(np.abs(params2[k] - start[k]), 0.1, rtol=1e-5)


# ----------------------------------------------------------------------------- torch.optim
CASES = [
    (SGD, dict(lr=0.1), "SGD", dict(lr=0.1)),
    (
        SGD,
        dict(lr=0.1, momentum=0.9, weight_decay=0.01),
        "SGD",
        dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True), "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    (SGD, dict(lr=0.1, momentum=0.5, dampening=0.3), "SGD", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    (
        Adagrad,
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.2),
        "Adagrad",
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.2),
    ),
    (RMSprop, dict(lr=0.01), "RMSprop", dict(lr=0.01)),
    (
        RMSprop,
        dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
        "RMSprop",
        dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
    ),
    (Adam, dict(lr=0.01, weight_decay=0.1), "Adam", dict(lr=0.01, weight_decay=0.1)),
    (Adam, dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6), "Adam", dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6)),
    (AdamW, dict(lr=0.01), "AdamW", dict(lr=0.01)),
    (AdamW, dict(lr=0.01, weight_decay=0.3), "AdamW", dict(lr=0.01, weight_decay=0.3)),
]


@pytest.mark.parametrize("ours, kw, tname, tkw", CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_optimizer_matches_torch_optim_on_identical_gradients(ours, kw, tname, tkw):
    torch = require_torch()
    params, grads = _problem(seed=3)
    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    topt = getattr(torch.optim, tname)(list(tparams.values()), **tkw)
    opt = ours(params, **kw)
    for g in grads:
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        topt.step()
        opt.step(g)
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: Adagrad(p, lr=0.1),
        lambda p: RMSprop(p, lr=0.01, momentum=0.5, centered=True),
        lambda p: Adam(p, lr=0.01),
        lambda p: AdamW(p, lr=0.01),
    ],
)
def test_state_dict_round_trip_continues_bit_exactly(make):
    params, grads = _problem(dtype=np.float32)
    opt = make(params)
    for g in grads:
        opt.step(g)
    params2, _ = _problem(dtype=np.float32)
    opt2 = make(params2)
    for g in grads[:3]:
        opt2.step(g)
    sd = opt2.state_dict()
    params3 = {k: v.copy() for k, v in params2.items()}
    opt3 = make(params3)
    opt3.load_state_dict(sd)
    for g in grads[3:]:
        opt3.step(g)
    for k in params:
        np.testing.assert_array_equal(params3[k], params[k])
    assert sd["arrays"] is not opt2.state  # copies, not the live slots
    import json

    json.dumps({k: v for k, v in sd.items() if k != "arrays"})  # the rest is JSON-able


def test_load_state_dict_refuses_other_optimizer_or_shapes():
    params, grads = _problem()
    adam = Adam(params)
    adam.step(grads[0])
    with pytest.raises(ValueError, match="expected an SGD state"):
        SGD(params, lr=0.1).load_state_dict(adam.state_dict())
    other = {"W": np.zeros((2, 2)), "b": np.zeros(3)}
    with pytest.raises(ValueError, match="expected shape"):
        Adam(other).load_state_dict(adam.state_dict())


def test_bad_arguments_name_the_argument():
    params, grads = _problem()
    with pytest.raises(ValueError, match="lr: expected"):
        SGD(params, lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(params, lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(params, betas=(0.9,))
    with pytest.raises(ValueError, match=r"grads: missing gradients for \['b'\]"):
        Adam(params).step({"W": grads[0]["W"]})
    with pytest.raises(ValueError, match=r"grads\['W'\]: expected shape \(3, 4\), got \(4, 3\)"):
        Adam(params).step({"W": grads[0]["W"].T, "b": grads[0]["b"]})


def test_lr_is_settable_between_steps():
    params, grads = _problem()
    start = params["b"].copy()
    opt = SGD(params, lr=1.0)
    opt.lr = 0.0
    opt.step(grads[0])
    np.testing.assert_array_equal(params["b"], start)


# ----------------------------------------------------------------------------- schedules
def test_schedules_give_the_documented_values():
    assert ConstantLR(0.3)(0) == ConstantLR(0.3)(1000) == 0.3
    s = StepLR(1.0, step_size=10, gamma=0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]
    c = CosineLR(1.0, total_steps=100, min_lr=0.1)
    assert c(0) == 1.0 and math.isclose(c(50), 0.55) and math.isclose(c(100), 0.1) and c(500) == c(100)
    w = WarmupLR(ConstantLR(1.0), warmup_steps=4)
    assert [w(0), w(1), w(3), w(4), w(99)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_schedules_match_torch_schedulers():
    torch = require_torch()
    for ours, make in [
        (StepLR(0.5, step_size=3, gamma=0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
        (
            CosineLR(0.5, total_steps=20, min_lr=0.01),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.01),
        ),
    ]:
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sch = make(o)
        for step in range(20):
            assert math.isclose(ours(step), o.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12)
            o.step()
            sch.step()


def test_schedule_dict_round_trip():
    for s in [ConstantLR(0.1), StepLR(0.1, 5, 0.5), CosineLR(0.1, 50), WarmupLR(CosineLR(0.1, 50, 0.01), 5)]:
        assert schedule_from_dict(schedule_to_dict(s)) == s
    with pytest.raises(ValueError, match="schedule: expected one of"):
        schedule_from_dict({"name": "Exponential"})
