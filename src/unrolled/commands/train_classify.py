"""``unrolled train classify``: train a sequence classifier, then report accuracy, macro-F1 and the
confusion matrix on the held-out test split beside the majority-class baseline
(:mod:`unrolled.apps.classify`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unrolled.apps.classify import ClassifyConfig, format_confusion, save, train_and_evaluate
from unrolled.commands._options import add_config_arguments, config_from_args


def register(kinds) -> None:
    """``classify`` among the kinds of ``unrolled train``."""
    p = kinds.add_parser(
        "classify",
        help="classify whole sequences (NPZ, CSV, text, digits, names): accuracy, macro-F1, confusion matrix",
        description="Classifying whole sequences (many-to-one) with a recurrent network.",
    )
    add_config_arguments(p, ClassifyConfig)
    p.add_argument("--out", required=True, metavar="DIR", help="where to save the trained classifier")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out DIR")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ClassifyConfig, args)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    clf, ds, summary, res = train_and_evaluate(cfg, Path(args.out) / "training", args.resume, log)
    save(args.out, clf, cfg, ds, {"test": res, "training": summary})
    if res is not None:
        print(
            f"test ({res['n']} sequences): accuracy {res['accuracy']:.4f}  macro-F1 {res['macro_f1']:.4f}  "
            f"majority-class baseline {res['majority_baseline_accuracy']:.4f}"
        )
        print(format_confusion(res["confusion_matrix"], ds.classes))
    print(
        f"saved to {args.out} ({summary['epochs']} epochs, best {summary['best_epoch']}, "
        f"{summary['seconds']} s)"
    )
    return 0
