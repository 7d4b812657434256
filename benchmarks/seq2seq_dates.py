"""Dates → ISO: exact-match accuracy on held-out days, with attention and, beside it, without.

Training pairs come from the "train" days of unrolled.apps.translate.dates and the test pairs from the "test"
days (about 1 day in 10, fixed by a hash): no test day is seen in training in any format. The same
architecture, budget and seed are run once per --attention value; "none" is the plain
encoder-decoder (the decoder sees the source only through the encoder's final state).

    .venv/bin/python benchmarks/seq2seq_dates.py --minutes 2                       # the same time budget
    .venv/bin/python benchmarks/seq2seq_dates.py --minutes 30 --steps 250 500 1000  # the same step counts

Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from unrolled.apps.translate import TranslateConfig, fit
from unrolled.apps.translate.dates import date_pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="training time budget per model (default 3)")
    ap.add_argument(
        "--steps", type=int, nargs="+", default=[100000], help="most training steps; several: one run each"
    )
    ap.add_argument("--attention", nargs="+", default=["general", "none"])
    ap.add_argument("--train-pairs", type=int, default=20000)
    ap.add_argument("--test-pairs", type=int, default=2000)
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--embed-dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    train = date_pairs(args.train_pairs, rng, "train")
    valid = date_pairs(500, rng, "train")  # model selection on unseen strings of training days
    test = date_pairs(args.test_pairs, rng, "test")
    for attention, steps in [(a, n) for n in args.steps for a in args.attention]:
        cfg = TranslateConfig(
            tokenizer="char",
            cell=args.cell,
            hidden=args.hidden,
            embed_dim=args.embed_dim,
            attention=attention,
            dropout=0.0,
            batch=args.batch,
            lr=args.lr,
            steps=steps,
            time=args.minutes,
            eval_every=250,
            seed=args.seed,
        )
        tr, summary = fit(cfg, train, valid, progress=False)
        out = {"attention": attention, "max_steps": steps}
        for beam in (1, 5):
            hyps = tr.translate([s for s, _ in test], beam=beam, max_len=12)
            out[f"exact_match_beam{beam}"] = float(
                np.mean([h == iso for (h, _), (_, iso) in zip(hyps, test, strict=True)])
            )
        wrong = [
            (s, h, iso)
            for (h, _), (s, iso) in zip(tr.translate([s for s, _ in test]), test, strict=True)
            if h != iso
        ]
        out.update(
            test_pairs=len(test),
            steps=summary["steps"],
            train_seconds=round(summary["train_seconds"], 1),
            parameters=tr.model.num_parameters(),
            config=vars(args),
            errors=wrong[:5],
        )
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
