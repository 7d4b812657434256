"""The verdict: γ, memory horizon, regime, the spectrum of W_hh and the per-step bound, for a whole layer.

The fitted factor γ: with n_d = ‖∂s_T/∂s_{T−d}‖₂ (geometric mean over the batch), least squares of

    log10 n_d = a + d · log10 γ        over d = 1..T

so n_d ≈ 10^a γ^d: γ < 1 shrinks the gradient by that factor per step, γ > 1 grows it. The memory
horizon is the first distance d with n_d < 10⁻³ n_0 (n_0 = ‖I‖₂ = 1), or, if the span is too short to
see it, where the fitted line crosses that level, (−3 − a) / log10 γ. The regime is vanishing for
γ < 1 − tol, exploding for γ > 1 + tol, else stable (tol = 0.01 by default: within it, a gradient
changes by less than a factor e over 100 steps).

The verdict printed beside the horizon reads the regime together with the measured horizon, so the two
never contradict each other (see :func:`verdict`): a gradient that shrinks per step (γ < 1 − tol) but still
keeps more than 10⁻³ of its size after the whole input is *decaying*, not vanishing, on that input; one
that falls below 10⁻³ within the input is *vanishing*, whatever the fitted γ says.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from unrolled.cells import GRUCell, LSTMCell, RNNCell
from unrolled.diagnostics.flow import GradientFlow, gradient_flow
from unrolled.diagnostics.jacobians import (
    cpath_log10_norms,
    jacobian_products,
    num_steps,
    pairwise_log10_norms,
)
from unrolled.layers import RecurrentLayer

HORIZON_DROP = 1e-3  # the horizon is where the gradient falls below this fraction of its start
GATE_NAMES = {"LSTMCell": ("i", "f", "g", "o"), "GRUCell": ("z", "r", "n")}


def fit_gamma(log10_norms: np.ndarray, skip: int = 1) -> tuple[float, float, float]:
    """Least-squares fit of log10 n_d = a + d·log10 γ over d = skip..D.

    Parameters
    ----------
    log10_norms : (D+1,) log10 n_d indexed by distance d = 0..D; non-finite entries (a norm of exactly
        zero) are left out.
    skip : first distance used (1: the identity at d = 0 is not a measurement).

    Returns
    -------
    gamma, a, r2 : the factor per step, the intercept, and the fit's coefficient of determination
        (NaN when fewer than two usable points).
    """
    y = np.asarray(log10_norms, dtype=np.float64)
    d = np.arange(y.size, dtype=np.float64)
    ok = np.isfinite(y) & (d >= skip)
    if ok.sum() < 2:
        return math.nan, math.nan, math.nan
    slope, a = np.polyfit(d[ok], y[ok], 1)
    resid = y[ok] - (a + slope * d[ok])
    ss = ((y[ok] - y[ok].mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / ss if ss > 0 else 1.0
    return float(10.0**slope), float(a), float(r2)


def memory_horizon(
    log10_norms: np.ndarray, gamma: float, intercept: float = 0.0
) -> tuple[int | None, float | None]:
    """Steps until n_d < 10⁻³ n_0: (measured, extrapolated).

    measured : the first distance d with n_d < 10⁻³ n_0, or None if that does not happen within D.
    extrapolated : where the fit 10^a γ^d crosses 10⁻³ n_0, (log10(10⁻³ n_0) − a) / log10 γ;
        None unless γ < 1.
    """
    y = np.asarray(log10_norms, dtype=np.float64)
    level = y[0] + math.log10(HORIZON_DROP)
    below = np.nonzero(y < level)[0]
    measured = int(below[0]) if below.size else None
    extrapolated = None
    if 0 < gamma < 1 and math.isfinite(intercept):
        extrapolated = max(0.0, (level - intercept) / math.log10(gamma))
    return measured, extrapolated


def regime(gamma: float, tol: float = 0.01) -> str:
    """'vanishing' (γ < 1 − tol), 'exploding' (γ > 1 + tol) or 'stable'."""
    if not math.isfinite(gamma):
        return "undetermined"
    if gamma < 1 - tol:
        return "vanishing"
    if gamma > 1 + tol:
        return "exploding"
    return "stable"


def verdict(gamma_regime: str, horizon: int | None) -> str:
    """The regime as it reads beside the memory horizon measured on the input.

    gamma_regime : :func:`regime` of the fitted γ.  horizon : the measured horizon (None: the gradient did not
        fall below 10⁻³ of its start within the input).

    Returns 'vanishing' when the gradient fell below 10⁻³ within the input (even with γ in the stable band:
    a drop over a few steps that the straight-line fit smooths out); 'decaying' when γ < 1 − tol but the
    gradient stays above 10⁻³ over the whole input (it shrinks, and would vanish over a longer one, but
    this input's first step still gets its error signal); otherwise the regime itself.
    """
    if gamma_regime == "vanishing" and horizon is None:
        return "decaying"
    if gamma_regime == "stable" and horizon is not None:
        return "vanishing"
    return gamma_regime


@dataclass
class Spectrum:
    """Singular values and eigenvalues of W_hh, per gate block (vanilla RNN: the one block 'hh')."""

    singular_values: dict[str, np.ndarray]  # block -> (H,) descending
    eigenvalues: dict[str, np.ndarray]  # block -> (H,) complex
    spectral_radius: dict[str, float]  # block -> max |λ|
    spectral_norm: dict[str, float]  # block -> σ_max = ‖W‖₂


def spectrum(cell, W_hh: np.ndarray) -> Spectrum:
    """The spectrum of W_hh (G·H, H), block by gate: vanilla 'hh'; LSTM i, f, g, o; GRU z, r, n."""
    W = np.asarray(W_hh, dtype=np.float64)
    H = W.shape[1]
    names = GATE_NAMES.get(_cell_kind(cell), ("hh",))
    sv, ev, rho, nrm = {}, {}, {}, {}
    for j, name in enumerate(names):
        block = W[j * H : (j + 1) * H]
        sv[name] = np.linalg.svd(block, compute_uv=False)
        ev[name] = np.linalg.eigvals(block)
        rho[name] = float(np.abs(ev[name]).max())
        nrm[name] = float(sv[name][0])
    return Spectrum(sv, ev, rho, nrm)


def _cell_kind(cell) -> str:
    for cls in (LSTMCell, GRUCell, RNNCell):
        if isinstance(cell, cls):
            return cls.__name__
    raise TypeError(f"cell: expected an RNNCell, LSTMCell or GRUCell, got {type(cell).__name__}")


def activation_bound(cache, W_hh: np.ndarray) -> np.ndarray:
    """Vanilla RNN: the per-step bound ‖∂h_t/∂h_{t-1}‖₂ ≤ ‖W_hh‖₂ · max_j |σ'(a_{t,j})|, per sequence (T, B).

    Its product over a span bounds ‖∂h_T/∂h_k‖₂: if it stays below 1 the gradient must vanish
    (Pascanu et al. 2013). A finished sequence's step is the identity, bound 1.
    """
    w = np.linalg.norm(np.asarray(W_hh, dtype=np.float64), ord=2)
    b = w * np.abs(cache.dact.astype(np.float64)).max(axis=2)  # (T, B)
    if cache.mask is not None:
        m = cache.mask[:, :, 0].astype(np.float64)
        b = m * b + (1 - m)
    return b


@dataclass
class DirectionReport:
    """Everything measured for one layer and direction. Distances d = T − k; log10 norms per d."""

    layer: int
    direction: int
    cell: str  # "rnn", "lstm", "gru"
    T: int
    log10_spectral: np.ndarray  # (T+1,) mean over the batch of log10 ‖∂s_T/∂s_{T−d}‖₂
    log10_frobenius: np.ndarray  # (T+1,) the same in the Frobenius norm
    log10_cpath: np.ndarray | None  # (T+1,) LSTM: log10 ‖∏ diag(f)‖₂ of the c-path alone
    grad_h: np.ndarray  # (T+1,) mean over the batch of ‖∂L/∂h_t‖, t = 0..T (the direction's time)
    grad_c: np.ndarray | None  # (T+1,) LSTM ‖∂L/∂c_t‖
    spectrum: Spectrum
    bound: np.ndarray | None  # (T,) vanilla: mean over the batch of ‖W_hh‖·max|σ'(a_t)|
    gamma: float
    intercept: float
    r2: float
    horizon: int | None
    horizon_extrapolated: float | None
    regime: str
    gamma_cpath: float | None = None
    heatmap: np.ndarray | None = None  # (n, n) mean log10 ‖∂s_t/∂s_k‖₂ on the grid `heatmap_times`
    heatmap_times: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"layer {self.layer}" + (" reverse" if self.direction == 1 else "")

    @property
    def verdict(self) -> str:
        """:func:`verdict` of this report's regime and measured horizon."""
        return verdict(self.regime, self.horizon)

    def _why(self) -> str | None:
        """The line that explains a verdict that differs from the γ regime, or None."""
        v, d = self.verdict, self.T
        if v == self.regime:
            return None
        if v == "decaying":
            kept = 10.0 ** self.log10_spectral[d]
            return (
                f"  γ < 1, yet after all {d} steps the gradient keeps {kept:.2g} of its size (> 10⁻³): "
                "not vanishing within this input"
            )
        return (
            f"  γ < 1 shrinks the gradient every step, yet after all {d} steps of this input it keeps "
            f"{10.0 ** self.log10_spectral[d]:.2g} of its size (> 10⁻³): it does not vanish within this "
            "input; a longer input shows where it does"
        )
        return (
            f"  γ is close to 1, but the gradient fell below 10⁻³ of its size within {self.horizon} steps "
            "(a drop the straight-line fit of γ smooths out)"
        )

    def summary(self) -> str:
        """A few lines for the terminal."""
        state = "joint (h, c)" if self.cell == "lstm" else "h"
        hz = f"{self.horizon} steps" if self.horizon is not None else f"> {self.T} steps"
        if self.horizon is None and self.horizon_extrapolated is not None:
            hz += f" (extrapolated {self.horizon_extrapolated:.0f})"
        d = self.T
        lines = [
            f"{self.name} [{self.cell}, state {state}, T = {self.T}]",
            f"  verdict: {self.verdict.upper()}   γ = {self.gamma:.4f} per step (R² = {self.r2:.3f}),"
            f"   memory horizon {hz}",
            *filter(None, [self._why()]),
            f"  ‖∂s_T/∂s_k‖₂ at T−k = 1, {d // 2}, {d}:  "
            + ", ".join(f"{10.0 ** self.log10_spectral[k]:.3g}" for k in (1, d // 2, d))
            + f"   (Frobenius at T−k = {d}: {10.0 ** self.log10_frobenius[d]:.3g})",
            "  ‖∂L/∂h_t‖ at t = T, T/2, 0:  "
            + ", ".join(f"{self.grad_h[t]:.3g}" for t in (self.T, self.T // 2, 0)),
        ]
        if self.log10_cpath is not None:
            lines.append(
                f"  c-path alone ∏ f: γ = {self.gamma_cpath:.4f},"
                f" ‖·‖ at T−k = {d}: {10.0 ** self.log10_cpath[d]:.3g}"
            )
        sp = self.spectrum
        blocks = ", ".join(
            f"{n}: ρ = {sp.spectral_radius[n]:.3f}, σ_max = {sp.spectral_norm[n]:.3f}"
            for n in sp.spectral_radius
        )
        lines.append(f"  W_hh {blocks}")
        if self.bound is not None:
            lines.append(
                f"  bound ‖W_hh‖·max|σ'| per step: mean {self.bound.mean():.3f}, max {self.bound.max():.3f}"
                f"  (⇒ ‖∂h_T/∂h_0‖ ≤ {10.0 ** np.log10(self.bound).sum():.3g})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-friendly numbers (no arrays but the norm curves)."""
        return {
            "layer": self.layer,
            "direction": self.direction,
            "cell": self.cell,
            "T": self.T,
            "gamma": self.gamma,
            "r2": self.r2,
            "regime": self.regime,
            "verdict": self.verdict,
            "horizon": self.horizon,
            "horizon_extrapolated": self.horizon_extrapolated,
            "gamma_cpath": self.gamma_cpath,
            "spectral_radius": self.spectrum.spectral_radius,
            "spectral_norm": self.spectrum.spectral_norm,
            "singular_values": {k: [float(x) for x in v] for k, v in self.spectrum.singular_values.items()},
            "eigenvalues": {
                k: [[float(z.real), float(z.imag)] for z in v] for k, v in self.spectrum.eigenvalues.items()
            },
            "log10_spectral_by_distance": [float(v) for v in self.log10_spectral],
            "grad_h_by_time": [float(v) for v in self.grad_h],
        }


@dataclass
class Diagnosis:
    """The diagnosis of a layer on one input batch: one :class:`DirectionReport` per layer and direction."""

    reports: list[DirectionReport] = field(default_factory=list)

    def summary(self) -> str:
        return "\n\n".join(r.summary() for r in self.reports)

    def to_dict(self) -> dict:
        return {"reports": [r.to_dict() for r in self.reports]}

    @property
    def gamma(self) -> float:
        """γ of the first layer's forward direction (the number a training log follows)."""
        return self.reports[0].gamma


def diagnose(
    layer: RecurrentLayer,
    x: np.ndarray,
    h0=None,
    lengths=None,
    d_out: np.ndarray | None = None,
    d_hn=None,
    rng: np.random.Generator | None = None,
    tol: float = 0.01,
    heatmap: bool = True,
    heatmap_points: int | None = None,
    heatmap_batch: int = 4,
    spectral_points: int = 200,
    progress: bool = False,
) -> Diagnosis:
    """Diagnose gradient flow through every layer and direction of `layer` on the batch `x`.

    Runs a forward pass (in eval mode: no dropout; the layer's mode is restored), then for each
    layer and direction the Jacobian products ∂s_T/∂s_k for all k, the fit of γ, the horizon and the
    regime, the spectrum of W_hh, the vanilla per-step bound, and the gradient norms of a BPTT pass.

    Parameters
    ----------
    layer : RNN / LSTM / GRU (any depth, either direction count).
    x : (T, B, I) input (batch-first if the layer is), the layer's dtype.
    h0, lengths : as for the layer's forward.
    d_out : ∂L/∂out of the loss whose BPTT pass is measured. Default: a loss on the last step only,
        L = Σ_b u_b · out_{T,b} with u_b random unit vectors (drawn from `rng`), so the norms show how
        far back one late error reaches.
    d_hn : ∂L/∂h_n, zeros when None.
    rng : generator for the default d_out (default: np.random.default_rng(0)).
    tol : the stable band of γ (see :func:`regime`).
    heatmap : also compute log10 ‖∂s_t/∂s_k‖ for all pairs on a grid of at most `heatmap_points` times,
        over the first `heatmap_batch` sequences (cost ~ heatmap_points²/2 SVDs of (S, S)); the default
        number of points is 60 for a state of S ≤ 64, fewer for larger states (12 at S = 256).
    spectral_points : for T > spectral_points, the spectral norm of ∂s_T/∂s_{T−d} is computed at that many
        evenly spaced distances d (always d = 1, T/2 and T) and the fit and horizon use those; the
        Frobenius norm is computed at every d. Each spectral norm costs an (S, S) eigen-decomposition.
    progress : a bar on stderr for each stage of each layer and direction (the Jacobian products, the
        heatmap), left on screen with its time: a state of a few hundred units takes tens of seconds.

    Returns
    -------
    Diagnosis
    """
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(f"layer: expected an unrolled RNN, LSTM or GRU layer, got {type(layer).__name__}")
    if not 0 < tol < 1:
        raise ValueError(f"tol: expected a number in (0, 1), got {tol!r}")
    was_training = layer.training
    layer.eval()
    try:
        out, _ = layer.forward(x, h0, lengths)
    finally:
        layer.train(was_training)
    if d_out is None:
        rng = np.random.default_rng(0) if rng is None else rng
        d_out = np.zeros_like(out)
        u = rng.standard_normal(out.shape[1:] if not layer.batch_first else (out.shape[0], out.shape[2]))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        if layer.batch_first:
            d_out[:, -1] = u
        else:
            d_out[-1] = u
    flows = gradient_flow(layer, d_out, d_hn)
    caches = layer.last_caches()
    reports = []
    for li in range(layer.num_layers):
        for d in range(layer.num_directions):
            cache = caches[(li, d)]
            reports.append(
                _direction_report(
                    layer,
                    li,
                    d,
                    cache,
                    flows[(li, d)],
                    tol,
                    heatmap,
                    heatmap_points,
                    heatmap_batch,
                    spectral_points,
                    _stage_bars(progress, layer, li, d),
                )
            )
    return Diagnosis(reports)


def _stage_bars(progress: bool, layer: RecurrentLayer, li: int, d: int) -> Callable[[str, int], object]:
    """``bar(stage, total)``: a tqdm bar on stderr named after the layer, direction and stage (disabled
    without `progress`), whose ``update`` the Jacobian walks call."""
    from tqdm.auto import tqdm

    where = (
        f"layer {li}" + (" reverse" if d == 1 else "") if layer.num_layers * layer.num_directions > 1 else ""
    )

    def bar(stage: str, total: int):
        desc = f"diagnose: {where + ': ' if where else ''}{stage}"
        return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not progress, leave=True)

    return bar


def diagnose_model(
    model,
    x: np.ndarray,
    seed: int = 0,
    tol: float = 0.01,
    heatmap: bool = True,
    target=None,
    progress: bool = False,
) -> Diagnosis:
    """Diagnose a :class:`~unrolled.models.SequenceModel`'s recurrent stack on model input `x`.

    Parameters
    ----------
    model : a SequenceModel (anything with ``embed``, ``rnn``, ``head``, ``forward``, ``backward``).
    x : token ids (T, B) or features (T, B, I), as the model's forward takes them.
    target : None, or the targets of the model's loss for x: integer class ids shaped like y without its
        last axis (cross-entropy of the softmax) or floats shaped like y (mean squared error).
    seed, tol, heatmap, progress : as for :func:`diagnose` (seed draws the probe).

    The input goes through the embedding (if any). The gradient norms ‖∂L/∂h_t‖ are those of the BPTT
    pass of the loss on `target` — the model's own backward, through head and pooling — or, without a
    target, of a probe L = Σ_b u_b · y_{T,b} with random unit u_b on the output at the last step (how far
    back one late error reaches). Runs in eval mode; the model's mode and gradients are restored.
    """
    from unrolled.nn import cross_entropy, mse

    was_training = model.training
    model.eval()
    try:
        e = model.embed.forward(x) if model.embed is not None else x  # (T, B, E or I)
        rnn, W = model.rnn, model.head.params["W"]  # W (K, D·H): y = u Wᵀ + b, so ∂L/∂u = u_probe W
        T, B = e.shape[:2]
        if target is None:
            probe = np.random.default_rng(seed).standard_normal((B, W.shape[0]))
            probe /= np.linalg.norm(probe, axis=1, keepdims=True)
            d_out = np.zeros((T, B, W.shape[1]), dtype=rnn.dtype)
            d_out[-1] = probe @ W
        else:
            target = np.asarray(target)
            y, _ = model.forward(x)
            if np.issubdtype(target.dtype, np.integer):
                _, dy = cross_entropy(y, target)
            else:
                _, dy = mse(y, target.astype(y.dtype))
            d_out = _captured_d_out(model, dy)
        return diagnose(rnn, e, d_out=d_out, tol=tol, heatmap=heatmap, progress=progress)
    finally:
        model.train(was_training)


def _captured_d_out(model, dy: np.ndarray) -> np.ndarray:
    """∂L/∂out of the recurrent stack, as the model's own backward computes it from ∂L/∂y (through the head
    and the pooling), caught on its way into ``rnn.backward``; the model's gradients are put back."""
    dicts = [model.grads] + [part.grads for _, part in _parts(model)]
    saved = [{k: (v, v.copy()) for k, v in g.items()} for g in dicts]  # the arrays and their values
    caught = {}
    rnn_backward = model.rnn.backward

    def catch(d_out, d_hn=None):
        caught["d_out"] = d_out.copy()
        return rnn_backward(d_out, d_hn)

    model.rnn.backward = catch  # an instance attribute shadowing the method, removed below
    try:
        model.backward(dy)
    finally:
        del model.rnn.backward
        for g, keep in zip(dicts, saved, strict=True):
            for k, (arr, val) in keep.items():
                arr[...] = val  # a backward may have accumulated into the array in place
                g[k] = arr
    return caught["d_out"]


def _parts(model):
    return [
        (n, p) for n, p in (("embed", model.embed), ("rnn", model.rnn), ("head", model.head)) if p is not None
    ]


def _direction_report(
    layer, li, d, cache, flow: GradientFlow, tol, heatmap, points, hbatch, spectral_points, bar
) -> DirectionReport:
    cell = layer.cell
    p = layer.direction_params(li, d)
    T = num_steps(cache)
    at = None
    if T > spectral_points:
        dist = np.linspace(0, T, spectral_points).round().astype(np.int64)
        at = T - np.unique(np.concatenate([dist, [1, T // 2]]))
    with bar("Jacobian products ∂s_T/∂s_k", T) as b:
        norms = jacobian_products(cell, cache, p, spectral_at=at, on_progress=b.update)
    spec = _batch_mean(norms.log10_spectral)[::-1]  # index by distance d = T − k
    frob = _batch_mean(norms.log10_frobenius)[::-1]
    gamma, a, r2 = fit_gamma(spec)
    horizon, extra = memory_horizon(spec, gamma, a)
    kind = {"LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn"}[_cell_kind(cell)]
    cpath = gamma_c = None
    if kind == "lstm":
        cpath = _batch_mean(cpath_log10_norms(cache))[::-1]
        gamma_c = fit_gamma(cpath)[0]
    bound = activation_bound(cache, p["W_hh"]).mean(axis=1) if kind == "rnn" else None
    hm = times = None
    if heatmap:
        if points is None:
            S = p["W_hh"].shape[1] * (2 if kind == "lstm" else 1)
            points = int(np.clip(60 * (64 / S) ** 1.5, 12, 60))
        times = np.unique(np.linspace(0, T, min(points, T + 1)).round().astype(np.int64))
        n = len(times)
        with bar(f"heatmap of {n} times", n * (n + 1) // 2) as b:
            hm = pairwise_log10_norms(cell, cache, p, times, batch=slice(0, hbatch), on_progress=b.update)
    return DirectionReport(
        layer=li,
        direction=d,
        cell=kind,
        T=T,
        log10_spectral=spec,
        log10_frobenius=frob,
        log10_cpath=cpath,
        grad_h=flow.h.mean(axis=1),
        grad_c=None if flow.c is None else flow.c.mean(axis=1),
        spectrum=spectrum(cell, p["W_hh"]),
        bound=bound,
        gamma=gamma,
        intercept=a,
        r2=r2,
        horizon=horizon,
        horizon_extrapolated=extra,
        regime=regime(gamma, tol),
        gamma_cpath=gamma_c,
        heatmap=hm,
        heatmap_times=times,
    )


def _batch_mean(log10: np.ndarray) -> np.ndarray:
    """Mean over the batch axis of log10 norms (a geometric mean); −inf stays −inf."""
    with np.errstate(invalid="ignore"):
        return log10.mean(axis=1)
