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


def _machine_line(res: dict) -> str:
    m = res["machine"]
    th = m["threads"]
    if m.get("thread_counts"):
        threads = (
            f"each library at {' and '.join(map(str, m['thread_counts']))} thread(s) "
            f"(unrolled: its workers, BLAS and oneDNN on one thread each; torch: intra-op threads); "
            f"defaults as met after import: unrolled {m['default_threads'].get('unrolled')}, "
            f"torch {m['default_threads'].get('torch')}"
        )
    else:
        threads = f"{th['numpy_blas']} BLAS thread(s) for NumPy, {th['torch']} for torch"
    return (
        f"Machine: **{m['cpu']}**, {m['logical_cpus']} logical CPUs; NumPy {m['numpy']} (OpenBLAS), "
        f"torch {m['torch']}; float32; {threads}; unrolled path: {res['unrolled']['path']}; load average at "
        f"start {m['load_average_start']}, at end {res['load_average_end']}; medians of {res['reps']} "
        "interleaved repetitions after warm-up, "
        + _CLOCK.get(res.get("clock"), "wall-clock time")
        + (
            f"; {res['samples_retaken']} samples retaken because other processes kept a core busy"
            if res.get("samples_retaken")
            else ""
        )
        + "."
    )


def _one_count_grid(res: dict) -> list[str]:
    """Results of runs before the thread comparison (one thread count for both libraries)."""
    summ = res["summary"]
    lines = [
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
    return lines


def _threads_grid(res: dict, counts) -> list[str]:
    """The grid with each library at each thread count, the ratios and the 1 → N speed-ups."""
    summ, N = res["summary"], max(counts)
    head = ["config", "step"]
    head += [f"unrolled {n}t ms" for n in counts] + [f"torch {n}t ms" for n in counts]
    head += ["best/best", "default/default", f"unrolled 1→{N}", f"torch 1→{N}"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in res["rows"]:
        cells = [r["config"], r["mode"]]
        cells += [_ms(r.get(f"unrolled_{n}t_s")) for n in counts] + [
            _ms(r.get(f"torch_{n}t_s")) for n in counts
        ]
        cells += [_x(r.get("ratio")), _x(r.get("ratio_default"))]
        cells += [_x(r.get("unrolled_speedup")), _x(r.get("torch_speedup"))]
        lines.append("| " + " | ".join(cells) + " |")
    for mode, label in (("train", "training step"), ("infer", "inference")):
        if f"{mode}_geomean_ratio" not in summ:
            continue
        best, worst = summ[f"{mode}_geomean_ratio"], summ[f"{mode}_worst_ratio"]
        parts = [f"best against best **{best:.2f}** (worst {worst:.2f})"]
        if f"{mode}_default_geomean_ratio" in summ:
            parts.append(
                f"defaults against defaults **{summ[f'{mode}_default_geomean_ratio']:.2f}** "
                f"(worst {summ[f'{mode}_default_worst_ratio']:.2f})"
            )
        for n in counts:
            if f"{mode}_{n}t_geomean_ratio" in summ:
                parts.append(
                    f"both at {n} thread(s) {summ[f'{mode}_{n}t_geomean_ratio']:.2f} "
                    f"(worst {summ[f'{mode}_{n}t_worst_ratio']:.2f})"
                )
        slower = summ.get(f"{mode}_unrolled_slower_at_N") or []
        parts.append(
            f"unrolled slower at {N} threads than at 1: " + (", ".join(slower) if slower else "no row")
        )
        lines.append(f"\nGeometric mean of unrolled/torch, {label}: " + "; ".join(parts) + ".")
    return lines


def render_markdown(res: dict) -> str:
    """The performance section's body: machine, peak, grid, streaming, memory and scaling tables."""
    m, peak = res["machine"], res["matmul_peak"]
    counts = m.get("thread_counts")
    lines = [_machine_line(res), ""]
    lines.append(
        f"Measured float32 matrix-product peak ({peak['n']}×{peak['n']}): "
        + ", ".join(f"{k.removesuffix('_gflops')} {v:.1f}" for k, v in peak.items() if k.endswith("_gflops"))
        + " GFLOP/s."
    )
    lines.append("")
    lines += _threads_grid(res, counts) if counts else _one_count_grid(res)
    if res["streaming"]:
        lines += ["", "Streaming, one `step()` at B = 1 (I = H), against torch.nn.*Cell under `no_grad`:", ""]
        if counts:
            lines += [
                "| cell | H | unrolled 1t µs | torch 1t µs | unrolled/torch 1t | default/default |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for r in res["streaming"]:
                lines.append(
                    f"| {r['cell'].upper()} | {r['H']} | {_us(r.get('unrolled_1t_s'))} | "
                    f"{_us(r.get('torch_1t_s'))} | {_x(r.get('ratio_1t'))} | {_x(r.get('ratio_default'))} |"
                )
        else:
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
