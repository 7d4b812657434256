"""Rendering of benchmark results: the README's Markdown tables and the log-log scaling plot."""

from __future__ import annotations

_CLOCK = {
    "thread_cpu": "timed as CPU time of the calling thread (all work runs on it at one thread; the machine "
    "is shared, and wall-clock time would count waiting for a core)",
    "wall": "timed as wall-clock time",
}


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:.2f}"


def _us(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e6:.1f}"


def _mib(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _x(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def render_markdown(res: dict) -> str:
    """The performance section's body: machine, peak, grid, streaming, memory and scaling tables."""
    m, peak, summ = res["machine"], res["matmul_peak"], res["summary"]
    th = m["threads"]
    lines = [
        f"Machine: **{m['cpu']}**, {m['logical_cpus']} logical CPUs; NumPy {m['numpy']} (OpenBLAS), "
        f"torch {m['torch']}; float32; {th['numpy_blas']} BLAS thread(s) for NumPy, {th['torch']} for torch; "
        f"unrolled path: {res['unrolled']['path']}; load average at start {m['load_average_start']}, "
        f"at end {res['load_average_end']}; medians of {res['reps']} interleaved repetitions after warm-up, "
        + _CLOCK.get(res.get("clock"), "wall-clock time")
        + ".",
        "",
        f"Measured float32 matrix-product peak ({peak['n']}×{peak['n']}): "
        + ", ".join(f"{k.removesuffix('_gflops')} {v:.1f}" for k, v in peak.items() if k.endswith("_gflops"))
        + " GFLOP/s.",
        "",
        "| config | step | unrolled ms | torch ms | unrolled/torch | unrolled GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['config']} | {r['mode']} | {_ms(r['unrolled_s'])} | {_ms(r.get('torch_s'))} | "
            f"{_x(r.get('ratio'))} | {r['unrolled_gflops']:.1f} | {100 * r['unrolled_peak_frac']:.0f}% |"
        )
    for mode, label in (("train", "training step"), ("infer", "inference")):
        if f"{mode}_geomean_ratio" in summ:
            lines.append(
                f"\nGeometric mean of unrolled/torch, {label}: **{summ[f'{mode}_geomean_ratio']:.2f}** "
                f"(worst row {summ[f'{mode}_worst_ratio']:.2f})."
            )
    if res["streaming"]:
        lines += ["", "Streaming, one `step()` at B = 1 (I = H), against torch.nn.*Cell under `no_grad`:", ""]
        lines += ["| cell | H | unrolled µs | torch µs | unrolled/torch |", "|---|---:|---:|---:|---:|"]
        for r in res["streaming"]:
            lines.append(
                f"| {r['cell'].upper()} | {r['H']} | {_us(r['unrolled_s'])} | {_us(r.get('torch_s'))} | "
                f"{_x(r.get('ratio'))} |"
            )
    if res["memory"]:
        lines += [
            "",
            "Peak memory of one training step (MiB; growth of the resident set's high-water mark in a "
            "fresh process, both libraries; tracemalloc's peak for unrolled):",
            "",
        ]
        lines += ["| config | unrolled RSS | unrolled tracemalloc | torch RSS |", "|---|---:|---:|---:|"]
        for r in res["memory"]:
            cols = ("unrolled_rss_peak_mib", "unrolled_tracemalloc_peak_mib", "torch_rss_peak_mib")
            lines.append(f"| {r['config']} | " + " | ".join(_mib(r.get(k)) for k in cols) + " |")
    if res["scaling"]:
        lines += ["", "Scaling of an LSTM training step (base T=50 B=16 I=64 H=128, one axis varied):", ""]
        lines += ["| axis | value | unrolled ms | torch ms | unrolled/torch |", "|---|---:|---:|---:|---:|"]
        for r in res["scaling"]:
            ratio = r["unrolled_s"] / r["torch_s"] if r.get("torch_s") else None
            times = f"{_ms(r['unrolled_s'])} | {_ms(r.get('torch_s'))}"
            lines.append(f"| {r['axis']} | {r['value']} | {times} | {_x(ratio)} |")
    return "\n".join(lines) + "\n"


def plot_scaling(res: dict, path: str) -> None:
    """Log-log plot of training-step time against T, H and B (matplotlib, the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = sorted({r["axis"] for r in res["scaling"]}, key="THB".index)
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4 * len(axes_names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], axes_names, strict=True):
        rows = [r for r in res["scaling"] if r["axis"] == name]
        xs = [r["value"] for r in rows]
        for lib in ("unrolled", "torch"):
            if all(f"{lib}_s" in r for r in rows):
                ax.loglog(xs, [r[f"{lib}_s"] * 1e3 for r in rows], "o-", label=lib)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel("training step, ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"LSTM training step scaling — {res['machine']['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
