"""The ``unrolled`` command line: the parser of every verb, and ``main``.

Errors a user can cause (bad files, bad options, bad data) print one line, ``unrolled: error: …``, and exit
with status 2; Ctrl-C exits with 130; no traceback. Set UNROLLED_DEBUG=1 to see the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys

from unrolled import __version__
from unrolled.commands import (
    bench,
    classify,
    demo,
    diagnose,
    experiment,
    export,
    forecast,
    sample,
    train,
    translate,
)
from unrolled.commands import eval as eval_  # the verb `eval`; the name would hide the builtin
from unrolled.commands._common import CLIError, Parser

# The verbs, in the order `unrolled --help` lists them; each module has register(subparsers) and run(args).
# A plain list, imported above: the parser is the same whatever was imported before.
COMMANDS = [demo, train, sample, eval_, forecast, classify, translate, export, diagnose, experiment, bench]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unrolled",
        description="Recurrent neural networks (RNN, LSTM, GRU) with hand-written, verified BPTT.",
    )
    parser.add_argument("--version", action="version", version=f"unrolled {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        from unrolled import threads

        # The library's thread policy (unrolled.threads): the layers' workers on every core, BLAS and
        # oneDNN on one thread each; UNROLLED_BLAS_THREADS or a command's own --threads sets BLAS's count.
        if os.environ.get("UNROLLED_BLAS_THREADS"):
            threads.set_blas_threads(int(os.environ["UNROLLED_BLAS_THREADS"]))
        else:
            threads.apply_defaults()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("unrolled: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        if os.environ.get("UNROLLED_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"unrolled: error: {msg}", file=sys.stderr)
        return 2
