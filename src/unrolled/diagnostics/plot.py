"""The diagnostics figure: per layer and direction, the heatmap of log10 ‖∂s_t/∂s_k‖₂, the norms against
the distance T − k, and the eigenvalues of W_hh against the unit circle. Needs matplotlib (the ``plot``
extra); it is imported here, inside the function, so the rest of the package never requires it.
"""

from __future__ import annotations

import os

import numpy as np

from unrolled._optional import install_hint
from unrolled.diagnostics.report import Diagnosis

_COLORS = {"hh": "C0", "i": "C0", "f": "C1", "g": "C2", "o": "C3", "z": "C0", "r": "C1", "n": "C2"}


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"plotting needs matplotlib: {install_hint('plot', 'matplotlib')}") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_diagnosis(
    diagnosis: Diagnosis, path: str | os.PathLike, title: str | None = None, max_rows: int = 4
):
    """Write the figure of `diagnosis` to `path` (png, pdf or svg, from the suffix).

    One row per layer and direction (at most `max_rows`): (a) heatmap of mean log10 ‖∂s_t/∂s_k‖₂ over
    (k, t), (b) ‖∂s_T/∂s_{T−d}‖ (spectral, Frobenius, LSTM c-path alone), the fit 10^a γ^d, the gradient
    norms ‖∂L/∂h_{T−d}‖ of the BPTT pass and, for a vanilla RNN, the product of the per-step bounds,
    against d; (c) eigenvalues of each W_hh block and the unit circle.

    Returns the path written.
    """
    plt = pyplot()
    reports = diagnosis.reports[:max_rows]
    if not reports:
        raise ValueError("diagnosis: nothing to plot (no layer reports)")
    fig, axes = plt.subplots(len(reports), 3, figsize=(15, 4.2 * len(reports)), squeeze=False)
    for row, rep in zip(axes, reports, strict=True):
        _heatmap(fig, row[0], rep)
        _distance(row[1], rep)
        _spectrum(plt, row[2], rep)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap(fig, ax, rep) -> None:
    if rep.heatmap is None:
        ax.text(0.5, 0.5, "heatmap not computed", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    t = rep.heatmap_times
    M = np.ma.masked_invalid(np.where(np.isneginf(rep.heatmap), np.nan, rep.heatmap))
    lo, hi = np.nanmin(M.filled(np.nan)), np.nanmax(M.filled(np.nan))
    im = ax.pcolormesh(_edges(t), _edges(t), M, cmap="viridis", vmin=lo, vmax=max(hi, lo + 1e-9))
    fig.colorbar(im, ax=ax, label="log10 ‖∂s_t/∂s_k‖₂")
    ax.set_xlabel("k (earlier state)")
    ax.set_ylabel("t (later state)")
    ax.set_title(f"{rep.name} [{rep.cell}]: log10 ‖∂s_t/∂s_k‖₂")
    ax.set_aspect("equal")


def _edges(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float64)
    if t.size == 1:
        return np.array([t[0] - 0.5, t[0] + 0.5])
    mid = (t[1:] + t[:-1]) / 2
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])


def _distance(ax, rep) -> None:
    # In log10 units on a linear axis: the norms span hundreds of decades (1e-400 is a real value here,
    # beyond float64, and a log axis cannot draw it).
    d = np.arange(rep.T + 1)
    have = np.isfinite(rep.log10_spectral)  # a long sequence has the spectral norm on a grid of d
    ax.plot(d[have], rep.log10_spectral[have], label="‖∂s_T/∂s_{T−d}‖₂", lw=2)
    ax.plot(d, rep.log10_frobenius, label="‖∂s_T/∂s_{T−d}‖_F", lw=1, ls="--")
    if np.isfinite(rep.gamma):
        ax.plot(d, rep.intercept + d * np.log10(rep.gamma), "k:", label=f"fit γ = {rep.gamma:.4f}")
    if rep.log10_cpath is not None:
        ax.plot(d, rep.log10_cpath, label=f"c-path ∏ f (γ = {rep.gamma_cpath:.3f})", lw=1)
    g = rep.grad_h[::-1]  # by distance from T
    if np.any(g > 0):
        lg = np.where(g > 0, np.log10(np.where(g > 0, g, 1.0)), np.nan)
        ax.plot(d, lg, label="‖∂L/∂h_{T−d}‖ (BPTT)", lw=1, alpha=0.8)
    if rep.bound is not None:
        with np.errstate(divide="ignore"):
            cum = np.concatenate([[0.0], np.cumsum(np.log10(rep.bound[::-1]))])
        ax.plot(d, cum, label="∏ ‖W_hh‖·max|σ'| (bound)", lw=1, color="grey")
    ax.axhline(-3, color="red", lw=0.6, ls="--")
    hz = rep.horizon if rep.horizon is not None else f">{rep.T}"
    ax.set_title(f"{rep.verdict}: γ = {rep.gamma:.4f}, horizon {hz}")
    ax.set_xlabel("distance d = T − k (steps)")
    ax.set_ylabel("log10 norm")
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)


def _spectrum(plt, ax, rep) -> None:
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), color="black", lw=0.8)
    sp = rep.spectrum
    for name, ev in sp.eigenvalues.items():
        ax.scatter(
            ev.real,
            ev.imag,
            s=12,
            color=_COLORS.get(name),
            label=f"{name}: ρ = {sp.spectral_radius[name]:.2f}, σ_max = {sp.spectral_norm[name]:.2f}",
        )
    r = max(1.05, max(sp.spectral_radius.values()) * 1.05)
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.axhline(0, color="grey", lw=0.4)
    ax.axvline(0, color="grey", lw=0.4)
    ax.set_title("eigenvalues of W_hh blocks, unit circle")
    ax.legend(fontsize=7, loc="lower left")
