"""``unrolled experiment adding|copy|parity ...`` runs a grid of the long-dependency experiments
(resumable, one JSON line per finished run); ``unrolled experiment report RESULTS...`` turns results
into the markdown table and the figure of docs/diagnostics.md. The experiments are
:mod:`unrolled.apps.experiments`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unrolled._optional import require
from unrolled.apps.experiments import (
    CELLS,
    SCAN_CELLS,
    grid,
    plot_results,
    read_results,
    results_table,
    run_grid,
)
from unrolled.commands._common import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="the adding, copy-memory and parity experiments (RNN vs LSTM vs GRU, with/without clipping)",
        description="Long-dependency experiments: RNN, LSTM and GRU on the adding problem, copy memory and "
        "parity at growing T, with and without gradient clipping. Each task's defaults are the full grid of "
        "docs/diagnostics.md.",
    )
    sub = p.add_subparsers(dest="experiment", metavar="TASK")
    helps = {"adding": "the adding problem", "copy": "the copy-memory task", "parity": "the parity of T bits"}
    for task, steps in (("adding", 2000), ("copy", 2000), ("parity", 2000)):
        q = sub.add_parser(task, help=helps[task])
        q.add_argument("--T", type=int, nargs="+", default=[10, 50, 100, 200, 400], help="sequence lengths")
        q.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS + SCAN_CELLS)
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
        q.set_defaults(run_task=_run_grid, task=task)
    r = sub.add_parser("report", help="markdown table (and figure) from results files")
    r.add_argument("results", nargs="+", help="JSON-lines results files")
    r.add_argument("--markdown", metavar="OUT.md", help="write the table there (default: print it)")
    r.add_argument("--plot", metavar="OUT.png", help="learning curves and γ (needs matplotlib)")
    r.set_defaults(run_task=_report)
    p.set_defaults(func=run, experiment_help=p.format_help)


def run(args: argparse.Namespace) -> int:
    """``unrolled experiment TASK``: a grid or the report; with no TASK, the help (exit status 1)."""
    if args.experiment is None:
        sys.stdout.write(args.experiment_help())
        return 1
    return args.run_task(args)


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


def _run_grid(args: argparse.Namespace) -> int:
    if min(args.T) < 2:
        raise CLIError("--T: sequence lengths must be at least 2")
    if args.figures:  # before the grid, not at the end of its first run
        require("--figures", "matplotlib", "plot")
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
    if args.plot:
        require("--plot", "matplotlib", "plot")
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
