"""Surnames to 18 languages, character by character (../shared/data/classification/names, the data of
the PyTorch char-RNN classification tutorial): test accuracy and macro-F1 beside the majority class.

    .venv/bin/python benchmarks/classify_names.py [--minutes 6] [--no-dedupe]

By default exact repeats of a (name, language) pair are dropped before the split (2,038 of 20,050;
Arabic is 2,000 lines of 108 distinct names), so the test never grades a name the model saw in training.
Writes classify_names.md / .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unrolled.apps.classify import ClassifyConfig, format_confusion, train_and_evaluate
from unrolled.metrics import per_class_f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="training time limit")
    ap.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--class-weights", choices=("none", "balanced"), default="none")
    ap.add_argument("--data-dir", default="../shared/data/classification/names")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ClassifyConfig(
        dataset="names", data_dir=a.data_dir, cell=a.cell, hidden=a.hidden, embed=32, dedupe=a.dedupe,
        class_weights=a.class_weights, epochs=30, patience=4, batch=64, lr=3e-3, time_limit=a.minutes, seed=0,
    )  # fmt: skip
    t = time.perf_counter()
    clf, ds, summary, res = train_and_evaluate(cfg, log=lambda s: print("   ", s, flush=True))
    wall = time.perf_counter() - t
    import numpy as np

    f1 = per_class_f1(np.array(res["confusion_matrix"]))
    lines = [
        f"names ({len(ds.items)} surnames{' after dropping exact repeats' if a.dedupe else ''}, "
        f"18 languages; stratified split 70/10/20 %, seed 0): {cfg.cell.upper()} hidden {cfg.hidden}, "
        f"embedding {cfg.embed}, class weights {cfg.class_weights}, "
        f"{summary['epochs']} epochs ({summary['stopped']}), {wall:.0f} s wall",
        "",
        "| | test accuracy | macro-F1 |",
        "|---|---:|---:|",
        f"| {cfg.cell.upper()} | {res['accuracy']:.4f} | {res['macro_f1']:.4f} |",
        f"| majority class (Russian) | {res['majority_baseline_accuracy']:.4f} | — |",
        "",
        "Per-class F1: " + ", ".join(f"{c} {v:.2f}" for c, v in zip(ds.classes, f1, strict=True)),
        "",
        "```",
        format_confusion(res["confusion_matrix"], ds.classes),
        "```",
    ]
    text = "\n".join(lines)
    print(text)
    name = "classify_names" + ("" if a.dedupe else "_with_repeats")
    name += "" if a.class_weights == "none" else "_balanced"
    (out / f"{name}.md").write_text(text + "\n")
    (out / f"{name}.json").write_text(json.dumps({"summary": summary, "test": res, "wall_s": wall}, indent=1))


if __name__ == "__main__":
    main()
