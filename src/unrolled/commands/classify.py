"""``unrolled classify DIR FILE``: the class of each sequence in FILE, with a model from
``unrolled train classify`` (:mod:`unrolled.apps.classify`), as CSV; the accuracy too when FILE has labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from unrolled.apps.classify import load, read_for_prediction
from unrolled.commands._common import (
    add_checkpoint_option,
    add_quantized_option,
    model_choice,
    quantized,
    say_model,
)
from unrolled.metrics import accuracy


def register(subparsers) -> None:
    q = subparsers.add_parser("classify", help="predict the class of each sequence in FILE")
    q.add_argument("directory", metavar="DIR", help="a directory written by 'unrolled train classify'")
    q.add_argument(
        "file", metavar="FILE", help="sequences in the training layout (.npz, .csv, or .txt lines)"
    )
    add_checkpoint_option(q)
    add_quantized_option(q)
    q.add_argument("--output", metavar="CSV", help="write the predictions here (default: stdout)")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    choice = model_choice(args, args.directory)
    clf, cfg, meta = load(choice.path)
    clf.model = quantized(args, clf.model)
    rec = read_for_prediction(args.file, cfg, meta["kind"])
    say_model(choice)
    p = clf.predict_proba(rec.items)
    pred = p.argmax(1)
    lines = ["sequence,predicted,probability"]
    for sid, k, row in zip(rec.ids, pred, p, strict=True):
        name = '"' + sid.replace('"', '""') + '"' if ("," in sid or '"' in sid) else sid
        lines.append(f"{name},{clf.classes[k]},{row[k]:.4f}")
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if rec.labels is not None:
        known = {c: i for i, c in enumerate(clf.classes)}
        ok = [i for i, lab in enumerate(rec.labels) if lab in known]
        if ok:
            y = np.array([known[rec.labels[i]] for i in ok])
            print(
                f"accuracy on the {len(ok)} labelled sequences: {accuracy(y, pred[ok]):.4f}", file=sys.stderr
            )
    return 0
