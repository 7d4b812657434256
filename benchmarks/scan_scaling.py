"""Scaling of one training step (forward + backward) with sequence length, at a fixed B·T: MinGRU/MinLSTM
(parallel scan) against our sequential LSTM/GRU and torch's nn.LSTM/nn.GRU, side by side in one run.

python benchmarks/scan_scaling.py [--bt 8192] [--hidden 128] [--lengths 128,512,2048,4096,8192] [--reps 5]
    [--label scan_scaling] [--no-memory]
    (run it with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE, as a user's machine has them)
    -> benchmarks/results/<label>.json, <label>.md, <label>.png

Every library at every core (unrolled's worker budget, torch's intra-op threads), float32, input size =
hidden size, one layer. Timings are wall-clock medians of interleaved repetitions (a sample during which
other processes kept a core busy is retaken, up to twice). Peak memory of a step: each layer in a fresh
process, the growth of the resident set's high-water mark over a warm-up on the same shapes (and, for
unrolled, tracemalloc's peak of NumPy's buffers), as ``unrolled.bench.memory`` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OURS = ("mingru", "minlstm", "lstm", "gru")
THEIRS = ("torch_lstm", "torch_gru")


def _step(name: str, T: int, B: int, H: int, torch):
    """The training step of contender ``name`` on x (T, B, H) with a random upstream gradient."""
    import unrolled

    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)
    if name in OURS:
        cls = {"mingru": unrolled.MinGRU, "minlstm": unrolled.MinLSTM, "lstm": unrolled.LSTM}.get(
            name, unrolled.GRU
        )
        layer = cls(H, H, seed=0)

        def ours():
            layer.forward(x)
            layer.backward(d_out)

        return ours
    module = (torch.nn.LSTM if name == "torch_lstm" else torch.nn.GRU)(H, H)
    xt = torch.from_numpy(x).requires_grad_(True)
    dt = torch.from_numpy(d_out)
    params = list(module.parameters())

    def theirs():
        xt.grad = None
        for p in params:
            p.grad = None
        out, _ = module(xt)
        out.backward(dt)

    return theirs


def _memory_here(name: str, T: int, B: int, H: int) -> dict:
    import tracemalloc

    import torch

    from unrolled.bench.timing import reset_peak_rss, rss_kib, set_threads

    set_threads(os.cpu_count(), torch)
    _step(name, 2, B, H, torch)()  # imports, compiled kernels and primitives loaded before the mark
    fn = _step(name, T, B, H, torch)
    out = {}
    if name in OURS:
        tracemalloc.start()
    before = rss_kib()
    if before is not None and reset_peak_rss():
        before = rss_kib()
    fn()
    after = rss_kib()
    if before is not None and after is not None:
        out["rss_peak_mib"] = (after[1] - before[0]) / 1024
    if name in OURS:
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    return out


def _memory(name: str, T: int, B: int, H: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-of", json.dumps([name, T, B, H])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    import torch

    from unrolled import kernels
    from unrolled.bench import timing

    timing.set_threads(os.cpu_count(), torch)
    names = OURS + THEIRS
    rows = []
    for T in args.lengths:
        B = max(1, args.bt // T)
        fns = {n: _step(n, T, B, args.hidden, torch) for n in names}
        samples = timing.interleaved(fns, args.reps, warmup=1, retake=2)
        row = {"T": T, "B": B, "H": args.hidden}
        row.update({f"{n}_s": timing.median(samples[n]) for n in names})
        for n in names:
            if n not in ("mingru", "minlstm"):
                row[f"{n}_over_mingru"] = row[f"{n}_s"] / row["mingru_s"]
                row[f"{n}_over_minlstm"] = row[f"{n}_s"] / row["minlstm_s"]
        if args.memory:
            for n in ("mingru", "minlstm", "lstm", "torch_lstm"):
                row.update({f"{n}_{k}": v for k, v in _memory(n, T, B, args.hidden).items()})
        rows.append(row)
        print(
            f"T={T:5d} B={B:3d}  "
            + "  ".join(f"{n} {row[f'{n}_s'] * 1e3:7.1f} ms" for n in names)
            + f"  | LSTM/minGRU {row['lstm_over_mingru']:.1f}x, LSTM/minLSTM {row['lstm_over_minlstm']:.1f}x",
            flush=True,
        )
    return {
        "label": args.label,
        "bt": args.bt,
        "cpu": timing.cpu_model(),
        "cores": os.cpu_count(),
        "load_average": timing.load_average(),
        "unrolled_path": kernels.describe(),
        "retaken_samples": timing.retaken,
        "rows": rows,
    }


def render(res: dict) -> str:
    lines = [
        f"One training step (forward + backward), B·T = {res['bt']}, H = I = {res['rows'][0]['H']}, float32, "
        f"{res['cores']} cores ({res['cpu']}); load average at the end {res['load_average']}; wall-clock "
        "medians in ms; ratio = LSTM's time / the min-cell's.",
        "",
        "| T | B | MinGRU | MinLSTM | our LSTM | our GRU | torch LSTM | torch GRU | our LSTM / MinGRU "
        "| our LSTM / MinLSTM | torch LSTM / MinGRU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        ms = [r[f"{n}_s"] * 1e3 for n in OURS + THEIRS]
        lines.append(
            f"| {r['T']} | {r['B']} | "
            + " | ".join(f"{m:.1f}" for m in ms)
            + f" | **{r['lstm_over_mingru']:.1f}×** | **{r['lstm_over_minlstm']:.1f}×** "
            f"| {r['torch_lstm_over_mingru']:.1f}× |"
        )
    if "mingru_rss_peak_mib" in res["rows"][0]:
        lines += [
            "",
            "Peak memory of one step (MiB; growth of the RSS high-water mark, fresh process each; "
            "tracemalloc peak in brackets):",
            "",
            "| T | MinGRU | MinLSTM | our LSTM | torch LSTM |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            cells = []
            for n in ("mingru", "minlstm", "lstm", "torch_lstm"):
                rss, tm = r.get(f"{n}_rss_peak_mib"), r.get(f"{n}_tracemalloc_peak_mib")
                cell = "—" if rss is None else f"{rss:.1f}"
                cells.append(cell + (f" [{tm:.1f}]" if tm is not None else ""))
            lines.append(f"| {r['T']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = [r["T"] for r in res["rows"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for n, style in [
        ("mingru", "o-"),
        ("minlstm", "s-"),
        ("lstm", "o--"),
        ("gru", "s--"),
        ("torch_lstm", "o:"),
        ("torch_gru", "s:"),
    ]:
        ax.plot(T, [r[f"{n}_s"] * 1e3 for r in res["rows"]], style, label=n.replace("_", " "))
    ax.set(xscale="log", yscale="log", xlabel="sequence length T (B·T fixed)", ylabel="training step (ms)")
    ax.set_title(f"One training step, B·T = {res['bt']}, H = {res['rows'][0]['H']}, {res['cores']} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bt", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lengths", default="128,512,2048,4096,8192")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--label", default="scan_scaling")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_of:
        print(json.dumps(_memory_here(*json.loads(args.memory_of))))
        return
    args.lengths = [int(t) for t in args.lengths.split(",")]
    res = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(res, indent=1))
    md = render(res)
    (RESULTS / f"{args.label}.md").write_text(md)
    try:
        plot(res, RESULTS / f"{args.label}.png")
    except ImportError:
        print("matplotlib not installed (extra 'plot'): no plot")
    print(md)


if __name__ == "__main__":
    main()
