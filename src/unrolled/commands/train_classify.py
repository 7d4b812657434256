"""``unrolled train classify``: train a sequence classifier, then report accuracy, macro-F1 and the
confusion matrix on the held-out test split beside the majority-class baseline
(:mod:`unrolled.apps.classify`)."""

from __future__ import annotations

import argparse
import sys

from unrolled.apps.classify import APP, ClassifyConfig, format_confusion, save, train_and_evaluate
from unrolled.commands._common import CLIError, add_run_options, open_out
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
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ClassifyConfig, args)  # bad options are refused before --out is touched
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    with open_out(args, APP) as run_dir:  # the Trainer writes in DIR/training, the model in DIR
        if args.resume:
            _check_more_epochs(run_dir, cfg.epochs, args.out)
        clf, ds, summary, res = train_and_evaluate(cfg, run_dir, args.resume, log)
        save(run_dir, clf, cfg, ds, {"test": res, "training": summary})
    if res is not None:
        print(
            f"test ({res['n']} sequences): accuracy {res['accuracy']:.4f}  macro-F1 {res['macro_f1']:.4f}  "
            f"majority-class baseline {res['majority_baseline_accuracy']:.4f}"
        )
        print(format_confusion(res["confusion_matrix"], ds.classes))
    print(
        f"saved to {args.out} ({summary['epochs']} epoch{'s' * (summary['epochs'] != 1)}, "
        f"best {summary['best_epoch']}, "
        f"{summary['seconds']} s)"
    )
    return 130 if summary["stopped"] == "interrupted" else 0  # as Ctrl-C: continue with --resume


def _check_more_epochs(run_dir, epochs: int, out: str) -> None:
    """Refuse a --resume that has nothing left to train: without this the run would load, train no
    step, and report "saved" as if it had done something."""
    from unrolled.checkpoint import load_checkpoint

    last = run_dir.path("training", "last")
    if not (last / "meta.json").exists():
        return  # nothing to continue: the run starts afresh, as the Trainer does
    _, meta = load_checkpoint(last)
    done = meta["trainer"]["epoch"]  # completed epochs
    if epochs <= done:
        raise CLIError(
            f"--resume: nothing to do: the run in {out} already has {done} epochs (--epochs {epochs}); "
            "give more --epochs to train further"
        )
