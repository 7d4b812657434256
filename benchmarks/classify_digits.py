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
    ap.add_argument("--minutes", type=float, default=4.0, help="training time limit per model (0: none)")
    ap.add_argument("--cells", default="lstm,gru,rnn", help="pixel by pixel: which cells")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (split, weights, batch order)")
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
            grid = [dict(cell=c, hidden=64, lr=3e-3, epochs=60, patience=8) for c in a.cells.split(",")]
        for g, seed in [(g, int(sd)) for g in grid for sd in a.seeds.split(",")]:
            cfg = ClassifyConfig(dataset=f"digits-{part}", time_limit=a.minutes or None, seed=seed, **g)
            print(f"digits-{part} seed {seed} {g}", flush=True)
            r = {**run(cfg), "seed": seed}
            print(f"    -> {r}", flush=True)
            results.append(r)
        lines = [
            f"digits-{part} (scikit-learn, stratified split 70/10/20 % drawn by the seed; "
            f"time limit {a.minutes} min per model)",
            "",
            "| cell | seed | hidden | params | epochs (stop) | wall s | test acc. | macro-F1 | majority |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r['cell'].upper()} | {r['seed']} | {r['hidden']} | {r['params']} | "
                f"{r['epochs']} ({r['stopped']}) | "
                f"{r['wall_s']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['majority']:.4f} |"
            )
        text = "\n".join(lines)
        print(text, flush=True)
        name = f"classify_digits_{part}" + (
            "" if part == "rows" or a.cells == "lstm,gru,rnn" else f"_{a.cells}"
        )
        name += "" if a.seeds == "0" else "_seeds" + a.seeds.replace(",", "")
        (out / f"{name}.md").write_text(text + "\n")
        (out / f"{name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
