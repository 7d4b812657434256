"""Optimizers that update a dict of live parameter arrays in place, and learning-rate schedules.

Every optimizer takes ``params`` (name -> the model's live ndarray) and ``step(grads)`` with a
dict of the same keys. Each update rule is written out in its class docstring, with g the
gradient, θ the parameter, t the 1-based step count; the rules are PyTorch's (torch.optim), so
the same gradients give the same parameters.

``state_dict()`` returns what a checkpoint needs to continue bit-exactly: JSON-able entries
(``type``, ``t``, ``lr``, ``hyper``) and ``arrays``, a flat dict ``"{slot}/{param name}" -> ndarray``
(copies). ``load_state_dict`` restores it into the existing slot arrays.

Schedules are small frozen dataclasses called as ``lr(step)`` with step = the number of updates
already applied (0 for the first update): :class:`ConstantLR`, :class:`StepLR`, :class:`CosineLR`,
and :class:`WarmupLR` wrapping any of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from unrolled._checks import non_negative_int, positive_int

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Optimizer",
    "ConstantLR",
    "StepLR",
    "CosineLR",
    "WarmupLR",
    "schedule_from_dict",
    "schedule_to_dict",
]


def _check_nonneg(name: str, v, upper: float | None = None, strict: bool = False) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float | np.floating | np.integer)
        or not math.isfinite(v)
    ):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    v = float(v)
    if v < 0 or (strict and v == 0) or (upper is not None and v >= upper):
        rng = f"({'0' if strict else '[0'}, {upper})" if upper is not None else ("> 0" if strict else ">= 0")
        raise ValueError(f"{name}: expected a value {rng}, got {v!r}")
    return v


class Optimizer:
    """Base class: holds the live params, the step count t, the learning rate and per-parameter slots."""

    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float = 0.0) -> None:
        if not isinstance(params, dict) or not params:
            raise ValueError(
                f"params: expected a non-empty dict name -> ndarray, got {type(params).__name__}"
            )
        for k, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                got = p.dtype.name if isinstance(p, np.ndarray) else type(p).__name__
                raise ValueError(f"params[{k!r}]: expected a float32/float64 ndarray, got {got}")
        self.params = params
        self.lr = _check_nonneg("lr", lr)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}

    # The hyper-parameters saved in the state dict (besides lr and weight_decay).
    def _hyper(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay}

    def _slot(self, slot: str, k: str, init: float = 0.0) -> np.ndarray:
        """The slot array of parameter k, created (filled with `init`) on first use."""
        s = self.state[slot]
        if k not in s:
            s[k] = np.full_like(self.params[k], init)
        return s[k]

    def _check_grads(self, grads: dict[str, np.ndarray]) -> None:
        if not isinstance(grads, dict):
            raise TypeError(f"grads: expected a dict name -> ndarray, got {type(grads).__name__}")
        missing = self.params.keys() - grads.keys()
        if missing:
            raise ValueError(f"grads: missing gradients for {sorted(missing)}")
        for k, p in self.params.items():
            g = grads[k]
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                got = g.shape if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(f"grads[{k!r}]: expected shape {p.shape}, got {got}")

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update to every parameter in place from ``grads`` (same keys and shapes)."""
        self._check_grads(grads)
        self.t += 1
        for k, p in self.params.items():
            g = grads[k].astype(p.dtype, copy=False)
            self._update(k, p, g)

    def _update(self, k: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able ``type``, ``t``, ``lr``, ``hyper`` plus ``arrays`` {"slot/name": ndarray copy}."""
        arrays = {f"{slot}/{k}": v.copy() for slot, d in self.state.items() for k, v in d.items()}
        return {
            "type": type(self).__name__,
            "t": self.t,
            "lr": self.lr,
            "hyper": self._hyper(),
            "arrays": arrays,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of the same optimizer type over the same parameters)."""
        if sd.get("type") != type(self).__name__:
            raise ValueError(f"state_dict: expected an {type(self).__name__} state, got {sd.get('type')!r}")
        state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}
        for key, v in sd.get("arrays", {}).items():
            slot, _, k = key.partition("/")
            if slot not in state or k not in self.params:
                raise ValueError(f"state_dict: unknown optimizer entry {key!r} for these parameters")
            if v.shape != self.params[k].shape:
                raise ValueError(f"state_dict: {key!r} expected shape {self.params[k].shape}, got {v.shape}")
            state[slot][k] = np.array(v, dtype=self.params[k].dtype)
        self.state = state
        self.t = int(sd["t"])
        self.lr = float(sd["lr"])
        for name, v in sd.get("hyper", {}).items():
            setattr(self, name, tuple(v) if isinstance(v, list) else v)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self._hyper().items())
        return f"{type(self).__name__}(lr={self.lr}, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum μ and L2 weight decay λ::

    g ← g + λ θ
    b ← μ b + (1 − dampening) g         (b = g at t = 1)
    g ← g + μ b  (Nesterov)   or   g ← b  (classical momentum)
    θ ← θ − lr g
    """

    slots = ("momentum_buffer",)

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_nonneg("momentum", momentum, upper=1.0)
        self.dampening = _check_nonneg("dampening", dampening, upper=1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0")

    def _hyper(self):
        return {
            **super()._hyper(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "dampening": self.dampening,
        }

    def _update(self, k, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            first = k not in self.state["momentum_buffer"]
            b = self._slot("momentum_buffer", k)
            if first:
                b[...] = g
            else:
                b *= self.momentum
                b += (1 - self.dampening) * g
            g = g + self.momentum * b if self.nesterov else b
        p -= self.lr * g


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011)::

    g ← g + λ θ
    lr_t = lr / (1 + (t − 1) lr_decay)
    s ← s + g²                          (s starts at initial_accumulator_value)
    θ ← θ − lr_t g / (√s + ε)
    """

    slots = ("sum",)

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.lr_decay = _check_nonneg("lr_decay", lr_decay)
        self.initial_accumulator_value = _check_nonneg("initial_accumulator_value", initial_accumulator_value)
        self.eps = _check_nonneg("eps", eps)

    def _hyper(self):
        return {
            **super()._hyper(),
            "lr_decay": self.lr_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }

    def _update(self, k, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (self.t - 1) * self.lr_decay)
        s = self._slot("sum", k, self.initial_accumulator_value)
        s += g * g
        p -= clr * (g / (np.sqrt(s) + self.eps))


class RMSprop(Optimizer):
    """RMSprop (Hinton, lecture 6e), optionally centred and with momentum μ::

    g ← g + λ θ
    v ← α v + (1 − α) g²
    centred:  m ← α m + (1 − α) g,   d = √(v − m²) + ε;   otherwise d = √v + ε
    μ > 0:    b ← μ b + g / d,   θ ← θ − lr b;            otherwise θ ← θ − lr g / d
    """

    slots = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.alpha = _check_nonneg("alpha", alpha, upper=1.0)
        self.eps = _check_nonneg("eps", eps)
        self.momentum = _check_nonneg("momentum", momentum, upper=1.0)
        self.centered = bool(centered)

    def _hyper(self):
        return {
            **super()._hyper(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def _update(self, k, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        a = self.alpha
        v = self._slot("square_avg", k)
        v *= a
        v += (1 - a) * (g * g)
        if self.centered:
            m = self._slot("grad_avg", k)
            m *= a
            m += (1 - a) * g
            d = np.sqrt(v - m * m) + self.eps
        else:
            d = np.sqrt(v) + self.eps
        if self.momentum:
            b = self._slot("momentum_buffer", k)
            b *= self.momentum
            b += g / d
            p -= self.lr * b
        else:
            p -= self.lr * (g / d)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay λ added to the gradient::

    g ← g + λ θ
    m ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) g²
    θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
    """

    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_nonneg("betas[0]", betas[0], 1.0), _check_nonneg("betas[1]", betas[1], 1.0))
        self.eps = _check_nonneg("eps", eps)

    def _hyper(self):
        return {**super()._hyper(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, k, p, g):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay  # AdamW: decay the weights, not the gradient
            else:
                g = g + self.weight_decay * p
        m, v = self._slot("exp_avg", k), self._slot("exp_avg_sq", k)
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        denom = np.sqrt(v) / math.sqrt(bc2) + self.eps
        p -= (self.lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019)::

    θ ← θ (1 − lr λ)
    then the Adam update of :class:`Adam` with the raw gradient g
    """

    decoupled = True

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


# --------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class ConstantLR:
    """lr(step) = lr."""

    lr: float

    def __call__(self, step: int) -> float:
        return float(self.lr)


@dataclass(frozen=True)
class StepLR:
    """lr(step) = lr · γ^⌊step / step_size⌋ (torch.optim.lr_scheduler.StepLR)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        positive_int("step_size", self.step_size)

    def __call__(self, step: int) -> float:
        return float(self.lr * self.gamma ** (step // self.step_size))


@dataclass(frozen=True)
class CosineLR:
    """lr(step) = min_lr + ½ (lr − min_lr)(1 + cos(π · min(step, total_steps) / total_steps))
    (torch's CosineAnnealingLR with T_max = total_steps, held at min_lr afterwards)."""

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self):
        positive_int("total_steps", self.total_steps)

    def __call__(self, step: int) -> float:
        s = min(step, self.total_steps)
        return float(
            self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * s / self.total_steps))
        )


@dataclass(frozen=True)
class WarmupLR:
    """Linear warm-up in front of another schedule:
    lr(step) = after(step) · min(1, (step + 1) / warmup_steps)."""

    after: ConstantLR | StepLR | CosineLR
    warmup_steps: int

    def __post_init__(self):
        non_negative_int("warmup_steps", self.warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.after(step) * (step + 1) / self.warmup_steps
        return self.after(step)

    def to_dict(self) -> dict:
        return {"name": "WarmupLR", "after": schedule_to_dict(self.after), "warmup_steps": self.warmup_steps}


_SCHEDULES = {c.__name__: c for c in (ConstantLR, StepLR, CosineLR, WarmupLR)}


def schedule_to_dict(s) -> dict:
    """A JSON-able description of a schedule (for checkpoints and configs)."""
    if isinstance(s, WarmupLR):
        return s.to_dict()
    if type(s).__name__ not in _SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(_SCHEDULES)}, got {type(s).__name__}")
    return {"name": type(s).__name__, **asdict(s)}


def schedule_from_dict(d: dict):
    """Inverse of :func:`schedule_to_dict`."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in _SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(_SCHEDULES)}, got {name!r}")
    if name == "WarmupLR":
        return WarmupLR(schedule_from_dict(d["after"]), d["warmup_steps"])
    return _SCHEDULES[name](**d)
