"""Benchmark unrolled against torch.nn and keep the results (the same suite as ``unrolled bench``).

python benchmarks/bench_rnn.py run --label baseline [--quick] [--threads N] [--reference] [--no-scaling]
    (each library at 1 thread and at every core, plus N if given, side by side, wall clock; run it with
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE, as a user's machine has them)
    -> benchmarks/results/<label>.json, <label>.md and <label>_scaling.png
python benchmarks/bench_rnn.py render benchmarks/results/<label>.json   # Markdown for the README
python benchmarks/bench_rnn.py compare a.json b.json ...                 # ratio per row, stage by stage
python benchmarks/bench_rnn.py grid [--reps 9]                           # the grid alone, nothing saved
python benchmarks/bench_rnn.py inference --label infer [--quick] [--threads N]
    (forward only: unrolled's inference path against onnxruntime on the exported graph and torch, each at
    1 thread and at every core; the same as ``unrolled bench --inference``)
    -> benchmarks/results/<label>.json and <label>.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unrolled import kernels
from unrolled.bench.report import plot_scaling, render_markdown
from unrolled.bench.suite import geomean, run_suite

RESULTS = Path(__file__).resolve().parent / "results"


def cmd_run(args) -> None:
    if args.reference:
        kernels.set_fast(False)
    res = run_suite(
        quick=args.quick, threads=args.threads, memory_too=not args.no_memory, scaling_too=not args.no_scaling
    )
    res["label"] = args.label
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(res, indent=1))
    md = render_markdown(res)
    (RESULTS / f"{args.label}.md").write_text(md)
    try:
        if res["scaling"]:
            plot_scaling(res, str(RESULTS / f"{args.label}_scaling.png"))
    except ImportError:
        print("matplotlib not installed: no scaling plot")
    print(md)


def cmd_render(args) -> None:
    print(render_markdown(json.loads(Path(args.json).read_text())))


def cmd_compare(args) -> None:
    """One column of unrolled/torch ratios per results file: the effect of each optimisation."""
    runs = [json.loads(Path(p).read_text()) for p in args.json]
    labels = [r.get("label", Path(p).stem) for r, p in zip(runs, args.json, strict=True)]
    print("| config | step | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(runs))
    keys = [(r["config"], r["mode"]) for r in runs[0]["rows"]]
    for key in keys:
        cells = []
        for run in runs:
            row = next((r for r in run["rows"] if (r["config"], r["mode"]) == key), None)
            cells.append(f"{row['ratio']:.2f}" if row and "ratio" in row else "—")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    for mode in ("train", "infer"):
        g = [geomean([r["ratio"] for r in run["rows"] if r["mode"] == mode]) for run in runs]
        print(f"| geometric mean | {mode} | " + " | ".join(f"**{x:.2f}**" for x in g) + " |")
    g = [geomean([r["ratio"] for r in run["streaming"]]) for run in runs]
    print("| streaming step B=1 (geomean) | step | " + " | ".join(f"{x:.2f}" for x in g) + " |")


def cmd_grid(args) -> None:
    """The grid rows and their geometric means, one thread, thread CPU time: a quick check between runs."""
    import torch

    from unrolled.bench.suite import GRID, run_grid
    from unrolled.bench.timing import matmul_peak, set_clock, set_threads

    set_threads(1, torch)
    set_clock("thread_cpu")
    print(f"unrolled path: {kernels.describe()}")
    rows = run_grid(GRID, torch, args.reps, matmul_peak(torch)["peak_gflops"])
    for mode in ("train", "infer"):
        print(f"{mode} geometric mean {geomean([r['ratio'] for r in rows if r['mode'] == mode]):.3f}")


def cmd_inference(args) -> None:
    from unrolled.bench.inference import render_markdown as render_inference
    from unrolled.bench.inference import run_inference

    res = run_inference(quick=args.quick, threads=args.threads)
    res["label"] = args.label
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(res, indent=1))
    md = render_inference(res)
    (RESULTS / f"{args.label}.md").write_text(md)
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--label", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--threads", type=int, default=None, help="a thread count to add to 1 and every core")
    r.add_argument("--reference", action="store_true")
    r.add_argument("--no-memory", action="store_true")
    r.add_argument("--no-scaling", action="store_true")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("render")
    s.add_argument("json")
    s.set_defaults(func=cmd_render)
    c = sub.add_parser("compare")
    c.add_argument("json", nargs="+")
    c.set_defaults(func=cmd_compare)
    g = sub.add_parser("grid")
    g.add_argument("--reps", type=int, default=9)
    g.set_defaults(func=cmd_grid)
    i = sub.add_parser("inference")
    i.add_argument("--label", required=True)
    i.add_argument("--quick", action="store_true")
    i.add_argument("--threads", type=int, default=None, help="a thread count to add to 1 and every core")
    i.set_defaults(func=cmd_inference)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
