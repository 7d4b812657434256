"""scikit-learn's handwritten digits (1,797 8x8 images) as sequences: row by row (8 steps x 8 features)
with an LSTM, and pixel by pixel (64 steps x 1 feature, a long-dependency test) with LSTM, GRU and a
vanilla RNN side by side — same split, same hidden size, same training budget.

    .venv/bin/python benchmarks/classify_digits.py [--part rows|pixels|all] [--minutes 4]

Writes classify_digits_<part>.md / .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unrolled.apps.classify import ClassifyConfig, train_and_evaluate


def run(cfg: ClassifyConfig) -> dict:
    t = time.perf_counter()
    clf, ds, summary, res = train_and_evaluate(cfg, log=lambda s: print("   ", s, flush=True))
    n_params = sum(v.size for v in clf.model.params.values())
    return {
        "cell": cfg.cell,
        "hidden": cfg.hidden,
        "params": int(n_params),
        "epochs": summary["epochs"],
        "stopped": summary["stopped"],
        "wall_s": round(time.perf_counter() - t, 1),
        "accuracy": res["accuracy"],
        "macro_f1": res["macro_f1"],
        "majority": res["majority_baseline_accuracy"],
        "n_test": res["n"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("rows", "pixels", "all"), default="all")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time limit per model")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = ("rows", "pixels") if a.part == "all" else (a.part,)
    for part in parts:
        results = []
        if part == "rows":
            grid = [
                dict(cell="lstm", hidden=128, lr=2e-3, epochs=60, patience=60, batch=32, schedule="cosine")
            ]
        else:
            grid = [dict(cell=c, hidden=64, lr=3e-3, epochs=60, patience=8) for c in ("lstm", "gru", "rnn")]
        for g in grid:
            cfg = ClassifyConfig(dataset=f"digits-{part}", time_limit=a.minutes, seed=0, **g)
            print(f"digits-{part} {g}", flush=True)
            r = run(cfg)
            print(f"    -> {r}", flush=True)
            results.append(r)
        lines = [
            f"digits-{part} (scikit-learn, stratified split 70/10/20 %, seed 0; "
            f"time limit {a.minutes} min per model)",
            "",
            "| cell | hidden | params | epochs (stop) | wall s | test accuracy | macro-F1 | majority class |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r['cell'].upper()} | {r['hidden']} | {r['params']} | {r['epochs']} ({r['stopped']}) | "
                f"{r['wall_s']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['majority']:.4f} |"
            )
        text = "\n".join(lines)
        print(text, flush=True)
        (out / f"classify_digits_{part}.md").write_text(text + "\n")
        (out / f"classify_digits_{part}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
