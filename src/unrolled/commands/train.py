"""``unrolled train KIND``: train a model, one kind per application. Each kind's options and run live in
``train_<kind>.py``; this module lists them (:data:`KINDS`) and dispatches on the kind given."""

from __future__ import annotations

import argparse

from unrolled.commands import train_charlm, train_classify, train_forecast, train_translate
from unrolled.commands._common import CLIError

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


# The kinds that run data-parallel under mpiexec (unrolled.distributed); the others refuse several ranks
# rather than train the same model p times over.
DATA_PARALLEL = ("charlm",)


def run(args: argparse.Namespace) -> int:
    from unrolled import distributed

    if distributed.launched_under_mpi() and args.train_kind not in DATA_PARALLEL:
        comm = distributed.world()
        if comm.size > 1:
            raise CLIError(
                f"train {args.train_kind}: data-parallel runs over several ranks (mpiexec -n {comm.size}) "
                f"are implemented for {', '.join(f'train {k}' for k in DATA_PARALLEL)} only; run it in "
                "one process"
            )
    return KINDS[args.train_kind].run(args)
