"""γ over training: a monitor that diagnoses the model on a fixed probe batch every few steps.

It only reads the model: the forward it runs is in eval mode (no dropout, so no random numbers drawn),
it never touches ``grads`` or the optimizer, and it restores the training mode. Each measurement
is a dict ``{"step", "gamma", "regime", "horizon", "gammas"}`` appended to ``history``, with ``gamma``
the first layer's forward direction and ``gammas`` every layer and direction ("l0", "l0r", "l1", …).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from unrolled._checks import positive_int
from unrolled.diagnostics.report import diagnose_model


class GammaMonitor:
    """Measure the per-step gradient factor γ of a SequenceModel during training.

    Parameters
    ----------
    x_probe : model input (token ids (T, B) or features (T, B, I)), fixed for the whole run so that
        the measurements are comparable. A few sequences suffice (cost: one forward and T Jacobians).
    every : measure when ``step % every == 0``.
    tol : the stable band of the verdict.
    log : called with one line per measurement (e.g. ``print``, ``logging.info``), or None.

    Use it directly (``monitor.maybe_measure(model, step)`` after each update), or as a
    :class:`unrolled.train.Trainer` callback (``callbacks=[monitor]``).
    """

    def __init__(
        self,
        x_probe: np.ndarray,
        every: int = 100,
        tol: float = 0.01,
        log: Callable[[str], None] | None = None,
    ) -> None:
        every = positive_int("every", every)
        if not isinstance(x_probe, np.ndarray) or x_probe.ndim not in (2, 3):
            raise ValueError("x_probe: expected token ids (T, B) or features (T, B, I) as a numpy array")
        self.x_probe, self.every, self.tol, self.log = x_probe, every, tol, log
        self.history: list[dict] = []

    def measure(self, model, step: int) -> dict:
        """Diagnose `model` now and record the result under `step`."""
        diag = diagnose_model(model, self.x_probe, tol=self.tol, heatmap=False)
        first = diag.reports[0]
        rec = {
            "step": int(step),
            "gamma": first.gamma,
            "regime": first.regime,
            "horizon": first.horizon,
            "gammas": {f"l{r.layer}{'r' if r.direction else ''}": r.gamma for r in diag.reports},
        }
        self.history.append(rec)
        if self.log is not None:
            hz = first.horizon if first.horizon is not None else f">{first.T}"
            g = "nan" if not math.isfinite(first.gamma) else f"{first.gamma:.4f}"
            self.log(f"step {step}: γ = {g} ({first.verdict}), horizon {hz}")
        return rec

    def maybe_measure(self, model, step: int) -> dict | None:
        """:meth:`measure` if `step` is a multiple of `every`, else None."""
        return self.measure(model, step) if step % self.every == 0 else None

    def __call__(self, trainer, *args, **kwargs) -> dict | None:
        """Trainer callback: ``monitor(trainer)`` or ``monitor(trainer, record)`` after an update.

        Reads ``trainer.model`` and ``trainer.step``; measures every `every` steps. When the hook passes
        the step's metrics record (a dict), γ and the regime are added to it, so they reach the
        metrics JSONL beside the loss.
        """
        model = getattr(trainer, "model", None)
        step = getattr(trainer, "step", None)
        if model is None or isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError("GammaMonitor: expected a trainer with .model and an integer .step")
        rec = self.maybe_measure(model, int(step))
        record = next((a for a in (*args, *kwargs.values()) if isinstance(a, dict)), None)
        if rec is not None and record is not None:
            record.update(gamma=rec["gamma"], gamma_regime=rec["regime"])
        return rec

    def gammas(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, γ) of the history as arrays."""
        return (
            np.array([r["step"] for r in self.history], dtype=np.int64),
            np.array([r["gamma"] for r in self.history], dtype=np.float64),
        )
