"""``unrolled bench``: time unrolled against torch.nn on this machine."""

from __future__ import annotations

import json
import os

from unrolled._checks import positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark RNN/LSTM/GRU training and inference against torch.nn",
        description="Time unrolled against torch.nn (float32, same thread count, interleaved medians): "
        "training step and inference over a grid, streaming step at B=1, scaling, peak memory.",
    )
    p.add_argument("--quick", action="store_true", help="a smaller grid, fewer repetitions")
    p.add_argument("--json", metavar="OUT.json", help="write the full results here")
    p.add_argument("--markdown", metavar="OUT.md", help="write the Markdown tables (README's Performance)")
    p.add_argument("--plot", metavar="OUT.png", help="write the log-log scaling plot (needs matplotlib)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="one more thread count to time; each library always runs at 1 thread and at every core",
    )
    p.add_argument(
        "--inference",
        action="store_true",
        help="forward only: unrolled's inference path against onnxruntime (on the graph `unrolled export` "
        "writes) and torch, each at 1 thread and at every core; ratio to the best peer per row",
    )
    p.add_argument("--reference", action="store_true", help="time the reference cells, not the fast kernels")
    p.add_argument("--no-torch", action="store_true", help="time unrolled alone")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.set_defaults(func=run)


def run(args) -> int:
    from unrolled import kernels
    from unrolled.bench.report import plot_scaling, render_markdown
    from unrolled.bench.suite import run_suite

    if args.threads is not None:
        positive_int("--threads", args.threads)
    for path in (args.json, args.markdown, args.plot):
        d = os.path.dirname(os.path.abspath(path)) if path else None
        if d and not os.path.isdir(d):
            raise OSError(f"cannot write {path}: directory {d} does not exist")
    if args.reference:
        kernels.set_fast(False)
    if args.inference:
        return _run_inference(args)
    res = run_suite(
        quick=args.quick, threads=args.threads, with_torch=not args.no_torch, memory_too=not args.no_memory
    )
    _report(res, render_markdown(res), args)
    if args.plot:
        plot_scaling(res, args.plot)
    return 0


def _report(res: dict, md: str, args) -> None:
    """Print the tables; write the results to --json and the tables to --markdown where asked."""
    print()
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)


def _run_inference(args) -> int:
    from unrolled.bench.inference import render_markdown, run_inference

    if args.plot:
        raise ValueError("--plot: not available with --inference (no scaling grid)")
    res = run_inference(quick=args.quick, threads=args.threads, with_torch=not args.no_torch)
    _report(res, render_markdown(res), args)
    return 0
