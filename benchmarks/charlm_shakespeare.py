"""Tiny Shakespeare: validation loss of a 2-layer character-level LSTM against training wall time.

Trains through the same code as ``unrolled train charlm`` on ``../shared/data/text/tinyshakespeare.txt``
(1,115,394 characters; the last 10% is the validation part) for a fixed wall-clock budget, validating on
the whole validation part every ``--val-every`` steps (that time counts as training time). Target: at most
1.55 nats (2.24 bits) per character within 15 minutes on a 2-core machine.

    .venv/bin/python benchmarks/charlm_shakespeare.py --minutes 15

The layer-normalised LSTM against the plain one in the same wall time, each on one core, run at once:

    UNROLLED_THREADS=1 taskset -c 0 python benchmarks/charlm_shakespeare.py --out runs/plain ... &
    UNROLLED_THREADS=1 taskset -c 1 python benchmarks/charlm_shakespeare.py --layer-norm --out runs/ln ...

Writes the run to --out, the curve to --plot (PNG) and the numbers to --json, and prints them.
Skips with a message (exit 0) where the data set is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from unrolled import kernels
from unrolled.apps.charlm import LN2, CharLMConfig, fit, report

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
TARGET_NATS = 1.55


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget (default 15)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden units per layer (default 256)")
    ap.add_argument("--layers", type=int, default=2, help="stacked LSTM layers (default 2)")
    ap.add_argument("--embed", type=int, default=64, help="character embedding width (default 64)")
    ap.add_argument("--batch", type=int, default=32, help="parallel streams (default 32)")
    ap.add_argument("--seq-len", type=int, default=100, help="truncated BPTT length (default 100)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout (default 0)")
    ap.add_argument(
        "--layer-norm",
        action="store_true",
        help="layer-normalised LSTM (Ba et al. 2016) instead of the plain one",
    )
    ap.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule (cosine decays to 0 at --steps; default constant)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="also stop after this many steps (cosine decays over them; default: the time budget alone)",
    )
    ap.add_argument("--val-every", type=int, default=100, help="validate every N steps (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help=f"the text (default {DATA})")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "charlm_shakespeare", help="run directory")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "charlm_shakespeare.png", help="curve PNG")
    ap.add_argument(
        "--json",
        type=Path,
        default=REPO / "benchmarks" / "results" / "charlm_shakespeare.json",
        help="results",
    )
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"skipped: {args.data} is not present (the shared data lives beside the repository)")
        return 0
    if (args.out / "last").exists():
        sys.exit(f"{args.out} already holds a run; remove it or pass another --out")
    cfg = CharLMConfig(
        cell="lstm", layers=args.layers, hidden=args.hidden, embed=args.embed, dropout=args.dropout,
        seq_len=args.seq_len, batch=args.batch, steps=args.steps, time=args.minutes, lr=args.lr, clip=5.0,
        schedule=args.schedule, layer_norm=args.layer_norm,
        seed=args.seed, val_fraction=0.1, val_every=args.val_every, val_chars=10**9,
    )  # fmt: skip
    load_before = os.getloadavg()
    summary = fit(cfg, [args.data], args.out)
    report(summary)
    curve = [
        (r["wall_time"], r["val_loss"])
        for r in map(json.loads, (args.out / "metrics.jsonl").read_text().splitlines())
        if "val_loss" in r and "wall_time" in r
    ]
    curve.append((summary.train_seconds, summary.val_nats))
    steps_per_s = summary.step / summary.train_seconds
    result = {
        "data": str(args.data.name),
        "config": cfg.to_dict(),
        "parameters": summary.parameters,
        "steps": summary.step,
        "train_minutes": round(summary.train_seconds / 60, 2),
        "characters_per_second": round(steps_per_s * cfg.batch * cfg.seq_len),
        "epochs": round(summary.step * cfg.batch * cfg.seq_len / summary.train_chars, 2),
        "val_nats": round(summary.val_nats, 4),
        "val_bits": round(summary.val_nats / LN2, 4),
        "target_nats": TARGET_NATS,
        "target_met": summary.val_nats <= TARGET_NATS,
        "first_minute_at_target": next((round(t / 60, 2) for t, v in curve if v <= TARGET_NATS), None),
        "curve_minutes_nats": [[round(t / 60, 3), round(v, 4)] for t, v in curve],
        "kernels": kernels.describe(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "command": "python benchmarks/charlm_shakespeare.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    plot(curve, result, args.plot)
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve_minutes_nats", "config")}))
    return 0


def plot(curve, result: dict, path: Path) -> None:
    """Validation nats/char against training minutes, with the target line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: no plot written to {path}")
        return
    minutes = [t / 60 for t, _ in curve]
    nats = [v for _, v in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(minutes, nats, marker="o", ms=3, label="validation (last 10% of the text)")
    ax.axhline(TARGET_NATS, color="grey", ls="--", lw=1, label=f"target {TARGET_NATS} nats (2.24 bits)")
    c = result["config"]
    ax.set_title(
        f"Tiny Shakespeare: {c['layers']}-layer LSTM of {c['hidden']} "
        f"({result['parameters'] / 1e6:.2f} M parameters)",
        fontsize=10,
    )
    ax.set_xlabel("training wall time (minutes, 2 shared CPU cores)")
    ax.set_ylabel("nats per character")
    ax.set_ylim(max(0.0, min(min(nats), TARGET_NATS) - 0.15), min(max(nats), 4.5) + 0.1)
    ax.grid(alpha=0.3)
    ax2 = ax.secondary_yaxis("right", functions=(lambda n: n / LN2, lambda b: b * LN2))
    ax2.set_ylabel("bits per character")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"curve written to {path}")


if __name__ == "__main__":
    sys.exit(main())
