"""``unrolled experiment adding|copy|parity ...`` runs a grid of the long-dependency experiments
(resumable, one JSON line per finished run); ``unrolled experiment report RESULTS...`` turns results
into the markdown table and the figure of docs/diagnostics.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from unrolled.apps.experiments import CELLS, grid, read_results, results_table, run_grid
from unrolled.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="the adding, copy-memory and parity experiments (RNN vs LSTM vs GRU, with/without clipping)",
        description="Long-dependency experiments. The full grid of the issue is the default of each task.",
    )
    sub = p.add_subparsers(dest="experiment", metavar="TASK")
    helps = {"adding": "the adding problem", "copy": "the copy-memory task", "parity": "the parity of T bits"}
    for task, steps in (("adding", 2000), ("copy", 2000), ("parity", 2000)):
        q = sub.add_parser(task, help=helps[task])
        q.add_argument("--T", type=int, nargs="+", default=[10, 50, 100, 200, 400], help="sequence lengths")
        q.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
        q.add_argument(
            "--clip", nargs="+", default=["1.0", "none"], help="global-norm thresholds, 'none' = no clipping"
        )
        q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        q.add_argument("--steps", type=int, default=steps, help=f"step budget per run (default {steps})")
        q.add_argument("--time-budget", type=float, default=None, help="seconds per run (default: none)")
        q.add_argument("--hidden", type=int, default=32, help="hidden size (default 32)")
        q.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
        q.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
        q.add_argument("--eval-every", type=int, default=100, help="steps between test evaluations and γ")
        q.add_argument("--test-size", type=int, default=256)
        q.add_argument("--out", default=f"runs/experiments/{task}.jsonl", help="results, JSON lines")
        q.add_argument("--figures", metavar="DIR", help="diagnostics figure of each seed-0 final model")
        q.add_argument("--quiet", action="store_true", help="only one line per finished run")
        q.set_defaults(func=_run, task=task)
    r = sub.add_parser("report", help="markdown table (and figure) from results files")
    r.add_argument("results", nargs="+", help="JSON-lines results files")
    r.add_argument("--markdown", metavar="OUT.md", help="write the table there (default: print it)")
    r.add_argument("--plot", metavar="OUT.png", help="learning curves and γ (needs matplotlib)")
    r.set_defaults(func=_report)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _clips(values: list[str]) -> list[float | None]:
    out = []
    for v in values:
        if v.lower() in ("none", "off", "no"):
            out.append(None)
            continue
        try:
            c = float(v)
        except ValueError:
            raise CLIError(f"--clip: expected positive numbers or 'none', got {v!r}") from None
        if not c > 0:
            raise CLIError(f"--clip: expected positive numbers or 'none', got {v!r}")
        out.append(c)
    return out


def _run(args: argparse.Namespace) -> int:
    if min(args.T) < 2:
        raise CLIError("--T: sequence lengths must be at least 2")
    configs = grid(
        args.task, args.T, args.cells, _clips(args.clip), args.seeds,
        hidden_size=args.hidden, batch_size=args.batch, lr=args.lr, max_steps=args.steps,
        time_budget_s=args.time_budget, eval_every=args.eval_every, test_size=args.test_size,
    )  # fmt: skip
    print(f"unrolled experiment {args.task}: {len(configs)} runs -> {args.out}", flush=True)

    def log(line: str) -> None:
        if not args.quiet or line.startswith("=="):
            print(line, flush=True)

    run_grid(configs, args.out, log=log, figure_dir=args.figures)
    print(results_table(read_results([args.out])))
    return 0


def _report(args: argparse.Namespace) -> int:
    for p in args.results:
        if not Path(p).is_file():
            raise CLIError(f"{p}: no such results file")
    records = read_results(args.results)
    if not records:
        raise CLIError("no finished runs in " + ", ".join(args.results))
    table = results_table(records)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
        print(f"table: {args.markdown}")
    else:
        sys.stdout.write(table + "\n")
    if args.plot:
        plot_results(records, args.plot)
        print(f"figure: {args.plot}")
    return 0


def plot_results(records: list[dict], path) -> None:
    """Per task a row: test loss / baseline against steps for each T (colour = cell, dashed = no
    clipping, one line per seed), and a last panel of γ at the end against T."""
    from unrolled.diagnostics.plot import _pyplot

    plt = _pyplot()
    tasks = [t for t in ("adding", "copy", "parity") if any(r["task"] == t for r in records)]
    Ts = sorted({r["T"] for r in records})
    fig, axes = plt.subplots(len(tasks), len(Ts) + 1, figsize=(3.6 * (len(Ts) + 1), 3.3 * len(tasks)),
                             squeeze=False)  # fmt: skip
    colors = {"rnn": "C3", "lstm": "C0", "gru": "C2"}
    for row, task in zip(axes, tasks, strict=True):
        rs = [r for r in records if r["task"] == task]
        for ax, T in zip(row[:-1], Ts, strict=True):
            for r in (r for r in rs if r["T"] == T):
                h = r["history"]
                steps = [e["step"] for e in h]
                y = [e["test_loss"] / r["baseline"] for e in h]
                ax.semilogy(
                    steps, y, color=colors[r["cell"]], ls="-" if r["clip"] is not None else "--", lw=1
                )
            ax.axhline(0.1 if task == "adding" else 1.0, color="grey", lw=0.6, ls=":")
            ax.set_title(f"{task}, T = {T}")
            ax.set_xlabel("step")
            ax.set_ylabel("test loss / baseline")
            ax.grid(True, which="both", alpha=0.3)
        ax = row[-1]
        for cell in CELLS:
            for clip_on in (True, False):
                pts = [
                    (r["T"], r["gamma_final"])
                    for r in rs
                    if r["cell"] == cell and (r["clip"] is not None) == clip_on
                ]
                if pts:
                    T_, g_ = np.array(pts).T
                    ax.plot(T_, g_, "o" if clip_on else "x", color=colors[cell],
                            label=f"{cell} {'clip' if clip_on else 'no clip'}")  # fmt: skip
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel("γ at the end (layer 0)")
        ax.set_title(f"{task}: fitted γ after training")
        ax.legend(fontsize=6)
    for cell, c in colors.items():
        axes[0][0].plot([], [], color=c, label=cell)
    axes[0][0].plot([], [], color="k", ls="--", label="no clipping")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
