"""``unrolled train KIND``: train a model, one kind per application. Each kind's options and run live in
``train_<kind>.py``; this module lists them (:data:`KINDS`) and dispatches on the kind given."""

from __future__ import annotations

import argparse

from unrolled.commands import train_charlm, train_classify, train_forecast, train_translate

# The kinds, in the order `unrolled train --help` lists them: each module has register(kinds) and run(args).
KINDS = {
    "charlm": train_charlm,
    "forecast": train_forecast,
    "classify": train_classify,
    "translate": train_translate,
}


def register(subparsers) -> None:
    help = "train a model (one subcommand per kind of model)"
    p = subparsers.add_parser("train", help=help, description=help[0].upper() + help[1:] + ".")
    kinds = p.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    for module in KINDS.values():
        module.register(kinds)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return KINDS[args.train_kind].run(args)
